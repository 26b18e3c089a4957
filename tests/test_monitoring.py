"""monitoring/: promtool checks, dashboard structure, and a real Prometheus scraping live processes.

Live tests (``@pytest.mark.slow``) start their own Prometheus (random loopback port, temporary storage, 1 s scrape
and evaluation, the rules of monitoring/rules) and prove it gone at teardown:

* ``test_two_runs_clean_finish_bad_frames_and_a_kill``: two real runs of one config, one after the other
  (``python -m tag_actors.launch``, 8 processes each): distinct ``run`` labels with one ``config``; the first
  finishes cleanly and raises nothing; in the second every dashboard panel and variable and every rule returns
  data, each process stays within its series budget, 5 junk frames from strangers show in the bad-frames panel,
  and a kill raises exactly one new alert, TagRunFailed, naming the process.
* ``test_live_prometheus_fake_processes_every_metric``: small processes calling every ProcessMetrics method (the
  panels a lockstep run without an LLM leaves empty are checked with data).
* ``test_stale_link_is_swept_and_no_targets_can_fire``: a killed launcher's link keeps a dead target; the sweep
  removes it, and TagNoTargets becomes true.
* ``test_monitor_sh_prints_pages_that_answer``: scripts/monitor.sh prints only web pages that answer 200.

They need Debian's `prometheus` (scripts/install_prometheus.sh); with CI=true the tests run that script
themselves when the binary is missing, otherwise they skip and say so.
"""

from __future__ import annotations

import contextlib
import http.client
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
from tag_actors.metrics import BAD_FRAME_REASONS, STRANGER_REASONS, file_sd_target, write_file_sd
from tag_actors.procs import death_report

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
            if m := re.fullmatch(r"query_result\((.+)\)", q.strip()):
                out.append((name, v["name"], m.group(1)))
                continue
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q.strip())
            assert m, f"{name}: variable {v['name']}: unsupported query {q!r}"
            out.append((name, v["name"], f"group by ({m.group(2)}) ({m.group(1)})"))
    return out


SUBST = [("$__rate_interval", "10s"), ("$__range", "1h"), ("$level", ".*"), ("$agent", ".*"), ("$link", ".*")]


def concrete(expr: str, run: str) -> str:
    """The expression with Grafana's variables replaced: $run by ``run`` (one run), the others by ``.*``."""
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
        [
            file_sd_target("127.0.0.1", 9999, run="r", level=1, agent="l1.0", host="h", role="agent"),
            file_sd_target("127.0.0.1", 9998, run="r", level=None, agent="launcher", host="h", role="launcher"),
        ],
    )
    cfg = (MON / "prometheus.yml").read_text()
    cfg = cfg.replace("- rules/*.rules.yml", f"- {MON / 'rules'}/*.rules.yml")
    assert cfg.count("- targets/*.json") == 2  # the jobs tag_actors and tag_launcher
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
        "TagRunFailed",
        "TagAgentDown",
        "TagLauncherDown",
        "TagNoTargets",
        "TagBadFrames",
        "TagLevelStalled",
        "TagRewardNotImproving",
        "TagCheckpointTooOld",
    ):
        assert name in alerts, name
        assert alerts[name]["labels"]["severity"]
        assert alerts[name]["annotations"]["summary"]
    for name in ("TagAgentDown", "TagLauncherDown"):  # the wait is in the expression: no pending state
        assert "for" not in alerts[name] and "max_over_time(up{" in alerts[name]["expr"] and "[15s]" in alerts[name]["expr"]
    assert alerts["TagLevelStalled"]["for"] == "30s"
    assert "600" in alerts["TagCheckpointTooOld"]["expr"]
    assert "for" not in alerts["TagRunFailed"] and 'state="failed"' in alerts["TagRunFailed"]["expr"]
    assert "failed_process" in alerts["TagRunFailed"]["annotations"]["summary"]
    # a run that ended (finished, failed, stopped) silences the alerts about its processes
    for name in ("TagAgentDown", "TagLauncherDown", "TagLevelStalled", "TagNoTargets"):
        assert "tag_run:ended:10m" in alerts[name]["expr"], name
    assert {
        "tag_level:tag_ticks:rate30s",
        "tag_level:tag_decisions:rate30s",
        "tag_run:tag_env_steps:rate30s",
        "tag_run:ended:10m",
    } <= records


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
            if p["type"] in ("timeseries", "heatmap"):  # a graph says what its axis counts, with its unit
                assert p["fieldConfig"]["defaults"]["unit"], where
                axis = (p["fieldConfig"]["defaults"].get("custom") or p["options"].get("yAxis", {})).get("axisLabel")
                assert axis, f"{where}: no axis label"
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
        run_var = next(v for v in dash["templating"]["list"] if v["name"] == "run")
        assert not run_var["multi"] and not run_var["includeAll"] and run_var["sort"] == 0, run_var  # one run
        assert "sort_desc" in run_var["query"] and "tag_run_start_time_seconds" in run_var["query"]  # newest first
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
from tag_actors.metrics import FEATURES
m = ProcessMetrics(run, role, name, level, "testhost", config="livecfg", features=FEATURES)
port = m.serve(0)
m.set_up()
print(port, flush=True)
parent, t_end, i = os.getppid(), time.monotonic() + 150, 0
while time.monotonic() < t_end and os.getppid() == parent:
    i += 1
    m.tick()
    if role == "env":
        m.observe_act(random.uniform(2e-4, 5e-3))
    elif i % level == 0:
        m.decision(random.uniform(2e-4, 5e-3) if level < 2 else random.uniform(0.05, 0.3))
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
    for pat, new, times in [
        (r"scrape_interval: 2s", "scrape_interval: 1s", 1),
        (r"scrape_timeout: 2s", "scrape_timeout: 1s", 1),
        (r"evaluation_interval: 2s", "evaluation_interval: 1s", 1),
        (r"- rules/\*\.rules\.yml", f"- {MON / 'rules'}/*.rules.yml", 1),
        (r"^ *- targets/\*\.json$", files, 2),  # jobs tag_actors and tag_launcher
        (r"refresh_interval: 10s", "refresh_interval: 1s", 2),
    ]:
        cfg, n = re.subn(pat, lambda _m, new=new: new, cfg, flags=re.M)
        assert n == times, f"monitoring/prometheus.yml changed shape: {pat!r} matched {n} times"
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
            assert proc.poll() is None, death_report("prometheus", proc, log_path)
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            assert time.monotonic() < deadline, "prometheus not ready in 20 s"
            time.sleep(0.2)
        yield base
        assert proc.poll() is None, f"prometheus died during the test: {death_report('prometheus', proc, log_path)}"
    finally:
        stop_and_prove_gone(proc, port)


def stop_and_prove_gone(proc: subprocess.Popen, port: int) -> None:
    """SIGTERM (then SIGKILL) a server started in its own session, reap it, and check nothing of it is left:
    the process is reaped, no process of its session remains, and its port no longer answers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    deadline = time.monotonic() + 10
    while session_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = session_members(proc.pid)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes of session {proc.pid} left: {left}"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                out.append(int(entry))
    return out


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


def live_queries(base: str, run: str) -> dict[str, str]:
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
    "TagRunFailed": "no run has failed yet; the test checks it after the kill",
    "TagAgentDown": "every process is up",
    "TagLauncherDown": "the launcher is up",
    "TagNoTargets": "true only while Prometheus has no target at all (test_stale_link_is_swept_...)",
    "TagBadFrames": "no malformed frame in a healthy run",
    "TagLevelStalled": "every level ticks",
    "TagRewardNotImproving": "needs 40+ minutes of run (compares with 30 minutes earlier)",
    "TagCheckpointTooOld": "needs a checkpoint older than 600 s",
    "TagProcessRestarted": "these runs restart nothing (run.restart = 'never'); tests/test_restart.py raises it",
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


@pytest.fixture
def launcher_metrics(tmp_path):
    """A launcher's run metrics (tag_run_info, progress) served from the test process."""
    from tag_actors.run_metrics import RunMetrics

    rm = RunMetrics("livetest", "livecfg", "testhost", tmp_path, total_env_steps=10**6)
    rm.serve(0)
    yield rm
    rm.close()


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_live_prometheus_fake_processes_every_metric(prometheus, fake_processes, launcher_metrics):
    """Fake processes that call every ProcessMetrics method (staleness, LLM calls, queue depth included, which a
    real lockstep run without an LLM agent does not emit): every panel, variable and rule returns data."""
    base, targets_dir = prometheus
    procs, ports = fake_processes
    write_file_sd(
        targets_dir / "tag_actors.json",
        [
            file_sd_target(
                "127.0.0.1",
                ports[name],
                run="livetest",
                config="livecfg",
                level=level,
                agent=name,
                host="testhost",
                role=role,
            )
            for role, name, level in PROCS
        ]
        + [
            file_sd_target(
                "127.0.0.1",
                launcher_metrics.port,
                run="livetest",
                config="livecfg",
                level=None,
                agent="launcher",
                host="testhost",
                role="launcher",
            )
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
    assert res[0]["metric"]["config"] == "livecfg"
    assert {r["metric"]["job"] for r in query(base, "up")} == {"tag_actors", "tag_launcher"}

    # a process of a running run stops answering without saying goodbye (tag_up was 1): TagAgentDown
    procs["a0"].kill()
    procs["a0"].wait(timeout=10)
    down = wait_for_alert(base, "TagAgentDown", "a0", time.monotonic() + 45)
    assert {a["labels"]["agent"] for a in down} == {"a0"}
    assert down[0]["state"] == "firing"
    assert down[0]["labels"]["level"] == "1" and down[0]["labels"]["run"] == "livetest"


# ---------------------------------------------------------------------------------------------------- live, real runs
# Real 3-level runs (VMAS balance, 4 env agents, 4-2-1 PPO agents: 8 processes and a launcher) scraped by a real
# Prometheus. Startup dominates: 8 processes importing torch on 2 shared cores take about 20 s per run.
REAL_ALLOWED_EMPTY = {
    "tag_bad_frames_total": "checked after the injection",
    "tag_instruction_staleness_": "observed only by agents under an async level; this run is lockstep (no "
    "series at all: the feature is not enabled)",
    "tag_llm_": "no LLM agent in this run (no series at all)",
    "ALERTS{": "no alert is active while every process is healthy",
}
RUN_ENDED = {"tag_run:ended:10m": "no run has ended yet", 'state!="running"': "no run has ended yet"}
FAKE_ALLOWED_EMPTY = {k: v for k, v in REAL_ALLOWED_EMPTY.items() if k in ("tag_bad_frames_total", "ALERTS{")}
FAKE_ALLOWED_EMPTY.update(RUN_ENDED)
FAKE_ALLOWED_EMPTY["tag_run_eta_seconds"] = "no env status records in the fake run: no rate, no ETA"

REAL_PROCESSES = ["env", "l1.0", "l1.1", "l1.2", "l1.3", "l2.0", "l2.1", "l3.0"]
AGENTS = set(REAL_PROCESSES) - {"env"}
# what the runtime must really report, per process (a metric left at its initial 0 would pass the panel checks)
REAL_PER_PROCESS = {
    "tag_up == 1": set(REAL_PROCESSES),
    "tag_ticks_total > 0": set(REAL_PROCESSES),
    "tag_act_duration_seconds_count > 0": set(REAL_PROCESSES),
    "tag_decisions_total > 0": AGENTS,
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
# series that must not exist at all for a process (it never does that)
REAL_ABSENT = {
    "env": ("tag_learner_", "tag_update", "tag_decisions", "tag_llm_", "tag_checkpoint", "tag_message_roundtrip"),
    "l3.0": ("tag_llm_", "tag_env_steps", "tag_message_roundtrip", "tag_instruction_staleness"),
    "l1.0": ("tag_llm_", "tag_env_steps", "tag_instruction_staleness"),
}
KILLED = "l1.2"
JUNK_FRAMES = 5
# alerts about a process or run being gone: the kill must raise exactly one of these, TagRunFailed
LIFE_ALERTS = {"TagRunFailed", "TagAgentDown", "TagLauncherDown", "TagLevelStalled", "TagNoTargets"}


def run_args(run_dir: Path, name: str, total_env_steps: int) -> list[str]:
    """All-PPO levels with tiny rollouts (updates within seconds), metrics on, checkpoints every 2 s."""
    args = [str(ROOT / "configs" / "balance_random.toml"), "--run-dir", str(run_dir), "--quiet"]
    sets = [
        "run.metrics=true",
        f"run.name={name}",
        f"run.total_env_steps={total_env_steps}",
        "run.checkpoint_every_s=2",
        "run.log_every_s=1",
    ]
    for lvl in range(3):
        sets += [f"l{lvl + 1}.agent=ppo", f"l{lvl + 1}.params.rollout_len=8"]
    for item in sets:
        args += ["--set", item]
    return args


def alerts_now(base: str) -> list[dict]:
    return api(base, "/api/v1/alerts")["data"]["alerts"]


def key(alert: dict) -> tuple[str, str, str]:
    labels = alert["labels"]
    return labels["alertname"], labels.get("agent") or labels.get("failed_process", ""), alert["state"]


def run_label_of(run_dir: Path) -> str | None:
    """The run id the launcher wrote in plan.json (None while there is none, or it is being written)."""
    try:
        return json.loads((run_dir / "plan.json").read_text())["run_id"]
    except (OSError, ValueError, KeyError):
        return None


def series_per_process(base: str, run: str) -> dict[str, int]:
    # what the process exposes (not the series Prometheus adds per target: up, scrape_*)
    res = query(base, f'count by (agent) ({{job="tag_actors", run="{run}", __name__!~"up|scrape_.*"}})')
    return {r["metric"]["agent"]: int(float(r["value"][1])) for r in res}


def inject_junk(endpoint: str, n: int) -> None:
    """``n`` strangers (random identities) each send one junk frame to a process's endpoint."""
    import zmq

    ctx = zmq.Context()
    try:
        for _ in range(n):
            sock = ctx.socket(zmq.DEALER)
            sock.linger = 1000
            sock.identity = os.urandom(6)
            sock.connect(endpoint)
            sock.send_multipart([b"\x00junk", b"\xff" * 16])
            sock.close()
    finally:
        ctx.term()


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_two_runs_clean_finish_bad_frames_and_a_kill(tmp_path, launch):
    """Run A and run B: the same config (run.name), the same run folder, one after the other.

    A finishes cleanly: its launcher reports state=finished and every process tag_up 0 before going; its
    targets leave Prometheus; no alert names it, in any state, over 15 s (TagAgentDown's `for` is 10 s). B: a
    distinct `run` label with the same `config`; the `$run` variable offers B first; every panel, variable and
    rule returns data for B; each process within its series budget and without series for what it never does.
    5 junk frames from strangers to l1.0: the bad-frames panel shows them (> 0) under link unknown@l1.0. Then
    l1.2 is killed: exactly one new alert about a process or a run, in any state, TagRunFailed, naming l1.2; the
    launcher exits 1, removes its link, and leaves no actor."""
    from test_metrics import SERIES_PER_ENDPOINT, SERIES_PER_PEER

    from tag_actors.run_metrics import process_links

    t0 = time.monotonic()
    name = f"montest-{os.getpid()}"
    run_dir = MON.parent / "runs" / f"{name}-{time.monotonic_ns() % 10**6}"  # in the checkout: linked in targets/
    sd_file = run_dir / "prometheus_targets.json"
    try:
        with start_prometheus(tmp_path, [str(sd_file)]) as base:
            # ---- run A: a clean finish
            proc_a = launch.start(*run_args(run_dir, name, total_env_steps=2000))
            deadline = time.monotonic() + 200  # about 40 s on 2 idle cores; minutes when others share them
            while (run_a := run_label_of(run_dir)) is None:
                assert proc_a.poll() is None and time.monotonic() < deadline, proc_a.communicate()
                time.sleep(0.1)
            link_a = MON / "targets" / f"{run_a}.json"
            assert link_a.is_symlink() and link_a.resolve() == sd_file.resolve()
            while not query(base, f'tag_up{{run="{run_a}"}} == 1'):
                assert proc_a.poll() is None and time.monotonic() < deadline, proc_a.communicate()
                time.sleep(0.5)
            out, err = proc_a.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert proc_a.returncode == 0, f"run A: exit {proc_a.returncode}\n{out}\n{err}"
            t_a_end = time.monotonic()
            assert not link_a.exists() and not link_a.is_symlink(), "run A's link stayed in monitoring/targets/"
            assert json.loads(sd_file.read_text()) == [], "run A's targets stayed in its file_sd list"
            final = query(base, f'last_over_time(tag_run_info{{run="{run_a}"}}[5m])')
            assert [r["metric"]["state"] for r in final if r["metric"]["state"] != "running"] == ["finished"], final
            assert final[0]["metric"]["config"] == name
            # each process said goodbye (tag_up 0) before it went; on a loaded machine a scrape can time out,
            # and the launcher's "finished" covers that process: most of them, not all, are required here
            ups = {r["metric"]["agent"]: r["value"][1] for r in query(base, f'last_over_time(tag_up{{run="{run_a}"}}[5m])')}
            assert set(ups) == set(REAL_PROCESSES) and list(ups.values()).count("0") >= len(ups) // 2, ups

            # ---- run B, same config, same folder; A's end is watched meanwhile
            proc_b = launch.start(*run_args(run_dir, name, total_env_steps=5_000_000))
            seen_a: set = set()
            while time.monotonic() - t_a_end < 15:
                seen_a |= {key(a) for a in alerts_now(base) if a["labels"].get("run") == run_a}
                seen_a |= {key(a) for a in alerts_now(base) if a["labels"]["alertname"] == "TagNoTargets"}
                time.sleep(0.5)
            assert not seen_a, f"a clean finish raised alerts: {sorted(seen_a)}"
            while (run_b := run_label_of(run_dir)) in (None, run_a):
                assert proc_b.poll() is None, proc_b.communicate()
                time.sleep(0.1)

            def per_process() -> list[str]:
                assert proc_b.poll() is None, f"run B exited: {proc_b.communicate()}"
                complaints = []
                for expr, want in REAL_PER_PROCESS.items():
                    q = expr.replace(" ", f'{{job="tag_actors", run="{run_b}"}} ', 1)
                    got = {r["metric"]["agent"] for r in query(base, q)}
                    if not want <= got:
                        complaints.append(f"  {expr}: not yet for {sorted(want - got)}")
                return complaints

            wait_for_data(base, live_queries(base, run_b), REAL_ALLOWED_EMPTY, time.monotonic() + 180, per_process)
            t_data = time.monotonic() - t0

            # one config, two runs; the dashboards' $run offers the newest first
            runs = query(base, f'group by (run, config) (last_over_time(tag_up{{config="{name}"}}[10m]))')
            assert {r["metric"]["run"] for r in runs} == {run_a, run_b}, runs
            (_, _, run_var), *_ = [v for v in variable_queries() if v[1] == "run"]
            order = [r["metric"]["run"] for r in query(base, concrete(run_var, run_b))]
            assert order[:2] == [run_b, run_a], order
            # the mean-return panel of B averages B's episodes only
            mean = next(q for q, w in live_queries(base, run_b).items() if "Mean episode return per level" in w)
            assert {r["metric"]["run"] for r in query(base, mean)} == {run_b}

            # series: within budget, and none for what a process never does
            plan_b = json.loads((run_dir / "plan.json").read_text())
            assert plan_b["run_id"] == run_b
            from tag_actors import config as config_mod
            from tag_actors.topology import build_plan

            raw = json.loads((run_dir / "config.json").read_text())
            topo = build_plan(config_mod.from_dict(raw["config"], raw["source"]))
            counts = series_per_process(base, run_b)
            from test_metrics import SERIES_BASE

            for proc_name, n in counts.items():
                kind = "env" if proc_name == "env" else ("learner_top" if proc_name == "l3.0" else "learner_with_parent")
                peers, served = process_links(topo, proc_name)
                budget = SERIES_BASE[kind] + SERIES_PER_PEER * len(peers) + SERIES_PER_ENDPOINT * len(served)
                assert n <= budget, f"{proc_name}: {n} series > budget {budget}"
            for proc_name, prefixes in REAL_ABSENT.items():
                names = {r["metric"]["__name__"] for r in query(base, f'{{run="{run_b}", agent="{proc_name}"}}')}
                assert not [n for n in names if n.startswith(prefixes)], (proc_name, sorted(names))
            bad = query(base, f'tag_bad_frames_total{{run="{run_b}", agent="l1.0"}}')
            # born at 0: every reason on its 2 links, and the strangers' reasons on the one endpoint it serves
            assert len(bad) == len(BAD_FRAME_REASONS) * 2 + len(STRANGER_REASONS), bad
            assert {r["value"][1] for r in bad} == {"0"}, bad

            # ---- junk frames from strangers: the panel shows them
            inject_junk(plan_b["endpoints"]["l1.0"], JUNK_FRAMES)
            panel_q = next(
                q for q, w in live_queries(base, run_b).items() if w == "transport.json: Bad frames (5m)"
            )
            deadline = time.monotonic() + 30
            while True:
                hits = {
                    (r["metric"]["agent"], r["metric"]["link"], r["metric"]["reason"]): float(r["value"][1])
                    for r in query(base, panel_q)
                    if float(r["value"][1]) > 0
                }
                if hits:
                    break
                assert time.monotonic() < deadline, "the bad-frames panel never showed the junk frames"
                time.sleep(0.5)
            assert set(hits) == {("l1.0", "unknown@l1.0", "unknown_peer")}, hits
            total = query(base, f'tag_bad_frames_total{{run="{run_b}", link="unknown@l1.0", reason="unknown_peer"}}')
            assert [r["value"][1] for r in total] == [str(JUNK_FRAMES)], total
            links = {r["metric"]["link"] for r in query(base, f'tag_bad_frames_total{{run="{run_b}"}}')}
            assert all(lk in REAL_PROCESSES or lk.startswith(("unknown@", "env/")) for lk in links), links

            # ---- a kill: exactly one new alert about a process or a run, naming the process
            before = {key(a) for a in alerts_now(base) if a["labels"]["alertname"] in LIFE_ALERTS}
            assert not before, before
            pids = actor_pids(run_dir)
            assert set(pids) == set(REAL_PROCESSES), pids
            os.kill(pids[KILLED], signal.SIGKILL)
            t_kill = time.monotonic()
            seen: set = set()
            while time.monotonic() - t_kill < 25:
                now = [a for a in alerts_now(base) if a["labels"]["alertname"] in LIFE_ALERTS]
                seen |= {key(a) for a in now}
                if time.monotonic() - t_kill > 15 and ("TagRunFailed", KILLED, "firing") in seen:
                    break
                time.sleep(0.5)
            assert seen == {("TagRunFailed", KILLED, "firing")}, f"after the kill: {sorted(seen)}"
            hit = next(a for a in alerts_now(base) if a["labels"]["alertname"] == "TagRunFailed")
            labels = hit["labels"]
            assert (labels["run"], labels["config"], labels["severity"]) == (run_b, name, "critical"), labels
            assert "killed by SIGKILL" in labels["failure"], labels
            pending = sorted(k for k in seen if k[2] == "pending")
            out, err = proc_b.communicate(timeout=90)
            assert proc_b.returncode == 1, f"run B: exit {proc_b.returncode}\n{err[-3000:]}"
            assert f"process {KILLED!r} failed" in err
            link_b = MON / "targets" / f"{run_b}.json"
            assert not link_b.is_symlink(), "a failed run's link stayed"
            print(
                f"runs {run_a} / {run_b}: data after {t_data:.1f} s; series per process {counts}; "
                f"alerts seen after the kill {sorted(seen)} (pending: {pending}); done at {time.monotonic() - t0:.1f} s"
            )
    finally:
        for proc in launch.procs:  # a launcher stopped by SIGTERM stops its run and cleans up (sockets, link)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.communicate(timeout=30)
        for link in (MON / "targets").glob(f"{name}-*.json"):
            link.unlink(missing_ok=True)
        try:
            launch.close()
            launch.check_clean()
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------- stale links
@pytest.mark.slow
@pytest.mark.timeout(90)
def test_stale_link_is_swept_and_no_targets_can_fire(tmp_path, prometheus):
    """A launcher killed with SIGKILL cannot remove its run's link: its dead target keeps `up` present, so
    TagNoTargets cannot fire. The sweep (scripts/monitor.sh runs it) removes the link, and it becomes true."""
    from tag_actors.metrics import link_file_sd
    from tag_actors.run_metrics import sweep_links

    base, targets_dir = prometheus
    dead = tmp_path / "runs" / "killed-run"
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    write_file_sd(
        dead / "prometheus_targets.json",
        [file_sd_target("127.0.0.1", port, run="killed-run", level=1, agent="l1.0", host="h", role="agent")],
    )
    (dead / "plan.json").write_text(json.dumps({"launcher_pid": 2**22 + 4321}))  # no such process
    link_file_sd(dead / "prometheus_targets.json", targets_dir)

    def no_targets_state() -> str | None:
        rules = [r for g in api(base, "/api/v1/rules")["data"]["groups"] for r in g["rules"]]
        rule = next(r for r in rules if r["name"] == "TagNoTargets")
        assert rule["health"] in ("ok", "unknown"), rule
        return rule["state"]

    deadline = time.monotonic() + 30
    while not query(base, 'up{job="tag_actors"} == 0') or no_targets_state() != "inactive":
        assert time.monotonic() < deadline, f"stale target not down, or TagNoTargets {no_targets_state()}"
        time.sleep(0.5)
    assert [p.name for p in sweep_links(targets_dir)] == ["killed-run.json"]
    deadline = time.monotonic() + 30
    while no_targets_state() != "pending":  # `for: 2m` then firing; pending proves the expression holds
        assert time.monotonic() < deadline, f"TagNoTargets stayed {no_targets_state()} after the sweep"
        time.sleep(0.5)
    assert query(base, 'absent(up{job=~"tag_actors|tag_launcher"})')


# ---------------------------------------------------------------------------------------------------- monitor.sh
@pytest.mark.slow
@pytest.mark.timeout(90)
def test_monitor_sh_prints_pages_that_answer(tmp_path):
    """Debian's prometheus 2.42 has no React UI (/targets answers 404, /classic/targets works): monitor.sh
    probes and prints only pages that answer 200, one per page kind, and stops Prometheus on SIGTERM."""
    _tools()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    proc = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "monitor.sh"), str(run_dir)],
        env={**os.environ, "PORT": str(port), "DATA": str(tmp_path / "data")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not any(line.startswith("Ctrl-C stops") for line in lines):
            assert proc.poll() is None, "".join(lines) + proc.stdout.read()
            assert time.monotonic() < deadline, "".join(lines)
            lines.append(proc.stdout.readline())
        text = "".join(lines)
        pages = next(line for line in lines if line.strip().startswith("pages")).split()[1:]
        assert len(pages) == 4, text
        for url in pages:
            with urllib.request.urlopen(url, timeout=5) as r:
                assert r.status == 200, url
        for kind in ("targets", "alerts", "rules", "graph"):
            assert any(u.endswith(f"/{kind}") for u in pages), (kind, pages)
            # the page itself answers 200 (no redirect: Debian's /graph redirects to /classic/graph), or is not
            # printed
            react = f"http://127.0.0.1:{port}/{kind}"
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request("GET", f"/{kind}")
                react_ok = conn.getresponse().status == 200
            finally:
                conn.close()
            assert (react in pages) == react_ok, (react, react_ok, pages)
    finally:
        stop_and_prove_gone(proc, port)
        proc.stdout.close()
