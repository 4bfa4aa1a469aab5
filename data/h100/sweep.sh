#!/usr/bin/env bash
# The commands that made data/h100/: ResNet-18 (ImageNet) conv3 (64->64, 3x3, 56x56) on one H100,
# PyTorch/cuDNN in fp32 and fp16, TVM with dlight's default GPU schedules (--trials 0) and
# MetaSchedule-tuned (16 random-model trials per count). Run from the repository root on the
# GPU machine, with TVM importable; results go to $DB (SQLite), resumable.
#   bash data/h100/sweep.sh torch|default|tuned|tuned16 [CHANNELS]
set -uo pipefail  # a failed point or table does not stop the other series
part=$1
channels=${2:-32..256:32}
DB=${DB:-data/h100/h100.db}
T=nvidia/nvidia-h100
common=(--model resnet18 --layer conv3 --channels "$channels" --target "$T" --db "$DB" --tuning-dir "${TUNING_DIR:-tuning_logs}")
py=${PYTHON:-python3}
case "$part" in
  torch)   for dt in float32 float16; do $py -m advisor sweep "${common[@]}" --backend torch --dtype $dt; done ;;
  default) $py -m advisor sweep "${common[@]}" --backend tvm --trials 0 --dtype float32 ;;
  tuned)   $py -m advisor sweep "${common[@]}" --backend tvm --trials 16 --cost-model random --dtype float32 ;;
  tuned16) $py -m advisor sweep "${common[@]}" --backend tvm --trials 16 --cost-model random --dtype float16 ;;
  *) echo "usage: $0 torch|default|tuned|tuned16 [CHANNELS]" >&2; exit 2 ;;
esac
