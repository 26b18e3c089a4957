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
    cfg = load(write(tmp_path, GOOD), ["run.seed=7", "levels.1.every=3", "env.kwargs.n_agents=4",
                                       "levels.0.params.lr=0.001", "run.name=hello world"])
    assert cfg.run.seed == 7 and cfg.levels[1].every == 3 and cfg.env.kwargs == {"n_agents": 4}
    assert cfg.levels[0].params == {"lr": 0.001} and cfg.run.name == "hello world"


@pytest.mark.parametrize(
    "text,overrides,message",
    [
        ("[run\nseed=1", [], "invalid TOML"),
        (GOOD.replace("seed = 1", "sede = 1"), [], "unknown key run.sede (valid keys in run: name, seed"),
        (GOOD.replace("seed = 1", 'seed = "one"'), [], "run.seed: expected an integer, got str 'one'"),
        (GOOD.replace("n_agents = 4", "n_agents = 3"), [], "levels[1] (level 2).fan_in = 2 does not divide the 3 agents at level 1"),
        (GOOD, ["levels.0.fan_in=3"], "levels[0] (level 1).fan_in = 3 does not divide the 4 env agents"),
        (GOOD, ["levels.1.agent=genius"], "unknown agent type 'genius'"),
        (GOOD, ["levels.1.instruction={type='vector', dim=2}"], "instruction.type: expected 'box' or 'discrete'"),
        (GOOD, ["levels.1.instruction={type='box', n=2}"], "instruction: unknown key 'n' for type 'box'"),
        (GOOD, ["levels.0.instruction={type='box', dim=2}"], "level 1 sends env actions"),
        (GOOD, ["env.kind=unity"], "env.kind must be one of vmas, pettingzoo, gymnasium, got 'unity'"),
        (GOOD, ["run.mode=turbo"], "run.mode must be"),
        (GOOD, ["run.learner=turbo"], "run.learner must be 'auto', 'inline' or 'background', got 'turbo'"),
        (GOOD, ["env.num_envs=0"], "env.num_envs must be > 0"),
        (GOOD, ["levels.0.message=project"], "message_dim must be > 0"),
        (GOOD, ["levels.0.message=autoencoder"], "levels[0] (level 1).message_dim must be > 0 with message = 'autoencoder'"),
        (GOOD, ["levels.0.message=learned"], "message: expected identity, mean, project or autoencoder, got 'learned'"),
        (GOOD, ["levels.5.agent=random"], "levels has 2 entries, no index '5'"),
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
    if "expected key=value" not in message and "no index" not in message:
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
    assert load(path, ["levels.1.mode=async"]).learns_in_background()
    assert not load(path, ["run.mode=async", "run.learner=inline"]).learns_in_background()
    assert load(path, ["run.learner=background"]).learns_in_background()
