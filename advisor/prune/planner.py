"""Plan per-group channel counts that meet a latency budget, keeping the most important channels
and choosing only hardware-friendly counts.

Latency of a plan = scale * (alpha + beta * sum of the cost model's per-convolution predictions).
alpha and beta are calibrated on measured networks (the unpruned one and a uniformly halved one),
scale on the plans measured so far (1 before any): those sit near the budget, where the line
through two distant networks ran 6-7% low (docs/recommend.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from advisor.learn.cost_model import LatencyModel
from advisor.learn.curves import CurvePoint, friendly_counts
from advisor.learn.features import layer_geometry
from advisor.model.layers import ConvLayer
from advisor.prune.groups import ChannelGroup

FRIENDLY_NOISE = 0.02  # a count is friendly only if every larger one is predicted this much slower
MARGIN = 0.03  # the planner aims this far below the budget: timing noise on a shared CPU is about 3%


@dataclass
class ConvSlot:
    """One convolution of the network and the channel groups its outputs and inputs belong to."""

    layer: ConvLayer
    out_group: str | None
    in_group: str | None

    def variant(self, counts: dict[str, int]) -> ConvLayer:
        """The convolution with its groups at `counts` (a grouped one keeps its group count)."""
        cout = counts.get(self.out_group, self.layer.out_channels) if self.out_group else self.layer.out_channels
        cin = counts.get(self.in_group, self.layer.in_channels) if self.in_group else self.layer.in_channels
        n, _, h, w = self.layer.input_shape
        groups = cin if self.layer.depthwise else self.layer.groups
        return replace(self.layer, in_channels=cin, out_channels=cout, groups=groups, input_shape=(n, cin, h, w))


def conv_slots(convs: list[ConvLayer], groups: list[ChannelGroup]) -> list[ConvSlot]:
    out_of = {name: g.name for g in groups for name in g.out_convs}
    in_of = {name: g.name for g in groups for name in g.in_convs}
    return [ConvSlot(c, out_of.get(c.module_path), in_of.get(c.module_path)) for c in convs]


class Predictor:
    """Predicted network latency for per-group counts."""

    def __init__(self, model: LatencyModel, slots: list[ConvSlot]) -> None:
        self.model, self.slots = model, slots
        self.alpha, self.beta, self.scale = 0.0, 1.0, 1.0

    def conv_sum(self, plans: list[dict[str, int]]) -> np.ndarray:
        rows = [{**layer_geometry(slot.variant(plan)), "backend": self.model.backend_}
                for plan in plans for slot in self.slots]
        predicted = self.model.predict(pd.DataFrame(rows)).reshape(len(plans), len(self.slots))
        return predicted.sum(axis=1)

    def network(self, plans: list[dict[str, int]]) -> np.ndarray:
        return self.scale * (self.alpha + self.beta * self.conv_sum(plans))

    def calibrate(self, anchors: list[dict[str, int]], anchor_ms: list[float],
                  plans: list[dict[str, int]] = (), plan_ms: list[float] = ()) -> None:
        """alpha and beta: least squares of the anchors' measured latency on their summed
        per-convolution predictions; scale: the geometric mean of measured over predicted for the
        measured plans (a plan measured over budget, as a third point of the least squares, left the
        next plan still 6.8% above its prediction: docs/recommend.md)."""
        sums = self.conv_sum(anchors)
        measured = np.asarray(anchor_ms, dtype=float)
        self.scale = 1.0
        if len(anchors) >= 2 and np.ptp(sums) > 1e-9 and (fitted := np.polyfit(sums, measured, 1))[0] > 0 \
                and fitted[1] >= 0:
            self.beta, self.alpha = float(fitted[0]), float(fitted[1])
        else:
            self.alpha, self.beta = 0.0, float(measured.sum() / sums.sum())
        if plans:
            ratios = np.asarray(plan_ms, dtype=float) / self.network(list(plans))
            self.scale = float(np.exp(np.log(ratios).mean()))


def friendly_choices(predictor: Predictor, group: ChannelGroup, counts: dict[str, int], low: int) -> list[int]:
    """Counts of one group (others fixed) that no larger count beats in predicted latency."""
    options = [c for c in range(low, group.channels + 1) if c % group.multiple == 0]
    touched = [s for s in predictor.slots if group.name in (s.out_group, s.in_group)]
    local = Predictor(predictor.model, touched)
    latency = local.conv_sum([{**counts, group.name: c} for c in options])
    curve = [CurvePoint(c, float(v), float(v), float(v)) for c, v in zip(options, latency)]
    return friendly_counts(curve, noise=FRIENDLY_NOISE)


@dataclass
class PrunePlan:
    """Channels to keep per group, and what the model predicts of them."""

    counts: dict[str, int]
    predicted_ms: float
    importance_kept: float  # share of total importance kept
    met: bool
    steps: int


def floors(groups: list[ChannelGroup], min_ratio: float) -> dict[str, int]:
    """The fewest channels each group may keep."""
    return {g.name: max(g.multiple, int(np.ceil(g.channels * min_ratio / g.multiple)) * g.multiple) for g in groups}


def plan_counts(predictor: Predictor, groups: list[ChannelGroup], budget_ms: float, min_ratio: float) -> PrunePlan:
    """Greedy: repeatedly cut the group whose next friendly count saves the most latency per unit of
    importance lost, until the prediction meets the budget or nothing can be cut."""
    counts = {g.name: g.channels for g in groups}
    lows = floors(groups, min_ratio)
    total_importance = sum(float(g.importance.sum()) for g in groups)
    current = float(predictor.network([counts])[0])
    steps = 0
    while current > budget_ms:
        moves = []
        for group in groups:
            choices = [c for c in friendly_choices(predictor, group, counts, lows[group.name])
                       if c < counts[group.name]]
            window = [c for c in choices if c >= counts[group.name] - max(group.multiple, group.channels // 8)]
            for count in (window or choices[-1:]):
                moves.append((group, count))
        if not moves:
            break
        latencies = predictor.network([{**counts, g.name: c} for g, c in moves])
        best, best_score = None, -np.inf
        for (group, count), latency in zip(moves, latencies):
            saved = current - latency
            lost = group.lost(count) - group.lost(counts[group.name])
            score = saved / (lost + 1e-6)
            if saved > 0 and score > best_score:
                best, best_score = (group, count, float(latency)), score
        if best is None:
            break
        counts[best[0].name] = best[1]
        current = best[2]
        steps += 1
    if current > budget_ms:  # not met: the plan with every group at its floor may still be faster
        floor = float(predictor.network([lows])[0])
        if floor < current:
            counts, current = dict(lows), floor
    kept = sum(float(g.importance.sum()) - g.lost(counts[g.name]) for g in groups) / total_importance
    return PrunePlan(counts, current, kept, current <= budget_ms, steps)


def next_aim(aim: float, budget_ms: float, measured_ms: float, unpruned_at_calibration_ms: float,
             unpruned_at_check_ms: float, margin: float = MARGIN) -> float:
    """What the planner aims at (in the units of the calibration) after a plan measured over budget:
    tightened by the overshoot, and at least by how much slower the machine ran at the check than
    at calibration (a slower spell otherwise left three plans over budget: docs/recommend.md); never
    above the budget (a negative margin aims above it, and the plan just measured over the budget
    could then be planned again)."""
    slower = max(1.0, unpruned_at_check_ms / unpruned_at_calibration_ms)
    return min(aim * budget_ms / measured_ms, budget_ms * (1 - margin) / slower, budget_ms)


@dataclass
class GroupCurve:
    """One group's predicted latency against its count, the other groups at the plan's counts: the
    convolutions it touches, summed, in the cost model's units (not calibrated)."""

    group: str
    counts: list[int]
    predicted_ms: list[float]
    chosen: int
    original: int
    measured_ms: float | None = None  # the same convolutions at the chosen count, measured


def group_curves(predictor: Predictor, groups: list[ChannelGroup], plan: dict[str, int],
                 min_ratio: float) -> list[GroupCurve]:
    """The curve of every group the plan prunes."""
    lows = floors(groups, min_ratio)
    curves = []
    for group in groups:
        if plan[group.name] >= group.channels:
            continue
        options = [c for c in range(lows[group.name], group.channels + 1) if c % group.multiple == 0]
        touched = [s for s in predictor.slots if group.name in (s.out_group, s.in_group)]
        latency = Predictor(predictor.model, touched).conv_sum([{**plan, group.name: c} for c in options])
        curves.append(GroupCurve(group.name, options, [float(v) for v in latency], plan[group.name], group.channels))
    return curves
