"""Plan per-unit channel counts that meet a latency budget, keeping the most important channels,
choosing only hardware-friendly counts; then prune, measure, and compare with uniform pruning.

Latency of a plan = scale * (alpha + beta * sum of the cost model's per-convolution predictions).
The cost model learns from measurements of the network's own convolutions at sampled (in, out)
widths; alpha and beta are calibrated on two measured networks (unpruned and uniform 50%), and
scale on the plans measured so far (1 before any): those sit near the budget, where the line
through two distant networks was 6-7% low on the AMD EPYC.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console

from advisor.cost_model import CostModel, fit, usable
from advisor.errors import AdvisorError
from advisor.features import layer_geometry
from advisor.layers import ConvLayer, conv_layers
from advisor.model_source import LoadedModel
from advisor.pruning import Unit, parameters, prune_to, pruning_units, uniform_at_parameters, uniform_counts
from advisor.steps import CurvePoint, friendly_counts
from advisor.store import ResultStore
from advisor.sweep import SweepPlan, run_sweep
from advisor.targets import TargetSpec
from advisor.timing import TimingPolicy

stderr = Console(stderr=True)
IN_SHARES = (1.0, 0.6, 0.3)  # input widths sampled per convolution, as shares of the original
REPLANS = 3  # plans measured at most: a plan measured over budget recalibrates the next
REFINES = 4  # rounds of measuring a plan's own convolutions and refitting before it is built
ROUNDS = 5  # interleaved rounds when timing whole networks
FRIENDLY_NOISE = 0.02  # a count is friendly only if every larger one is predicted this much slower
MARGIN = 0.03  # the planner aims this far below the budget: timing noise on a shared CPU is about 3%


def parse_budget(text: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise AdvisorError(f"malformed budget {text!r}: give milliseconds as a number, e.g. --budget-ms 20") from None
    if not np.isfinite(value) or value <= 0:
        raise AdvisorError(f"budget {text!r} must be a positive number of milliseconds")
    return value


@dataclass
class Setup:
    loaded: LoadedModel
    backend: str
    target: TargetSpec
    trials: int
    threads: int
    tuning_root: str = "tuning_logs"
    policy: TimingPolicy = field(default_factory=lambda: TimingPolicy(repeats=9))
    samples: int = 7  # output widths measured per convolution and input width
    min_ratio: float = 0.25
    seed: int = 0


@dataclass
class ConvSlot:
    layer: ConvLayer
    out_unit: str | None
    in_unit: str | None

    def variant(self, counts: dict[str, int]) -> ConvLayer:
        cout = counts.get(self.out_unit, self.layer.out_channels) if self.out_unit else self.layer.out_channels
        cin = counts.get(self.in_unit, self.layer.in_channels) if self.in_unit else self.layer.in_channels
        n, _, h, w = self.layer.input_shape
        groups = cin if self.layer.depthwise else self.layer.groups
        return replace(self.layer, in_channels=cin, out_channels=cout, groups=groups, input_shape=(n, cin, h, w))


def conv_slots(convs: list[ConvLayer], units: list[Unit]) -> list[ConvSlot]:
    out_of = {name: u.name for u in units for name in u.out_convs}
    in_of = {name: u.name for u in units for name in u.in_convs}
    return [ConvSlot(c, out_of.get(c.module_path), in_of.get(c.module_path)) for c in convs]


def _shape_key(layer: ConvLayer) -> tuple:
    return (layer.input_shape, layer.out_channels, layer.kernel, layer.stride, layer.padding, layer.dilation,
            layer.groups)


def measure_layers(setup: Setup, slots: list[ConvSlot], store: ResultStore) -> pd.DataFrame:
    """Measure each distinct convolution at sampled (in, out) widths; stored and resumable."""
    rng = np.random.default_rng(setup.seed)
    distinct = {}
    for slot in slots:
        distinct.setdefault(_shape_key(slot.layer), slot)
    plans = []
    for slot in distinct.values():
        layer = slot.layer
        low = max(1, int(layer.out_channels * setup.min_ratio))
        shares = IN_SHARES if (slot.in_unit and not layer.depthwise) else (1.0,)
        for share in shares:
            cin = max(1, int(round(layer.in_channels * share)))
            # a spread of widths, half on multiples of 8 and half off them: the model sees alignment
            outs = set(np.linspace(low, layer.out_channels, setup.samples // 2 + 1).astype(int) // 8 * 8)
            outs |= set(rng.integers(low, layer.out_channels + 1, setup.samples - len(outs) + 1).tolist())
            outs = sorted(int(c) for c in outs if c >= low and (layer.depthwise or c % layer.groups == 0))
            variant = ConvSlot(layer, None, "x").variant({"x": cin}) if cin != layer.in_channels else layer
            variant = replace(variant, name=f"{layer.name}@in{cin}")
            plans.append(SweepPlan(setup.loaded.label, setup.loaded.input_shape, variant, outs, setup.backend,
                                   setup.target, setup.trials, setup.threads, setup.tuning_root,
                                   policy=setup.policy))
    stderr.print(f"measuring {len(distinct)} distinct convolutions at {sum(len(p.channels) for p in plans)} widths")
    for plan in plans:
        run_sweep(plan, store, show_progress=True)
    rows = []
    for plan in plans:
        rows.append(store.frame(**plan.fixed_columns()))
    return usable(pd.concat(rows, ignore_index=True))


def measure_plan_layers(setup: Setup, slots: list[ConvSlot], counts: dict[str, int],
                        store: ResultStore) -> pd.DataFrame:
    """The convolutions a plan would run, measured at the plan's own widths (stored, resumable).
    The planner picks counts where the model predicts a saving, so the model's errors there lean
    one way: ResNet-18's layer4 at 508 of 512 channels was predicted 25% faster than it ran."""
    plans = {}
    for slot in slots:
        variant = slot.variant(counts)
        variant = replace(variant, name=f"{slot.layer.name}@in{variant.in_channels}")
        plans.setdefault(_shape_key(variant), SweepPlan(
            setup.loaded.label, setup.loaded.input_shape, variant, [variant.out_channels], setup.backend,
            setup.target, setup.trials, setup.threads, setup.tuning_root, policy=setup.policy))
    frames = []
    for plan in plans.values():
        run_sweep(plan, store, show_progress=False)
        frames.append(store.frame(**plan.fixed_columns()))
    return usable(pd.concat(frames, ignore_index=True))


class Predictor:
    """Predicted network latency for per-unit counts."""

    def __init__(self, model: CostModel, slots: list[ConvSlot]) -> None:
        self.model, self.slots = model, slots
        self.alpha, self.beta, self.scale = 0.0, 1.0, 1.0

    def conv_sum(self, plans: list[dict[str, int]]) -> np.ndarray:
        rows = [{**layer_geometry(slot.variant(plan)), "backend": self.model.backend}
                for plan in plans for slot in self.slots]
        predicted = self.model.predict(pd.DataFrame(rows)).reshape(len(plans), len(self.slots))
        return predicted.sum(axis=1)

    def network(self, plans: list[dict[str, int]]) -> np.ndarray:
        return self.scale * (self.alpha + self.beta * self.conv_sum(plans))

    def calibrate(self, anchors: list[dict[str, int]], anchor_ms: list[float],
                  plans: list[dict[str, int]] = (), plan_ms: list[float] = ()) -> None:
        """alpha and beta: least squares of the anchors' measured latency on their summed
        per-convolution predictions; scale: the geometric mean of measured over predicted for the
        measured plans. A plan measured over budget once ran 7.4% above its prediction, and with it
        as a third point of the least squares the next plan still ran 6.8% above."""
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


def friendly_choices(predictor: Predictor, unit: Unit, counts: dict[str, int], low: int) -> list[int]:
    """Counts of one unit (others fixed) that no larger count beats in predicted latency."""
    options = [c for c in range(low, unit.channels + 1) if c % unit.multiple == 0]
    touched = [s for s in predictor.slots if unit.name in (s.out_unit, s.in_unit)]
    local = Predictor(predictor.model, touched)
    latency = local.conv_sum([{**counts, unit.name: c} for c in options])
    curve = [CurvePoint(c, float(v), float(v), float(v)) for c, v in zip(options, latency)]
    return friendly_counts(curve, noise=FRIENDLY_NOISE)


@dataclass
class Plan:
    counts: dict[str, int]
    predicted_ms: float
    importance_kept: float  # share of total importance kept
    met: bool
    steps: int


def plan_counts(predictor: Predictor, units: list[Unit], budget_ms: float, min_ratio: float) -> Plan:
    """Greedy: repeatedly cut the unit whose next friendly count saves the most latency per unit of
    importance lost, until the prediction meets the budget or nothing can be cut."""
    counts = {u.name: u.channels for u in units}
    lows = {u.name: max(u.multiple, int(np.ceil(u.channels * min_ratio / u.multiple)) * u.multiple) for u in units}
    total_importance = sum(float(u.importance.sum()) for u in units)
    current = float(predictor.network([counts])[0])
    steps = 0
    while current > budget_ms:
        moves = []
        for unit in units:
            choices = [c for c in friendly_choices(predictor, unit, counts, lows[unit.name])
                       if c < counts[unit.name]]
            window = [c for c in choices if c >= counts[unit.name] - max(unit.multiple, unit.channels // 8)]
            for count in (window or choices[-1:]):
                moves.append((unit, count))
        if not moves:
            break
        latencies = predictor.network([{**counts, u.name: c} for u, c in moves])
        best, best_score = None, -np.inf
        for (unit, count), latency in zip(moves, latencies):
            saved = current - latency
            lost = unit.lost(count) - unit.lost(counts[unit.name])
            score = saved / (lost + 1e-6)
            if saved > 0 and score > best_score:
                best, best_score = (unit, count, float(latency)), score
        if best is None:
            break
        counts[best[0].name] = best[1]
        current = best[2]
        steps += 1
    if current > budget_ms:  # not met: the plan with every unit at its floor may still be faster
        floor = float(predictor.network([lows])[0])
        if floor < current:
            counts, current = dict(lows), floor
    kept = sum(float(u.importance.sum()) - u.lost(counts[u.name]) for u in units) / total_importance
    return Plan(counts, current, kept, current <= budget_ms, steps)


def measure_networks(setup: Setup, modules: list[torch.nn.Module], example: torch.Tensor) -> list[float]:
    """Median latency of each network, measured interleaved: `rounds` rounds, each timing every
    network once (a third of the policy's samples), and the median of the rounds' medians. On a
    shared machine, load that comes and goes then falls on all the networks alike."""
    from advisor.network_latency import torch_network_latency, tvm_network_latency
    from advisor.tuning import ScheduleCache

    per_round = replace(setup.policy, warmup=1, repeats=max(2, setup.policy.repeats // 3))
    runners = []
    for module in modules:
        module = module.eval()
        if setup.backend == "torch":
            device = "cuda" if setup.target.kind == "cuda" else "cpu"
            runners.append(lambda m=module: torch_network_latency(m, example, per_round, device).median_ms)
        else:
            program = torch.export.export(module, (example,))
            cache = ScheduleCache(setup.tuning_root, setup.target)
            runners.append(lambda p=program: tvm_network_latency(p, example, setup.target, cache, setup.trials,
                                                                 per_round)[0].median_ms)
    samples = [[runner() for runner in runners] for _ in range(ROUNDS)]
    return [float(np.median([round_[i] for round_ in samples])) for i in range(len(modules))]


@dataclass
class Recommendation:
    plan: Plan
    budget_ms: float
    units: list[Unit]
    unpruned_ms: float
    recommended_ms: float | None = None
    uniform_ms: float | None = None
    uniform_keep_ratio: float | None = None
    parameters: dict = field(default_factory=dict)
    fit_points: int = 0
    attempts: int = 1
    calibration: dict = field(default_factory=dict)
    seconds: float = 0.0
    pruned: torch.nn.Module | None = None

    @property
    def calibration_unpruned_ms(self) -> float | None:
        anchors = self.calibration.get("measured_anchors_ms")
        return anchors[0] if anchors else None

    @property
    def predicted_at_check_ms(self) -> float | None:
        """The prediction at the machine's speed during the side-by-side check. Predictions are in
        the units of the calibration; a shared machine's speed drifts by 5-20% within minutes (the
        unpruned network read 38 ms at calibration and 46 ms beside a plan), and the unpruned
        network timed beside the plan measures that drift."""
        if self.recommended_ms is None or not self.calibration_unpruned_ms:
            return None
        return self.plan.predicted_ms * self.unpruned_ms / self.calibration_unpruned_ms

    def to_dict(self, setup: Setup) -> dict:
        return {
            "format": "advisor-plan", "version": 1, "model": setup.loaded.label,
            "input_shape": list(setup.loaded.input_shape), "backend": setup.backend, "target": setup.target.name,
            "trials": setup.trials, "threads": setup.threads, "budget_ms": self.budget_ms,
            "budget_met_predicted": self.plan.met,
            "predicted_ms": self.plan.predicted_ms, "measured_ms": self.recommended_ms,
            "predicted_at_check_ms": self.predicted_at_check_ms,
            "unpruned_ms": self.unpruned_ms, "unpruned_at_calibration_ms": self.calibration_unpruned_ms,
            "uniform_ms": self.uniform_ms,
            "uniform_keep_ratio": self.uniform_keep_ratio, "parameters": self.parameters,
            "importance_kept": self.plan.importance_kept, "cost_model_points": self.fit_points,
            "plans_measured": self.attempts, "calibration": self.calibration,
            "seconds": self.seconds,
            "units": [{"root": u.name, "original": u.channels, "keep": self.plan.counts[u.name],
                       "out_convs": u.out_convs, "in_convs": u.in_convs, "multiple": u.multiple,
                       "keep_indices": u.keep(self.plan.counts[u.name])} for u in self.units],
        }


def next_aim(aim: float, budget_ms: float, measured_ms: float, unpruned_at_calibration_ms: float,
             unpruned_at_check_ms: float) -> float:
    """What the planner aims at (in the units of the calibration) after a plan measured over budget:
    tightened by the overshoot, and at least by how much slower the machine ran at the check than
    at calibration. A 14% slower spell made three plans, each predicted right in those units, read
    20.3-21.1 ms against a 20 ms budget while the overshoot alone tightened the aim 3-4% a plan."""
    slower = max(1.0, unpruned_at_check_ms / unpruned_at_calibration_ms)
    return min(aim * budget_ms / measured_ms, budget_ms * (1 - MARGIN) / slower)


def recommend(setup: Setup, store: ResultStore, budget_ms: float, importance: str = "magnitude") -> Recommendation:
    started = time.perf_counter()
    if setup.loaded.module is None:
        raise AdvisorError(f"{setup.loaded.label} is an exported program: recommend needs the nn.Module "
                           "(a built-in or path/file.py:factory) to prune")
    module = setup.loaded.module.eval()
    example = torch.randn(setup.loaded.input_shape, generator=torch.Generator().manual_seed(0))
    units = pruning_units(module, example, importance)
    if not units:
        raise AdvisorError(f"{setup.loaded.label} has no prunable convolution channels")
    slots = conv_slots(conv_layers(setup.loaded), units)
    rows = measure_layers(setup, slots, store)
    model = fit(rows, source=str(store.path))
    predictor = Predictor(model, slots)

    full = {u.name: u.channels for u in units}
    half = uniform_counts(units, 0.5)
    stderr.print("measuring the unpruned and the uniformly halved network to calibrate")
    unpruned_ms, half_ms = measure_networks(setup, [module, prune_to(module, example, units, half)], example)
    predictor.calibrate([full, half], [unpruned_ms, half_ms])

    anchors, anchor_ms = [full, half], [unpruned_ms, half_ms]
    measured_plans, measured_plan_ms = [], []  # plans measured over budget, in the calibration's units

    def plan_on_measured_layers(aim: float) -> Plan:
        """Plan, measure the plan's own convolutions, refit and plan again, until a plan's
        convolutions were all measured already. After REFINES rounds without that, the plan
        measured so far that keeps the most importance within the budget under the refitted
        model; failing that, the refitted model's own plan."""
        nonlocal rows
        tried = []
        for _ in range(REFINES):
            plan = plan_counts(predictor, units, aim, setup.min_ratio)
            if not plan.met and aim < budget_ms:  # a tightened aim out of reach: settle for the budget
                plan = plan_counts(predictor, units, budget_ms, setup.min_ratio)
            known = len(rows)
            rows = pd.concat([rows, measure_plan_layers(setup, slots, plan.counts, store)], ignore_index=True)
            rows = rows.drop_duplicates(subset=["layer", "channels"], keep="last").reset_index(drop=True)
            if len(rows) == known:
                return plan
            tried.append(plan)
            stderr.print(f"measured the plan's convolutions at {len(rows) - known} new widths; refitting")
            predictor.model = fit(rows, source=str(store.path))
            predictor.calibrate(anchors, anchor_ms, measured_plans, measured_plan_ms)
        predicted = predictor.network([p.counts for p in tried])
        tried = [replace(p, predicted_ms=float(ms), met=bool(ms <= budget_ms)) for p, ms in zip(tried, predicted)]
        # within the aim if any is (after a plan measured over budget the aim sits below the budget,
        # and the plan nearest the budget is the likeliest to miss again), else within the budget
        within = [p for p in tried if p.predicted_ms <= aim] or [p for p in tried if p.met]
        if within:
            return max(within, key=lambda p: p.importance_kept)
        # none of them: the plan of the refitted model, some of its convolutions maybe unmeasured
        plan = plan_counts(predictor, units, aim, setup.min_ratio)
        return plan if plan.met or aim >= budget_ms else plan_counts(predictor, units, budget_ms, setup.min_ratio)

    aim = budget_ms * (1 - MARGIN)  # what the planner aims at: tightened by each measured overshoot
    result = None
    for attempt in range(1, REPLANS + 1):
        plan = plan_on_measured_layers(aim)
        if not plan.met and result is not None:
            break  # recalibration put the budget out of reach: keep the last plan, measured over budget
        result = Recommendation(plan, budget_ms, units, unpruned_ms, fit_points=len(rows), attempts=attempt,
                                calibration={"alpha_ms": predictor.alpha, "beta": predictor.beta,
                                             "scale": predictor.scale, "measured_anchors_ms": list(anchor_ms),
                                             "measured_plans_ms": list(measured_plan_ms)})
        if not plan.met:
            result.seconds = time.perf_counter() - started
            return result
        pruned = prune_to(module, example, units, plan.counts)
        uniform, ratio = uniform_at_parameters(module, example, units, parameters(pruned))
        # the check is the comparison that is reported: unpruned, recommended and uniform timed
        # interleaved (a plan checked alone once passed at 19.9 ms and then read 20.2 ms beside the others)
        stderr.print(f"plan {attempt}: measuring unpruned, recommended and uniform networks side by side")
        result.unpruned_ms, result.recommended_ms, result.uniform_ms = measure_networks(
            setup, [module, pruned, uniform], example)
        result.uniform_keep_ratio = ratio
        result.parameters = {"unpruned": parameters(module), "recommended": parameters(pruned),
                             "uniform": parameters(uniform)}
        if result.recommended_ms <= budget_ms:
            break
        # measured over budget: the plan becomes a calibration point and the planner tries again
        stderr.print(f"plan {attempt}: predicted {plan.predicted_ms:.3f} ms, measured {result.recommended_ms:.3f} ms "
                     f"> budget; recalibrating on it")
        # in the units of the calibration: the machine's speed drifts (the unpruned network read
        # 35.2 ms when calibrating and 40.6 ms beside a plan), so scale by the unpruned network
        measured_plans.append(plan.counts)
        measured_plan_ms.append(result.recommended_ms * unpruned_ms / result.unpruned_ms)
        predictor.calibrate(anchors, anchor_ms, measured_plans, measured_plan_ms)
        aim = next_aim(aim, budget_ms, result.recommended_ms, unpruned_ms, result.unpruned_ms)
    result.pruned = pruned
    result.fit_points = len(rows)  # the last refit's, also where the loop kept an earlier plan
    result.seconds = time.perf_counter() - started
    return result


def save_outputs(result: Recommendation, setup: Setup, plan_path: Path, model_path: Path | None) -> None:
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_text(json.dumps(result.to_dict(setup), indent=1) + "\n")
    if model_path is not None and result.pruned is not None:
        model_path.parent.mkdir(parents=True, exist_ok=True)
        example = torch.zeros(setup.loaded.input_shape)
        torch.export.save(torch.export.export(result.pruned.eval(), (example,)), str(model_path))
