"""The conformance suite of the LevelEnv protocol: drives any process over ZeroMQ, in either role, through the
clauses of PROTOCOL.md and prints PASS/FAIL per clause (exit code 1 on any failure).

    python -m tag_actors.conformance child NAME=ENDPOINT [NAME=ENDPOINT ...] --parent l1.0 --num-envs 4
    python -m tag_actors.conformance parent NAME=ENDPOINT [NAME=ENDPOINT ...] --parent l1.0 --num-envs 4

``child``: the implementation serves the children named (it binds each ENDPOINT, as a child does, §2); the suite
is their parent: it connects, tries refused handshakes (other version, schema, batch, period, malformed fields,
garbage), opens the links, then drives ticks — lockstep or async, as ``--mode`` says — checking every UP (tick
numbers, array names/dtypes/shapes, flags, episode ends), holding back DOWN on decision ticks to check that the
child waits, sending bad DOWNs it must drop, and ends with STOP, expecting BYE.

``parent``: the implementation is the parent of the children named (it connects to each ENDPOINT); the suite
binds there, plays the children (scripted episodes ending together and apart), checks HELLO and every DOWN
(decision clock, dtype, shape, range), sends bad UPs it must drop, marks the last tick with ``stop`` and expects
STOP, then says BYE. ``--fault`` instead answers the first HELLO with a faulty WELCOME and expects a REJECT.

The model is dm_env_rpc's compliance tests; these drive a process of any language, in both roles.
"""
