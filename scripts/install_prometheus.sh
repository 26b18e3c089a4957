#!/usr/bin/env bash
# Install Debian's `prometheus` package (brings `promtool`) non-interactively, without leaving a daemon running.
#
# Idempotent: does nothing when both `prometheus` and `promtool` are already on PATH.
# Needs root (or sudo) and a Debian/Ubuntu apt. Meant for containers without systemd and for CI.
#
#   scripts/install_prometheus.sh          # install if missing
#   FORCE=1 scripts/install_prometheus.sh  # reinstall check even when present
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if [[ "${FORCE:-0}" != "1" ]] && have prometheus && have promtool; then
    echo "install_prometheus: already installed: $(prometheus --version 2>&1 | head -n1)"
    exit 0
fi

if ! have apt-get; then
    echo "install_prometheus: apt-get not found; install Prometheus >= 2.x by hand (https://prometheus.io/download/)" >&2
    exit 1
fi

SUDO=""
if [[ "$(id -u)" != "0" ]]; then
    if have sudo; then SUDO="sudo"; else
        echo "install_prometheus: must run as root (or have sudo)" >&2
        exit 1
    fi
fi

# Forbid maintainer scripts from starting services (invoke-rc.d honours policy-rc.d exit 101).
# Only install our policy file if none exists, and remove only what we created.
POLICY=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e "$POLICY" ]]; then
    $SUDO sh -c "printf '#!/bin/sh\nexit 101\n' > $POLICY && chmod 755 $POLICY"
    created_policy=1
fi
cleanup() {
    if [[ "$created_policy" == "1" ]]; then $SUDO rm -f "$POLICY"; fi
}
trap cleanup EXIT

# Pids of prometheus daemons that were already running before we started (we leave those alone).
before=" $( (pgrep -x prometheus 2>/dev/null || true) | tr "\n" " ") "

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold prometheus

# Belt and braces: if a package script still started a daemon, stop the one(s) it started.
for pid in $(pgrep -x prometheus 2>/dev/null || true); do
    if [[ "$before" != *" $pid "* ]]; then
        echo "install_prometheus: stopping daemon started by the package (pid $pid)"
        $SUDO kill "$pid" 2>/dev/null || true
    fi
done

if ! have prometheus || ! have promtool; then
    echo "install_prometheus: install finished but prometheus/promtool are not on PATH" >&2
    exit 1
fi
echo "install_prometheus: installed: $(prometheus --version 2>&1 | head -n1)"
