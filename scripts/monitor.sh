#!/usr/bin/env bash
# Prometheus next to a tag_actors run, without Docker. Runs in the foreground: Ctrl-C stops it.
#
#   scripts/monitor.sh                 # every run linked in monitoring/targets/ (the launcher links each run)
#   scripts/monitor.sh runs/NAME       # only that run (RUN_DIR/prometheus_targets.json); TSDB in RUN_DIR/prometheus
#
# Environment: PORT (9090), ADDR (127.0.0.1), DATA (the TSDB folder; default RUN_DIR/prometheus with a run folder,
# else ${TMPDIR:-/tmp}/tag_prometheus), RETENTION (15d).
# Installs Debian's prometheus (scripts/install_prometheus.sh; needs root or sudo) when it is missing. Without a
# run folder it first removes the links in monitoring/targets/ of runs that are over (python -m
# tag_actors.run_metrics sweep), then prints the web pages that answer (Debian's build has only /classic/...).
# Needs the run to be started with metrics on (run.metrics = true, the default; --set run.metrics=true).
#
# Grafana: not packaged for Debian, PyPI or npm. With Docker, either run the whole stack instead of this script
#   docker compose -f monitoring/docker-compose.yml up -d        # Prometheus :9090 + Grafana :3000
# or add only Grafana to the Prometheus this script starts on 127.0.0.1:9090 (its datasource points there):
#   docker compose -f monitoring/docker-compose.yml up -d --no-deps grafana
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MON="$ROOT/monitoring"
PORT="${PORT:-9090}"
ADDR="${ADDR:-127.0.0.1}"
RETENTION="${RETENTION:-15d}"

usage() { sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    -*) echo "monitor.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
esac
if [[ $# -gt 1 ]]; then usage >&2; exit 2; fi

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    echo "monitor.sh: prometheus not found; installing it with scripts/install_prometheus.sh"
    bash "$ROOT/scripts/install_prometheus.sh"
fi

if (exec 3<>"/dev/tcp/$ADDR/$PORT") 2>/dev/null; then
    echo "monitor.sh: $ADDR:$PORT is already in use (another Prometheus?); choose another: PORT=9091 $0 ${1:-}" >&2
    exit 1
fi

if [[ $# -eq 1 ]]; then
    RUN_DIR="$(cd "$1" 2>/dev/null && pwd)" || { echo "monitor.sh: no run folder $1" >&2; exit 1; }
    SD="$RUN_DIR/prometheus_targets.json"
    if [[ ! -f "$SD" ]]; then
        if [[ -f "$RUN_DIR/plan.json" ]]; then
            echo "monitor.sh: $SD not found: was the run started with run.metrics = false?" >&2
            exit 1
        fi
        echo "monitor.sh: $SD does not exist yet; Prometheus will pick it up once the launcher writes it"
    fi
    DATA="${DATA:-$RUN_DIR/prometheus}"
    mkdir -p "$DATA"
    # monitoring/prometheus.yml with this run's target list instead of targets/*.json (absolute paths)
    CONFIG="$RUN_DIR/prometheus_monitor.yml"
    sed -e "s#^\( *\)- rules/\*\.rules\.yml\$#\1- $MON/rules/*.rules.yml#" \
        -e "s#^\( *\)- targets/\*\.json\$#\1- $SD#" "$MON/prometheus.yml" > "$CONFIG"
    grep -qF -- "- $SD" "$CONFIG" || { echo "monitor.sh: could not rewrite $MON/prometheus.yml" >&2; exit 1; }
    WHAT="run $RUN_DIR"
else
    DATA="${DATA:-${TMPDIR:-/tmp}/tag_prometheus}"
    mkdir -p "$DATA"
    CONFIG="$MON/prometheus.yml"
    # links of runs that are over (a killed launcher could not remove its own) would keep dead targets alive
    PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" python3 -m tag_actors.run_metrics sweep "$MON/targets" \
        || echo "monitor.sh: could not sweep stale links in $MON/targets (python3 with tag_actors's requirements?)" >&2
    shopt -s nullglob
    linked=("$MON"/targets/*.json)
    WHAT="every run linked in $MON/targets/ (${#linked[@]} now; the launcher adds each run it starts)"
fi

# syntax only: a target list that does not exist (yet, or any more) is not an error for Prometheus
promtool check config --syntax-only "$CONFIG" >/dev/null || { promtool check config --syntax-only "$CONFIG"; exit 1; }
promtool check rules "$MON"/rules/*.rules.yml >/dev/null || { promtool check rules "$MON"/rules/*.rules.yml; exit 1; }

URL="http://$ADDR:$PORT"
prometheus \
    --config.file="$CONFIG" \
    --web.listen-address="$ADDR:$PORT" \
    --storage.tsdb.path="$DATA" \
    --storage.tsdb.retention.time="$RETENTION" \
    --log.level=warn &
PROM=$!
trap 'kill -TERM "$PROM" 2>/dev/null; wait "$PROM"; exit 130' INT TERM

# status URL: the HTTP code of a GET (000: nothing answered)
status() { curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null || true; }
for _ in $(seq 1 150); do
    [[ "$(status "$URL/-/ready")" == 200 ]] && break
    if ! kill -0 "$PROM" 2>/dev/null; then
        code=0; wait "$PROM" || code=$?
        how="exit code $code"; (( code > 128 )) && how="killed by signal $(kill -l $((code - 128)))"
        echo "monitor.sh: prometheus exited before it was ready ($how); its own last words are above" >&2
        exit 1
    fi
    sleep 0.2
done

# The web UI differs between builds: upstream serves a React UI at /targets, /alerts, /graph; Debian's package
# (2.42) ships without it (those answer 404) and only the classic pages under /classic/ work. Print what answers.
pages=()
for page in targets alerts rules graph; do
    for url in "$URL/$page" "$URL/classic/$page"; do
        if [[ "$(status "$url")" == 200 ]]; then pages+=("$url"); break; fi
    done
done
cat <<EOF
Prometheus for $WHAT
  config  $CONFIG
  data    $DATA
  pages   ${pages[*]:-(no web page answers: use the HTTP API below)}
  query   curl -s '$URL/api/v1/query' --data-urlencode 'query=tag_run_info'
          curl -s '$URL/api/v1/query' --data-urlencode 'query=tag_level:tag_decisions:rate30s'
          curl -s '$URL/api/v1/alerts'
  Grafana (Docker): docker compose -f monitoring/docker-compose.yml up -d --no-deps grafana  ->  http://127.0.0.1:3000
Ctrl-C stops Prometheus.
EOF
code=0; wait "$PROM" || code=$?
if (( code != 0 )); then
    how="exit code $code"; (( code > 128 )) && how="killed by signal $(kill -l $((code - 128)))"
    echo "monitor.sh: prometheus stopped ($how); its own last words are above" >&2
fi
exit "$code"
