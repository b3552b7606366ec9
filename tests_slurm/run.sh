#!/usr/bin/env bash
# `make test-slurm`: the ci preset's DAG up to the teacher, submitted through the SLURM profile
# (`snakemake --cores all --profile slurm artifacts/teacher`) to a throw-away single-node
# SLURM cluster, then checked against SLURM's own records (tests_slurm/slurm_e2e.py).
# Needs root and slurm-wlm + munge (the Makefile runs envs/slurm_packages.sh first).
# The cluster is always stopped (trap), by the PIDs envs/slurm_cluster.sh recorded; if this script
# is SIGKILLed, the next `envs/slurm_cluster.sh up` stops what it left (this shell is the owner).
# Nothing under /etc/slurm is used: the cluster's clients come from `. $CLUSTER/env`
# (SLURM_CONF=$CLUSTER/slurm.conf, and $CLUSTER/bin first on PATH for the srun inside jobs).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ "$(id -u)" -eq 0 ] || { echo "test-slurm: needs root (it starts munged, slurmctld and slurmd)" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/pvtt-slurm.XXXXXX")
chmod 755 "$TMP"  # the daemons' users (munge, slurm) must reach the cluster dir inside it
CLUSTER="$TMP/cluster"  # must not exist yet: `up` creates it
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  bash "$ROOT/envs/slurm_cluster.sh" down "$CLUSTER" || rc=1
  if [ "$rc" -eq 0 ] && [ -z "${KEEP_SLURM_TEST:-}" ]; then
    rm -rf "$TMP"
  else
    echo "test-slurm: kept $TMP (cluster logs in $CLUSTER/log, Snakemake output in $TMP/snakemake.out)" >&2
  fi
  exit "$rc"
}
child=""
stop_child() { if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null || true; wait "$child" 2>/dev/null || true; fi; exit "$1"; }
trap cleanup EXIT
trap 'stop_child 130' INT
trap 'stop_child 143' TERM HUP

start=$SECONDS
bash "$ROOT/envs/slurm_cluster.sh" up "$CLUSTER"
# shellcheck disable=SC1091  # written by `up`
. "$CLUSTER/env"
# In the background so that a TERM/INT reaches the trap at once (it stops the check and its Snakemake).
"$PY" "$ROOT/tests_slurm/slurm_e2e.py" --cluster "$CLUSTER" --work "$TMP" &
child=$!
wait "$child"
child=""
echo "test-slurm: passed in $((SECONDS - start)) s"
