#!/usr/bin/env bash
# On the GPU machine: tuned TVM curves of ResNet-18 (ImageNet) conv3 (64->N 3x3 at 56x56) for one
# dtype a call: two exhaustive tuned sweeps of a small grid from empty tuning directories (their
# agreement, and what each one's traps are in the other), then cuDNN (PyTorch) at the same counts
# (TVM over cuDNN). MetaSchedule's random cost model (no xgboost needed), a cap of 32 trials a
# count with the stop rule; each call takes about 5 minutes on an H200 (64 trials took 70-95 s a count).
#   bash scripts/gpu_tvm_curves.sh OUT float32
#   bash scripts/gpu_tvm_curves.sh OUT float16
# Writes OUT/tvm-<dtype>.log (the benchmark's figures), OUT/tvm-<dtype>-sweeps.log (every sweep's
# output) and OUT/tvm-<dtype>.csv.gz (every row of every sweep, the sweep in column `sweep`).
# Needs torch with CUDA, pandas, rich, and TVM (installed from .device-tvm when not importable).
set -uo pipefail
out=${1:?usage: $0 OUT float32|float16}
dtype=${2:?usage: $0 OUT float32|float16}
grid=${GRID:-64,127,128}   # 127/128: cuDNN's fp16 trap pair on the H200
mkdir -p "$out"
if ! python3 -c "import tvm" 2>/dev/null && [ -f .device-tvm/install.sh ]; then
  bash .device-tvm/install.sh >&2 && export PYTHONPATH=/tmp/tvm-site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}
work=${WORK:-$(mktemp -d)}   # WORK: a folder kept between calls resumes the benchmark
# TRIALS: the cap of MetaSchedule trials a count (default 32). STAGES: a subset of A,B,vendor-grid for one call (float32 needs two calls: A, then the rest)
# LIMIT_S bounds the benchmark (a device command's limit is 600 s) so that its rows are still exported
PYTHONUNBUFFERED=1 timeout "${LIMIT_S:-560}" python3 benchmarks/tvm_curve_bench.py --work "$work" --model resnet18 --layer conv3 \
  --target "${TARGET:-nvidia/nvidia-h100}" --dtype "$dtype" --cost-model random --trials "${TRIALS:-32}" \
  --strategy exhaustive --grid "$grid" --stages "${STAGES:-A,B,vendor-grid}" 2>&1 | grep --line-buffered -v '━' | tee "$out/tvm-$dtype.log"
for stage in A B vendor-grid; do
  [ -f "$work/$stage/sweep.log" ] && { echo "== $stage"; grep -v '━' "$work/$stage/sweep.log"; }
done > "$out/tvm-$dtype-sweeps.log"
python3 - "$work" "$out/tvm-$dtype.csv.gz" <<'PY'
import sys
from pathlib import Path
import pandas as pd
from advisor.store.results import ResultStore
frames = []
for db in sorted(Path(sys.argv[1]).glob("*/advisor.db")):
    with ResultStore(db) as store:
        frames.append(store.frame().assign(sweep=db.parent.name))
if frames:
    pd.concat(frames).to_csv(sys.argv[2], index=False)
PY
