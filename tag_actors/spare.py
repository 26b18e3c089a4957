"""A warm spare: a process that has already imported what a run's processes need (torch, the env library, every
level's agent code) and waits to be told which process of the run to become.

Restarting a process costs mostly its imports (``import torch`` alone takes seconds on a loaded machine), so the
launcher keeps one spare per run when a restart policy is 'always' (Erlang's supervisors restart a process from
a loaded module for the same reason). ``python -m tag_actors.actor RUN_DIR --spare`` preloads, then reads one line
``NAME RESTARTS`` on stdin, sends its output to ``logs/NAME.log`` and runs as NAME (``actor.main``). End of input
before a name: it exits quietly (the run ended without needing it).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import select
import sys
from pathlib import Path

log = logging.getLogger("tag_actors.spare")
SPARE_ARG = "--spare"
SPARE_DELAY_ENV = "TAG_ACTORS_SPARE_DELAY_S"


def preload(run_dir: Path) -> None:
    """Import what any process of this run imports before its handshakes; a module that fails to import here is
    left for the process to report as it always does."""
    from tag_actors import config as config_mod
    from tag_actors.agents import agent_class

    raw = json.loads((run_dir / "config.json").read_text())
    cfg = config_mod.from_dict(raw["config"], raw.get("source", str(run_dir / "config.json")))
    modules = ["tag_actors.actor", "tag_actors.recorder", "tag_actors.level_env"]
    if cfg.env.kind == "vmas":
        modules.append("tag_actors.envs.vmas_env")
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - the real process reports it, with its name
            log.warning("spare: could not preload %s: %s", module, e)
    for level in cfg.levels:
        try:
            agent_class(level.agent)
        except Exception as e:  # noqa: BLE001
            log.warning("spare: could not preload agent %r: %s", level.agent, e)
    if "torch" in sys.modules:
        # torch's optimizers import torch._dynamo on first construction: seconds, measured as most of a restarted
        # learner's start once torch itself is loaded
        torch = sys.modules["torch"]
        torch.optim.Adam(torch.nn.Linear(1, 1).parameters())


def become(run_dir: Path) -> int:
    """Preload, wait for a name, then run as that process (its log, its restart count). A spare started right
    after a restart first waits ``SPARE_DELAY_ENV`` seconds (unless a name comes sooner): its imports would
    otherwise take CPU from the process that has just been restarted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s spare %(levelname)s %(message)s")
    delay = float(os.environ.get(SPARE_DELAY_ENV) or 0)
    if delay > 0:
        select.select([sys.stdin], [], [], delay)
    preload(run_dir)
    line = sys.stdin.readline().split()
    if len(line) != 2:
        return 0
    name, restarts = line
    from tag_actors.runlog import file_name
    from tag_actors.supervisor import RESTARTS_ENV

    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(run_dir / "logs" / f"{file_name(name)}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ[RESTARTS_ENV] = restarts
    for handler in logging.root.handlers[:]:
        logging.root.removeHandler(handler)
    from tag_actors.actor import main

    return main([str(run_dir), name])
