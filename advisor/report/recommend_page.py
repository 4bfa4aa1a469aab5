"""`advisor recommend`'s page (plotly): the networks compared, latency against score, and each
pruned group's chosen count on its latency curve. Reads the plan's plain data."""

from __future__ import annotations

import math
from pathlib import Path

from advisor.report.recommend import NAMES

COLOURS = {"unpruned": "#444444", "recommended": "#2ca02c", "uniform": "#1f77b4", "uniform-r8": "#ff7f0e"}


def comparison_figure(plan: dict) -> "go.Figure":
    """Latency of each network (bars, the budget as a line) and, with scores, score against latency."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    networks = plan["networks"]
    scored = any(n["score"] is not None for n in networks.values())
    metric = plan.get("scoring", {}).get("metric", "score")
    figure = make_subplots(rows=1, cols=2 if scored else 1, horizontal_spacing=0.12,
                           subplot_titles=["latency, measured side by side"]
                           + ([f"{metric} after fine-tuning against latency"] if scored else []))
    names = list(networks)
    figure.add_trace(go.Bar(x=[NAMES.get(n, n) for n in names], y=[networks[n]["measured_ms"] for n in names],
                            marker_color=[COLOURS.get(n, "#999999") for n in names], showlegend=False,
                            text=[f"{networks[n]['measured_ms']:.3f} ms" for n in names], textposition="outside",
                            hovertemplate="%{x}: %{y:.3f} ms<extra></extra>"), row=1, col=1)
    figure.add_hline(y=plan["budget_ms"], line_dash="dash", line_color="red", row=1, col=1,
                     annotation_text=f"budget {plan['budget']}")
    if scored:
        for name in names:
            network = networks[name]
            before = "-" if network["score_before_finetune"] is None else f"{network['score_before_finetune']:.4f}"
            figure.add_trace(go.Scatter(
                x=[network["measured_ms"]], y=[network["score"]], mode="markers+text", name=NAMES.get(name, name),
                text=[NAMES.get(name, name)], textposition="top center",
                marker={"size": 13, "color": COLOURS.get(name, "#999999")},
                hovertemplate=f"{NAMES.get(name, name)}: %{{x:.3f}} ms, {metric} %{{y:.4f}} "
                              f"(before fine-tuning {before})<extra></extra>"),
                row=1, col=2)
        figure.add_vline(x=plan["budget_ms"], line_dash="dash", line_color="red", row=1, col=2)
        figure.update_xaxes(title_text="latency (ms)", row=1, col=2)
        figure.update_yaxes(title_text=metric, row=1, col=2)
    figure.update_yaxes(title_text="latency (ms, median)", row=1, col=1)
    figure.update_layout(title=f"{plan['model']} {'x'.join(map(str, plan['input_shape']))} on "
                               f"{plan['backend']}/{plan['target']} ({plan['threads']} threads)",
                         template="plotly_white", height=480)
    return figure


def curves_figure(plan: dict) -> "go.Figure | None":
    """Each pruned group's predicted latency (its convolutions, the other groups at the plan's counts)
    against its count, the chosen count marked, with the same convolutions measured there."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    curves = plan.get("curves") or []
    if not curves:
        return None
    columns = min(3, len(curves))
    rows = math.ceil(len(curves) / columns)
    figure = make_subplots(rows=rows, cols=columns, subplot_titles=[c["group"] for c in curves],
                           vertical_spacing=min(0.12, 0.6 / rows))
    for index, item in enumerate(curves):
        row, col = index // columns + 1, index % columns + 1
        first = index == 0
        figure.add_trace(go.Scatter(x=item["counts"], y=item["predicted_ms"], mode="lines", line={"color": "#1f77b4"},
                                    name="predicted (cost model)", legendgroup="p", showlegend=first,
                                    hovertemplate="%{x} channels: %{y:.4f} ms<extra>predicted</extra>"),
                         row=row, col=col)
        chosen = item["counts"].index(item["chosen"]) if item["chosen"] in item["counts"] else None
        if chosen is not None:
            figure.add_trace(go.Scatter(x=[item["chosen"]], y=[item["predicted_ms"][chosen]], mode="markers",
                                        marker={"size": 12, "color": "#2ca02c", "symbol": "star"},
                                        name="chosen count", legendgroup="c", showlegend=first,
                                        hovertemplate="chosen: %{x} of " + str(item["original"])
                                                      + " channels, %{y:.4f} ms predicted<extra></extra>"),
                             row=row, col=col)
        if item.get("measured_ms") is not None:
            figure.add_trace(go.Scatter(x=[item["chosen"]], y=[item["measured_ms"]], mode="markers",
                                        marker={"size": 10, "color": "black", "symbol": "x"},
                                        name="measured at the chosen count", legendgroup="m", showlegend=first,
                                        hovertemplate="measured: %{y:.4f} ms<extra></extra>"),
                             row=row, col=col)
    figure.update_layout(title="each pruned group's count on its latency curve (its convolutions summed)",
                         template="plotly_white", height=max(420, 300 * rows),
                         legend={"orientation": "h", "y": -0.08})
    figure.update_xaxes(title_text="channels kept")
    figure.update_yaxes(title_text="ms")
    return figure


def write_recommend_page(plan: dict, path: str | Path) -> Path:
    """One self-contained HTML page (plotly.js inside: it opens with no network)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [comparison_figure(plan).to_html(include_plotlyjs=True, full_html=False)]
    curves = curves_figure(plan)
    if curves is not None:
        parts.append(curves.to_html(include_plotlyjs=False, full_html=False))
    title = f"advisor recommend: {plan['model']}"
    path.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
                    + "".join(parts) + "</body></html>\n")
    return path
