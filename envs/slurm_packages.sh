#!/usr/bin/env bash
# Debian/Ubuntu packages for a single-node SLURM test cluster (slurm-wlm + munge), installed
# only when missing. `make test-slurm` calls it; envs/slurm_cluster.sh itself installs nothing.
# While apt-get runs, a policy-rc.d (exit 101) keeps the packages from starting their daemons;
# it is written only where none exists, with a content of its own, and removed on exit (trap)
# or, after a SIGKILL, by the next run of this script or of `envs/slurm_cluster.sh up`, which
# recognise it by that exact content. A policy-rc.d that was there before is never touched.
# Run as root, it holds envs/slurm_cluster.sh's lock throughout, so that no `up` runs meanwhile.
set -euo pipefail

POLICY_RC=${PVTT_SLURM_POLICY_RC:-/usr/sbin/policy-rc.d}
LOCK=${PVTT_SLURM_LOCK:-/run/pvtt-slurm-harness.lock}
# Keep in sync with POLICY_RC_BODY in envs/slurm_cluster.sh.
POLICY_RC_BODY=$'#!/bin/sh\n# pvtt-slurm-harness: temporary, removed by envs/slurm_packages.sh after apt-get install\nexit 101'
ours() { [ -f "$POLICY_RC" ] && [ ! -L "$POLICY_RC" ] && [ "$(cat "$POLICY_RC" 2>/dev/null)" = "$POLICY_RC_BODY" ]; }
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

if [ -z "$SUDO" ]; then
  exec 9<>"$LOCK"
  flock -n 9 || { echo "slurm_packages: a test cluster run holds $LOCK ($(head -n 1 "$LOCK")); try again after it" >&2; exit 1; }
  if ours; then rm -f "$POLICY_RC"; echo "slurm_packages: removed $POLICY_RC left behind by a killed run"; fi
fi

need=()
for pair in slurmctld:slurm-wlm slurmd:slurm-wlm sbatch:slurm-client squeue:slurm-client \
            sinfo:slurm-client munged:munge mungekey:munge; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
    [[ " ${need[*]-} " == *" $pkg "* ]] || need+=("$pkg")
  fi
done
if [ ${#need[@]} -eq 0 ]; then
  echo "slurm_packages: slurm-wlm and munge already installed"
  exit 0
fi
command -v apt-get >/dev/null 2>&1 || { echo "slurm_packages: missing ${need[*]} and no apt-get; install them by hand" >&2; exit 1; }
echo "slurm_packages: installing ${need[*]}"
$SUDO apt-get update -qq 9>&-  # no child keeps the lock
# policy-rc.d 101: never let the packages' maintainer scripts start daemons (we start our own).
if [ ! -e "$POLICY_RC" ] && [ ! -L "$POLICY_RC" ]; then
  trap 'if ours; then $SUDO rm -f "$POLICY_RC"; fi' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM HUP
  printf '%s\n' "$POLICY_RC_BODY" | $SUDO tee "$POLICY_RC" >/dev/null
  $SUDO chmod 755 "$POLICY_RC"
fi
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 9>&-
echo "slurm_packages: ok ($(slurmctld -V 2>/dev/null || /usr/sbin/slurmctld -V))"
