#!/usr/bin/env bash
# Every CUDA path of the repo on one GPU, in at most about 5 minutes, as a pass/fail table:
#
#   train     bf16-autocast training of the tiny GroupViT through cocu.training.loop.train (+ resume)
#   ddp       an NCCL process group and a DistributedDataParallel bf16 step, under torchrun (1 GPU)
#   faiss     faiss-gpu exact flat search, IVF and IVF-PQ recall, the index stage's jobs on the GPU
#             (SKIP, said so, when the installed faiss has no GPU support)
#   embed     ViT-B/16 image-tower throughput (fp16 autocast) and the embed stage's jobs, CUDA vs CPU
#   train_step  benchmarks/train_step.py: tiny and paper GroupViT images/s and peak memory (bf16)
#
#   bash scripts/gpu_check.sh                 # from the repository root, with the venv on PATH
#   GPU_CHECK_CPU=1 bash scripts/gpu_check.sh # the same checks on the CPU at small sizes (try it anywhere)
#
# Without a CUDA device it prints "no CUDA device" and exits 0 (77 with GPU_CHECK_REQUIRE=1), touching
# nothing. Exit status otherwise: 0 when no check failed (SKIP is not a failure), 1 when one did.
# Each check runs in its own process under `timeout`; full logs in $GPU_CHECK_LOG (default: a temp file).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
PYTHON=${PYTHON:-python}
LOG=${GPU_CHECK_LOG:-$(mktemp -t gpu_check.XXXXXX.log)}
CPU=${GPU_CHECK_CPU:-0}
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! command -v "$PYTHON" >/dev/null; then
  echo "gpu_check: $PYTHON not found (activate the venv: export PATH=\$PWD/.venv/bin:\$PATH)" >&2
  exit 2
fi
if ! "$PYTHON" -c 'import torch' 2>>"$LOG"; then
  echo "gpu_check: torch does not import with $PYTHON (see $LOG)" >&2
  exit 2
fi
if [ "$CPU" != 1 ]; then
  if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>>"$LOG"; then
    echo "no CUDA device (torch.cuda.is_available() is False): nothing to check"
    [ "${GPU_CHECK_REQUIRE:-0}" = 1 ] && exit 77
    exit 0
  fi
  FLAG=()
else
  FLAG=(--cpu)
fi

"$PYTHON" - <<'PY' 2>&1 | tee -a "$LOG"
import torch
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), {torch.cuda.device_count()} GPU(s): "
          f"{p.name}, {p.total_memory / 2**30:.0f} GiB, bf16 {torch.cuda.is_bf16_supported()}")
else:
    print(f"torch {torch.__version__}: no CUDA device, checks on the CPU (GPU_CHECK_CPU=1)")
PY

ROWS=()
FAILED=0
START=$(date +%s)

run() {  # run NAME SECONDS COMMAND...: one check; its GPUCHECK line (or a FAIL) becomes a row
  local name=$1 limit=$2 t0 rc out line
  shift 2
  t0=$(date +%s)
  echo "== $name: $*" >>"$LOG"
  out=$(timeout --kill-after=10 "$limit" "$@" 2>>"$LOG")
  rc=$?
  printf '%s\n' "$out" >>"$LOG"
  line=$(printf '%s\n' "$out" | grep '^GPUCHECK|' | tail -n 1)
  if [ -z "$line" ]; then
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
      line="GPUCHECK|$name|FAIL|-|timed out after ${limit} s"
    else
      line="GPUCHECK|$name|FAIL|-|exit $rc without a result (see $LOG)"
    fi
  fi
  case "$line" in *"|FAIL|"*) FAILED=1 ;; esac
  ROWS+=("$line|$(( $(date +%s) - t0 ))")
  echo "  ${line#GPUCHECK|}" >&2
}

S=1  # time limits (about 285 s in all on a GPU); the CPU trial is slower
[ "$CPU" = 1 ] && S=6
run train $((40 * S)) "$PYTHON" scripts/gpu_checks.py train "${FLAG[@]}"
run ddp $((40 * S)) "$PYTHON" -m torch.distributed.run --standalone --nnodes=1 --nproc_per_node=1 \
  scripts/gpu_checks.py ddp "${FLAG[@]}"
run faiss $((75 * S)) "$PYTHON" scripts/gpu_checks.py faiss "${FLAG[@]}"
run embed $((50 * S)) "$PYTHON" scripts/gpu_checks.py embed "${FLAG[@]}"
run train_step $((80 * S)) "$PYTHON" scripts/gpu_checks.py train_step "${FLAG[@]}"

echo
echo "| check | result | throughput | seconds | detail |"
echo "|---|---|---|---:|---|"
for row in "${ROWS[@]}"; do
  IFS='|' read -r _ name status rate detail seconds <<<"$row"
  echo "| $name | $status | $rate | $seconds | $detail |"
done
echo
echo "total $(( $(date +%s) - START )) s; log: $LOG"
exit "$FAILED"
