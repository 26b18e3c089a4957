"""[placement.ray] and run.backend: every mistake is named with its key and file, without Ray (fast tier)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tag_actors.config import ConfigError, load
from tag_actors.launch import parse_args, ray_backend
from tag_actors.ray_placement import ANYWHERE, Place, places
from tag_actors.topology import build_plan

BALANCE = "configs/balance.toml"


def with_table(tmp_path, table: str):
    """configs/balance.toml plus a TOML table (process names hold dots, which --set keys cannot quote)."""
    path = tmp_path / "balance.toml"
    path.write_text(open(BALANCE).read() + "\n" + table)
    return path


def test_places_by_process_then_level_then_anywhere(tmp_path):
    cfg = load(with_table(tmp_path, '[placement.ray.processes]\n"l2.1" = "resource:tag_c"\n'),
               ['placement.ray.levels.2="resource:tag_b"', 'placement.ray.levels.0="label:zone=a"',
                'placement.ray.groups.1="spread"'])
    plan = build_plan(cfg)
    where = places(cfg.placement.ray, plan.processes(), plan.level_of, cfg.source)
    assert where["env"] == Place(label=("zone", "a"))
    assert where["l2.0"] == Place(resource="tag_b") and where["l2.1"] == Place(resource="tag_c")
    assert where["l1.0"] == ANYWHERE and where["l3.0"] == ANYWHERE


@pytest.mark.parametrize(("override", "message"), [
    ('placement.ray.levels.4="resource:x"', "placement.ray.levels.4: expected a level number 0..3"),
    ('placement.ray.levels.1="host:x"', "placement.ray.levels.1 = 'host:x': expected \"resource:NAME\""),
    ("placement.ray.processes.env=\"label:zone\"", "placement.ray.processes.env = 'label:zone'"),
    ('placement.ray.groups.2="wide"', "placement.ray.groups.2 = 'wide': expected one of pack, spread"),
    ('placement.ray.groups.x="pack"', "placement.ray.groups.x: expected a level number"),
    ("placement.ray.num_cpus=-1", "placement.ray.num_cpus = -1"),
    ("placement.ray.nodes=3", "placement.ray.nodes: unknown key (valid keys here: address, levels, processes, "
                              "groups, num_cpus)"),
    ('run.backend="slurm"', "run.backend: input should be 'local' or 'ray'"),
])
def test_placement_errors_name_key_and_file(override, message):
    with pytest.raises(ConfigError) as e:
        load(BALANCE, [override])
    assert BALANCE in str(e.value) and message in str(e.value)


def test_group_cannot_select_by_label():
    with pytest.raises(ConfigError, match=r"placement.ray.groups.1: a placement group cannot select nodes by label"):
        load(BALANCE, ['placement.ray.levels.1="label:zone=a"', 'placement.ray.groups.1="pack"'])


def test_unknown_process_is_named(tmp_path):
    cfg = load(with_table(tmp_path, '[placement.ray.processes]\n"l9.0" = "resource:x"\n'))
    plan = build_plan(cfg)
    with pytest.raises(ValueError, match=r"balance.toml: placement.ray.processes.l9.0: no such process "
                                         r"\(processes: env, l1.0"):
        places(cfg.placement.ray, plan.processes(), plan.level_of, cfg.source)


def test_host_placement_is_refused_with_the_ray_backend():
    with pytest.raises(ConfigError, match=r"placement.hosts is for --host runs.*placement.ray.levels"):
        load(BALANCE, ['run.backend="ray"', 'placement.hosts.a="10.0.0.1"'])
    cfg = load(BALANCE, ['placement.hosts.a="10.0.0.1"'])  # --ray on the command line: refused there
    with pytest.raises(ConfigError, match=r"balance.toml: placement.hosts is for --host runs"):
        ray_backend(cfg, None, SimpleNamespace(ray="local", host=None))


def test_ray_flag_forms():
    assert parse_args(["balance", "--ray"]).ray == "local"
    assert parse_args(["balance", "--ray", "auto"]).ray == "auto"
    assert parse_args(["balance"]).ray is None
    cfg = load(BALANCE)
    assert ray_backend(cfg, None, SimpleNamespace(ray=None, host=None)) is None  # local processes
    with pytest.raises(ConfigError, match="--host and --ray"):
        ray_backend(cfg, None, SimpleNamespace(ray="auto", host="a"))
