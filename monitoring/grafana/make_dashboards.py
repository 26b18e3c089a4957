"""Generate the provisioned Grafana dashboards of tag_actors (monitoring/grafana/dashboards/*.json).

    python monitoring/grafana/make_dashboards.py          # rewrite the JSON files
    python monitoring/grafana/make_dashboards.py --check  # exit 1 if a file differs from what would be written

The JSON files are committed (Grafana provisions them as they are); this script is only the way to edit them
consistently: one datasource uid, unique panel ids, template variables run / level / agent (/ link),
`$__rate_interval` in every rate(), and a unit and an axis label on every graph. ``$run`` is one run (the run's
unique id), the newest by default (its options are the runs sorted by their launcher's start time, newest first).
tests/test_monitoring.py runs every expression against a real Prometheus.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"

DS = {"type": "prometheus", "uid": "tag-prometheus"}
JOB = 'job="tag_actors"'
RUN = f'{JOB}, run="$run"'
SEL = f'{JOB}, run="$run", level=~"$level", agent=~"$agent"'
SEL_LINK = f'{SEL}, link=~"$link"'
RI = "$__rate_interval"


def var(name: str, query: str, label: str | None = None) -> dict:
    return {
        "name": name,
        "label": label or name,
        "type": "query",
        "datasource": DS,
        "query": query,
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 3,
        "hide": 0,
        "options": [],
        "regex": "",
    }


def run_var() -> dict:
    """One run, the newest by default: the runs of the dashboard's time range (ended ones too), sorted by their
    launcher's start time, newest first (Grafana selects the first option when none is chosen; sort 0 keeps the
    query's order)."""
    v = var(
        "run",
        "query_result(sort_desc(max by (run) "
        '(max_over_time(tag_run_start_time_seconds{job="tag_launcher"}[$__range]))))',
    )
    v.update(
        includeAll=False,
        multi=False,
        allValue=None,
        current={},
        sort=0,
        regex='/run="([^"]+)"/',
        description="the run's unique id (run folder + start time); newest first",
    )
    return v


V_RUN = run_var()
V_LEVEL = var("level", 'label_values(tag_up{run="$run"}, level)')
V_AGENT = var("agent", 'label_values(tag_up{run="$run", level=~"$level"}, agent)')
V_LINK = var(
    "link", 'label_values(tag_frames_sent_total{run="$run", level=~"$level", agent=~"$agent"}, link)'
)


def target(expr: str, legend: str = "", ref: str = "A", **extra) -> dict:
    t = {"refId": ref, "datasource": DS, "expr": expr, "legendFormat": legend or "__auto", "range": True}
    t.update(extra)
    return t


def quantiles(metric: str, sel: str, by: str, qs=(0.5, 0.9, 0.99)) -> list[dict]:
    out = []
    for i, q in enumerate(qs):
        expr = f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{sel}}}[{RI}])))"
        legend = " ".join("{{" + b.strip() + "}}" for b in by.split(",")) + f" p{int(q * 100)}"
        out.append(target(expr, legend, chr(ord("A") + i)))
    return out


def mean_return(sel: str, by: str, window: str = "5m") -> str:
    """Mean episode return over a window: (positive part - negative part) / episodes (see tag_actors.metrics)."""
    return (
        f"(sum by ({by}) (increase(tag_episode_reward_positive_total{{{sel}}}[{window}]))"
        f" - sum by ({by}) (increase(tag_episode_reward_negative_total{{{sel}}}[{window}])))"
        f" / sum by ({by}) (increase(tag_episodes_total{{{sel}}}[{window}]))"
    )


def panel(
    title: str,
    targets: list[dict],
    unit: str = "short",
    kind: str = "timeseries",
    w: int = 12,
    h: int = 8,
    description: str = "",
    axis: str = "",
    **options,
) -> dict:
    """A panel; graphs (timeseries, heatmap) need ``axis``, the y axis label with its unit (e.g. "ticks / s")."""
    if kind in ("timeseries", "heatmap") and not axis:
        raise ValueError(f"panel {title!r}: a graph needs an axis label with its unit")
    p = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": targets,
        "_w": w,
        "_h": h,
    }
    if kind == "timeseries":
        p["options"] = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
        p["fieldConfig"]["defaults"]["custom"] = {
            "lineWidth": 1,
            "fillOpacity": 0,
            "showPoints": "never",
            "axisLabel": axis,
        }
    elif kind == "stat":
        p["options"] = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "none",
            "textMode": "value_and_name",
        }
    elif kind == "heatmap":
        p["options"] = {
            "calculate": False,
            "yAxis": {"axisPlacement": "left", "unit": unit, "axisLabel": axis},
            "cellGap": 1,
            "color": {
                "mode": "scheme",
                "scheme": "Oranges",
                "steps": 64,
                "exponent": 0.5,
                "fill": "dark-orange",
            },
            "tooltip": {"show": True, "yHistogram": True},
            "legend": {"show": True},
            "rowsFrame": {"layout": "auto"},
        }
    elif kind == "table":
        p["options"] = {"showHeader": True}
    p["options"] = {**p.get("options", {}), **options}
    return p


def layout(panels: list[dict]) -> list[dict]:
    """Assign ids 1..n and a left-to-right, top-to-bottom grid (24 columns)."""
    x = y = row_h = 0
    for i, p in enumerate(panels, start=1):
        w, h = p.pop("_w"), p.pop("_h")
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p["id"] = i
        p["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
        x += w
        row_h = max(row_h, h)
    return panels


def dashboard(uid: str, title: str, description: str, variables: list[dict], panels: list[dict]) -> dict:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["tag_actors"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "5s",
        "time": {"from": "now-15m", "to": "now"},
        "timepicker": {"refresh_intervals": ["2s", "5s", "10s", "30s", "1m", "5m"]},
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["tag_actors"], "asDropdown": False, "title": "tag_actors"}],
        "templating": {"list": variables},
        "panels": layout(panels),
    }


def run_overview() -> dict:
    mean_reward = mean_return(RUN, "run, level")
    launcher = 'job="tag_launcher", run="$run"'
    panels = [
        panel(
            "Run state",
            [
                target(
                    f"tag_run_info{{{launcher}}}",
                    "{{state}} {{failed_process}}",
                    format="table",
                    instant=True,
                    range=False,
                ),
            ],
            kind="table",
            w=12,
            h=4,
            description="running / finished / failed / stopped, from the run's launcher; failed_process: the "
            "process that failed first (alert TagRunFailed)",
        ),
        panel(
            "Progress",
            [target(f"tag_run_progress_ratio{{{launcher}}}", "env steps done")],
            "percentunit",
            kind="gauge",
            w=6,
            h=4,
            description="env steps done / run.total_env_steps",
        ),
        panel(
            "Time left (ETA)",
            [target(f"tag_run_eta_seconds{{{launcher}}}", "ETA")],
            "s",
            kind="stat",
            w=6,
            h=4,
            description="(target - done) / recent env steps per second; only while running",
        ),
        panel(
            "Env steps per second (x batch)",
            [
                target(f"sum by (run) (rate(tag_env_steps_total{{{RUN}}}[{RI}]))", "env steps / s"),
            ],
            "ops",
            axis="env steps / s",
        ),
        panel(
            "Env ticks per second",
            [
                target(f'sum by (run) (rate(tag_ticks_total{{{RUN}, role="env"}}[{RI}]))', "env ticks / s"),
            ],
            "ops",
            axis="ticks / s",
            description="one tick = one step of the batched env; every process of the run sees every tick",
        ),
        panel(
            "Decisions per second, per level",
            [
                target(
                    f"sum by (run, level) (rate(tag_decisions_total{{{RUN}}}[{RI}]))",
                    "level {{level}}",
                ),
            ],
            "ops",
            axis="decisions / s",
            description="sum over the agents of a level of their decisions (act() calls); an agent of period p "
            "decides every p ticks",
        ),
        panel(
            "Mean episode return per level (5m window)",
            [target(mean_reward, "level {{level}}")],
            axis="return",
            description="(increase of positive part - increase of negative part) / episodes, over 5m",
        ),
        panel(
            "Last episode return per agent",
            [
                target(f'tag_episode_reward_last{{{RUN}, role="agent"}}', "L{{level}} {{agent}}"),
            ],
            axis="return",
        ),
        panel(
            "Processes up per level",
            [
                target(f"sum by (run, level) (up{{{RUN}}})", "level {{level}}"),
            ],
            kind="stat",
            w=8,
        ),
        panel(
            "Episodes per minute, per level",
            [
                target(
                    f"60 * sum by (run, level) (rate(tag_episodes_total{{{RUN}}}[{RI}]))",
                    "level {{level}}",
                ),
            ],
            w=8,
            axis="episodes / min",
        ),
        panel(
            "Mean act / step time per level",
            [
                target(
                    f"sum by (run, level) (rate(tag_act_duration_seconds_sum{{{RUN}}}[{RI}]))"
                    f" / sum by (run, level) (rate(tag_act_duration_seconds_count{{{RUN}}}[{RI}]))",
                    "level {{level}}",
                ),
            ],
            "s",
            w=8,
            axis="seconds per decision / step",
        ),
        panel(
            "Learner updates per minute, per level",
            [
                target(
                    f"60 * sum by (run, level) (rate(tag_updates_total{{{RUN}}}[{RI}]))",
                    "level {{level}}",
                ),
            ],
            w=8,
            axis="updates / min",
            description="learning agents only",
        ),
        panel(
            "Checkpoint age",
            [
                target(
                    f"(time() - tag_checkpoint_timestamp_seconds{{{RUN}}}) and tag_checkpoint_timestamp_seconds{{{RUN}}} > 0",
                    "L{{level}} {{agent}}",
                ),
            ],
            "s",
            w=8,
            axis="age",
            description="only processes that saved a checkpoint; alert TagCheckpointTooOld above 600 s",
        ),
        panel(
            "Restarts (1h)",
            [
                target(
                    f"sum by (run, level, agent) (increase(tag_process_restarts_total{{{RUN}}}[1h]))",
                    "L{{level}} {{agent}}",
                ),
            ],
            w=8,
            axis="restarts",
        ),
        panel(
            "Active alerts",
            [
                target(
                    'ALERTS{run="$run"}',
                    "{{alertname}} {{alertstate}} L{{level}} {{agent}}",
                    format="table",
                    instant=True,
                    range=False,
                ),
            ],
            kind="table",
            w=24,
            h=6,
        ),
    ]
    return dashboard(
        "tag-run-overview",
        "tag_actors / run overview",
        "State, progress, tick and decision rates, env throughput and returns of one run",
        [V_RUN],
        panels,
    )


def agent_drilldown() -> dict:
    panels = [
        panel(
            "Act duration (agent decision / env step)",
            quantiles("tag_act_duration_seconds", SEL, "agent"),
            "s",
            axis="seconds",
        ),
        panel(
            "Decisions per second",
            [
                target(f"sum by (agent) (rate(tag_decisions_total{{{SEL}}}[{RI}]))", "{{agent}}"),
            ],
            "ops",
            axis="decisions / s",
            description="act() calls of each agent (the env has none: see its ticks on the run overview)",
        ),
        panel(
            "Learner losses",
            [
                target(f"tag_learner_policy_loss{{{SEL}}}", "{{agent}} policy", "A"),
                target(f"tag_learner_value_loss{{{SEL}}}", "{{agent}} value", "B"),
            ],
            axis="loss",
            description="learning agents only",
        ),
        panel(
            "Entropy and approx KL",
            [
                target(f"tag_learner_entropy{{{SEL}}}", "{{agent}} entropy", "A"),
                target(f"tag_learner_approx_kl{{{SEL}}}", "{{agent}} approx_kl", "B"),
                target(f"tag_learner_clip_fraction{{{SEL}}}", "{{agent}} clip_fraction", "C"),
            ],
            axis="nats / fraction",
        ),
        panel(
            "Explained variance and grad norm",
            [
                target(f"tag_learner_explained_variance{{{SEL}}}", "{{agent}} explained variance", "A"),
                target(f"tag_learner_grad_norm{{{SEL}}}", "{{agent}} grad norm", "B"),
            ],
            axis="ratio / norm",
            description="grad norm before clipping, mean over the minibatches of the last update",
        ),
        panel("Learning rate", [target(f"tag_learner_lr{{{SEL}}}", "{{agent}}")], w=8, axis="learning rate"),
        panel(
            "Update duration",
            quantiles("tag_update_duration_seconds", SEL, "agent", (0.5, 0.9)),
            "s",
            w=8,
            axis="seconds per update",
        ),
        panel(
            "Other learner statistics",
            [target(f"tag_learner_stat{{{SEL}}}", "{{agent}} {{stat}}")],
            w=8,
            axis="value",
        ),
        panel(
            "Resident memory",
            [target(f"process_resident_memory_bytes{{{SEL}}}", "{{agent}}")],
            "bytes",
            w=8,
            axis="RSS",
        ),
        panel(
            "CPU",
            [target(f"rate(process_cpu_seconds_total{{{SEL}}}[{RI}])", "{{agent}}")],
            "percentunit",
            w=8,
            axis="CPU (100% = one core)",
            description="1.0 = one core",
        ),
        panel(
            "Episode return",
            [
                target(f"tag_episode_reward_last{{{SEL}}}", "{{agent}} last", "A"),
                target(mean_return(SEL, "agent"), "{{agent}} mean 5m", "B"),
                target(f"tag_episode_reward_mean{{{SEL}}}", "{{agent}} mean of last 100", "C"),
            ],
            w=8,
            axis="return",
        ),
        panel(
            "Ticks behind the children (async)",
            [target(f"tag_queue_depth{{{SEL}}}", "{{agent}} {{link}}")],
            w=8,
            axis="ticks",
            description="tag_queue_depth: ticks an agent is behind its children (async levels; 0 in lockstep)",
        ),
        panel(
            "Instruction staleness (ticks)",
            quantiles("tag_instruction_staleness_ticks", SEL, "agent", (0.5, 0.9)),
            w=8,
            axis="ticks",
            description="async mode: age of the parent instruction acted on",
        ),
        panel(
            "Instruction staleness (seconds)",
            quantiles("tag_instruction_staleness_seconds", SEL, "agent", (0.5, 0.9)),
            "s",
            w=8,
            axis="seconds",
        ),
        panel(
            "LLM requests per second by outcome",
            [
                target(
                    f"sum by (agent, outcome) (rate(tag_llm_requests_total{{{SEL}}}[{RI}]))",
                    "{{agent}} {{outcome}}",
                ),
            ],
            "reqps",
            w=8,
            axis="requests / s",
            description="LLM agents only",
        ),
        panel(
            "LLM latency",
            quantiles("tag_llm_latency_seconds", SEL, "agent", (0.5, 0.9)),
            "s",
            w=8,
            axis="seconds per call",
        ),
        panel(
            "LLM tokens per second",
            [
                target(
                    f"sum by (agent, kind) (rate(tag_llm_tokens_total{{{SEL}}}[{RI}]))", "{{agent}} {{kind}}"
                ),
            ],
            w=8,
            axis="tokens / s",
        ),
    ]
    return dashboard(
        "tag-agent-drilldown",
        "tag_actors / agent drill-down",
        "One agent (or env process): decision time, learner statistics, resources, LLM calls",
        [V_RUN, V_LEVEL, V_AGENT],
        panels,
    )


def transport() -> dict:
    panels = [
        panel(
            "Round-trip latency (UP sent to DOWN received)",
            [
                target(
                    f"sum by (le) (increase(tag_message_roundtrip_seconds_bucket{{{SEL_LINK}}}[{RI}]))",
                    "{{le}}",
                    format="heatmap",
                ),
            ],
            "s",
            kind="heatmap",
            w=24,
            axis="round trip",
        ),
        panel(
            "Round trip per link",
            quantiles("tag_message_roundtrip_seconds", SEL_LINK, "agent, link"),
            "s",
            axis="seconds",
        ),
        panel(
            "Mean round trip per level",
            [
                target(
                    f"sum by (level) (rate(tag_message_roundtrip_seconds_sum{{{SEL_LINK}}}[{RI}]))"
                    f" / sum by (level) (rate(tag_message_roundtrip_seconds_count{{{SEL_LINK}}}[{RI}]))",
                    "level {{level}}",
                ),
            ],
            "s",
            axis="seconds",
        ),
        panel(
            "Bytes per second",
            [
                target(
                    f"sum by (agent, link) (rate(tag_bytes_sent_total{{{SEL_LINK}}}[{RI}]))",
                    "{{agent}} {{link}} sent",
                    "A",
                ),
                target(
                    f"sum by (agent, link) (rate(tag_bytes_received_total{{{SEL_LINK}}}[{RI}]))",
                    "{{agent}} {{link}} received",
                    "B",
                ),
            ],
            "Bps",
            axis="bytes / s",
        ),
        panel(
            "Frames per second",
            [
                target(
                    f"sum by (agent, link) (rate(tag_frames_sent_total{{{SEL_LINK}}}[{RI}]))",
                    "{{agent}} {{link}} sent",
                    "A",
                ),
                target(
                    f"sum by (agent, link) (rate(tag_frames_received_total{{{SEL_LINK}}}[{RI}]))",
                    "{{agent}} {{link}} received",
                    "B",
                ),
            ],
            "ops",
            axis="frames / s",
        ),
        panel(
            "Mean frame size (sent)",
            [
                target(
                    f"sum by (agent, link) (rate(tag_bytes_sent_total{{{SEL_LINK}}}[{RI}]))"
                    f" / sum by (agent, link) (rate(tag_frames_sent_total{{{SEL_LINK}}}[{RI}]))",
                    "{{agent}} {{link}}",
                ),
            ],
            "bytes",
            w=8,
            axis="bytes per frame",
        ),
        panel(
            "Bad frames (5m)",
            [
                target(
                    f"sum by (agent, link, reason) (increase(tag_bad_frames_total{{{SEL_LINK}}}[5m]))",
                    "{{agent}} {{link}} {{reason}}",
                ),
            ],
            w=8,
            axis="frames",
            description="malformed or refused frames, dropped, by link (the configured peer; unknown@X: a "
            "stranger on X's endpoint) and reason; every series exists at 0 from the start; alert TagBadFrames",
        ),
        panel(
            "Queue depth",
            [
                target(f"max by (agent, link) (tag_queue_depth{{{SEL_LINK}}})", "{{agent}} {{link}}"),
            ],
            w=8,
            axis="ticks",
            description="tag_queue_depth: ticks an async agent is behind its children",
        ),
        panel(
            "Instruction staleness p90 per level (seconds)",
            [
                target(
                    f"histogram_quantile(0.9, sum by (level, le) "
                    f"(rate(tag_instruction_staleness_seconds_bucket{{{SEL}}}[{RI}])))",
                    "level {{level}}",
                ),
            ],
            "s",
            w=24,
            axis="seconds",
            description="async mode only: age of the parent instruction an agent acted on",
        ),
    ]
    return dashboard(
        "tag-transport",
        "tag_actors / transport",
        "ZeroMQ links: round-trip latency, bytes, frames, bad frames, queues",
        [V_RUN, V_LEVEL, V_AGENT, V_LINK],
        panels,
    )


DASHBOARDS = {
    "run_overview.json": run_overview,
    "agent_drilldown.json": agent_drilldown,
    "transport.json": transport,
}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    OUT.mkdir(parents=True, exist_ok=True)
    for name, make in DASHBOARDS.items():
        text = json.dumps(make(), indent=2) + "\n"
        path = OUT / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("out of date (run python monitoring/grafana/make_dashboards.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
