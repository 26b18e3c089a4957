"""The tutorials run (every ``bash`` and ``python`` block, in order, with tiny budgets) and the API reference
builds with a docstring on every public name."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TUTORIALS = ["01_concepts.md", "02_quickstart.md", "03_hierarchy.md", "04_your_own_agents.md"]
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.S | re.M)
TINY = "--quiet --set run.total_env_steps=3000"


def shrink(code: str) -> str:
    """Every launcher run of the tutorial at a tiny budget (the tutorial's own numbers are for people)."""
    code = re.sub(r"(python -m tag_actors\.launch \S+\.toml)", rf"\1 {TINY}", code)
    return re.sub(r"run\.total_env_steps=\d+", "run.total_env_steps=3000", code)


def blocks(tutorial: str) -> list[tuple[str, str]]:
    return [(kind, shrink(code)) for kind, code in BLOCK.findall((DOCS / tutorial).read_text())]


def test_every_tutorial_has_runnable_blocks():
    for tutorial in TUTORIALS:
        assert blocks(tutorial), f"{tutorial} has no bash or python block"


@pytest.mark.slow
@pytest.mark.parametrize("tutorial", TUTORIALS)
def test_tutorial_runs(tutorial, tmp_path, launch):
    """Run the tutorial's blocks in a scratch folder that sees configs/ and docs/ (runs/ is its own)."""
    for name in ("configs", "docs"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "runs").mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    for i, (kind, code) in enumerate(blocks(tutorial)):
        launch.run_dirs.extend((tmp_path / "runs" / d).resolve() for d in ("tutorial2", "tutorial3", "tutorial4"))
        argv = ["bash", "-e", "-c", code] if kind == "bash" else [sys.executable, "-c", code]
        proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        assert proc.returncode == 0, f"{tutorial} block {i} ({kind}) failed:\n{code}\n--- output ---\n{out}"


PUBLIC_MODULES = ["tag_actors", "tag_actors.agents", "tag_actors.agents.base", "tag_actors.agents.nets",
                  "tag_actors.agents.settings", "tag_actors.agents.ppo", "tag_actors.agents.mappo",
                  "tag_actors.agents.learner", "tag_actors.envs", "tag_actors.envs.base", "tag_actors.config",
                  "tag_actors.checks", "tag_actors.pz_level", "tag_actors.spaces"]


def public_names(module) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, v in vars(module).items() if not n.startswith("_") and getattr(v, "__module__", None)
                 == module.__name__ and (inspect.isclass(v) or inspect.isfunction(v))]
    return names


def test_every_public_name_of_the_api_reference_has_a_docstring():
    missing = []
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        if not inspect.getdoc(module):
            missing.append(name)
        for attr in public_names(module):
            obj = getattr(module, attr)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and not inspect.getdoc(obj):
                missing.append(f"{name}.{attr}")
            if inspect.isclass(obj) and obj.__module__ == name:
                for meth_name, meth in vars(obj).items():
                    if not meth_name.startswith("_") and inspect.isfunction(meth) and not inspect.getdoc(meth):
                        missing.append(f"{name}.{attr}.{meth_name}")
    assert not missing, f"public names without a docstring: {missing}"


def test_api_reference_builds(tmp_path):
    pytest.importorskip("pdoc", reason="pdoc is in the dev extra: pip install -e .[dev]")
    out = subprocess.run(["bash", str(ROOT / "scripts" / "docs.sh"), str(tmp_path / "api")], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "api" / "tag_actors" / "checks.html").exists()
    assert "check_env" in (tmp_path / "api" / "tag_actors" / "checks.html").read_text()
