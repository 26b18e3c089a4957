"""Two hosts for real: network namespaces joined by a veth pair (made and removed by the test). Levels 0-1 run
on host a, levels 2-3 on host b, over TCP with CURVE; the run matches a one-process run of the same seed, and a
host presenting an unknown key is refused."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import get_free_port

from tag_actors.runlog import read_events

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # two network namespaces and two launchers per test


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture
def two_hosts():
    tag = uuid.uuid4().hex[:6]
    a, b = f"taga{tag}", f"tagb{tag}"
    subnet = 200 + int(tag[:2], 16) % 50
    addr_a, addr_b = f"10.231.{subnet}.1", f"10.231.{subnet}.2"
    try:
        sh("ip", "netns", "add", a)
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        pytest.skip(f"network namespaces are not available here (ip netns add failed: {e})")
    try:
        sh("ip", "netns", "add", b)
        sh("ip", "link", "add", f"va{tag}", "type", "veth", "peer", "name", f"vb{tag}")
        sh("ip", "link", "set", f"va{tag}", "netns", a)
        sh("ip", "link", "set", f"vb{tag}", "netns", b)
        for ns, dev, addr in ((a, f"va{tag}", addr_a), (b, f"vb{tag}", addr_b)):
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield {"a": (a, addr_a), "b": (b, addr_b)}
        left = wait_namespaces_empty((a, b), 15.0)
        assert not left, f"processes left in the host namespaces after the test: {left}"
    finally:
        for ns in (a, b):
            subprocess.run(f"ip netns pids {ns} | xargs -r kill -9", shell=True, capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def wait_namespaces_empty(namespaces: tuple[str, ...], timeout_s: float) -> dict[str, str]:
    """Namespace -> the pids still running in it, after waiting up to ``timeout_s`` for them to exit."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = {ns: out for ns in namespaces
                if (out := subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.strip())}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def config(tmp_path: Path, addr_a: str, addr_b: str, keys: Path, startup_timeout_s: int = 60) -> Path:
    """balance_random over TCP with CURVE, levels 0-1 on host a and 2-3 on b; every host computes the same plan,
    so the ports are fixed in the config (a free port here; each namespace has a network stack of its own)."""
    path = tmp_path / "two_hosts.toml"
    base = (ROOT / "configs" / "balance_random.toml").read_text()
    base = base.replace("total_env_steps = 20000", "total_env_steps = 3200").replace("num_envs = 64", "num_envs = 8")
    base = base.replace("[run]\n", f'[run]\ntransport = "tcp"\nbase_port = {get_free_port()}\nstartup_timeout_s = {startup_timeout_s}\n')
    base += f"""
[placement]
hosts = {{ a = "{addr_a}", b = "{addr_b}" }}
levels = {{ "0" = "a", "1" = "a", "2" = "b", "3" = "b" }}
curve = true
keys_dir = "{keys}"
"""
    path.write_text(base)
    return path


def launch_in(ns: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "tag_actors.launch", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))


def finish(*procs: subprocess.Popen, timeout: float = 120) -> list[tuple[int, str]]:
    out = []
    for p in procs:
        try:
            o, e = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            o, e = p.communicate()
        out.append((p.returncode, o + e))
    return out


def test_two_hosts_with_curve_match_one_process(two_hosts, tmp_path):
    (ns_a, addr_a), (ns_b, addr_b) = two_hosts["a"], two_hosts["b"]
    keys = tmp_path / "keys"
    sh(sys.executable, "-m", "tag_actors.keys", str(keys), "a", "b")
    cfg = config(tmp_path, addr_a, addr_b, keys)
    pa = launch_in(ns_a, str(cfg), "--host", "a", "--quiet", "--run-dir", str(tmp_path / "a"))
    pb = launch_in(ns_b, str(cfg), "--host", "b", "--quiet", "--run-dir", str(tmp_path / "b"))
    (ra, out_a), (rb, out_b) = finish(pa, pb)
    assert ra == 0 and rb == 0, out_a + out_b
    ends = {e["name"]: e for d in ("a", "b") for e in read_events(tmp_path / d) if e["type"] == "end"}
    assert set(ends) == {"env", "l1.0", "l1.1", "l1.2", "l1.3", "l2.0", "l2.1", "l3.0"}
    assert {e["name"] for e in read_events(tmp_path / "b")} == {"l2.0", "l2.1", "l3.0"}
    serial = subprocess.run([sys.executable, "-m", "tag_actors.launch", str(cfg), "--serial", "--quiet",
                             "--run-dir", str(tmp_path / "serial"), "--set", "placement={}"], cwd=ROOT,
                            capture_output=True, text=True)
    assert serial.returncode == 0, serial.stderr
    for e in read_events(tmp_path / "serial"):
        if e["type"] == "end" and e["name"] != "env":
            assert e["action_digest"] == ends[e["name"]]["action_digest"], e["name"]


def test_unknown_key_is_refused(two_hosts, tmp_path):
    (ns_a, addr_a), (ns_b, addr_b) = two_hosts["a"], two_hosts["b"]
    keys, rogue = tmp_path / "keys", tmp_path / "rogue"
    sh(sys.executable, "-m", "tag_actors.keys", str(keys), "a", "b")
    sh(sys.executable, "-m", "tag_actors.keys", str(rogue), "b")  # host b's processes present a key nobody knows
    (rogue / "a.key").write_bytes((keys / "a.key").read_bytes())  # ... and know a's real public key
    cfg_a = config(tmp_path, addr_a, addr_b, keys, startup_timeout_s=8)
    cfg_b = tmp_path / "rogue.toml"
    cfg_b.write_text(cfg_a.read_text().replace(str(keys), str(rogue)))
    pa = launch_in(ns_a, str(cfg_a), "--host", "a", "--quiet", "--run-dir", str(tmp_path / "a"))
    pb = launch_in(ns_b, str(cfg_b), "--host", "b", "--quiet", "--run-dir", str(tmp_path / "b"))
    (ra, out_a), (rb, out_b) = finish(pa, pb, timeout=90)
    assert ra == 1 and rb == 1
    assert "waited" in out_a and "HELLO" in out_a  # host a never heard a valid parent
    # the refused handshake was logged on host a: by the level-1 processes that a rogue parent dialled before it
    # gave up (a parent exits at its first refusal, so which of its children saw one is a race)
    logs_a = {p.name: p.read_text() for p in (tmp_path / "a" / "logs").glob("l1.*.log")}
    assert any("CURVE" in text for text in logs_a.values()), logs_a
    assert "CURVE" in out_b  # and the dialling host said why at once
