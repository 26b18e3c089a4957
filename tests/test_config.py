"""Config errors name the file, the key and what was expected; overrides work on nested keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from tag_actors.config import ConfigError, load

GOOD = """
[run]
seed = 1

[env]
kind = "vmas"
scenario = "balance"
n_agents = 4

[[levels]]
agent = "random"

[[levels]]
agent = "random"
fan_in = 2
instruction = { type = "box", dim = 2 }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text(text)
    return path


def test_good_config_and_overrides(tmp_path):
    cfg = load(write(tmp_path, GOOD), ["run.seed=7", "l2.every=3", "env.kwargs.n_agents=4", "l1.agent=ppo",
                                       "l1.params.lr=0.001", "run.name=hello world"])
    assert cfg.run.seed == 7 and cfg.levels[1].every == 3 and cfg.env.kwargs == {"n_agents": 4}
    assert cfg.levels[0].params == {"lr": 0.001} and cfg.run.name == "hello world"


@pytest.mark.parametrize(
    "text,overrides,message",
    [
        ("[run\nseed=1", [], "invalid TOML"),
        (GOOD.replace("seed = 1", "sede = 1"), [], "run.sede: unknown key (valid keys here: name, seed"),
        (GOOD.replace("seed = 1", 'seed = "one"'), [], "run.seed: input should be a valid integer, got 'one'"),
        (GOOD.replace("n_agents = 4", "n_agents = 3"), [], "l2.fan_in = 2 does not divide the 3 agents at level 1"),
        (GOOD, ["l1.fan_in=3"], "l1.fan_in = 3 does not divide the 4 env agents"),
        (GOOD, ["l2.agent=genius"], "l2.agent: unknown agent type 'genius'"),
        (GOOD, ["l2.agent=no_such_module:Agent"], "cannot import module 'no_such_module'"),
        (GOOD, ["l2.agent=tag_actors.spaces:Box"], "not a subclass of tag_actors.agents.Agent"),
        (GOOD, ["l2.agent=ppo", "l2.params.lrr=1e-4"], "l2.params.lrr: unknown parameter 'lrr' (allowed: lr, "),
        (GOOD, ["l2.agent=ppo", "l2.params.lr=-1"], "l2.params.lr: Input should be greater than 0, got -1"),
        (GOOD, ["l1.params.delay_s=1"], "l1.params.delay_s: unknown parameter 'delay_s' (this agent type takes no"),
        (GOOD, ["l1.every=0"], "l1.every: input should be greater than or equal to 1, got 0"),
        (GOOD, ["l2.instruction={type='vector', dim=2}"], "instruction.type: expected 'box' or 'discrete'"),
        (GOOD, ["l2.instruction={type='box', n=2}"], "instruction: unknown key 'n' for type 'box'"),
        (GOOD, ["l1.instruction={type='box', dim=2}"], "level 1 sends env actions"),
        (GOOD, ["env.kind=unity"], "env.kind: unknown env kind 'unity': expected one of gymnasium, pettingzoo, vmas"),
        (GOOD, ["run.mode=turbo"], "run.mode: input should be 'lockstep' or 'async', got 'turbo'"),
        (GOOD, ["run.learner=turbo"], "run.learner: input should be 'auto', 'inline' or 'background', got 'turbo'"),
        (GOOD, ["env.num_envs=0"], "env.num_envs: input should be greater than 0, got 0"),
        (GOOD, ["l1.message=project"], "message_dim must be > 0"),
        (GOOD, ["l1.message=autoencoder"], "l1.message_dim must be > 0 with message = 'autoencoder'"),
        (GOOD, ["l1.message=learned"], "l1.message: input should be 'identity', 'mean', 'project' or 'autoencoder', got 'learned'"),
        (GOOD, ["l5.agent=random"], "has 2 levels (l1..l2), no level 5"),
        (GOOD, ["l0.agent=random"], "has 2 levels (l1..l2), no level 0"),
        (GOOD, ["levels.1.params.lr=1e-4"], "write l2.params.lr for the table at index 1 (level 2), or l1.params.lr"),
        (GOOD, ["levels.0.agent=ppo"], "write l1.agent for level 1"),
        (GOOD, ["nonsense"], "expected key=value"),
        (GOOD + "\n[extra]\nx=1\n", [], "unknown top-level key 'extra'"),
        ("[run]\nseed=1\n", [], "'levels' must be a non-empty array"),
    ],
)
def test_errors_name_file_and_key(tmp_path, text, overrides, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load(path, overrides)
    assert message in str(e.value)
    if not any(s in message for s in ("expected key=value", "levels are addressed", "write l")):
        assert str(path) in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "nope.toml")


def test_launcher_reports_config_errors_without_traceback(launch, tmp_path):
    path = write(tmp_path, GOOD.replace("seed = 1", "sede = 1"))
    r = launch.run(str(path), "--run-dir", str(tmp_path / "run"), timeout=30)
    assert r.returncode == 2
    assert r.stderr.startswith("tag_actors: config error:") and "run.sede" in r.stderr
    assert "Traceback" not in r.stderr


def test_learner_auto_is_background_exactly_when_a_level_is_async(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(GOOD)
    assert not load(path).learns_in_background()
    assert load(path, ["run.mode=async"]).learns_in_background()
    assert load(path, ["l2.mode=async"]).learns_in_background()
    assert not load(path, ["run.mode=async", "run.learner=inline"]).learns_in_background()
    assert load(path, ["run.learner=background"]).learns_in_background()


def test_params_typo_is_refused_before_any_process_starts(launch, tmp_path):
    r = launch.run("configs/balance.toml", "--run-dir", str(tmp_path / "run"), "--set", "l2.params.lrr=1e-4",
                   timeout=30)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("tag_actors: config error: configs/balance.toml: l2.params.lrr: unknown parameter")
    assert "allowed: lr, lr_schedule" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()  # nothing was wired, no process started


def test_schema_command_prints_a_json_schema_with_every_agent_types_params(launch):
    import json

    r = launch.run("--schema", timeout=30)
    assert r.returncode == 0, r.stderr
    schema = json.loads(r.stdout)
    level = schema["properties"]["levels"]["items"]
    by_agent = {v["if"]["properties"]["agent"]["const"]: v["then"]["properties"]["params"] for v in level["allOf"]}
    assert {"random", "ppo", "mappo", "llm", "slow"} <= set(by_agent)
    assert by_agent["ppo"]["additionalProperties"] is False
    assert "Adam learning rate" in by_agent["ppo"]["properties"]["lr"]["description"]
    assert schema["properties"]["run"]["properties"]["mode"]["enum"] == ["lockstep", "async"]


def test_schema_accepts_the_shipped_configs():
    """Every config in configs/ loads (its params fit their schemas)."""
    for path in sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.toml")):
        load(path)
