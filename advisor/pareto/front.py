"""Pareto fronts: the variants no other variant beats in both cost and score."""

from __future__ import annotations

import pandas as pd


def pareto_front(costs: list[float], scores: list[float]) -> list[int]:
    """Indexes of the points no other point beats (lower or equal cost and higher or equal score, one
    strictly), in order of cost."""
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -scores[i]))
    front, best = [], float("-inf")
    for index in order:
        if scores[index] > best:
            front.append(index)
            best = scores[index]
    return front


def mark_fronts(frame: pd.DataFrame) -> pd.DataFrame:
    """Add on_latency_front (per backend and thread count) and on_memory_front (stored bytes) columns."""
    frame = frame.copy()
    frame["on_latency_front"] = False
    frame["on_memory_front"] = False
    ok = frame[(frame.latency_status == "ok") & (frame.variant_status == "ok")]
    for _, rows in ok.groupby(["backend", "threads"]):
        front = pareto_front(rows.median_ms.tolist(), rows.accuracy.tolist())
        frame.loc[rows.index[front], "on_latency_front"] = True
    variants = frame[frame.variant_status == "ok"].drop_duplicates("variant")
    front = pareto_front(variants.stored_bytes.tolist(), variants.accuracy.tolist())
    chosen = set(variants.variant.iloc[front])
    frame["on_memory_front"] = frame.variant.isin(chosen)
    return frame
