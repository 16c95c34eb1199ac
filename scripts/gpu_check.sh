#!/usr/bin/env bash
# The prepared GPU check (issue 10): one short script, under 8 minutes on one H200 / H100.
#   bash scripts/gpu_check.sh [OUT]      (OUT defaults to reports/perf; the device tool passes $OUT)
# Writes OUT/scoring_throughput_cuda.json  random-init MUSIQ / TOPIQ-NR / NIMA at 512^2: harness vs bare vs per-image
#        OUT/train_speed_paper_cuda.json   paper-size SwinIR / RRDB iteration, UPos vs AMO, fp32 and bf16
#        OUT/ft_speed_paper_cuda.json      FT step vs base step at paper size (random-init MUSIQ as Q), fp32 and bf16
#        OUT/gpu_check.log                 everything printed
# Each step has its own time limit, so one slow step cannot eat the others' time.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-reports/perf}}
mkdir -p "$OUT"
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
log="$OUT/gpu_check.log"
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())" || exit 1
  timeout 150 "$PY" scripts/bench_gpu_scoring.py --out "$OUT" --n 256 --batch-size 8 --workers 8; echo "scoring rc=$?"
  timeout 180 "$PY" scripts/bench_train.py --out "$OUT" --paper-size --bf16 --iters 6; echo "train rc=$?"
  timeout 120 "$PY" scripts/bench_ft.py --out "$OUT" --paper-size --bf16 --iters 6; echo "ft rc=$?"
  date -u
} 2>&1 | tee "$log"
