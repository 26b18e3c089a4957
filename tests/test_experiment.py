"""What an experimenter gets around a run: progress, one summary, loggers (csv, TensorBoard), plots, videos,
device selection, configs by name. The wheel itself: ``test_wheel_installs_and_runs`` (slow)."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tag_actors import config as config_mod
from tag_actors.config_files import find_config
from tag_actors.devices import DeviceError, check_device_spec, resolve_device
from tag_actors.loggers import LoggerError, Loggers, ScalarExtractor, check_available
from tag_actors.plot import binned, level_returns, plot_runs
from tag_actors.progress import EventFollower, Progress, ProgressDisplay
from tag_actors.summary import final_returns, summarize
from tag_actors.video import VideoError, check_video, write_video

ROOT = Path(__file__).resolve().parent.parent
SMALL = ("--set", "run.total_env_steps=1536", "--set", "env.num_envs=16", "--set", "run.log_every_s=0.3",
         "--set", "run.metrics=false")


def write_events(run_dir: Path, name: str, records: list[dict]) -> None:
    path = run_dir / "events" / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for r in records:
            f.write(json.dumps({"time": 1.0, "name": name, **r}) + "\n")


def fake_run(run_dir: Path, scale: float = 1.0) -> Path:
    """Event logs of a 1,000-step run with two env agents, one level-1 agent per env agent, one top agent."""
    write_events(run_dir, "env", [
        {"type": "started"},
        {"type": "status", "env_steps": 500, "env_steps_per_s": 250.0, "elapsed_s": 2.0},
        {"type": "episodes", "level": 0, "env_steps": 500, "returns": {"a": [1.0, 3.0], "b": [3.0, 5.0]},
         "lengths": [10, 10]},
        {"type": "episodes", "level": 0, "env_steps": 950, "returns": {"a": [10.0 * scale], "b": [20.0 * scale]},
         "lengths": [10]},
        {"type": "status", "env_steps": 1000, "env_steps_per_s": 250.0, "elapsed_s": 4.0},
        {"type": "end", "env_steps": 1000}])
    write_events(run_dir, "l1.0", [
        {"type": "episodes", "level": 1, "env_steps": 500, "returns": [1.0], "lengths": [10]},
        {"type": "update", "level": 1, "env_steps": 600, "tick": 3, "policy_loss": 0.5, "value_loss": 2.0},
        {"type": "episodes", "level": 1, "env_steps": 990, "returns": [7.0 * scale], "lengths": [10]}])
    write_events(run_dir, "l2.0", [
        {"type": "episodes", "level": 2, "env_steps": 400, "returns": [4.0], "lengths": [10]},
        {"type": "end", "agent_stats": {"calls": 5, "ok": 4, "timeout": 1}}])
    return run_dir


# -- progress and summary -------------------------------------------------------------------------------------


def test_plain_progress_prints_a_line_only_when_something_changed(tmp_path):
    run_dir = tmp_path / "run"
    out = io.StringIO()
    display = ProgressDisplay(Progress(1000), out)
    assert not display.bar  # a StringIO is no terminal
    follower = EventFollower(run_dir)
    display.show()
    display.show()
    fake_run(run_dir)
    display.progress.take(follower.poll())
    display.show()
    display.finish()  # nothing new: no second copy of the last line
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert "env steps 0/1,000" in lines[0]
    assert "env steps 1,000/1,000 (250/s)" in lines[1] and "L0 return" in lines[1] and "L2 return 4.00" in lines[1]
    assert "\r" not in out.getvalue()
    assert follower.poll() == []  # every line was read once


def test_progress_bar_redraws_one_line_on_a_terminal(tmp_path):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    progress = Progress(2000)
    display = ProgressDisplay(progress, out)
    assert display.bar
    display.show()
    progress.take(EventFollower(fake_run(tmp_path / "run")).poll())
    display.show()
    display.finish()
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert "[##########..........]  50.0%" in text


def test_follower_waits_for_a_half_written_line(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "events").mkdir(parents=True)
    path = run_dir / "events" / "env.jsonl"
    path.write_text('{"type": "started", "name": "env"}\n{"type": "sta')
    follower = EventFollower(run_dir)
    assert [e["type"] for e in follower.poll()] == ["started"]
    with path.open("a") as f:
        f.write('tus", "name": "env", "env_steps": 5, "env_steps_per_s": 1.0}\n')
    assert [e["type"] for e in follower.poll()] == ["status"]


def test_summary_reports_the_last_tenth_per_level(tmp_path):
    run_dir = fake_run(tmp_path / "run")
    s = summarize(run_dir, wall_s=5.0, outcome="completed", artifacts={"plots": "x.png"})
    assert (s.env_steps, s.steps_this_start, s.steps_per_s) == (1000, 1000, 200.0)
    assert s.final_returns[0].mean == 15.0 and s.final_returns[0].episodes == 1  # (10 + 20) / 2 agents
    assert s.final_returns[1].mean == 7.0
    assert s.final_returns[2].mean == 4.0  # no level-2 episode in the last 10%: its newest record
    text = s.text()
    assert "env steps     1,000" in text and "steps/s       200" in text and "plots" in text
    assert "env, per agent" in text and "15.000" in text


def test_summary_cli_prints_it_again(tmp_path, capsys):
    from tag_actors.summary import main

    assert main([str(fake_run(tmp_path / "run"))]) == 0
    out = capsys.readouterr().out
    assert "=== run 'run' (from its logs) ===" in out and "wall time     4.0 s" in out  # the env's own clock
    assert main([str(tmp_path)]) == 2


def test_final_returns_without_episodes_is_empty():
    assert final_returns([{"type": "status", "name": "env", "env_steps": 3}]) == {}


# -- loggers --------------------------------------------------------------------------------------------------


def test_scalars_cover_returns_losses_rate_staleness_and_llm_outcomes(tmp_path):
    events = EventFollower(fake_run(tmp_path / "run")).poll()
    events.append({"type": "staleness", "name": "l2.0", "time": 2.0, "ticks_mean": 1.5, "seconds_mean": 0.01})
    scalars = {(s.tag, s.step): s.value for s in ScalarExtractor()(events)}
    assert scalars[("train/l1.0/policy_loss", 600)] == 0.5
    assert scalars[("env/steps_per_s", 500)] == 250.0
    assert scalars[("llm/l2.0/timeout", 1000)] == 1.0
    assert scalars[("staleness/l2.0/ticks_mean", 1000)] == 1.5
    assert scalars[("return/level_0", 1000)] == pytest.approx((2 + 4 + 15) / 3)
    assert scalars[("return/level_1", 1000)] == 4.0


def test_missing_logger_package_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m == "tensorboard" else real(m, *a))
    with pytest.raises(LoggerError, match=r"pip install 'tag_actors\[tensorboard\]'"):
        check_available(["csv", "tensorboard"])
    with pytest.raises(LoggerError, match="unknown logger 'tensorbored'"):
        check_available(["tensorbored"])


def test_launch_refuses_a_missing_logger_before_starting_anything(monkeypatch, tmp_path, capsys):
    from tag_actors import launch

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m == "wandb" else real(m, *a))
    run_dir = tmp_path / "run"
    code = launch.main([str(ROOT / "configs/balance_random.toml"), "--set", 'run.loggers=["csv","wandb"]',
                        "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 2 and not run_dir.exists()
    assert len(err.strip().splitlines()) == 1 and "pip install 'tag_actors[wandb]'" in err


def test_unknown_logger_is_a_config_error():
    raw = {"run": {"loggers": ["csv", "tensorbored"]}, "levels": [{"agent": "random"}]}
    with pytest.raises(config_mod.ConfigError, match="run.loggers: unknown logger 'tensorbored'"):
        config_mod.from_dict(raw, "x.toml")
    with pytest.raises(config_mod.ConfigError, match="run.loggers: input should be a valid array"):
        config_mod.from_dict({"run": {"loggers": "csv"}, "levels": [{"agent": "random"}]}, "x.toml")


def read_tensorboard(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_and_csv_loggers_write_what_they_read(tmp_path):
    run_dir = fake_run(tmp_path / "run")
    loggers = Loggers(["csv", "tensorboard"], run_dir, {"run": {"name": "x"}})
    loggers.write(EventFollower(run_dir).poll())
    loggers.close()
    tb = read_tensorboard(run_dir / "tensorboard")
    assert tb["train/l1.0/value_loss"] == [(600, 2.0)]
    assert tb["return/level_1"] == [(1000, 4.0)]
    rows = (run_dir / "scalars.csv").read_text().splitlines()
    assert rows[0] == "env_steps,time,tag,value" and "600,1.0,train/l1.0/policy_loss,0.5" in rows


# -- whole runs -----------------------------------------------------------------------------------------------


def assert_one_summary(stdout: str, name: str) -> None:
    lines = stdout.splitlines()
    assert sum(line.startswith("=== run ") for line in lines) == 1, stdout
    assert f"=== run {name!r} completed ===" in stdout
    progress = [line.split("] ", 1)[1] for line in lines if line.startswith("[")]
    assert len(progress) == len(set(progress)), f"a progress line repeated:\n{stdout}"
    assert "\r" not in stdout  # a pipe gets plain lines, not a bar
    for key in ("env steps", "wall time", "steps/s", "env, per agent", "level 1", "checkpoints", "logs",
                "episodes", "plots"):
        assert any(line.startswith(key) or line.strip().startswith(key) for line in lines), (key, stdout)


@pytest.mark.parametrize("serial", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["actors", "serial"])
def test_run_ends_with_one_summary_tensorboard_and_plot(launch, tmp_path, serial):
    run_dir = tmp_path / "run"
    r = launch.run("configs/balance_random.toml", "--run-dir", str(run_dir), *SMALL,
                   "--set", 'run.loggers=["csv","tensorboard","plot"]', *(["--serial"] if serial else []))
    assert r.returncode == 0, r.stderr + r.stdout
    assert_one_summary(r.stdout, "balance-random")
    assert f"tensorboard  tensorboard --logdir {run_dir / 'tensorboard'}" in r.stdout
    tb = read_tensorboard(run_dir / "tensorboard")
    for tag in ("return/level_0", "return/level_1", "return/level_2", "return/level_3", "env/steps_per_s"):
        assert tb[tag], tag
    assert max(step for step, _ in tb["env/steps_per_s"]) >= 1536
    png = run_dir / "plots" / "returns.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_learner_losses_reach_tensorboard(launch, tmp_path):
    run_dir = tmp_path / "run"
    r = launch.run("configs/cartpole.toml", "--serial", "--quiet", "--run-dir", str(run_dir),
                   "--set", "run.total_env_steps=600", "--set", 'run.loggers=["tensorboard"]')
    assert r.returncode == 0, r.stderr + r.stdout
    assert "=== run 'cartpole-ppo' completed ===" in r.stdout and "[" not in r.stdout.split("===")[0]  # --quiet
    tb = read_tensorboard(run_dir / "tensorboard")
    for key in ("policy_loss", "value_loss", "entropy", "approx_kl"):
        assert tb[f"train/l1.0/{key}"], key
    assert f"plots        python -m tag_actors.plot {run_dir}" in r.stdout  # no plot logger: the command to draw
    assert not (run_dir / "plots").exists() and not (run_dir / "scalars.csv").exists()


# -- plots ----------------------------------------------------------------------------------------------------


def test_plot_compares_runs(tmp_path):
    a, b = fake_run(tmp_path / "seed0"), fake_run(tmp_path / "seed1", scale=2.0)
    steps, values = level_returns(a)[0]
    assert list(steps) == [500, 500, 950] and list(values) == [2.0, 4.0, 15.0]
    x, y = binned(steps, values, 3)  # slices (0, 316.7], (316.7, 633.3], (633.3, 950]: the first is empty
    assert x == pytest.approx([633.33, 950.0], abs=0.01) and list(y) == [3.0, 15.0]
    r = subprocess.run([sys.executable, "-m", "tag_actors.plot", str(a), str(b), "--out", str(tmp_path / "c.png")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert plot_runs([a], tmp_path / "one.png").exists()
    bad = subprocess.run([sys.executable, "-m", "tag_actors.plot", str(tmp_path)], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "not a run folder" in bad.stderr


# -- videos ---------------------------------------------------------------------------------------------------


def test_video_needs_are_checked_before_any_work(monkeypatch, tmp_path, launch):
    from tag_actors import evaluate as evaluate_mod

    run_dir = tmp_path / "run"
    r = launch.run("configs/balance_random.toml", "--serial", "--quiet", "--run-dir", str(run_dir),
                   "--set", "run.total_env_steps=64", "--set", "env.num_envs=4")
    assert r.returncode == 0, r.stderr
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m in ("PIL", "imageio_ffmpeg")
                        else real(m, *a))

    def no_env(*a, **k):
        raise AssertionError("an env was built before the missing package was reported")

    monkeypatch.setattr(evaluate_mod, "make_env", no_env)
    with pytest.raises(VideoError, match=r"needs pillow: pip install 'tag_actors\[video\]'"):
        evaluate_mod.evaluate(run_dir, 2, video=tmp_path / "v.gif")
    with pytest.raises(VideoError, match=r"needs imageio-ffmpeg: .*or write a \.gif"):
        evaluate_mod.evaluate(run_dir, 2, video=tmp_path / "v.mp4")
    with pytest.raises(VideoError, match="unknown format '.avi'"):
        check_video(tmp_path / "v.avi", "vmas")
    assert not (run_dir / "eval.json").exists()
    code = evaluate_mod.main([str(run_dir), "--episodes", "2", "--video", str(tmp_path / "v.gif")])
    assert code == 2

    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m == "pygame" else real(m, *a))
    with pytest.raises(VideoError, match="rendering a pettingzoo env needs pygame-ce: pip install pygame-ce"):
        check_video(tmp_path / "v.gif", "pettingzoo")

@pytest.mark.slow
def test_evaluate_moves_a_gpu_run_to_this_machine(monkeypatch, tmp_path, launch, capsys):
    """A run trained on CUDA (its config.json says so) evaluates on a machine without one with --device."""
    import torch

    from tag_actors import evaluate as evaluate_mod

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run_dir = tmp_path / "run"
    r = launch.run("configs/balance.toml", "--serial", "--quiet", "--run-dir", str(run_dir),
                   "--set", "run.total_env_steps=256", "--set", "env.num_envs=8")
    assert r.returncode == 0, r.stderr
    saved = json.loads((run_dir / "config.json").read_text())
    saved["config"]["env"]["device"] = "cuda"
    for level in saved["config"]["levels"]:
        level["device"] = "cuda"
    (run_dir / "config.json").write_text(json.dumps(saved))
    assert evaluate_mod.main([str(run_dir), "--episodes", "2"]) == 2
    assert "env.device = 'cuda', but torch" in capsys.readouterr().err
    assert evaluate_mod.main([str(run_dir), "--episodes", "2", "--device", "cpu"]) == 0
    assert json.loads((run_dir / "eval.json").read_text())["episodes"] == 2


def read_video(path: Path) -> tuple[int, tuple[int, int]]:
    """(frames, (width, height)) of an mp4 or gif."""
    if path.suffix == ".gif":
        from PIL import Image

        with Image.open(path) as im:
            return im.n_frames, im.size
    import imageio.v2 as imageio

    reader = imageio.get_reader(path)
    try:
        return reader.count_frames(), tuple(reader.get_meta_data()["size"])
    finally:
        reader.close()


@pytest.mark.slow
@pytest.mark.parametrize("config,video", [("balance_random", "v.mp4"), ("spread_heuristic", "v.gif"),
                                          ("cartpole", "v.mp4")], ids=["vmas", "mpe2", "gymnasium"])
def test_evaluate_records_a_video_of_every_env_kind(launch, tmp_path, config, video):
    run_dir = tmp_path / "run"
    r = launch.run(config, "--serial", "--quiet", "--run-dir", str(run_dir), "--set", "run.total_env_steps=64",
                   "--set", "env.num_envs=2", "--set", "env.max_steps=12")
    assert r.returncode == 0, r.stderr
    out = tmp_path / video
    e = subprocess.run([sys.executable, "-m", "tag_actors.evaluate", str(run_dir), "--episodes", "2",
                        "--video", str(out)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert e.returncode == 0, e.stderr
    assert f"video: {out}" in e.stdout
    frames, (w, h) = read_video(out)
    assert 2 <= frames <= 12 and w >= 64 and h >= 64, (frames, w, h)
    assert json.loads((run_dir / "eval.json").read_text())["video"] == str(out)


def test_write_video_pads_odd_frames(tmp_path):
    frames = [np.full((33, 45, 3), i * 20, dtype=np.uint8) for i in range(5)]
    assert read_video(write_video(frames, tmp_path / "odd.mp4"))[0] == 5
    assert read_video(write_video(frames, tmp_path / "odd.gif")) == (5, (45, 33))
    with pytest.raises(VideoError, match="no frames"):
        write_video([], tmp_path / "none.gif")


# -- devices --------------------------------------------------------------------------------------------------


def test_device_selection(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == "cpu" and resolve_device("auto") == "cpu"
    with pytest.raises(RuntimeError, match=r"levels\[0\].device = 'cuda', but torch .* sees no CUDA device"):
        resolve_device("cuda", "levels[0].device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(RuntimeError, match="has 2 CUDA device"):
        resolve_device("cuda:2")
    for bad in ("gpu", "cuda:x", "CPU", ""):
        with pytest.raises(ValueError, match="expected 'cpu', 'auto', 'cuda' or 'cuda:N'"):
            check_device_spec(bad, "env.device")


def test_device_keys_in_the_config():
    base = {"env": {"kind": "vmas"}, "levels": [{"agent": "ppo"}]}
    cfg = config_mod.from_dict(base)
    assert cfg.env.device == "cpu" and cfg.levels[0].device == "cpu"  # CPU unless asked
    with pytest.raises(config_mod.ConfigError, match=r"x.toml: l1.device: expected"):
        config_mod.from_dict({**base, "levels": [{"agent": "ppo", "device": "gpu"}]}, "x.toml")
    with pytest.raises(config_mod.ConfigError, match="x.toml: env.device: expected"):
        config_mod.from_dict({**base, "env": {"device": "tpu"}}, "x.toml")


def test_agents_and_env_take_their_device(monkeypatch):
    import torch

    from tag_actors.agents import AgentContext, make_agent
    from tag_actors.envs import EnvError, make_env
    from tag_actors.spaces import Box

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ctx = AgentContext(name="l1.0", level=1, obs_dim=3, action_space=Box((2,), -1.0, 1.0), num_envs=4, seed=0,
                       params={"rollout_len": 2}, device="auto")
    agent = make_agent("ppo", ctx)
    assert agent.device == torch.device("cpu") and next(agent.net.parameters()).device.type == "cpu"
    assert agent.act(np.zeros((4, 3), np.float32)).shape == (4, 2)
    ctx.device = "cuda"
    with pytest.raises(DeviceError, match="agent 'l1.0': device = 'cuda', but torch"):
        make_agent("ppo", ctx)
    env = make_env("vmas", "balance", 2, 0, {"n_agents": 2}, device="auto")
    assert env.device == torch.device("cpu")
    env.close()
    with pytest.raises(EnvError, match="only vmas envs simulate on a device"):
        make_env("gymnasium", "CartPole-v1", 1, 0, {}, device="cuda")


# -- configs by name ------------------------------------------------------------------------------------------


def test_bare_config_name_is_found_outside_the_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_config("balance") == ROOT / "configs" / "balance.toml"
    assert find_config("spread.toml") == ROOT / "configs" / "spread.toml"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "balance.toml").write_text("")
    assert find_config("balance") == Path("configs/balance.toml")  # a local configs/ comes first
    with pytest.raises(config_mod.ConfigError, match=r"nosuch: no such config file.*known: .*balance"):
        find_config("nosuch")
    assert find_config("some/dir/x.toml") == Path("some/dir/x.toml")  # a path is left to the loader's error


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_wheel_installs_and_runs(tmp_path):
    """scripts/check_wheel.sh: build, install into a fresh venv, run from outside the checkout (about 2 min)."""
    r = subprocess.run(["bash", str(ROOT / "scripts" / "check_wheel.sh"), str(tmp_path / "w")], capture_output=True,
                       text=True, timeout=840)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "check_wheel: ok" in r.stdout and "=== run 'balance-3ppo' completed ===" in r.stdout
