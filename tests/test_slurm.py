"""The Slurm recipe for real: a two-node Slurm cluster on this machine (scripts/slurm_local.sh: munged, slurmctld
and two slurmd, as root without systemd), the sbatch script launch/slurm/tag_ray.sbatch submitted to it (a Ray
head and a worker on the two nodes, then ``python -m tag_actors.launch CONFIG --ray HEAD:PORT``), the run's
episodes.csv written, and afterwards no Slurm daemon and no Ray process of the job left."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from conftest import live_processes

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "slurm_local.sh"
JOB_TIMEOUT_S = 150
pytestmark = pytest.mark.slow  # a Slurm cluster and a Ray cluster


def processes_mentioning(text: str) -> dict[int, str]:
    """pid -> command line of the live (not zombie) processes whose command line contains ``text``."""
    return {pid: cmd[:160] for pid, cmd in live_processes().items() if text in cmd}


def wait_gone(text: str, timeout_s: float) -> dict[int, str]:
    deadline = time.monotonic() + timeout_s
    while (left := processes_mentioning(text)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.fixture
def slurm_cluster(free_port):
    if shutil.which("slurmctld") is None or shutil.which("munged") is None:
        pytest.skip("Slurm is not installed here: bash scripts/setup.sh --slurm (Debian's slurm-wlm and munge)")
    if os.geteuid() != 0:
        pytest.skip("scripts/slurm_local.sh runs the Slurm daemons as root")
    state = Path(f"/tmp/tag-slurm-{uuid.uuid4().hex[:8]}")
    env = dict(os.environ, TAG_SLURM_DIR=str(state), TAG_SLURM_PORT=str(free_port()),
               TAG_SLURM_NODE_PORTS=f"{free_port()} {free_port()}")
    try:
        started = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True,
                                 timeout=90)
        assert started.returncode == 0, started.stdout + started.stderr
        again = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=90)
        assert again.returncode == 0, again.stderr  # idempotent: a running cluster is left as it is
        daemons = {p.name: int(p.read_text()) for p in state.glob("*.pid")}
        assert set(daemons) == {"munged.pid", "slurmctld.pid", "slurmd-n1.pid", "slurmd-n2.pid"}
        yield dict(env, SLURM_CONF=str(state / "slurm.conf"))
    finally:
        stopped = subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, text=True,
                                 timeout=60)
        left = wait_gone(str(state), 10.0)
        shutil.rmtree(state, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not left, f"Slurm daemons left after stop: {left}"
    assert all(not Path(f"/proc/{pid}").exists() or _zombie(pid) for pid in daemons.values()), daemons


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_the_sbatch_recipe_runs_a_ray_run_on_two_slurm_nodes(slurm_cluster, tmp_path, free_port, launch):
    env = slurm_cluster
    run_dir = tmp_path / "run"
    launch.run_dirs.append(run_dir)  # its teardown proves no actor of the run is left
    ray_tmp = f"/tmp/tr-{uuid.uuid4().hex[:8]}"  # Ray's folder for this job: short (socket paths), and ours alone
    exports = f"ALL,PYTHONPATH={ROOT},TAG_RAY_PORT={free_port()},TAG_RAY_TMPDIR={ray_tmp},TAG_RAY_WAIT_S=90"
    submitted = subprocess.run(
        ["sbatch", "--parsable", f"--output={tmp_path}/job-%j.out", f"--export={exports}",
         str(ROOT / "launch" / "slurm" / "tag_ray.sbatch"), "configs/balance_random.toml",
         "--set", "run.total_env_steps=2000", "--set", "env.num_envs=8", "--quiet", "--run-dir", str(run_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().split(";")[0]
    try:
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while subprocess.run(["squeue", "-h", "-j", job], env=env, capture_output=True, text=True).stdout.strip():
            assert time.monotonic() < deadline, f"job {job} still queued or running after {JOB_TIMEOUT_S} s"
            time.sleep(1)
    finally:
        subprocess.run(["scancel", job], env=env, capture_output=True)
    output = next(tmp_path.glob("job-*.out")).read_text()
    shown = subprocess.run(["scontrol", "show", "job", job], env=env, capture_output=True, text=True).stdout
    assert "JobState=COMPLETED" in shown and "ExitCode=0:0" in shown, shown + output[-4000:]
    assert "tag_ray: 2 Ray nodes up" in output
    rows = (run_dir / "episodes.csv").read_text().splitlines()
    assert rows[0].startswith("name,level") and any(r.startswith("l3.0,3,") for r in rows[1:]), output[-4000:]
    assert not wait_gone(ray_tmp, 15.0), f"Ray processes of job {job} left: {processes_mentioning(ray_tmp)}"
    assert not Path(ray_tmp).exists()  # the job removed its Ray folder
