"""monitoring/: promtool checks, dashboard structure, and a real Prometheus scraping live processes.

Two live tests run every expression of every dashboard panel and variable, and every recording and alert rule
(as Prometheus loaded them), against a real Prometheus (random loopback port, temporary storage, 1 s scrape and
evaluation, the rules of monitoring/rules), then kill one process and wait for TagAgentDown:

* ``test_live_prometheus_real_run``: a real 3-level PPO run started with ``python -m tag_actors.launch``
  (8 processes); what the runtime does not emit is listed, with the reason, in REAL_ALLOWED_EMPTY and
  ALERTS_ALLOWED_EMPTY, and REAL_PER_PROCESS checks that each process really reports what it should. About
  20-30 s here (most of it 8 processes importing torch), bounded at 120 s.
* ``test_live_prometheus_fake_processes_every_metric``: three small processes that call every ProcessMetrics
  method (staleness, LLM calls, queue depth too), so the panels a real run leaves empty are checked with data.

They need Debian's `prometheus` (scripts/install_prometheus.sh); with CI=true the tests run that script
themselves when the binary is missing, otherwise they skip and say so.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tag_actors.launch import actor_pids
from tag_actors.metrics import file_sd_target, write_file_sd

ROOT = Path(__file__).resolve().parents[1]
MON = ROOT / "monitoring"
DASHBOARDS = sorted((MON / "grafana" / "dashboards").glob("*.json"))
RULES = MON / "rules" / "tag_actors.rules.yml"
INSTALL = ROOT / "scripts" / "install_prometheus.sh"
DS_UID = "tag-prometheus"


# ---------------------------------------------------------------------------------------------------- helpers
def _tools() -> tuple[str, str]:
    prom, tool = shutil.which("prometheus"), shutil.which("promtool")
    if (not prom or not tool) and os.environ.get("CI", "").lower() == "true":
        subprocess.run(["bash", str(INSTALL)], check=True, timeout=600)
        prom, tool = shutil.which("prometheus"), shutil.which("promtool")
    if not prom or not tool:
        pytest.skip(
            "prometheus/promtool not found: run scripts/install_prometheus.sh (Debian package 'prometheus')"
        )
    return prom, tool


def dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in DASHBOARDS}


def panels_of(dash: dict):
    for p in dash["panels"]:
        yield p
        yield from p.get("panels", [])  # rows


def all_exprs() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) for every target of every panel."""
    out = []
    for name, dash in dashboards().items():
        for p in panels_of(dash):
            for t in p.get("targets", []):
                out.append((name, p["title"], t["expr"]))
    return out


def variable_queries() -> list[tuple[str, str, str]]:
    """(dashboard, variable, PromQL equivalent of label_values(metric, label))."""
    out = []
    for name, dash in dashboards().items():
        for v in dash.get("templating", {}).get("list", []):
            q = v["query"] if isinstance(v["query"], str) else v["query"]["query"]
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q.strip())
            assert m, f"{name}: variable {v['name']}: unsupported query {q!r}"
            out.append((name, v["name"], f"group by ({m.group(2)}) ({m.group(1)})"))
    return out


SUBST = [("$__rate_interval", "10s"), ("$level", ".*"), ("$agent", ".*"), ("$link", ".*")]


def concrete(expr: str, run: str = ".*") -> str:
    """The expression with Grafana's variables replaced: $run by ``run``, the others by ``.*``."""
    for a, b in [*SUBST, ("$run", run)]:
        expr = expr.replace(a, b)
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(base: str, path: str, **params) -> dict:
    url = f"{base}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def query(base: str, q: str) -> list[dict]:
    """An instant query's result list (asserting it succeeded)."""
    res = api(base, "/api/v1/query", query=q)
    assert res["status"] == "success", f"{q}: {res}"
    return res["data"]["result"]


# ---------------------------------------------------------------------------------------------------- static
def test_promtool_check_config_and_rules(tmp_path):
    """promtool on monitoring/prometheus.yml: its syntax as it is (whatever runs are linked in targets/ now: a
    link to a deleted run folder would fail a full check), and a full check (rules, file_sd lists) of a copy
    reading a file_sd list written by write_file_sd."""
    _, promtool = _tools()

    def check(*args: str) -> str:
        r = subprocess.run([promtool, "check", *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout + r.stderr

    assert "SUCCESS" in check("config", "--syntax-only", str(MON / "prometheus.yml"))
    targets = tmp_path / "targets"
    write_file_sd(
        targets / "run.json",
        [file_sd_target("127.0.0.1", 9999, run="r", level=1, agent="l1.0", host="h", role="agent")],
    )
    cfg = (MON / "prometheus.yml").read_text()
    cfg = cfg.replace("- rules/*.rules.yml", f"- {MON / 'rules'}/*.rules.yml")
    cfg = cfg.replace("- targets/*.json", f"- {targets}/*.json")
    (tmp_path / "prometheus.yml").write_text(cfg)
    out = check("config", str(tmp_path / "prometheus.yml"))
    assert "SUCCESS: 1 rule files found" in out, out
    check("rules", str(RULES))


def test_rules_have_the_expected_alerts():
    yaml = pytest.importorskip("yaml")  # PyYAML: not a dependency of tag_actors
    doc = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}
    records = {r["record"] for g in doc["groups"] for r in g["rules"] if "record" in r}
    for name in (
        "TagAgentDown",
        "TagBadFrames",
        "TagLevelStalled",
        "TagRewardNotImproving",
        "TagCheckpointTooOld",
    ):
        assert name in alerts, name
        assert alerts[name]["labels"]["severity"]
        assert alerts[name]["annotations"]["summary"]
    assert alerts["TagAgentDown"]["for"] == "10s"
    assert alerts["TagLevelStalled"]["for"] == "30s"
    assert "600" in alerts["TagCheckpointTooOld"]["expr"]
    assert {"tag_level:tag_ticks:rate30s", "tag_run:tag_env_steps:rate30s"} <= records


def test_dashboards_are_valid_and_complete():
    assert {p.name for p in DASHBOARDS} >= {"run_overview.json", "agent_drilldown.json", "transport.json"}
    uids = set()
    for name, dash in dashboards().items():
        assert dash["uid"] not in uids, f"{name}: duplicate dashboard uid"
        uids.add(dash["uid"])
        assert dash["title"] and dash["panels"], name
        ids = [p["id"] for p in panels_of(dash)]
        assert len(ids) == len(set(ids)), f"{name}: panel ids not unique: {ids}"
        for p in panels_of(dash):
            where = f"{name}: panel {p['id']} {p.get('title')!r}"
            assert p.get("datasource", {}).get("uid") == DS_UID, where
            assert p.get("gridPos", {}).get("w"), where
            assert p.get("targets"), f"{where}: no targets"
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)), f"{where}: duplicate refIds"
            for t in p["targets"]:
                assert t.get("expr", "").strip(), f"{where}: empty expr"
                assert t.get("datasource", {}).get("uid") == DS_UID, where
                if "rate(" in t["expr"] or "increase(" in t["expr"]:
                    assert re.search(r"\[(\$__rate_interval|\d+[smh])\]", t["expr"]), where
        names = [v["name"] for v in dash["templating"]["list"]]
        for v in dash["templating"]["list"]:
            assert v["datasource"]["uid"] == DS_UID
        assert "run" in names, name
        if name != "run_overview.json":
            assert {"run", "level", "agent"} <= set(names), name
    # every variable used by a dashboard's panels is defined on that dashboard
    for name, dash in dashboards().items():
        names = {v["name"] for v in dash["templating"]["list"]}
        for p in panels_of(dash):
            for t in p["targets"]:
                for var in set(re.findall(r"\$(\w+)", t["expr"])) - {"__rate_interval"}:
                    assert var in names, f"{name}: panel {p['title']!r} uses undefined ${var}"
    heatmaps = [p for p in panels_of(dashboards()["transport.json"]) if p["type"] == "heatmap"]
    assert heatmaps and heatmaps[0]["targets"][0]["format"] == "heatmap"


def test_dashboards_match_generator():
    r = subprocess.run(
        [sys.executable, str(MON / "grafana" / "make_dashboards.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_grafana_provisioning_and_compose():
    yaml = pytest.importorskip("yaml")
    ds = yaml.safe_load((MON / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["apiVersion"] == 1 and ds["datasources"][0]["uid"] == DS_UID
    assert ds["datasources"][0]["type"] == "prometheus"
    prov = yaml.safe_load((MON / "grafana/provisioning/dashboards/dashboards.yml").read_text())
    path = prov["providers"][0]["options"]["path"]
    compose = yaml.safe_load((MON / "docker-compose.yml").read_text())
    svc = compose["services"]
    assert svc["prometheus"]["image"].startswith("prom/prometheus")
    assert svc["grafana"]["image"].startswith("grafana/grafana")
    mounts = {m.split(":")[1]: m.split(":")[0] for m in svc["grafana"]["volumes"]}
    assert mounts[path] == "./grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    for service in svc.values():
        for m in service["volumes"]:
            src = m.split(":")[0]
            if src.startswith("./"):
                assert (MON / src).exists(), f"compose mounts missing {src}"
    assert "--config.file=/etc/prometheus/prometheus.yml" in svc["prometheus"]["command"]


# ---------------------------------------------------------------------------------------------------- live
FAKE = r"""
import os, random, sys, time
from tag_actors.metrics import ProcessMetrics
run, role, name, level = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
m = ProcessMetrics(run, role, name, level, "testhost")
port = m.serve(0)
m.set_up()
print(port, flush=True)
parent, t_end, i = os.getppid(), time.monotonic() + 150, 0
while time.monotonic() < t_end and os.getppid() == parent:
    i += 1
    m.tick()
    m.observe_act(random.uniform(2e-4, 5e-3) if level < 2 else random.uniform(0.05, 0.3))
    m.frame_sent("up", 1000 + i % 100)
    m.frame_received("down", 200)
    m.observe_roundtrip("up", random.uniform(1e-4, 2e-3))
    m.queue_depth("up", i % 3)
    if role == "env":
        m.env_steps(64)
    if i % 10 == 0:
        m.episode(random.uniform(-5, 20) + i * 0.01, 100)
    if level == 1 and i % 20 == 0:
        m.learner({"policy_loss": random.random(), "value_loss": random.random(), "entropy": 1.0,
                   "approx_kl": 0.01, "clipfrac": 0.1, "lr": 3e-4, "update_seconds": 0.05,
                   "adv_mean": 0.0})
    if level >= 1 and i % 25 == 0:
        m.checkpoint_saved()
    if level == 2:  # the async LLM top agent
        m.staleness(random.randint(0, 4), random.uniform(1e-3, 0.05))
        if i % 5 == 0:
            m.llm_call("ok", random.uniform(0.05, 0.2), 300, 20)
    time.sleep(0.02)
"""

PROCS = [("env", "env", 0), ("agent", "a0", 1), ("agent", "top", 2)]


@pytest.fixture
def fake_processes(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    procs: dict[str, subprocess.Popen] = {}
    try:
        for role, name, level in PROCS:
            procs[name] = subprocess.Popen(
                [sys.executable, "-c", FAKE, "livetest", role, name, str(level)],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
                cwd=str(ROOT),
            )
        ports = {}
        for name, p in procs.items():
            line = p.stdout.readline()  # the port, printed once serving
            assert line.strip().isdigit(), f"fake process {name} did not start: {line!r}"
            ports[name] = int(line)
        yield procs, ports
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
            if p.stdout:
                p.stdout.close()


@contextlib.contextmanager
def start_prometheus(tmp_path: Path, sd_files: list[str]):
    """A real Prometheus on a random loopback port with temporary storage, monitoring/prometheus.yml with 1 s
    scrape/evaluation/refresh, the rules of monitoring/rules, and ``sd_files`` as its file_sd files. Yields the
    base URL once ready; always stopped (SIGTERM, then SIGKILL) at exit."""
    prom, _ = _tools()
    port = free_port()
    cfg = (MON / "prometheus.yml").read_text()
    files = "\n".join(f"          - {f}" for f in sd_files)
    for pat, new in [
        (r"scrape_interval: 2s", "scrape_interval: 1s"),
        (r"scrape_timeout: 2s", "scrape_timeout: 1s"),
        (r"evaluation_interval: 2s", "evaluation_interval: 1s"),
        (r"- rules/\*\.rules\.yml", f"- {MON / 'rules'}/*.rules.yml"),
        (r"^ *- targets/\*\.json$", files),
        (r"refresh_interval: 10s", "refresh_interval: 1s"),
    ]:
        cfg, n = re.subn(pat, lambda _m, new=new: new, cfg, flags=re.M)
        assert n == 1, f"monitoring/prometheus.yml changed shape: {pat!r} matched {n} times"
    conf = tmp_path / "prometheus.yml"
    conf.write_text(cfg)
    log_path = tmp_path / "prometheus.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                prom,
                f"--config.file={conf}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"prometheus exited: {log_path.read_text()}"
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            assert time.monotonic() < deadline, "prometheus not ready in 20 s"
            time.sleep(0.2)
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


@pytest.fixture
def prometheus(tmp_path):
    """Prometheus reading every ``*.json`` of a temporary targets folder: yields (base URL, that folder)."""
    targets = tmp_path / "targets"
    targets.mkdir()
    with start_prometheus(tmp_path, [f"{targets}/*.json"]) as base:
        yield base, targets


def _has_finite(result: list) -> bool:
    for r in result:
        values = [r["value"]] if "value" in r else r.get("values", [])
        if any(math.isfinite(float(v[1])) for v in values):
            return True
    return False


def loaded_rules(base: str) -> list[dict]:
    """The rules Prometheus loaded (name, query, type), each asserted healthy once it has been evaluated."""
    rules = [r for g in api(base, "/api/v1/rules")["data"]["groups"] for r in g["rules"]]
    names = {r["name"] for r in rules}
    assert set(re.findall(r"^\s*- (?:record|alert): (\S+)\s*$", RULES.read_text(), flags=re.M)) == names
    for r in rules:
        assert r["health"] in ("ok", "unknown"), f"rule {r['name']}: {r['health']} {r.get('lastError')}"
    return rules


def live_queries(base: str, run: str = ".*") -> dict[str, str]:
    """concrete PromQL -> where it comes from: every dashboard panel target and variable (with $run = ``run``),
    every recording rule's name and expression and every alert's expression (as Prometheus loaded them)."""
    queries: dict[str, str] = {}
    for dash, title, expr in all_exprs():
        queries.setdefault(concrete(expr, run), f"{dash}: {title}")
    for dash, var, q in variable_queries():
        queries.setdefault(concrete(q, run), f"{dash}: variable ${var}")
    for r in loaded_rules(base):
        if r["type"] == "recording":
            queries.setdefault(r["name"], f"recording rule {r['name']} (its series)")
            queries.setdefault(r["query"], f"recording rule {r['name']}")
        else:
            queries.setdefault(r["query"], f"alert {r['name']}")
    return queries


# Alerts whose expression may legitimately be empty in the live tests (each is still run and must be valid).
ALERTS_ALLOWED_EMPTY = {
    "TagAgentDown": "every process is up until one is killed; the test checks this alert after the kill",
    "TagNoTargets": "true only while Prometheus has no target at all",
    "TagBadFrames": "no malformed frame in a healthy run",
    "TagLevelStalled": "every level ticks",
    "TagRewardNotImproving": "needs 40+ minutes of run (compares with 30 minutes earlier)",
    "TagCheckpointTooOld": "needs a checkpoint older than 600 s",
    "TagProcessRestarted": "nothing restarts a process (the launcher stops the run on a crash)",
}


def wait_for_data(
    base: str,
    queries: dict[str, str],
    allowed: dict[str, str],
    deadline: float,
    extra: Callable[[], list[str]] = lambda: [],
) -> None:
    """Poll until every query is valid and every one not allowed empty returns a finite sample (and ``extra``
    returns no complaint); fail at ``deadline`` naming what is still empty."""

    def is_allowed(q: str, where: str) -> bool:
        if where.startswith("alert "):
            return where.split()[1] in ALERTS_ALLOWED_EMPTY
        return any(k in q for k in allowed)

    while True:
        missing = []
        for q, where in queries.items():
            res = api(base, "/api/v1/query", query=q)
            assert res["status"] == "success", f"{where}: {q}: {res}"
            if not is_allowed(q, where) and not _has_finite(res["data"]["result"]):
                missing.append(f"  {where}: {q}")
        missing += extra()
        if not missing:
            return
        if time.monotonic() > deadline:
            pytest.fail("still no data for:\n" + "\n".join(missing))
        time.sleep(1)


def wait_for_alert(base: str, name: str, agent: str, deadline: float) -> list[dict]:
    while True:
        alerts = api(base, "/api/v1/alerts")["data"]["alerts"]
        hits = [a for a in alerts if a["labels"].get("alertname") == name]
        if any(a["labels"].get("agent") == agent for a in hits):
            return hits
        assert time.monotonic() < deadline, f"{name} for {agent} not raised; alerts: {alerts}"
        time.sleep(0.5)


@pytest.mark.timeout(90)
def test_live_prometheus_fake_processes_every_metric(prometheus, fake_processes):
    """Fake processes that call every ProcessMetrics method (staleness, LLM calls, queue depth included, which a
    real lockstep run without an LLM agent does not emit): every panel, variable and rule returns data."""
    t0 = time.monotonic()
    base, targets_dir = prometheus
    procs, ports = fake_processes
    write_file_sd(
        targets_dir / "tag_actors.json",
        [
            file_sd_target(
                "127.0.0.1", ports[name], run="livetest", level=level, agent=name, host="testhost", role=role
            )
            for role, name, level in PROCS
        ],
    )
    queries = live_queries(base, "livetest")
    assert len([w for w in queries.values() if w.startswith("recording rule")]) >= 8, queries

    def all_up() -> list[str]:
        up = api(base, "/api/v1/query", query='up{job="tag_actors"} == 1')["data"]["result"]
        return [] if len(up) == len(PROCS) else [f"  {len(up)} of {len(PROCS)} targets up"]

    wait_for_data(base, queries, FAKE_ALLOWED_EMPTY, time.monotonic() + 45, all_up)
    up = api(base, "/api/v1/query", query='up{job="tag_actors"} == 1')["data"]["result"]
    up_labels = {r["metric"]["agent"]: r["metric"] for r in up}
    assert up_labels["a0"]["level"] == "1" and up_labels["a0"]["role"] == "agent"
    # process labels are kept as they are (honor_labels), not renamed to exported_*
    res = api(base, "/api/v1/query", query='tag_ticks_total{agent="top"}')["data"]["result"]
    assert res and not [k for k in res[0]["metric"] if k.startswith("exported_")], res
    assert res[0]["metric"]["role"] == "agent" and res[0]["metric"]["host"] == "testhost"

    # a process dies: TagAgentDown goes pending (then firing after its `for`)
    procs["a0"].kill()
    procs["a0"].wait(timeout=10)
    down = wait_for_alert(base, "TagAgentDown", "a0", time.monotonic() + 25)
    assert {a["labels"]["agent"] for a in down} == {"a0"}
    assert down[0]["state"] in ("pending", "firing")
    assert down[0]["labels"]["level"] == "1" and down[0]["labels"]["run"] == "livetest"
    assert time.monotonic() - t0 < 80


# ---------------------------------------------------------------------------------------------------- live, real run
# A real 3-level run (VMAS balance, 4 env agents, 4-2-1 PPO agents: 8 processes) scraped by a real Prometheus.
# Startup dominates: 8 processes importing torch on 2 shared cores take about 20 s before the first env step.
REAL_ALLOWED_EMPTY = {
    "tag_bad_frames_total": "no malformed frame in a healthy run",
    "tag_instruction_staleness_": "observed only by agents under an async level (run.mode / levels.N.mode = "
    "'async'); this run is lockstep",
    "tag_llm_": "no LLM agent in this run",
    "tag_queue_depth": "not emitted: nothing in the runtime calls ProcessMetrics.queue_depth yet",
    "ALERTS{": "no alert is active while every process is healthy",
}
FAKE_ALLOWED_EMPTY = {k: v for k, v in REAL_ALLOWED_EMPTY.items() if k in ("tag_bad_frames_total", "ALERTS{")}

REAL_PROCESSES = ["env", "l1.0", "l1.1", "l1.2", "l1.3", "l2.0", "l2.1", "l3.0"]
AGENTS = set(REAL_PROCESSES) - {"env"}
# what the runtime must really report, per process (a metric left at its initial 0 would pass the panel checks)
REAL_PER_PROCESS = {
    "tag_up == 1": set(REAL_PROCESSES),
    "tag_ticks_total > 0": set(REAL_PROCESSES),
    "tag_act_duration_seconds_count > 0": set(REAL_PROCESSES),
    "tag_episodes_total > 0": set(REAL_PROCESSES),
    "tag_frames_sent_total > 0": set(REAL_PROCESSES),
    "tag_frames_received_total > 0": set(REAL_PROCESSES),
    "tag_env_steps_total > 0": {"env"},
    "tag_message_roundtrip_seconds_count > 0": AGENTS - {"l3.0"},  # every agent with a parent
    "tag_updates_total > 0": AGENTS,
    "tag_update_duration_seconds_count > 0": AGENTS,
    "tag_learner_lr > 0": AGENTS,
    "tag_learner_entropy != 0": AGENTS,
    "tag_checkpoint_timestamp_seconds > 0": AGENTS,
}
KILLED = "l1.2"


@pytest.fixture
def real_run(tmp_path):
    """``python -m tag_actors.launch`` with metrics on, all-PPO levels and tiny rollouts (updates within
    seconds), long enough never to finish during the test. Always stopped at teardown: the launcher is SIGTERMed
    (it stops its children), then its session and any actor of the run left are SIGKILLed; the file_sd link the
    launcher made in monitoring/targets/ is removed."""
    from tag_actors.launch import _set_parent_death_signal

    name = f"montest-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    run_dir = MON.parent / "runs" / name  # inside the checkout, so the launcher links it into monitoring/targets
    sets = [
        "run.metrics=true",
        f"run.name={name}",
        "run.total_env_steps=5000000",  # about an hour at the ~1.5k env steps/s seen here: never reached
        "run.checkpoint_every_s=2",  # so checkpoint age and TagCheckpointTooOld's series exist
        "run.log_every_s=1",
    ]
    for lvl in range(3):
        sets += [f"levels.{lvl}.agent=ppo", f"levels.{lvl}.params.rollout_len=8"]
    args = [
        sys.executable,
        "-m",
        "tag_actors.launch",
        str(ROOT / "configs" / "balance_random.toml"),
        "--run-dir",
        str(run_dir),
        "--quiet",
    ]
    for item in sets:
        args += ["--set", item]
    log_path = tmp_path / "launch.log"
    with open(log_path, "w") as log:
        # own session (the test can kill it and all it started); SIGTERM if pytest itself dies
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_set_parent_death_signal,
        )
    link = MON / "targets" / f"{run_dir.name}.json"
    try:
        yield proc, run_dir, name, log_path
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the launcher's clean stop of every child
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        for pid in actor_pids(run_dir).values():  # children run in sessions of their own
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if (
            link.is_symlink()
            and Path(os.path.realpath(link)) == (run_dir / "prometheus_targets.json").resolve()
        ):
            link.unlink()
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.mark.timeout(120)
def test_live_prometheus_real_run(tmp_path, real_run):
    """A real 3-level PPO run: every dashboard panel and variable and every rule returns data from Prometheus
    (except REAL_ALLOWED_EMPTY / ALERTS_ALLOWED_EMPTY); then one agent is killed and TagAgentDown is raised for
    it; the launcher then stops the run (exit 1), keeps its file_sd link, and leaves no actor behind."""
    t0 = time.monotonic()
    proc, run_dir, name, log_path = real_run
    sd_file = run_dir / "prometheus_targets.json"

    def launcher_log() -> str:
        return log_path.read_text(errors="replace")[-4000:]

    while not sd_file.exists():  # written by prepare_run before any child starts
        assert proc.poll() is None, f"launcher exited ({proc.returncode}):\n{launcher_log()}"
        assert time.monotonic() - t0 < 30, f"no {sd_file} after 30 s:\n{launcher_log()}"
        time.sleep(0.1)
    sd = json.loads(sd_file.read_text())
    assert sorted(t["labels"]["agent"] for t in sd) == sorted(REAL_PROCESSES)
    link = MON / "targets" / f"{run_dir.name}.json"
    assert link.is_symlink() and link.resolve() == sd_file.resolve()

    with start_prometheus(tmp_path, [str(sd_file)]) as base:
        queries = live_queries(base, name)

        def per_process() -> list[str]:
            assert proc.poll() is None, f"launcher exited ({proc.returncode}):\n{launcher_log()}"
            complaints = []
            for expr, want in REAL_PER_PROCESS.items():
                q = expr.replace(" ", f'{{job="tag_actors", run="{name}"}} ', 1)
                got = {r["metric"]["agent"] for r in query(base, q)}
                if not want <= got:
                    complaints.append(f"  {expr}: not yet for {sorted(want - got)}")
            return complaints

        wait_for_data(base, queries, REAL_ALLOWED_EMPTY, t0 + 75, per_process)
        t_data = time.monotonic() - t0

        res = query(base, f'tag_ticks_total{{run="{name}", agent="l3.0"}}')
        assert len(res) == 1 and not [k for k in res[0]["metric"] if k.startswith("exported_")], res
        labels = res[0]["metric"]
        assert labels["level"] == "3" and labels["role"] == "agent", labels
        assert labels["host"] == socket.gethostname(), labels
        res = query(base, f'tag_learner_stat{{run="{name}"}}')
        assert "clipfrac" not in {r["metric"]["stat"] for r in res}  # reported as tag_learner_clip_fraction

        # kill one agent as a crash would: TagAgentDown for it (the launcher then stops the whole run, so the
        # other processes go down as well a moment later)
        pids = actor_pids(run_dir)
        assert set(pids) == set(REAL_PROCESSES), pids
        os.kill(pids[KILLED], signal.SIGKILL)
        down = wait_for_alert(base, "TagAgentDown", KILLED, time.monotonic() + 20)
        hit = next(a for a in down if a["labels"]["agent"] == KILLED)
        assert hit["state"] in ("pending", "firing"), hit
        labels = hit["labels"]
        assert (labels["level"], labels["run"], labels["severity"]) == ("1", name, "critical"), labels
        t_alert = time.monotonic() - t0

    try:
        code = proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the launcher did not stop the run within 20 s of {KILLED}'s death:\n{launcher_log()}")
    assert code == 1, f"launcher exit code {code}:\n{launcher_log()}"
    assert link.is_symlink(), "a failed run's file_sd link should stay (its targets show as down)"
    deadline = time.monotonic() + 5
    while (left := actor_pids(run_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"actors of the run still alive after the launcher exited: {left}"
    total = time.monotonic() - t0
    print(f"real run: all data after {t_data:.1f} s, TagAgentDown at {t_alert:.1f} s, done at {total:.1f} s")
    assert total < 115
