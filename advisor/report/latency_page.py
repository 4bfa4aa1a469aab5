"""Latency against channels as a plotly page, one line per backend/target, traps marked."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from advisor.learn.curves import curve, find_traps, friendly_counts
from advisor.measure.backends import BACKENDS
from advisor.store.schema import SERIES


def series_label(key: dict) -> str:
    backend = BACKENDS.get(key["backend"])
    tuned = f", {key['trials']} trials" if backend is not None and backend.tuned else ""
    return f"{key['backend']} on {key['target']} ({key['dtype']}, {key['threads']} threads{tuned})"


def latency_figure(frame: pd.DataFrame, title: str) -> "go.Figure":
    import plotly.graph_objects as go  # only pages need plotly: boards sweep without it

    ok = frame[frame.status == "ok"].sort_values("channels")
    figure = go.Figure()
    for values, rows in ok.groupby(SERIES, sort=True):
        key = dict(zip(SERIES, values))
        label = series_label(key)
        widened = rows.widened.astype(bool)
        figure.add_trace(go.Scatter(
            x=rows.channels, y=rows.median_ms, mode="lines+markers", name=label,
            marker={"symbol": ["circle-open" if w else "circle" for w in widened], "size": 8},
            error_y={"type": "data", "symmetric": False, "array": rows.p75_ms - rows.median_ms,
                     "arrayminus": rows.median_ms - rows.p25_ms},
            customdata=rows[["p25_ms", "p75_ms", "widened"]],
            hovertemplate="%{x} channels: %{y:.4f} ms (IQR %{customdata[0]:.4f}-%{customdata[1]:.4f})"
                          "<extra>" + label + "</extra>",
        ))
        friendly = set(friendly_counts(curve(rows)))
        chosen = rows[rows.channels.isin(friendly)]
        figure.add_trace(go.Scatter(
            x=chosen.channels, y=chosen.median_ms, mode="markers", name=f"hardware-friendly: {label}",
            marker={"symbol": "triangle-up", "size": 11, "color": "green"},
            hovertemplate="%{x} channels: every larger count is slower<extra></extra>",
        ))
        traps = find_traps(curve(rows))
        if traps:
            figure.add_trace(go.Scatter(
                x=[t.channels for t in traps], y=[t.median_ms for t in traps], mode="markers",
                name=f"slower than a larger count: {label}",
                marker={"symbol": "x", "size": 13, "color": "red", "line": {"width": 1}},
                text=[f"{t.channels} ch: {t.median_ms:.4f} ms, {t.faster_channels} ch run in {t.faster_ms:.4f} ms "
                      f"({t.slowdown:.2f}x)" for t in traps],
                hovertemplate="%{text}<extra></extra>",
            ))
    for original in sorted(ok.original_channels.unique()):
        figure.add_vline(x=int(original), line_dash="dash", line_color="gray",
                         annotation_text=f"original width {int(original)}: open markers widen the layer")
    figure.update_layout(title=title, xaxis_title="output channels", yaxis_title="latency (ms, median; bars: IQR)",
                         template="plotly_white", legend={"orientation": "h", "y": -0.2})
    return figure


def write_latency_page(frame: pd.DataFrame, title: str, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the page carries plotly.js itself: it opens on a board or a laptop with no network
    latency_figure(frame, title).write_html(path, include_plotlyjs=True, full_html=True)
    return path
