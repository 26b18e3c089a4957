"""Scripted policies rebuilt from ``env_info`` alone, so a level-1 agent process needs no env object.

- VMAS scenarios whose module ships a ``HeuristicPolicy`` (balance, transport, wheel, ...): wrapped as
  numpy -> numpy. torch and vmas are imported only here, when such a policy is asked for.
- simple_spread (PettingZoo ``mpe2.simple_spread_v3`` and VMAS's port ``simple_spread``): our own fixed
  assignment, agent i drives to landmark i with a PD law (numpy only).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from tag_actors.envs import EnvError

Policy = Callable[[np.ndarray], np.ndarray]

# VMAS flattens a discrete action over nvec=[3, 3] as ix * 3 + iy with 0 = stay, 1 = -u, 2 = +u per axis.
# VMAS's HeuristicPolicy classes still answer in the older 5-move layout (0 stay, 1 -x, 2 +x, 3 -y, 4 +y).
_FIVE_TO_NINE = np.array([0, 3, 6, 1, 2], dtype=np.int64)

_SPREAD_SCENARIOS = {
    ("vmas", "simple_spread"): "vmas",
    ("pettingzoo", "mpe2.simple_spread_v3"): "mpe",
    ("pettingzoo", "pettingzoo.mpe.simple_spread_v3"): "mpe",
}


def heuristic_for(env_info: dict[str, Any]) -> Policy:
    """The scripted policy for the env agent ``env_info`` describes; EnvError when there is none."""
    kind, scenario = env_info.get("kind"), env_info.get("scenario")
    layout = _SPREAD_SCENARIOS.get((kind, scenario))
    if layout is not None:
        return _spread_policy(env_info, layout)
    if kind == "vmas":
        return _vmas_policy(env_info)
    raise EnvError(
        f"no heuristic policy for {kind} scenario {scenario!r}; heuristics exist for VMAS scenarios whose module "
        "defines HeuristicPolicy (e.g. balance, transport, wheel) and for simple_spread (vmas 'simple_spread', "
        "pettingzoo 'mpe2.simple_spread_v3')"
    )


def _vmas_policy(info: dict[str, Any]) -> Policy:
    scenario = info["scenario"]
    from tag_actors.envs.vmas_env import vmas_scenarios

    module_name = vmas_scenarios().get(scenario)
    if module_name is None:
        raise EnvError(f"vmas has no scenario {scenario!r}, so no heuristic for it")
    cls = getattr(importlib.import_module(module_name), "HeuristicPolicy", None)
    if cls is None:
        raise EnvError(f"vmas scenario {scenario!r} ships no HeuristicPolicy (module {module_name})")
    if info.get("multidiscrete"):
        raise EnvError(f"vmas scenario {scenario!r}: the heuristic does not support multidiscrete_actions")
    import torch

    continuous = bool(info["continuous"])
    u_range = float(info["u_range"])
    policy = cls(continuous_action=continuous)
    nine = not continuous and list(info.get("discrete_nvec", [])) == [3, 3]

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            a = policy.compute_action(torch.from_numpy(np.array(obs, dtype=np.float32)), u_range)
        if continuous:
            return a.to(torch.float32).numpy().reshape(obs.shape[0], -1)
        a = a.to(torch.int64).numpy().reshape(obs.shape[0])
        return _FIVE_TO_NINE[a] if nine else a

    try:  # fail now, not at the first tick, if the policy needs a missing package (navigation: cvxpylayers)
        act(np.zeros((1, int(info["obs_dim"])), dtype=np.float32))
    except ImportError as e:
        raise EnvError(f"the vmas {scenario!r} heuristic needs a package that is not installed: {e}") from e
    return act


def _spread_policy(info: dict[str, Any], layout: str) -> Policy:
    """Agent i -> landmark i. Observations: VMAS ``[pos, vel, landmarks...]``, MPE ``[vel, pos, landmarks...]``."""
    m = re.search(r"(\d+)$", str(info.get("agent", "")))
    if m is None:
        raise EnvError(
            f"simple_spread heuristic: cannot read an agent index from agent name {info.get('agent')!r}"
        )
    i = int(m.group(1))
    kwargs = info.get("kwargs") or {}
    if kwargs.get("num_landmark_neighbors") is not None:
        raise EnvError(
            "simple_spread heuristic: needs every landmark in a fixed order (num_landmark_neighbors unset)"
        )
    n_landmarks = int(info.get("n_agents") or kwargs.get("N") or kwargs.get("n_agents") or 3)
    if i >= n_landmarks:
        raise EnvError(
            f"simple_spread heuristic: agent {info['agent']!r} has no landmark (only {n_landmarks})"
        )
    vel = slice(2, 4) if layout == "vmas" else slice(0, 2)
    target = slice(4 + 2 * i, 6 + 2 * i)
    continuous = bool(info.get("continuous"))
    u_range = float(info.get("u_range") or 1.0)
    vmas_nine = layout == "vmas" and not continuous
    # PD gains (tuned by hand): push toward the landmark, damp the velocity so agents stop on it.
    kp, kd, dead = (2.0, 1.0, 0.05) if layout == "vmas" else (1.0, 0.5, 0.05)

    def act(obs: np.ndarray) -> np.ndarray:
        u = kp * obs[:, target] - kd * obs[:, vel]
        if continuous and layout == "vmas":
            return np.clip(u, -u_range, u_range).astype(np.float32)
        if continuous:  # mpe Box(0, 1, (5,)): [noop, left, right, down, up], u = (right - left, up - down)
            u = np.clip(u, -1.0, 1.0)
            out = np.zeros((obs.shape[0], 5), dtype=np.float32)
            out[:, 1], out[:, 2] = np.maximum(-u[:, 0], 0), np.maximum(u[:, 0], 0)
            out[:, 3], out[:, 4] = np.maximum(-u[:, 1], 0), np.maximum(u[:, 1], 0)
            return out
        # per axis: 0 stay, 1 negative, 2 positive
        move = np.where(np.abs(u) > dead, np.where(u > 0, 2, 1), 0)
        if vmas_nine:
            return (move[:, 0] * 3 + move[:, 1]).astype(np.int64)
        # mpe Discrete(5): move along the axis with the larger push
        x_axis = np.abs(u[:, 0]) >= np.abs(u[:, 1])
        out = np.where(x_axis, move[:, 0], np.where(move[:, 1] > 0, move[:, 1] + 2, 0))
        return out.astype(np.int64)

    return act
