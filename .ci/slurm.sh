#!/usr/bin/env bash
# CI: a real single-node SLURM (scripts/slurm_up.sh) for the duration of a command or script.
#
#   .ci/slurm.sh make test    run the command with SLURM up; the daemons stop when it ends, and the
#                             command's exit status is kept
#   source .ci/slurm.sh       from a bash script: SLURM stays up until that script exits (this sets
#                             the script's EXIT trap)
#
# Needs root (apt-get, daemons). COCU_CI_SLURM=0 skips it: tests marked `slurm` then skip themselves.
# When the command fails, the tails of the SLURM logs are printed before the daemons stop.
_cocu_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

_cocu_slurm_stop() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    for f in "${SLURM_TEST_DIR:-/tmp/slurm}"/log/slurm*.log; do
      [ -f "$f" ] && { echo "== tail $f" >&2; tail -n 30 "$f" >&2; }
    done
  fi
  bash "$_cocu_root/scripts/slurm_down.sh"
  return "$rc"
}

if [ "${COCU_CI_SLURM:-1}" != 0 ]; then
  if ! bash "$_cocu_root/scripts/slurm_up.sh"; then
    echo ".ci/slurm.sh: could not start SLURM (set COCU_CI_SLURM=0 to run without it)" >&2
    bash "$_cocu_root/scripts/slurm_down.sh"
    return 1 2>/dev/null || exit 1
  fi
  trap _cocu_slurm_stop EXIT
fi

if [ "${BASH_SOURCE[0]}" = "$0" ] && [ $# -gt 0 ]; then
  "$@"
fi
