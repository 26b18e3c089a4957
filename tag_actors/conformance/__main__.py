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

from __future__ import annotations

import argparse
import sys

import zmq

from tag_actors import protocol as P
from tag_actors.conformance.child import check_child
from tag_actors.conformance.parent import check_parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tag_actors.conformance", description=__doc__.splitlines()[0])
    p.add_argument("role", choices=("child", "parent"), help="the role of the implementation under test")
    p.add_argument("links", nargs="+", metavar="NAME=ENDPOINT", help="each child the implementation serves "
                   "(child) or connects to (parent), and where its link listens")
    p.add_argument("--parent", required=True, help="the parent's name (its DEALER identity)")
    p.add_argument("--num-envs", type=int, required=True, help="the batch size the implementation runs")
    p.add_argument("--period", type=int, default=1, help="child: the decision period the suite announces")
    p.add_argument("--mode", choices=P.MODES, default="lockstep", help="child: the mode the suite announces")
    p.add_argument("--expects-period", action="store_true",
                   help="child: the implementation has its own period and must REJECT another")
    p.add_argument("--instruction", help="JSON space: child: what the suite sends (default: ask); parent: what "
                   "the suite's children expect (default box of 2 in [-1, 1])")
    p.add_argument("--message-space", default='{"type": "box", "shape": [4], "low": -Infinity, "high": Infinity}',
                   help="parent: JSON space of the suite's children's messages")
    p.add_argument("--fault", choices=("none", "version", "num_envs", "schema", "space"), default="none",
                   help="parent: answer the first HELLO with this faulty WELCOME and expect a REJECT")
    p.add_argument("--ticks", type=int, default=40)
    p.add_argument("--episode", type=int, default=5, help="parent: ticks per scripted episode")
    p.add_argument("--start-tick", type=int, default=0, help="parent: the first tick number the children send")
    p.add_argument("--hold", type=float, default=0.3, help="seconds to hold back a DOWN to see who waits")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for any expected message")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    pairs = []
    for item in args.links:
        name, sep, endpoint = item.partition("=")
        if not sep or not name or "://" not in endpoint:
            p.error(f"link {item!r}: expected NAME=ENDPOINT, e.g. env/0=tcp://127.0.0.1:5555")
        pairs.append((name, endpoint))
    args.links = pairs
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ctx = zmq.Context()
    print(f"LevelEnv conformance, protocol version {P.PROTOCOL_VERSION}, schema {P.SCHEMA_HASH}: testing a "
          f"{args.role} ({', '.join(n for n, _ in args.links)})", flush=True)
    try:
        res = (check_child if args.role == "child" else check_parent)(args, ctx)
    finally:
        ctx.destroy(linger=0)
    passed = len(res.rows) - res.failed
    print(f"{passed} passed, {res.failed} failed", flush=True)
    return 1 if res.failed or not res.rows else 0


if __name__ == "__main__":
    sys.exit(main())
