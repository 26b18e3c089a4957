#!/usr/bin/env bash
# Install Debian's Slurm (slurm-wlm: slurmctld, slurmd, sbatch, srun) and munge non-interactively, without
# leaving a daemon running: scripts/slurm_local.sh starts its own (tests/test_slurm.py).
#
# Idempotent: does nothing when slurmctld, slurmd and munged are already on PATH. Needs root (or sudo) and apt.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if have slurmctld && have slurmd && have munged && have sbatch; then
    echo "install_slurm: already installed: $(slurmctld -V)"
    exit 0
fi
have apt-get || { echo "install_slurm: apt-get not found; install Slurm and munge by hand" >&2; exit 1; }
SUDO=""
if [[ "$(id -u)" != "0" ]]; then
    if have sudo; then SUDO="sudo"; else echo "install_slurm: must run as root (or have sudo)" >&2; exit 1; fi
fi

# Forbid maintainer scripts from starting services (invoke-rc.d honours policy-rc.d exit 101); only our own
# policy file is removed afterwards.
POLICY=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e "$POLICY" ]]; then
    $SUDO sh -c "printf '#!/bin/sh\nexit 101\n' > $POLICY && chmod 755 $POLICY"
    created_policy=1
fi
trap '[[ "$created_policy" == 1 ]] && $SUDO rm -f "$POLICY"' EXIT

$SUDO apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold slurm-wlm munge
echo "install_slurm: installed: $(slurmctld -V)"
