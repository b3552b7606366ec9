#!/usr/bin/env bash
# Debian/Ubuntu packages for a single-node SLURM test cluster (slurm-wlm + munge), installed
# only when missing. `make test-slurm` calls it; envs/slurm_cluster.sh itself installs nothing.
set -euo pipefail

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
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "slurm_packages: installing ${need[*]}"
$SUDO apt-get update -qq
# policy-rc.d 101: never let the packages' maintainer scripts start daemons (we start our own).
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "slurm_packages: ok ($(slurmctld -V 2>/dev/null || /usr/sbin/slurmctld -V))"
