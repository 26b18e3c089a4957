"""The Ray backend on a real 3-node ``ray.cluster_utils.Cluster`` on this machine (slow tier): one level per node,
the same episodes as the plain launcher for the same seed, a removed node named and handled by the restart policy,
and Ctrl-C leaving no actor and no process. The cluster starts once for the module (~15-25 s on 2 cores) and its
teardown proves that no raylet, GCS or worker process of it is left."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import env_steps, live_processes, wait_for

ray = pytest.importorskip("ray", reason="the Ray backend's tests need Ray: pip install 'tag_actors[ray]'")
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # a cluster start and two runs on 2 shared cores

SMALL = ["--set", "env.num_envs=8", "--set", "run.total_env_steps=1600", "--set", "run.metrics=false"]
ONE_LEVEL_PER_NODE = ["--set", 'placement.ray.levels.0="label:tag_zone=a"', "--set",
                      'placement.ray.levels.1="resource:tag_a"', "--set", 'placement.ray.levels.2="resource:tag_b"',
                      "--set", 'placement.ray.levels.3="resource:tag_c"']


def ray_processes() -> dict[int, str]:
    """pid -> command line of every live Ray process of this machine (raylet, GCS, workers, agents)."""
    return {pid: cmd for pid, cmd in live_processes().items()
            if "ray::" in cmd or "raylet" in cmd or "gcs_server" in cmd or "default_worker.py" in cmd
            or "/ray/" in cmd and "agent" in cmd}


def raylet_of(pid: int) -> int | None:
    """The raylet a Ray worker or agent belongs to (RAY_RAYLET_PID in its environment)."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((int(v.split(b"=", 1)[1]) for v in env if v.startswith(b"RAY_RAYLET_PID=")), None)


def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def of_cluster(pid: int, cmd: str, cluster: Cluster) -> bool:
    """Whether a Ray process belongs to ``cluster`` (others may run Ray on this machine): its session folder in
    its command line (raylet, GCS), or one of the cluster's raylets as its parent in its environment (workers and
    agents, whose process titles replace their command lines)."""
    return cluster.session_dir in cmd or raylet_of(pid) in cluster.raylet_pids


def tag_processes(cluster: Cluster) -> dict[int, str]:
    """The workers of this cluster's tag_actors actors (process titles ray::...TagProcess..., ...NodeControl...)."""
    return {pid: cmd for pid, cmd in ray_processes().items()
            if ("TagProcess" in cmd or "NodeControl" in cmd) and of_cluster(pid, cmd, cluster)}


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"tag_a": 1},
                                                      "labels": {"tag_zone": "a"}, "include_dashboard": False})
    c.tag_nodes = {"tag_a": c.head_node, "tag_b": c.add_node(num_cpus=1, resources={"tag_b": 1}),
                   "tag_c": c.add_node(num_cpus=1, resources={"tag_c": 1})}
    c.wait_for_nodes()
    c.session_dir = c.head_node.get_session_dir_path()
    c.raylet_pids = {n.all_processes["raylet"][0].process.pid for n in c.tag_nodes.values()}
    try:
        yield c
    finally:
        c.shutdown()
        deadline = time.monotonic() + 30
        left: dict[int, str] = {}
        while time.monotonic() < deadline:
            left = {pid: cmd for pid, cmd in ray_processes().items() if of_cluster(pid, cmd, c)}
            if not left:
                break
            time.sleep(0.2)
        for pid in left:  # fail, but leave nothing behind for the next module
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert not left, f"Ray processes left after the cluster's shutdown: {left}"


def test_ray_alone_starts_and_stops_its_own_ray(launch, tmp_path):
    """``--ray`` with no address (the README's command): a Ray of this machine is started for the run, gives the
    run's episodes, and is gone with every one of its processes when the launcher exits."""
    run_dir = tmp_path / "run"
    proc = launch.start("balance", "--ray", "--run-dir", str(run_dir), "--quiet", *SMALL)
    raylets: set[int] = set()

    def own_raylet() -> bool:
        raylets.update(pid for pid, cmd in ray_processes().items() if "raylet" in cmd.split(" ")[0]
                       and parent_of(pid) == proc.pid)
        return bool(raylets) or proc.poll() is not None

    wait_for(own_raylet, 120, "the launcher's own raylet")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    assert raylets and (run_dir / "episodes.csv").read_text().count("\n") > 5

    def left() -> dict[int, str]:
        return {pid: cmd for pid, cmd in ray_processes().items() if pid in raylets or raylet_of(pid) in raylets}

    wait_for(lambda: not left(), 30, "the run's own Ray to stop")


def nodes_of(run_dir: Path) -> dict[str, str]:
    """process -> 'node 1a2b3c4d (IP, resources tag_x)' from the run's plan.json."""
    return json.loads((run_dir / "plan.json").read_text())["node_names"]


def test_one_level_per_node_matches_the_plain_launcher(launch, cluster, tmp_path):
    """Placed by node label and custom resource, one level per node, CURVE keys made by the driver: the same
    episodes (actions and rewards at every level) as the plain launcher with the same seed."""
    ray_dir, plain_dir = tmp_path / "ray", tmp_path / "plain"
    res = launch.run("balance", "--ray", cluster.address, "--run-dir", str(ray_dir), "--quiet", *SMALL,
                     *ONE_LEVEL_PER_NODE, "--set", "placement.curve=true", timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    nodes = nodes_of(ray_dir)
    for name, resource in (("env", "tag_a"), ("l1.0", "tag_a"), ("l1.3", "tag_a"), ("l2.0", "tag_b"),
                           ("l2.1", "tag_b"), ("l3.0", "tag_c")):
        assert f"resources {resource})" in nodes[name], nodes
    assert len({nodes["env"], nodes["l2.0"], nodes["l3.0"]}) == 3
    assert "ray (" in res.stdout and "tag_c" in res.stdout  # the placement is shown, by node
    assert not list(ray_dir.rglob("*.key_secret")), "CURVE secrets are handed over in memory, never written"
    plain = launch.run("balance", "--run-dir", str(plain_dir), "--quiet", *SMALL, timeout=240)
    assert plain.returncode == 0, plain.stderr
    ray_rows = (ray_dir / "episodes.csv").read_text().splitlines()
    assert len(ray_rows) > 1 + 4, "no episode finished"
    assert ray_rows == (plain_dir / "episodes.csv").read_text().splitlines()
    wait_for(lambda: not tag_processes(cluster), 30, "the run's Ray actors to exit")


def test_ctrl_c_leaves_no_actor_and_no_process(launch, cluster, tmp_path):
    """SIGINT to the launcher: every actor checkpoints and stops, the driver kills them, nothing is left."""
    run_dir = tmp_path / "run"
    proc = launch.start("balance", "--ray", cluster.address, "--run-dir", str(run_dir), "--quiet",
                        "--set", "env.num_envs=8", "--set", "run.total_env_steps=10000000",
                        "--set", 'placement.ray.groups.1="spread"')
    wait_for(lambda: env_steps(run_dir) > 0 or proc.poll() is not None, 180, "the first env steps")
    assert proc.poll() is None, proc.communicate()
    assert tag_processes(cluster), "the run's actors should be up"
    targets = json.loads((run_dir / "prometheus_targets.json").read_text())  # file_sd, collected by the driver
    agents = sorted(t["labels"]["agent"] for t in targets)
    assert agents == ["env", "l1.0", "l1.1", "l1.2", "l1.3", "l2.0", "l2.1", "l3.0", "launcher"], targets
    plan = json.loads((run_dir / "plan.json").read_text())
    assert all(t["targets"] == [f"{plan['hosts'][t['labels']['agent']]}:{plan['metrics_ports'][t['labels']['agent']]}"]
               for t in targets if t["labels"]["agent"] != "launcher")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err
    names = {"env", "l1.0", "l1.1", "l1.2", "l1.3", "l2.0", "l2.1", "l3.0"}
    assert {p.name.removesuffix(".json") for p in (run_dir / "checkpoints").glob("*.json")} == names, \
        "every process checkpointed on its way out"
    wait_for(lambda: not tag_processes(cluster), 30, "no Ray actor process of the run")
    ray.init(address=cluster.address, namespace="tag_actors", log_to_driver=False)
    try:
        named = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
        assert not [n for n in named if n.startswith(f"{run_dir.name}:")], named
    finally:
        ray.shutdown()


def test_removed_node_is_named_and_the_run_restarts(launch, cluster, tmp_path):
    """The node holding level 3 leaves mid-run: the fault names it, run.restart = 'always' restarts the run from
    its checkpoints with l3.0 elsewhere (no node offers its resource any more), and the run completes."""
    run_dir = tmp_path / "run"
    top = cluster.tag_nodes["tag_c"]
    proc = launch.start("balance", "--ray", cluster.address, "--run-dir", str(run_dir), "--quiet",
                        "--set", "env.num_envs=8", "--set", "run.total_env_steps=4000", "--set", "run.restart=always",
                        "--set", "run.restart_backoff_s=0", "--set", "run.checkpoint_every_s=2",
                        "--set", "run.peer_timeout_s=2", *ONE_LEVEL_PER_NODE)
    wait_for(lambda: env_steps(run_dir) >= 800 or proc.poll() is not None, 180, "the run to get going")
    assert proc.poll() is None, proc.communicate()
    node = nodes_of(run_dir)["l3.0"]
    cluster.remove_node(top, allow_graceful=False)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, out + err
    assert f"its node left the Ray cluster (or is cut off): {node}" in err, err
    assert "restarting the run from its checkpoints" in err
    assert "l3.0' restarts where Ray finds room" in err
    assert nodes_of(run_dir)["l3.0"] != node
    ends = [json.loads(line) for line in (run_dir / "events" / "env.jsonl").read_text().splitlines()]
    assert max(e.get("env_steps", 0) for e in ends if e["type"] == "end") >= 4000
