#!/usr/bin/env bash
# On the GPU machine: ResNet-18 (ImageNet) conv3 at every count 32..256 compiled by TVM for OpenCL
# (NVIDIA's OpenCL driver) and for CUDA, both as bundles timed with TVM's runtime alone (no
# compiler: CUDA kernels are a fatbin made when the bundle is made), beside cuDNN (PyTorch sweep).
#   bash scripts/gpu_boards.sh bundle OUT     # compile both targets' bundles (parallel) and sweep cuDNN
#   bash scripts/gpu_boards.sh measure OUT    # time the bundles runtime-only, import, summarise
# Needs TVM (.device-tvm) and TVM's OpenCL runtime library in $ADVISOR_TVM_RUNTIME_PATH.
set -euo pipefail
step=${1:?usage: $0 bundle|measure OUT}
out=${2:?usage: $0 bundle|measure OUT}
work=out/gpu-boards
mkdir -p "$work" "$out"
icd=$(mktemp -d); echo libnvidia-opencl.so.1 > "$icd/nvidia.icd"; export OCL_ICD_VENDORS=$icd
LAYER=(--model resnet18 --layer conv3 --threads 1 --repeats 15)
targets=("cuda:{\"kind\": \"cuda\", \"arch\": \"sm_90\"}" "opencl:opencl")
if [ "$step" = bundle ]; then
  for entry in "${targets[@]}"; do
    name=${entry%%:*}; target=${entry#*:}
    for part in 0 1 2 3 4 5 6 7; do   # every count, eight compiling processes a target
      counts=$(seq $((32 + part)) 8 256 | paste -sd, -)
      rm -rf "$work/$name-$part"
      python3 -m advisor bundle "$work/$name-$part" "${LAYER[@]}" --channels "$counts" --target "$target" \
        --trials 0 > "$work/$name-$part.log" 2>&1 &
    done
  done
  python3 -m advisor sweep "${LAYER[@]}" --channels 32..256 --backend torch --target cuda --strategy exhaustive \
    --no-second-opinion --db "$work/gpu.db" > "$out/cudnn.log" 2>&1 || true
  wait
  tail -n 2 "$work"/*-0.log > "$out/bundle.log"; ls "$work" >> "$out/bundle.log"
else
  rm -f "$work/bundles.db"
  for dir in "$work"/cuda-* "$work"/opencl-*; do
    [ -d "$dir" ] || continue
    [ -f "$dir/results.json" ] || python3 -m advisor measure "$dir" --timeout 120 > "$dir.measure.log" 2>&1 || true
    python3 -m advisor import "$dir" --db "$work/gpu.db" >> "$out/measure.log" 2>&1 || true
  done
  python3 -m advisor show --db "$work/gpu.db" --format csv > "$out/points.csv"
  cp "$work/gpu.db" "$out/gpu.db"   # the page is drawn back here (advisor plot): no plotly there
  python3 - "$out/points.csv" "$out/ratio.csv" <<'PY' | tee "$out/summary.txt"
import sys
import pandas as pd
rows = pd.read_csv(sys.argv[1])
rows = rows[rows.status == "ok"]
series = {f"{b}/{t.split('-')[0]}": g.set_index("channels").median_ms for (b, t), g in rows.groupby(["backend", "target"])}
table = pd.DataFrame(series)
table.columns = [{"tvm/cuda": "tvm_cuda_ms", "tvm/opencl": "tvm_opencl_ms", "torch/cuda": "cudnn_ms"}.get(c, c)
                 for c in table.columns]
if {"tvm_opencl_ms", "tvm_cuda_ms"} <= set(table):
    table["opencl_over_cuda"] = table.tvm_opencl_ms / table.tvm_cuda_ms
if {"tvm_cuda_ms", "cudnn_ms"} <= set(table):
    table["cuda_over_cudnn"] = table.tvm_cuda_ms / table.cudnn_ms
table.to_csv(sys.argv[2])
print(table.describe().round(4).to_string())
print(f"counts measured: {table.count().to_dict()}")
PY
  grep -h "compiler_loaded\|\"device\"" "$work"/cuda-0/results.json "$work"/opencl-0/results.json >> "$out/summary.txt" || true
fi
