"""The pareto page (plotly, self-contained HTML) and the CSV table behind it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from advisor.measure.backends import BACKENDS
from advisor.pareto.front import mark_fronts, pareto_front

_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def write_pareto_outputs(frame: pd.DataFrame, title: str, html_path: Path, csv_path: Path,
                         metric: str = "accuracy") -> tuple[Path, Path]:
    frame = mark_fronts(frame)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(csv_path, index=False)
    pareto_figure(frame, title, metric).write_html(html_path, include_plotlyjs=True, full_html=True)
    return html_path, csv_path


def pareto_figure(frame: pd.DataFrame, title: str, metric: str = "accuracy") -> go.Figure:
    """Latency charts (one per backend; a front per thread count), stored size, and peak memory."""
    ok = frame[(frame.latency_status == "ok") & (frame.variant_status == "ok")]
    backends = sorted(ok.backend.unique()) or ["none"]
    titles = [f"{metric} against latency on {BACKENDS[b].title if b in BACKENDS else b} (batch 1, median; "
              "a front per thread count)"
              for b in backends]
    titles += [f"{metric} against stored model size (sparse formats where smaller)",
               f"{metric} against peak memory while running (one front per backend)"]
    rows = len(titles)
    figure = make_subplots(rows=rows, cols=1, vertical_spacing=0.06, subplot_titles=titles)
    colour_index = 0
    for row, backend in enumerate(backends, start=1):
        for threads, points in ok[ok.backend == backend].groupby("threads"):
            colour = _COLOURS[colour_index % len(_COLOURS)]
            colour_index += 1
            name = f"{backend}, {int(threads)} thread{'s' if threads > 1 else ''}"
            _points_and_front(figure, points, "median_ms", name, colour, row=row, front_column="on_latency_front")
        figure.update_xaxes(title_text="latency (ms, log scale)", type="log", row=row, col=1)
    variants = frame[frame.variant_status == "ok"].drop_duplicates("variant").copy()
    variants["stored_kib"] = variants.stored_bytes / 1024
    _points_and_front(figure, variants, "stored_kib", "stored size", "#444444", row=rows - 1,
                      front_column="on_memory_front")
    for backend, points in ok[ok.peak_bytes.notna()].groupby("backend"):
        points = points[points.threads == points.threads.min()].copy()  # the peak barely depends on threads
        points["peak_kib"] = points.peak_bytes / 1024
        points["on_peak_front"] = False
        points.loc[points.index[pareto_front(points.peak_kib.tolist(), points.accuracy.tolist())],
                   "on_peak_front"] = True
        colour = {"torch": "#ff7f0e", "tvm": "#8c564b"}.get(backend, "#17becf")
        _points_and_front(figure, points, "peak_kib", f"peak memory, {backend} ({points.peak_method.iloc[0]})",
                          colour, row=rows, front_column="on_peak_front")
    unavailable = frame[frame.latency_status == "unavailable"].drop_duplicates(["variant", "backend"])
    notes = [f"{r.label} on {r.backend}: not available ({str(r.latency_error)[:110]})"
             for r in unavailable.itertuples()]
    figure.update_xaxes(title_text="stored bytes (KiB, log scale)", type="log", row=rows - 1, col=1)
    figure.update_xaxes(title_text="peak memory while running (KiB)", row=rows, col=1)
    for row in range(1, rows + 1):
        figure.update_yaxes(title_text=metric, row=row, col=1)
    if notes:
        figure.add_annotation(text="<br>".join(notes[:6]), xref="paper", yref="paper", x=0, y=-0.035,
                              showarrow=False, align="left", xanchor="left", yanchor="top", font={"size": 11})
    figure.update_layout(title={"text": title, "y": 0.995, "yanchor": "top"}, template="plotly_white",
                         height=560 * rows, legend={"orientation": "h", "y": 1.008, "yanchor": "bottom"},
                         margin={"t": 190, "b": 80 + 18 * len(notes[:6])})
    return figure


def _points_and_front(figure: go.Figure, rows: pd.DataFrame, x: str, name: str, colour: str, row: int,
                      front_column: str, legend: bool = True) -> None:
    if rows.empty:
        return
    figure.add_trace(go.Scatter(
        x=rows[x], y=rows.accuracy, mode="markers+text", name=name, text=rows.label, textposition="top center",
        textfont={"size": 9, "color": colour}, marker={"color": colour, "size": 9, "opacity": 0.75},
        hovertemplate="%{text}: %{y:.3f} at %{x:.4g}<extra>" + name + "</extra>", showlegend=legend,
        legendgroup=name), row=row, col=1)
    front = rows[rows[front_column]].sort_values(x)
    figure.add_trace(go.Scatter(
        x=front[x], y=front.accuracy, mode="lines+markers", name=f"Pareto front: {name}",
        line={"color": colour, "width": 2, "shape": "hv"}, marker={"color": colour, "size": 12, "symbol": "star"},
        hoverinfo="skip", showlegend=legend, legendgroup=name), row=row, col=1)
