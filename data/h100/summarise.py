"""Write points.csv, ratio.csv and latency.html (plotly, loads plotly.js from its CDN) from h100.db."""

import sqlite3
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

here = Path(__file__).parent
with sqlite3.connect(here / "h100.db") as connection:
    points = pd.read_sql("SELECT * FROM points WHERE status = 'ok' ORDER BY backend, dtype, trials, channels",
                         connection)
columns = ["model", "layer", "backend", "target", "dtype", "trials", "channels", "median_ms", "p25_ms", "p75_ms",
           "repeats", "number", "max_abs_err", "trials_run", "tuning_seconds", "device", "tvm_version",
           "torch_version", "measured_at"]
points[columns].to_csv(here / "points.csv", index=False)

series = {f"{r.backend} {r.dtype}" + (f" {r.trials} trials" if r.backend == "tvm" else ""): r
          for r in points[["backend", "dtype", "trials"]].drop_duplicates().itertuples()}
wide = points.assign(series=[f"{r.backend} {r.dtype}" + (f" {r.trials} trials" if r.backend == "tvm" else "")
                             for r in points.itertuples()]).pivot(index="channels", columns="series",
                                                                  values="median_ms")
ratio = pd.DataFrame({"channels": wide.index})
ratio["cudnn_fp32_ms"] = wide["torch float32"].values
ratio["tvm_tuned_fp32_ms"] = wide["tvm float32 16 trials"].values
ratio["tvm_default_fp32_ms"] = wide["tvm float32 0 trials"].values
ratio["tuned_over_cudnn_fp32"] = (ratio.tvm_tuned_fp32_ms / ratio.cudnn_fp32_ms).round(2)
ratio["default_over_cudnn_fp32"] = (ratio.tvm_default_fp32_ms / ratio.cudnn_fp32_ms).round(2)
ratio["cudnn_fp16_ms"] = wide["torch float16"].values
if "tvm float16 16 trials" in wide:
    ratio["tvm_tuned_fp16_ms"] = wide["tvm float16 16 trials"].values
    ratio["tuned_over_cudnn_fp16"] = (ratio.tvm_tuned_fp16_ms / ratio.cudnn_fp16_ms).round(2)
ratio.to_csv(here / "ratio.csv", index=False)
print(ratio.to_string(index=False))

figure = go.Figure()
for name in wide.columns:
    figure.add_trace(go.Scatter(x=wide.index, y=wide[name], mode="lines+markers", name=name))
figure.update_layout(title="ResNet-18 conv3 (64 in, 3x3, 56x56) on an H100: median latency per output-channel count",
                     xaxis_title="output channels", yaxis_title="median ms (CUDA-graph replays)")
figure.write_html(here / "latency.html", include_plotlyjs="cdn")
