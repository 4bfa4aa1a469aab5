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

    shown = frame[frame.status.isin(["ok", "predicted"])].sort_values("channels")
    figure = go.Figure()
    for values, rows in shown.groupby(SERIES, sort=True):
        key = dict(zip(SERIES, values))
        label = series_label(key)
        measured, predicted = rows[rows.status == "ok"], rows[rows.status == "predicted"]
        if measured.empty:
            continue
        if not predicted.empty:
            # the model's curve through every count, its ensemble's spread as a band
            everywhere = pd.concat([measured.assign(y=measured.median_ms, spread=0.0),
                                    predicted.assign(y=predicted.predicted_ms, spread=predicted.predicted_spread)]
                                   ).sort_values("channels")
            cv = predicted.model_cv_within.iloc[0]
            figure.add_trace(go.Scatter(
                x=everywhere.channels, y=everywhere.y * (1 + everywhere.spread), mode="lines", line={"width": 0},
                showlegend=False, hoverinfo="skip"))
            figure.add_trace(go.Scatter(
                x=everywhere.channels, y=everywhere.y * (1 - everywhere.spread), mode="lines", line={"width": 0},
                fill="tonexty", fillcolor="rgba(100,100,100,0.15)", showlegend=False, hoverinfo="skip"))
            figure.add_trace(go.Scatter(
                x=everywhere.channels, y=everywhere.y, mode="lines", line={"dash": "dot"},
                name=f"predicted: {label} (within 10% on {cv:.0%} of measured counts, cross-validated)",
                customdata=everywhere.spread,
                hovertemplate="%{x} channels: %{y:.4f} ms (±%{customdata:.0%})<extra>predicted</extra>"))
        widened = measured.widened.astype(bool)
        figure.add_trace(go.Scatter(
            x=measured.channels, y=measured.median_ms, mode="markers" if not predicted.empty else "lines+markers",
            name=f"measured: {label}",
            marker={"symbol": ["circle-open" if w else "circle" for w in widened], "size": 8},
            error_y={"type": "data", "symmetric": False, "array": measured.p75_ms - measured.median_ms,
                     "arrayminus": measured.median_ms - measured.p25_ms},
            customdata=measured[["p25_ms", "p75_ms", "widened"]],
            hovertemplate="%{x} channels: %{y:.4f} ms (IQR %{customdata[0]:.4f}-%{customdata[1]:.4f})"
                          "<extra>" + label + "</extra>",
        ))
        points = curve(rows)
        friendly = set(friendly_counts(points))
        value = {p.channels: p.median_ms for p in points}
        chosen = sorted(friendly)
        figure.add_trace(go.Scatter(
            x=chosen, y=[value[c] for c in chosen], mode="markers", name=f"hardware-friendly: {label}",
            marker={"symbol": "triangle-up", "size": 11, "color": "green"},
            hovertemplate="%{x} channels: every larger count is slower<extra></extra>",
        ))
        traps = find_traps(curve(measured))
        checks = dict(zip(measured.channels, measured.trap_check)) if "trap_check" in measured else {}
        if traps:
            figure.add_trace(go.Scatter(
                x=[t.channels for t in traps], y=[t.median_ms for t in traps], mode="markers",
                name=f"slower than a larger count: {label}",
                marker={"symbol": "x", "size": 13, "color": "red", "line": {"width": 1}},
                text=[f"{t.channels} ch: {t.median_ms:.4f} ms, {t.faster_channels} ch run in {t.faster_ms:.4f} ms "
                      f"({t.slowdown:.2f}x)" + (" - confirmed by a second look" if checks.get(t.channels) ==
                                                "confirmed" else "") for t in traps],
                hovertemplate="%{text}<extra></extra>",
            ))
    for original in sorted(shown.original_channels.unique()):
        figure.add_vline(x=int(original), line_dash="dash", line_color="gray",
                         annotation_text=f"original width {int(original)}: open markers widen the layer")
    figure.update_layout(title=title, xaxis_title="output channels",
                         yaxis_title="latency (ms, median; bars: IQR; dotted: the model, band: its spread)",
                         template="plotly_white", legend={"orientation": "h", "y": -0.2})
    return figure


def write_latency_page(frame: pd.DataFrame, title: str, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the page carries plotly.js itself: it opens on a board or a laptop with no network
    latency_figure(frame, title).write_html(path, include_plotlyjs=True, full_html=True)
    return path
