#!/usr/bin/env bash
# Stop the test cluster of scripts/slurm_up.sh: cancel its jobs, then stop, in reverse start order,
# only the daemons whose PID files slurm_up.sh left in $SLURM_TEST_DIR/run. The packages, configs,
# state and logs stay (a later slurm_up.sh reuses them and keeps counting job ids).
set -uo pipefail
S=${SLURM_TEST_DIR:-/tmp/slurm}

ours() {  # ours NAME: the PID in $S/run/NAME.pid is alive and is that daemon
  local f=$S/run/$1.pid p
  [ -s "$f" ] || return 1
  p=$(cat "$f"); kill -0 "$p" 2>/dev/null && [ "$(cat /proc/"$p"/comm 2>/dev/null)" = "$1" ]
}

if ours slurmctld && scontrol ping >/dev/null 2>&1; then
  scancel --user="$(id -un)" 2>/dev/null || true
  for _ in $(seq 40); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.25; done
fi
for name in slurmd slurmctld slurmdbd mariadbd munged; do
  f=$S/run/$name.pid
  if ours "$name"; then
    p=$(cat "$f"); kill "$p" 2>/dev/null
    for _ in $(seq 80); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$p" 2>/dev/null && echo "slurm_down: $name (pid $p) still running after 20 s" >&2
  fi
  rm -f "$f"
done
