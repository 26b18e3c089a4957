"""monitoring/: promtool checks, dashboard structure, and a live Prometheus scraping three metric processes.

The live test runs every expression of every dashboard panel (and every recording rule) against a real
Prometheus fed by three small processes that use tag_actors.metrics, then kills one process and waits for the
TagAgentDown alert. It needs Debian's `prometheus` (scripts/install_prometheus.sh); with CI=true the test runs
that script itself when the binary is missing, otherwise it skips and says so.
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
from pathlib import Path

import pytest

from tag_actors.metrics import file_sd_target, write_file_sd

ROOT = Path(__file__).resolve().parents[1]
MON = ROOT / "monitoring"
DASHBOARDS = sorted((MON / "grafana" / "dashboards").glob("*.json"))
RULES = MON / "rules" / "tag_actors.rules.yml"
INSTALL = ROOT / "scripts" / "install_prometheus.sh"
DS_UID = "tag-prometheus"

# Expressions (matched by substring) that may legitimately return no sample in the live test, but must still be
# valid queries: the fake processes never see a bad frame, and no alert fires before one process is killed.
ALLOWED_EMPTY = {
    "tag_bad_frames_total": "no malformed frame is ever received by the fake processes",
    "ALERTS{": "no alert is active while every process is healthy",
}


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


SUBST = [("$__rate_interval", "10s"), ("$run", ".*"), ("$level", ".*"), ("$agent", ".*"), ("$link", ".*")]


def concrete(expr: str) -> str:
    for a, b in SUBST:
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


# ---------------------------------------------------------------------------------------------------- static
def test_promtool_check_config_and_rules():
    _, promtool = _tools()
    r = subprocess.run(
        [promtool, "check", "config", str(MON / "prometheus.yml")], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr
    r = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


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
                   "approx_kl": 0.01, "clip_fraction": 0.1, "lr": 3e-4, "update_seconds": 0.05,
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


@pytest.mark.timeout(90)
def test_live_prometheus_dashboards_and_agent_down(prometheus, fake_processes):
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

    records = re.findall(r"^\s*- record: (\S+)\s*$", RULES.read_text(), flags=re.M)
    assert len(records) >= 4, records
    queries: dict[str, str] = {}  # concrete expr -> where it comes from
    for dash, title, expr in all_exprs():
        queries.setdefault(concrete(expr), f"{dash}: {title}")
    for dash, var, q in variable_queries():
        queries.setdefault(concrete(q), f"{dash}: variable ${var}")
    for rec in records:
        queries.setdefault(rec, "recording rule")
    queries.setdefault('up{job="tag_actors"} == 1', "all targets up")

    def allowed(expr: str) -> bool:
        return any(k in expr for k in ALLOWED_EMPTY)

    # 1. every query is valid; every one not allowed empty returns a finite sample
    deadline = time.monotonic() + 45
    missing: dict[str, str] = {}
    while True:
        missing = {}
        for q, where in queries.items():
            res = api(base, "/api/v1/query", query=q)
            assert res["status"] == "success", f"{where}: {q}: {res}"
            if not allowed(q) and not _has_finite(res["data"]["result"]):
                missing[q] = where
        up = api(base, "/api/v1/query", query='up{job="tag_actors"} == 1')["data"]["result"]
        if not missing and len(up) == len(PROCS):
            break
        if time.monotonic() > deadline:
            pytest.fail("no data after 45 s for:\n" + "\n".join(f"  {w}: {q}" for q, w in missing.items()))
        time.sleep(1)
    up_labels = {r["metric"]["agent"]: r["metric"] for r in up}
    assert up_labels["a0"]["level"] == "1" and up_labels["a0"]["role"] == "agent"
    # process labels are kept as they are (honor_labels), not renamed to exported_*
    res = api(base, "/api/v1/query", query='tag_ticks_total{agent="top"}')["data"]["result"]
    assert res and not [k for k in res[0]["metric"] if k.startswith("exported_")], res
    assert res[0]["metric"]["role"] == "agent" and res[0]["metric"]["host"] == "testhost"

    # 2. a process dies: TagAgentDown goes pending (then firing after its `for`)
    procs["a0"].kill()
    procs["a0"].wait(timeout=10)
    deadline = time.monotonic() + 25
    while True:
        alerts = api(base, "/api/v1/alerts")["data"]["alerts"]
        down = [a for a in alerts if a["labels"].get("alertname") == "TagAgentDown"]
        if down:
            break
        assert time.monotonic() < deadline, f"TagAgentDown not raised in 25 s; alerts: {alerts}"
        time.sleep(0.5)
    assert {a["labels"]["agent"] for a in down} == {"a0"}
    assert down[0]["state"] in ("pending", "firing")
    assert down[0]["labels"]["level"] == "1" and down[0]["labels"]["run"] == "livetest"
    assert time.monotonic() - t0 < 80
