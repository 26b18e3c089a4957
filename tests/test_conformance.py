"""The conformance suite (``python -m tag_actors.conformance``) against our own env and agent processes and the two
reference agents outside the package (examples/), in both roles; and against a broken peer, which it must fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import msgpack
import pytest
import zmq

from tag_actors import config
from tag_actors.launch import prepare_run

ROOT = Path(__file__).resolve().parent.parent
NODE_AGENT = ROOT / "examples" / "node_agent"
BOX2 = '{"type": "box", "shape": [2], "low": -1.0, "high": 1.0}'


class Procs:
    """Processes a test starts; all killed and reaped at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, cmd: list[str], **kw) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                **kw)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
        assert all(p.poll() is not None for p in self.procs)


@pytest.fixture
def procs():
    ps = Procs()
    yield ps
    ps.close()


def suite(procs: Procs, role: str, links: dict[str, str], *args: str) -> tuple[int, str]:
    proc = procs.start([sys.executable, "-m", "tag_actors.conformance", role,
                        *(f"{n}={e}" for n, e in links.items()), "--timeout", "30", *args])
    out, _ = proc.communicate(timeout=180)
    return proc.returncode, out


def wiring(tmp_path: Path, levels: list[dict], n_agents: int) -> dict:
    cfg = config.from_dict({
        "run": {"metrics": False, "startup_timeout_s": 60.0, "total_env_steps": 10**6},
        "env": {"kind": "vmas", "scenario": "balance", "num_envs": 4, "n_agents": n_agents, "max_steps": 5,
                "kwargs": {"n_agents": n_agents}},
        "levels": levels,
    })
    run_dir = tmp_path / "run"
    return {"run_dir": run_dir, **prepare_run(cfg, run_dir)}


def actor(procs: Procs, w: dict, name: str) -> subprocess.Popen:
    return procs.start([sys.executable, "-m", "tag_actors.actor", str(w["run_dir"]), name])


def clauses(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(("PASS", "FAIL"))]


def assert_passed(rc: int, out: str, at_least: int) -> None:
    rows = clauses(out)
    assert rc == 0 and not [r for r in rows if r.startswith("FAIL")], out
    assert len(rows) >= at_least, out


def test_our_env_process_conforms_as_a_child(procs, tmp_path):
    w = wiring(tmp_path, [{"agent": "random", "fan_in": 4}], 4)
    env = actor(procs, w, "env")
    rc, out = suite(procs, "child", {f"env/{i}": w["endpoints"][f"env/{i}"] for i in range(4)}, "--parent", "l1.0",
                    "--num-envs", "4", "--expects-period")
    assert_passed(rc, out, 11)
    assert "§8.3" in out and "§11" in out and "every copy ended" in out
    assert env.wait(30) == 0


def test_our_async_env_process_conforms_as_a_child(procs, tmp_path):
    """levels.0.mode = 'async': the env waits for the first DOWN only and never again (§9.3)."""
    w = wiring(tmp_path, [{"agent": "random", "fan_in": 2, "mode": "async"}], 2)
    env = actor(procs, w, "env")
    rc, out = suite(procs, "child", {f"env/{i}": w["endpoints"][f"env/{i}"] for i in range(2)}, "--parent", "l1.0",
                    "--num-envs", "4", "--expects-period", "--mode", "async")
    assert_passed(rc, out, 11)
    assert "(period 1, async)" in out
    assert env.wait(30) == 0


def test_our_agent_process_conforms_as_a_parent(procs, tmp_path):
    w = wiring(tmp_path, [{"agent": "random", "fan_in": 2},
                          {"agent": "random", "fan_in": 2, "every": 2, "instruction": {"type": "box", "dim": 2}}], 4)
    agent = actor(procs, w, "l2.0")
    rc, out = suite(procs, "parent", {f"l1.{i}": w["endpoints"][f"l1.{i}"] for i in range(2)}, "--parent", "l2.0",
                    "--num-envs", "4", "--instruction", BOX2)
    assert_passed(rc, out, 4)
    assert "period 2, lockstep" in out
    assert agent.wait(30) == 0


@pytest.mark.parametrize("fault", ["version", "num_envs", "schema", "space"])
def test_our_agent_rejects_a_faulty_welcome(procs, tmp_path, fault):
    w = wiring(tmp_path, [{"agent": "random", "fan_in": 2},
                          {"agent": "random", "fan_in": 2, "every": 2, "instruction": {"type": "box", "dim": 2}}], 4)
    agent = actor(procs, w, "l2.0")
    rc, out = suite(procs, "parent", {f"l1.{i}": w["endpoints"][f"l1.{i}"] for i in range(2)}, "--parent", "l2.0",
                    "--num-envs", "4", "--instruction", BOX2, "--fault", fault)
    assert_passed(rc, out, 2)
    log, _ = agent.communicate(timeout=30)
    assert agent.returncode == 1 and ("HandshakeError" in log or "VersionMismatch" in log)


def agent_cmd(kind: str) -> list[str]:
    if kind == "python":
        return [sys.executable, str(ROOT / "examples" / "foreign_agent.py")]
    node = shutil.which("node")
    assert node, "Node.js (>= 18) is needed for the Node reference agent"
    if not (NODE_AGENT / "node_modules" / "zeromq").exists():
        npm = shutil.which("npm")
        assert npm, "npm is needed to install the Node reference agent's packages"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_AGENT, check=True, capture_output=True,
                       timeout=600)
    return [node, str(NODE_AGENT / "agent.mjs")]


def foreign_as_child(procs: Procs, tmp_path: Path, kind: str) -> None:
    """The reference agent as l1.0 between our env (below) and the suite (its parent, every 2 ticks)."""
    w = wiring(tmp_path, [{"agent": "random", "fan_in": 2},
                          {"agent": "random", "every": 2, "instruction": {"type": "box", "dim": 2}}], 2)
    ep = w["endpoints"]
    env = actor(procs, w, "env")
    agent = procs.start([*agent_cmd(kind), "--name", "l1.0", "--num-envs", "4", "--child", f"env/0={ep['env/0']}",
                         "--child", f"env/1={ep['env/1']}", "--bind", ep["l1.0"], "--parent", "l2.0"])
    rc, out = suite(procs, "child", {"l1.0": ep["l1.0"]}, "--parent", "l2.0", "--num-envs", "4", "--period", "2",
                    "--instruction", BOX2)
    assert_passed(rc, out, 10)
    assert agent.wait(30) == 0 and env.wait(30) == 0


def foreign_as_parent(procs: Procs, tmp_path: Path, kind: str) -> None:
    ep = {n: f"ipc://{tmp_path}/{n.replace('/', '_')}" for n in ("env/0", "env/1")}
    agent = procs.start([*agent_cmd(kind), "--name", "l1.0", "--num-envs", "4", "--period", "2",
                         *(a for n, e in ep.items() for a in ("--child", f"{n}={e}"))])
    rc, out = suite(procs, "parent", ep, "--parent", "l1.0", "--num-envs", "4")
    assert_passed(rc, out, 4)
    assert agent.wait(30) == 0


def test_python_reference_agent_conforms_as_a_child(procs, tmp_path):
    foreign_as_child(procs, tmp_path, "python")


def test_python_reference_agent_conforms_as_a_parent(procs, tmp_path):
    foreign_as_parent(procs, tmp_path, "python")


@pytest.mark.slow
def test_node_reference_agent_conforms_as_a_child(procs, tmp_path):
    foreign_as_child(procs, tmp_path, "node")


@pytest.mark.slow
def test_node_reference_agent_conforms_as_a_parent(procs, tmp_path):
    foreign_as_parent(procs, tmp_path, "node")


def test_the_python_reference_agent_imports_only_pyzmq_msgpack_numpy():
    import ast

    tree = ast.parse((ROOT / "examples" / "foreign_agent.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "argparse", "sys", "time", "msgpack", "numpy", "zmq"}, imported


def test_the_suite_fails_a_child_that_welcomes_everything(procs, tmp_path, zctx):
    """A child that answers every HELLO (any version, any batch) with WELCOME must fail the refusal clauses."""
    endpoint = f"ipc://{tmp_path}/sloppy"
    sock = zctx.socket(zmq.ROUTER)
    sock.bind(endpoint)
    done = threading.Event()

    def sloppy() -> None:
        while not done.is_set():
            if not sock.poll(100):
                continue
            ident, header, *_ = sock.recv_multipart()
            try:
                h = msgpack.unpackb(header)
            except ValueError:
                continue
            if isinstance(h, dict) and h.get("k") == 1:
                meta = {"schema": "x", "caps": [], "num_envs": 4, "info": {},
                        "message_space": {"type": "box", "shape": [3], "low": 0, "high": 1},
                        "instruction_space": {"type": "discrete", "n": 3}}
                sock.send_multipart([ident, msgpack.packb({"k": 2, "v": 2, "s": "c", "q": 0, "t": 0, "b": 4, "a": [],
                                                           "m": meta})])

    thread = threading.Thread(target=sloppy, daemon=True)
    thread.start()
    try:
        rc, out = suite(procs, "child", {"c": endpoint}, "--parent", "p", "--num-envs", "4", "--timeout", "3")
    finally:
        done.set()
        thread.join(5)
    rows = clauses(out)
    assert rc == 1 and rows[0].startswith("FAIL  §8.3") and "expected REJECT" in rows[0], out
    assert any(r.startswith("FAIL  §8.1") and "schema" in r for r in rows), out
