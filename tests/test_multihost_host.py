"""What a new user of ``--host`` meets, on two hosts made of network namespaces (made and removed by the
``two_hosts`` fixture): a rerun at once, ``--check`` in seconds, wrong keys reported at once on both hosts, a
host that never starts or is killed named with its host and address, and the env steps on the planner host."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_multihost
from conftest import wait_for
from test_multihost import config, sh

network_namespaces = test_multihost.two_hosts  # two hosts: network namespaces joined by a veth pair

pytestmark = pytest.mark.slow  # two network namespaces and two launchers per test


def make_keys(where: Path) -> Path:
    sh(sys.executable, "-m", "tag_actors.keys", str(where), "a", "b")
    return where


def in_ns(ns: str) -> tuple[str, ...]:
    return ("ip", "netns", "exec", ns)


def outputs(*procs: subprocess.Popen, timeout: float = 120) -> list[tuple[int, str]]:
    out = []
    for p in procs:
        o, e = p.communicate(timeout=timeout)
        out.append((p.returncode, o + e))
    return out


def time_waits(ns: str, first: int, last: int) -> int:
    """Connections in TIME_WAIT on the ports ``first`` .. ``last`` of namespace ``ns``."""
    out = subprocess.run([*in_ns(ns), "ss", "-Htan", "state", "time-wait"], capture_output=True, text=True).stdout
    ports = [int(m) for m in re.findall(r":(\d+)\s", out)]
    return sum(first <= p <= last for p in ports)


def test_check_then_run_then_rerun_at_once(network_namespaces, tmp_path, launch):
    (ns_a, addr_a), (ns_b, addr_b) = network_namespaces["a"], network_namespaces["b"]
    cfg = config(tmp_path, addr_a, addr_b, make_keys(tmp_path / "keys"))
    base = int(re.search(r"base_port = (\d+)", cfg.read_text()).group(1))
    started = time.monotonic()
    checks = [launch.start(str(cfg), "--host", h, "--check", prefix=in_ns(ns)) for h, ns in (("a", ns_a), ("b", ns_b))]
    (ca, out_ca), (cb, out_cb) = outputs(*checks, timeout=60)
    assert ca == 0 and cb == 0, out_ca + out_cb
    assert out_ca.count("ok: reachable, keys match, configs agree") == 4 and "all links ok" in out_cb
    assert time.monotonic() - started < 30  # seconds, never the 120 s of a run's start-up timeout
    for attempt in ("first", "rerun"):
        if attempt == "rerun":  # what a rerun within a minute used to be refused for
            assert time_waits(ns_a, base, base + 7) > 0
        run_a = launch.start(str(cfg), "--host", "a", "--quiet", "--run-dir", str(tmp_path / f"a-{attempt}"),
                             prefix=in_ns(ns_a))
        run_b = launch.start(str(cfg), "--host", "b", "--run-dir", str(tmp_path / f"b-{attempt}"),
                             prefix=in_ns(ns_b))
        (ra, out_a), (rb, out_b) = outputs(run_a, run_b)
        assert ra == 0 and rb == 0, f"{attempt}: {out_a}{out_b}"
        steps = [int(s.replace(",", "")) for s in re.findall(r"env steps ([\d,]+)/", out_b)]
        assert max(steps) > 0, out_b  # host b runs no env, and still shows the env's progress
        assert (tmp_path / f"a-{attempt}" / "episodes.csv").read_text().count("env:agent_") > 0


def test_check_names_other_keys_and_other_configs_in_seconds(network_namespaces, tmp_path, launch):
    (ns_a, addr_a), (ns_b, addr_b) = network_namespaces["a"], network_namespaces["b"]
    cfg = config(tmp_path, addr_a, addr_b, make_keys(tmp_path / "keys"))
    remade = tmp_path / "remade.toml"  # keys made again on host b alone
    remade.write_text(cfg.read_text().replace(str(tmp_path / "keys"), str(make_keys(tmp_path / "keys_b"))))
    started = time.monotonic()
    checks = [launch.start(str(c), "--host", h, "--check", prefix=in_ns(ns))
              for c, h, ns in ((cfg, "a", ns_a), (remade, "b", ns_b))]
    (ca, out_a), (cb, out_b) = outputs(*checks, timeout=60)
    assert ca == 1 and cb == 1
    assert "CURVE" in out_a and "CURVE" in out_b and "make keys once, on one host" in out_b.lower()
    assert time.monotonic() - started < 20
    checks = [launch.start(str(cfg), "--host", h, "--check", *extra, prefix=in_ns(ns))
              for h, ns, extra in (("a", ns_a, ()), ("b", ns_b, ("--set", "run.seed=7")))]
    (ca, out_a), (cb, out_b) = outputs(*checks, timeout=60)
    assert ca == 1 and cb == 1
    assert "config fingerprint" in out_a + out_b and "FAILED" in out_a and "FAILED" in out_b


def test_wrong_keys_are_reported_at_once_on_both_hosts(network_namespaces, tmp_path, launch):
    (ns_a, addr_a), (ns_b, addr_b) = network_namespaces["a"], network_namespaces["b"]
    cfg = config(tmp_path, addr_a, addr_b, make_keys(tmp_path / "keys"), startup_timeout_s=20)
    remade = tmp_path / "remade.toml"
    remade.write_text(cfg.read_text().replace(str(tmp_path / "keys"), str(make_keys(tmp_path / "keys_b"))))
    run_a = launch.start(str(cfg), "--host", "a", "--quiet", "--run-dir", str(tmp_path / "a"), prefix=in_ns(ns_a))
    started = time.monotonic()
    run_b = launch.start(str(remade), "--host", "b", "--quiet", "--run-dir", str(tmp_path / "b"), prefix=in_ns(ns_b))
    (rb, out_b), = outputs(run_b)
    b_took = time.monotonic() - started
    (ra, out_a), = outputs(run_a)
    assert rb == 1 and "CurveRefused" in out_b and f"on a ({addr_a}:" in out_b
    assert b_took < 15, f"host b took {b_took:.0f}s to name the keys (its start-up timeout is 20 s)"
    # host a's processes listen: they say at once what failed (a stranger must not stop a run, so they wait on)
    assert ra == 1 and "encrypted to another public key than host 'a'" in out_a
    assert out_a.index("CURVE") < out_a.index("waited 20s")


def test_a_host_that_never_starts_is_named_with_its_address(network_namespaces, tmp_path, launch):
    (ns_a, addr_a), (_, addr_b) = network_namespaces["a"], network_namespaces["b"]
    cfg = config(tmp_path, addr_a, addr_b, make_keys(tmp_path / "keys"), startup_timeout_s=10)
    run_a = launch.start(str(cfg), "--host", "a", "--quiet", "--run-dir", str(tmp_path / "a"), prefix=in_ns(ns_a))
    (ra, out_a), = outputs(run_a)
    assert ra == 1
    assert re.search(rf"waiting for l2\.\d on b \({addr_b}\), which dials {addr_a}:\d+( \(and \d+ more of its links\))?, \d+/10 s", out_a), out_a
    assert re.search(rf"process 'l2\.\d' failed \(never answered on host 'b' \({addr_b}\)", out_a), out_a


def test_a_killed_host_is_named_as_the_host(network_namespaces, tmp_path, launch):
    (ns_a, addr_a), (ns_b, addr_b) = network_namespaces["a"], network_namespaces["b"]
    cfg = config(tmp_path, addr_a, addr_b, make_keys(tmp_path / "keys"))
    longer = ("--set", "run.total_env_steps=10000000")
    run_a = launch.start(str(cfg), "--host", "a", "--quiet", "--run-dir", str(tmp_path / "a"), *longer,
                         prefix=in_ns(ns_a))
    run_b = launch.start(str(cfg), "--host", "b", "--quiet", "--run-dir", str(tmp_path / "b"), *longer,
                         prefix=in_ns(ns_b))
    wait_for(lambda: '"status"' in _read(tmp_path / "a" / "events" / "env.jsonl"), 90, "the run to tick")
    launch.kill(run_b)  # host b goes away: its launcher and every process of it
    (ra, out_a), = outputs(run_a, timeout=60)
    run_b.wait()
    assert ra == 1
    assert re.search(rf"process 'l2\.\d' failed \(lost on host 'b' \({addr_b}\)", out_a), out_a
    assert "process 'env' failed" not in out_a


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
