#!/usr/bin/env bash
# The active-against-exhaustive benchmark (benchmarks/cost_model_bench.py) on a CUDA GPU with
# PyTorch/cuDNN, fp32 and fp16, ResNet-18 (ImageNet) conv3. Needs torch with CUDA, pandas,
# rich, xgboost and torch-pruning importable; TVM is not needed. Writes OUT/<dtype>.log and
# OUT/<dtype>.csv.gz (every sweep's rows, the database in column `sweep`).
#   bash scripts/gpu_active_bench.sh OUT
set -uo pipefail
out=${1:?usage: $0 OUT}
mkdir -p "$out"
for dtype in float32 float16; do
  work=$(mktemp -d)
  PYTHONUNBUFFERED=1 python3 benchmarks/cost_model_bench.py --model resnet18 --layer conv3 --target cuda \
    --dtype "$dtype" --no-recommend --work "$work" 2>&1 | grep -v '━' > "$out/$dtype.log"
  python3 - "$work" "$out/$dtype.csv.gz" <<'PY'
import sys
from pathlib import Path
import pandas as pd
from advisor.store.results import ResultStore
frames = []
for db in sorted(Path(sys.argv[1]).glob("*.db")):
    with ResultStore(db) as store:
        frames.append(store.frame().assign(sweep=db.stem))
pd.concat(frames).to_csv(sys.argv[2], index=False)
PY
done
