"""What a user of ``--host`` meets before any peer answers, on one host: the port check of a rerun, a wrong own
address, secret key modes, the fingerprints in the handshake, and the env steps a host without the env shows."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest
from conftest import wait_for

from tag_actors import config as config_mod
from tag_actors.hosts import config_fingerprint, fingerprints, where
from tag_actors.keys import main as keys_main
from tag_actors.launch import check_port_free
from tag_actors.progress import Progress
from tag_actors.protocol import HandshakeError, Hello, Welcome, check_hello, check_welcome
from tag_actors.spaces import Box
from tag_actors.topology import assign_endpoints, build_plan


def time_wait_port() -> int:
    """A listening port that a finished connection left in TIME_WAIT (the server closed first, as a finished run
    does), with nothing listening on it any more. The listener sets SO_REUSEADDR as ZeroMQ's does (its accepted
    connections inherit it, and so does their TIME_WAIT)."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = server.accept()
        conn.close()  # the active close: the server's end of the connection goes to TIME_WAIT
        client.recv(1)
        client.close()
    wait_for(lambda: tcp_states(port) == {"06"}, 5.0, f"port {port} in TIME_WAIT alone")
    return port


def tcp_states(port: int) -> set[str]:
    """The states (hex, as /proc/net/tcp writes them: 06 is TIME_WAIT) of the sockets on local ``port``."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return {r.split()[3] for r in rows if int(r.split()[1].split(":")[1], 16) == port}


def test_a_port_in_time_wait_is_free_for_a_rerun_but_a_listening_one_is_not():
    port = time_wait_port()
    with socket.socket() as plain, pytest.raises(OSError):  # what the old check did: refuse the rerun
        plain.bind(("127.0.0.1", port))
    check_port_free(port, "127.0.0.1", "run.base_port")  # ZeroMQ's own SO_REUSEADDR: free
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy = listener.getsockname()[1]
        with pytest.raises(config_mod.ConfigError, match=f"port {busy} on 127.0.0.1 is in use"):
            check_port_free(busy, "127.0.0.1", "run.base_port")


def test_a_wrong_own_address_is_named_not_called_in_use(free_port):
    with pytest.raises(config_mod.ConfigError, match="cannot assign address 192.0.2.77: not an address of this "
                                                     "host") as e:
        check_port_free(free_port(), "192.0.2.77", "run.base_port")
    assert "in use" not in str(e.value) and "placement.hosts" in str(e.value)


def test_secret_keys_are_written_for_their_owner_only(tmp_path):
    assert keys_main([str(tmp_path / "keys"), "sim", "planner"]) == 0
    for host in ("sim", "planner"):
        assert stat.S_IMODE((tmp_path / "keys" / f"{host}.key_secret").stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "keys" / f"{host}.key").stat().st_mode) == 0o644


def two_host_config(**run: object) -> config_mod.Config:
    cfg = config_mod.from_dict({
        "run": {"transport": "tcp", "base_port": 47000, "metrics": False, **run}, "env": {"n_agents": 4},
        "levels": [{"fan_in": 2}, {"fan_in": 2, "instruction": {"type": "box", "dim": 2}}],
        "placement": {"hosts": {"sim": "10.77.13.1", "planner": "10.77.13.2"}, "levels": {"2": "planner"}}},
        "two_hosts.toml")
    return cfg


def test_the_config_fingerprint_ignores_only_what_a_host_sets_for_itself():
    base = two_host_config()
    assert config_fingerprint(base) == config_fingerprint(two_host_config(loggers=["csv", "plot"]))
    other_keys = two_host_config()
    other_keys.placement.keys_dir = "/elsewhere/keys"
    assert config_fingerprint(base) == config_fingerprint(other_keys)
    assert config_fingerprint(base) != config_fingerprint(two_host_config(seed=1))


def test_the_handshake_refuses_a_peer_with_another_config_or_keys_and_accepts_one_without_fingerprints():
    cfg = two_host_config()
    mine = fingerprints(cfg, [b"k" * 40])
    theirs = fingerprints(two_host_config(seed=1), [b"k" * 40])
    hello = Hello.from_message(Hello("l2.0", "l1.0", 64, None, fp=theirs).to_message())
    with pytest.raises(HandshakeError, match="config fingerprint") as e:
        check_hello(hello, "l1.0", 64, Box((2,), -1.0, 1.0), fp=mine)
    assert e.value.field == "fp"
    other_keys = Welcome.from_message(Welcome("l1.0", 64, Box((4,)), Box((2,)), fp=fingerprints(cfg, [b"x" * 40]))
                                      .to_message())
    with pytest.raises(HandshakeError, match="keys fingerprint"):
        check_welcome(other_keys, "l2.0", "l1.0", 64, None, fp=mine)
    check_hello(Hello.from_message(Hello("l2.0", "l1.0", 64, None, fp=mine).to_message()), "l1.0", 64,
                Box((2,), -1.0, 1.0), fp=mine)
    old_peer = Hello("l2.0", "l1.0", 64, None, caps=["ts"]).to_message()  # no capability fp: nothing to compare
    assert "fp" not in old_peer.meta
    check_hello(Hello.from_message(old_peer), "l1.0", 64, Box((2,), -1.0, 1.0), fp=mine)
    check_run = Hello.from_message(Hello("l2.0", "l1.0", 64, None, fp=fingerprints(cfg, [], "check")).to_message())
    with pytest.raises(HandshakeError, match="purpose"):  # a --check never joins a run
        check_hello(check_run, "l1.0", 64, Box((2,), -1.0, 1.0), fp=fingerprints(cfg, []))


def test_where_names_the_host_and_the_address_of_the_link():
    cfg = two_host_config()
    plan = build_plan(cfg)
    assign_endpoints(plan, cfg, [47000 + i for i in range(6)])
    assert where(cfg, plan, "l2.0", "l1.0") == "l2.0 on planner (10.77.13.2), which dials 10.77.13.1:47004"
    assert where(cfg, plan, "l1.1", "l2.0") == "l1.1 on sim (10.77.13.1:47005)"


def test_a_host_without_the_env_shows_the_env_steps_its_agents_see():
    progress = Progress(total_env_steps=3200)
    progress.take([{"name": "l2.0", "type": "episodes", "level": 2, "env_steps": 800, "returns": [-1.0]}])
    assert progress.env_steps == 800 and "env steps 800/3,200" in progress.fields()
    progress.take([{"name": "env", "type": "status", "env_steps": 900, "env_steps_per_s": 10.0}])
    progress.take([{"name": "l2.0", "type": "update", "level": 2, "env_steps": 1600}])
    assert progress.env_steps == 900  # the env's own count wins where it is seen


def test_the_summary_of_a_host_without_the_env_counts_the_env_steps_its_agents_saw(tmp_path):
    import json

    from tag_actors.summary import summarize

    (tmp_path / "events").mkdir()
    records = [{"name": "l2.0", "type": "episodes", "level": 2, "tick": t, "env_steps": 8 * t, "returns": [-1.0],
                "lengths": [t], "time": 1.0 + t} for t in (50, 100)]
    (tmp_path / "events" / "l2.0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert summarize(tmp_path, wall_s=2.0).env_steps == 800
