#!/usr/bin/env bash
# A throw-away single-node SLURM cluster on localhost, for `make test-slurm`.
#
#   envs/slurm_cluster.sh up DIR     # start munged + slurmctld + slurmd with all state in DIR
#   envs/slurm_cluster.sh down DIR   # stop exactly the daemons `up DIR` started
#
# Needs root and Debian's slurm-wlm + munge (envs/slurm_packages.sh installs them; this script
# installs nothing). Everything lives under DIR: munge key and socket, slurm.conf (CPUs from
# `nproc`, RealMemory a bit below `free -m`'s total, one partition "debug"), state, spool,
# logs, and DIR/jobcomp.log, where SLURM itself writes one completion record per job
# (jobcomp/filetxt). Only 127.0.0.1 is used; the two ports are picked free at start-up.
#
# Client commands (sbatch, squeue, srun inside jobs) find the cluster through
# /etc/slurm/slurm.conf, which `up` makes a link to DIR/slurm.conf and `down` removes (only
# that link, only while it points into DIR). SLURM_CONF alone is not enough:
# snakemake-executor-plugin-slurm-jobstep (0.6.1) drops every SLURM_* variable except the job
# ids before its inner `srun`. `up` refuses to run when /etc/slurm/slurm.conf is a real file
# (a real cluster) or belongs to another live test cluster.
#
# Daemons run in the foreground, each in its own session; their PIDs and start times (so a
# recycled PID is never hit) go to DIR/pids. `down` cancels the cluster's jobs (scancel, bounded
# wait), adds any slurmstepd still holding a file under DIR, and sends TERM, then KILL after a
# bounded wait, to the recorded processes and nothing else. Rerunning `up` on the same DIR first stops what it recorded.
set -euo pipefail

SBIN=/usr/sbin
SYSCONF=${SLURM_CLUSTER_SYSCONF:-/etc/slurm/slurm.conf}  # where client commands look by default
WAIT_UP=${SLURM_CLUSTER_WAIT_UP:-60}      # seconds to wait for the node to be idle
WAIT_DOWN=${SLURM_CLUSTER_WAIT_DOWN:-15}  # seconds between TERM and KILL

log() { echo "slurm_cluster: $*"; }
die() { echo "slurm_cluster: error: $*" >&2; exit 1; }

# Start time of a process (field 22 of /proc/PID/stat, after the command name); empty if gone.
starttime() { if [ -r "/proc/$1/stat" ]; then sed -E "s/^.*\) //" "/proc/$1/stat" 2>/dev/null | awk "{print \$20}" || true; fi; }
procstate() { if [ -r "/proc/$1/stat" ]; then sed -E "s/^.*\) //" "/proc/$1/stat" 2>/dev/null | awk "{print \$1}" || true; fi; }
alive_recorded() {  # pid start: that very process still runs (not gone, not a zombie)
  [ -n "$1" ] && [ "$(starttime "$1")" = "$2" ] && case "$(procstate "$1")" in Z|X|"") false ;; *) true ;; esac
}

free_port() {  # a TCP port no socket on this machine uses
  local p hex
  for p in $(shuf -i 20000-40000 -n 100); do
    hex=$(printf '%04X' "$p")
    grep -q ":$hex " /proc/net/tcp /proc/net/tcp6 2>/dev/null || { echo "$p"; return 0; }
  done
  return 1
}

tails() {  # the daemons' logs, for an error message
  local f
  for f in "$DIR"/log/munged.out "$DIR"/log/slurmctld.log "$DIR"/log/slurmd.log \
           "$DIR"/log/slurmctld.out "$DIR"/log/slurmd.out; do
    [ -s "$f" ] && { echo "---- last lines of $f" >&2; tail -n 20 "$f" >&2; }
  done
  return 0
}

unlink_sysconf() {  # remove /etc/slurm/slurm.conf only while it is our link
  if [ -L "$SYSCONF" ] && [ "$(readlink "$SYSCONF")" = "$DIR/slurm.conf" ]; then
    rm -f "$SYSCONF"
  fi
  return 0
}

link_sysconf() {
  if [ -L "$SYSCONF" ]; then
    local target other
    target=$(readlink "$SYSCONF")
    other=$(dirname "$target")
    if [ "$target" != "$DIR/slurm.conf" ] && [ -s "$other/pids" ]; then
      local pid start name
      while read -r pid start name; do
        alive_recorded "$pid" "$start" \
          && die "$SYSCONF links to $target, a test cluster that still runs; stop it first: $0 down $other"
      done <"$other/pids"
    fi
    rm -f "$SYSCONF"  # ours, or left over by a test cluster that is gone
  elif [ -e "$SYSCONF" ]; then
    die "$SYSCONF exists (a real SLURM configuration?); not touching it"
  fi
  mkdir -p "$(dirname "$SYSCONF")"
  ln -s "$DIR/slurm.conf" "$SYSCONF"
}

down() {
  if [ ! -s "$DIR/pids" ]; then
    rm -f "$DIR/pids"; unlink_sysconf
    log "nothing to stop in $DIR"
    return 0
  fi
  local pid start name e live=() still
  # Cancel this cluster's jobs (through its own slurmctld) and give SLURM a bounded time to end
  # them, so that no job step outlives slurmd.
  if [ -f "$DIR/slurm.conf" ] && command -v scancel >/dev/null 2>&1; then
    export SLURM_CONF="$DIR/slurm.conf"
    if timeout 10 scancel --user="$(id -un)" >/dev/null 2>&1; then
      local until=$((SECONDS + WAIT_DOWN * 2))
      while [ "$SECONDS" -lt "$until" ] && \
            [ -n "$(timeout 5 squeue -h -t PENDING,RUNNING,SUSPENDED,COMPLETING -o %i 2>/dev/null || echo busy)" ]; do
        sleep 1
      done
    fi
  fi
  # Job steps of this cluster that are still there (slurmstepd writes to DIR/log/slurmd.log):
  # stopped with the daemons.
  for pid in $(pgrep -x slurmstepd || true); do
    if ls -l "/proc/$pid/fd" 2>/dev/null | grep -qF -- "$DIR/"; then
      start=$(starttime "$pid"); [ -n "$start" ] && echo "$pid $start slurmstepd" >>"$DIR/pids"
    fi
  done
  # Reverse start order: slurmd, slurmctld, munged.
  while read -r pid start name; do
    if alive_recorded "$pid" "$start" && kill -TERM "$pid" 2>/dev/null; then
      live+=("$pid:$start:$name")
    fi
  done < <(tac "$DIR/pids")
  local deadline=$((SECONDS + WAIT_DOWN))
  while :; do
    still=()
    for e in "${live[@]+"${live[@]}"}"; do
      IFS=: read -r pid start name <<<"$e"
      if alive_recorded "$pid" "$start"; then still+=("$e"); fi
    done
    [ ${#still[@]} -eq 0 ] && break
    if [ "$SECONDS" -ge "$deadline" ]; then
      for e in "${still[@]}"; do
        IFS=: read -r pid start name <<<"$e"
        log "$name ($pid) still running ${WAIT_DOWN}s after TERM: KILL"
        kill -KILL "$pid" 2>/dev/null || true
      done
      sleep 1
      break
    fi
    sleep 0.5
  done
  rm -f "$DIR/pids"
  unlink_sysconf
  log "stopped ${#live[@]} daemon(s) of $DIR"
}

start_daemon() {  # name cmd... : foreground daemon in a new session; record PID + start time
  local name=$1; shift
  setsid "$@" >"$DIR/log/$name.out" 2>&1 </dev/null &
  local pid=$! start="" i
  for i in $(seq 1 40); do start=$(starttime "$pid"); [ -n "$start" ] && break; sleep 0.05; done
  [ -n "$start" ] || fail "$name exited at once"
  echo "$pid $start $name" >>"$DIR/pids"
}

fail() {  # during `up`: show the logs, stop what was started, exit non-zero
  tails; down >/dev/null 2>&1 || true
  die "$* (daemon logs above; state in $DIR)"
}

up() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (munged, slurmctld and slurmd are started by hand)"
  local b
  for b in munged mungekey slurmctld slurmd; do
    [ -x "$SBIN/$b" ] || die "$SBIN/$b not found: run envs/slurm_packages.sh (apt-get install slurm-wlm munge)"
  done
  for b in sinfo sbatch squeue scancel srun; do
    command -v "$b" >/dev/null 2>&1 || die "$b not found: run envs/slurm_packages.sh (apt-get install slurm-client)"
  done
  id munge >/dev/null 2>&1 || die "user munge missing (package munge)"
  id slurm >/dev/null 2>&1 || die "user slurm missing (package slurm-wlm)"

  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  down >/dev/null   # a previous `up` on this DIR (failed or not): stop what it started
  chmod 755 "$DIR"  # users munge and slurm must traverse it
  local u
  for u in munge slurm; do
    setpriv --reuid="$u" --regid="$u" --init-groups test -x "$DIR" \
      || die "user $u cannot reach $DIR: make its parent directories world-searchable (chmod o+x)"
  done
  link_sysconf      # fails before anything starts if this machine has another SLURM
  # From here on, any failure stops what was started and removes the link.
  trap 'rc=$?; if [ "$rc" -ne 0 ]; then down >/dev/null 2>&1 || true; fi; exit "$rc"' EXIT
  rm -rf "$DIR/munge" "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/run"  # clean daemon state
  mkdir -p "$DIR/munge" "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/run"
  chown munge:munge "$DIR/munge"; chmod 755 "$DIR/munge"  # socket reachable; the key is 0600
  chown slurm:slurm "$DIR/state" "$DIR/log" "$DIR/run"
  : >"$DIR/jobcomp.log"; chown slurm:slurm "$DIR/jobcomp.log"; chmod 644 "$DIR/jobcomp.log"
  : >"$DIR/pids"

  # Munge: a fresh key made by user munge; munged (as munge) on a socket under DIR.
  local key="$DIR/munge/munge.key" sock="$DIR/munge/munge.socket.2" i
  setpriv --reuid=munge --regid=munge --init-groups "$SBIN/mungekey" --create --keyfile="$key" \
    || fail "mungekey failed"
  start_daemon munged setpriv --reuid=munge --regid=munge --init-groups "$SBIN/munged" --foreground \
    --key-file="$key" --socket="$sock" --pid-file="$DIR/munge/munged.pid" \
    --seed-file="$DIR/munge/munged.seed" --force
  for i in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.1; done
  [ -S "$sock" ] || fail "munged did not create $sock"

  # slurm.conf from this machine's CPUs and memory.
  local cpus mem real ctld_port d_port
  cpus=$(nproc)
  mem=$(free -m | awk '/^Mem:/ {print $2}')
  real=$(( mem * 95 / 100 - 256 )); [ "$real" -gt 256 ] || real=$mem
  ctld_port=$(free_port) || fail "no free TCP port"
  d_port=$(free_port) || fail "no free TCP port"
  while [ "$d_port" = "$ctld_port" ]; do d_port=$(free_port); done
  cat >"$DIR/slurm.conf" <<EOF
# Generated by envs/slurm_cluster.sh up $DIR: a single-node test cluster on 127.0.0.1.
ClusterName=pvtt-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$sock
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
# No slurmdbd, so no sacct. Finished jobs stay visible to squeue for MinJobAge seconds, which
# is how the Snakemake SLURM executor (--slurm-status-command squeue) sees them end, and where
# the test reads each job's comment (the rule name).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=3600
# SLURM's own record of every finished job: one line per job.
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.log
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
InactiveLimit=0
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 NodeHostname=localhost CPUs=$cpus RealMemory=$real State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  chmod 644 "$DIR/slurm.conf"
  export SLURM_CONF="$DIR/slurm.conf"

  start_daemon slurmctld "$SBIN/slurmctld" -D -i -f "$DIR/slurm.conf"
  start_daemon slurmd "$SBIN/slurmd" -D -N localhost -f "$DIR/slurm.conf"

  # Bounded wait until the node is idle; a daemon that died will not come back.
  local deadline=$((SECONDS + WAIT_UP)) state="" pid start name
  while [ "$SECONDS" -lt "$deadline" ]; do
    state=$(timeout 5 sinfo -h -N -n localhost -o '%T' 2>/dev/null | head -n 1 || true)
    case "$state" in idle*) break ;; esac
    while read -r pid start name; do
      alive_recorded "$pid" "$start" || fail "$name exited during start-up"
    done <"$DIR/pids"
    sleep 1
  done
  case "$state" in
    idle*) ;;
    *) fail "node localhost not idle after ${WAIT_UP}s (sinfo says '${state:-nothing}')" ;;
  esac
  log "up: $DIR (node localhost idle: $cpus CPUs, RealMemory=$real MB; partition debug; ports $ctld_port, $d_port)"
  log "clients read $SYSCONF -> $DIR/slurm.conf"
}

[ $# -eq 2 ] || die "usage: $0 up|down DIR"
DIR=$2
case "$1" in
  up) up ;;
  down) if [ -d "$DIR" ]; then DIR=$(cd "$DIR" && pwd); down; else log "nothing to stop ($DIR does not exist)"; fi ;;
  *) die "usage: $0 up|down DIR" ;;
esac
