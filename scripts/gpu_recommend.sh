#!/usr/bin/env bash
# `advisor recommend` on a CUDA GPU, against the baselines users have (benchmarks/recommend_bench.py):
# ResNet-18 (width 16) trained on digits resized to 32x32, budget half the unpruned latency, with
# PyTorch/cuDNN (--backend torch --target cuda) at batch 1, 32 and 512, and with MetaSchedule-tuned
# TVM (--backend tvm --target cuda) at batch 32. At batch 1 and 32 this network is bound by kernel
# launches on an H100 (data/h100/README.md, recommend/): half its latency is out of reach there.
#
#   bash scripts/gpu_recommend.sh            (repository root of the GPU machine; writes under $OUT)
#
# Each call runs the stages not done yet for at most ~9 minutes (a command's limit there is 10) and
# stops (STAGES="cudnn-b1 cudnn-b32" runs only those); the work (databases, tuning logs, journals)
# stays in out/gpu-recommend/ while the machine is warm, so the next call resumes where this one
# stopped (on a fresh machine, unpack the last call's $OUT/gpu-recommend-state.tgz into out/ and
# carry it). Call it until it prints "stages
# done". Every call copies the stages' output so far to $OUT/<stage>.txt (the benchmark's text,
# with its command and date) and $OUT/<stage>/ (database and journal). The tvm stage tunes every
# convolution width it measures (about 200 with these settings): expect several calls; TVM_TRIALS
# sets the trials per convolution (8).
#
# Needs torch with CUDA, pandas, rich, torch-pruning and xgboost (advisor's latency model; a wheel
# in .device-tvm/ or shared/wheels/ is installed if xgboost is missing), TVM for the tvm stage
# (.device-tvm/install.sh unpacks the carried one), and scikit-learn for digits, or out/digits.npz
# carried from a machine that has it:
#   python -c "from sklearn.datasets import load_digits as d; import numpy as n; x=d(); n.savez('out/digits.npz', x=x.images/16, y=x.target)"
set -uo pipefail
out=${OUT:?set OUT to the folder whose files come back}
work=out/gpu-recommend
mkdir -p "$work" "$out"
started=$(date +%s)
limit=${LIMIT_S:-540}

export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if ! python3 -c "import tvm" 2>/dev/null && [ -f .device-tvm/install.sh ]; then
  bash .device-tvm/install.sh && export PYTHONPATH=/tmp/tvm-site:$PYTHONPATH
fi
if ! python3 -c "import xgboost" 2>/dev/null; then
  wheel=$(ls .device-tvm/xgboost-*.whl shared/wheels/xgboost-*.whl 2>/dev/null | head -1)
  if [ -n "$wheel" ]; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/xgb-site "$wheel" && export PYTHONPATH=/tmp/xgb-site:$PYTHONPATH
  fi
fi
if ! python3 -c "import xgboost" 2>/dev/null; then
  echo "error: xgboost is not importable and no wheel was found (.device-tvm/ or shared/wheels/): advisor's latency model needs it" >&2
  exit 2
fi
# MetaSchedule's own cost model is xgboost's too; random where its import fails
tuning_cost=xgb
python3 -c "from tvm.s_tir.meta_schedule.cost_model import XGBModel; XGBModel()" 2>/dev/null || tuning_cost=random
data=digits
python3 -c "import sklearn" 2>/dev/null || data=out/digits.npz
[ "$data" = digits ] || [ -f "$data" ] || { echo "error: no scikit-learn and no $data (see the header)" >&2; exit 2; }

python3 -c "import torch; assert torch.cuda.is_available(); print('gpu:', torch.cuda.get_device_name(0))" || exit 2
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader 2>/dev/null || true

stage() {  # stage NAME ARGS...: run (or resume) one benchmark, within what is left of the limit
  local name=$1; shift
  if [ -f "$work/$name.done" ]; then echo "$name: done before"; return 0; fi
  local left=$(( limit - ($(date +%s) - started) ))
  if [ "$left" -lt 60 ]; then echo "$name: not started (time's up for this call)"; return 1; fi
  local command="python3 benchmarks/recommend_bench.py --model resnet18-w16 --data $data --budget 50% --target cuda --work $work/$name $*"
  echo "$name: $command (up to ${left} s)"
  PYTHONUNBUFFERED=1 timeout "$left" $command --output "$work/$name.txt" --command "$command" 2> "$work/$name.log"
  local rc=$?
  mkdir -p "$out/$name"
  cp "$work/$name.txt" "$out/$name.txt" 2>/dev/null
  tail -n 200 "$work/$name.log" > "$out/$name/stderr-tail.log"
  cp "$work/$name"/*.db "$work/$name"/*.journal.json "$work/$name"/sessions.json "$out/$name/" 2>/dev/null
  if [ $rc -eq 0 ]; then touch "$work/$name.done"; echo "$name: done"; return 0; fi
  [ $rc -eq 124 ] && echo "$name: stopped at the time limit; call again to resume" || echo "$name: failed (exit $rc), see $out/$name/stderr-tail.log"
  return 1
}

wanted=" ${STAGES:-cudnn-b1 cudnn-b32 cudnn-b512 tvm-b32} "   # STAGES picks some (the tvm stage needs TVM, the others do not)
run_stage() { [[ $wanted == *" $1 "* ]] || return 0; stage "$@"; }
run_stage cudnn-b1 --backends torch --input 1x3x32x32 &&
run_stage cudnn-b32 --backends torch --input 32x3x32x32 &&
run_stage cudnn-b512 --backends torch --input 512x3x32x32 &&
run_stage tvm-b32 --backends tvm --input 32x3x32x32 --trials "${TVM_TRIALS:-8}" --cost-model "$tuning_cost" --tuned-samples 3 &&
echo "stages done:$wanted"
status=$?
# the whole state, to carry back (run's carry: out/gpu-recommend) when a later call lands on a fresh machine
tar czf "$out/gpu-recommend-state.tgz" -C out gpu-recommend 2>/dev/null
exit $status
