"""`advisor recommend`: per-group channel counts that meet a latency budget, planned on a latency
model of the network's own convolutions, pruned with Torch-Pruning, and proven by measuring the
pruned network beside the unpruned one and uniform pruning.

The steps (Recommender.run): measure the convolutions at sampled widths and fit -> calibrate on the
unpruned and the uniformly halved network -> plan, measuring each plan's own convolutions and
refitting -> prune and check, side by side, replanning when a plan measures over budget.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from advisor.board.timing import TimingPolicy
from advisor.compile.targets import TargetSpec
from advisor.errors import AdvisorError
from advisor.learn.cost_model import fit
from advisor.measure.backends import get_backend
from advisor.measure.sweep import SweepSpec, run_sweep
from advisor.model.layers import ConvLayer, conv_layers
from advisor.model.loading import LoadedModel
from advisor.progress import SILENT, Progress
from advisor.prune.groups import (IMPORTANCES, ChannelGroup, channel_groups, parameters, prune_to,
                                  uniform_at_parameters, uniform_counts)
from advisor.prune.planner import MARGIN, ConvSlot, Predictor, PrunePlan, conv_slots, next_aim, plan_counts
from advisor.store.results import ResultStore, usable

log = logging.getLogger(__name__)
IN_SHARES = (1.0, 0.6, 0.3)  # input widths sampled per convolution, as shares of the original
REPLANS = 3  # plans measured at most: a plan measured over budget recalibrates the next
REFINES = 4  # rounds of measuring a plan's own convolutions and refitting before it is built
ROUNDS = 5  # interleaved rounds when timing whole networks


def parse_budget(text: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise AdvisorError(f"malformed budget {text!r}: give milliseconds as a number, e.g. --budget-ms 20") from None
    if not np.isfinite(value) or value <= 0:
        raise AdvisorError(f"budget {text!r} must be a positive number of milliseconds")
    return value


@dataclass
class RecommendConfig:
    """How a recommendation measures and plans. Checks its own values."""

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
    importance: str = "magnitude"

    def __post_init__(self) -> None:
        backend = get_backend(self.backend)
        self.trials = backend.trials_key(self.trials)
        if self.importance not in IMPORTANCES:
            raise AdvisorError(f"unknown importance {self.importance!r}: use one of {', '.join(IMPORTANCES)}")
        if not 0 < self.min_ratio <= 1:
            raise AdvisorError(f"--min-ratio must be in (0, 1], not {self.min_ratio}")
        if self.samples < 3:
            raise AdvisorError(f"--samples must be at least 3, not {self.samples}")
        if self.policy.repeats < 2:
            raise AdvisorError("--repeats must be at least 2 (a spread needs two samples)")
        if self.trials < 0:
            raise AdvisorError("--trials must be 0 or more")
        backend.check_target(self.target)

    def sweep(self, layer: ConvLayer, counts: list[int]) -> SweepSpec:
        return SweepSpec(self.loaded.label, self.loaded.input_shape, layer, counts, self.backend, self.target,
                         self.trials, self.threads, self.tuning_root, policy=self.policy)


def _shape_key(layer: ConvLayer) -> tuple:
    return (layer.input_shape, layer.out_channels, layer.kernel, layer.stride, layer.padding, layer.dilation,
            layer.groups)


def _step(*values: int) -> int:
    return math.lcm(*[max(1, v) for v in values])


def sampled_widths(config: RecommendConfig, slots: list[ConvSlot], groups: list[ChannelGroup],
                   rng: np.random.Generator) -> list[SweepSpec]:
    """Sweeps of each distinct convolution at sampled output widths for a few input widths. Widths
    respect what the convolution and its channel groups allow (a grouped convolution's widths are
    multiples of its groups)."""
    multiple = {g.name: g.multiple for g in groups}
    distinct = {}
    for slot in slots:
        distinct.setdefault(_shape_key(slot.layer), slot)
    specs = []
    for slot in distinct.values():
        layer = slot.layer
        out_step = 1 if layer.depthwise else _step(layer.groups, multiple.get(slot.out_group, 1))
        in_step = _step(layer.groups, multiple.get(slot.in_group, 1))
        low = max(out_step, int(layer.out_channels * config.min_ratio))
        shares = IN_SHARES if (slot.in_group and not layer.depthwise) else (1.0,)
        for share in shares:
            cin = max(in_step, int(round(layer.in_channels * share / in_step)) * in_step)
            # a spread of widths, half on multiples of 8 and half off them: the model sees alignment
            outs = set(np.linspace(low, layer.out_channels, config.samples // 2 + 1).astype(int) // 8 * 8)
            outs |= set(rng.integers(low, layer.out_channels + 1, config.samples - len(outs) + 1).tolist())
            outs = sorted(int(c) for c in outs if c >= low and (layer.depthwise or c % out_step == 0))
            variant = ConvSlot(layer, None, "x").variant({"x": cin}) if cin != layer.in_channels else layer
            specs.append(config.sweep(replace(variant, name=f"{layer.name}@in{cin}"), outs or [layer.out_channels]))
    return specs


@dataclass
class Recommendation:
    plan: PrunePlan
    budget_ms: float
    groups: list[ChannelGroup]
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
        the units of the calibration; a shared machine's speed drifts by 5-20% within minutes, and
        the unpruned network timed beside the plan measures that drift."""
        if self.recommended_ms is None or not self.calibration_unpruned_ms:
            return None
        return self.plan.predicted_ms * self.unpruned_ms / self.calibration_unpruned_ms

    def to_dict(self, config: RecommendConfig) -> dict:
        return {
            "format": "advisor-plan", "version": 1, "model": config.loaded.label,
            "input_shape": list(config.loaded.input_shape), "backend": config.backend, "target": config.target.name,
            "trials": config.trials, "threads": config.threads, "budget_ms": self.budget_ms,
            "budget_met_predicted": self.plan.met,
            "predicted_ms": self.plan.predicted_ms, "measured_ms": self.recommended_ms,
            "predicted_at_check_ms": self.predicted_at_check_ms,
            "unpruned_ms": self.unpruned_ms, "unpruned_at_calibration_ms": self.calibration_unpruned_ms,
            "uniform_ms": self.uniform_ms,
            "uniform_keep_ratio": self.uniform_keep_ratio, "parameters": self.parameters,
            "importance_kept": self.plan.importance_kept, "cost_model_points": self.fit_points,
            "plans_measured": self.attempts, "calibration": self.calibration,
            "seconds": self.seconds,
            "units": [{"root": g.name, "original": g.channels, "keep": self.plan.counts[g.name],
                       "out_convs": g.out_convs, "in_convs": g.in_convs, "multiple": g.multiple,
                       "keep_indices": g.keep(self.plan.counts[g.name])} for g in self.groups],
        }


def measure_networks(config: RecommendConfig, modules: list[torch.nn.Module], example: torch.Tensor) -> list[float]:
    """Median latency of each network, measured interleaved: ROUNDS rounds, each timing every
    network once (a third of the policy's samples), and the median of the rounds' medians. On a
    shared machine, load that comes and goes then falls on all the networks alike."""
    backend = get_backend(config.backend)
    per_round = replace(config.policy, warmup=1, repeats=max(2, config.policy.repeats // 3))
    networks = [backend.network(module.eval(), example, config.target, tuning_root=config.tuning_root,
                                trials=config.trials) for module in modules]
    samples = [[network.time(per_round).median_ms for network in networks] for _ in range(ROUNDS)]
    return [float(np.median([round_[i] for round_ in samples])) for i in range(len(modules))]


class Recommender:
    """One recommendation's state: the layer rows measured so far, the latency model and its
    calibration, and the plans measured over budget."""

    def __init__(self, config: RecommendConfig, store: ResultStore, budget_ms: float,
                 progress: Progress = SILENT) -> None:
        if config.loaded.module is None:
            raise AdvisorError(f"{config.loaded.label} is an exported program: recommend needs the nn.Module "
                               "(a built-in or path/file.py:factory) to prune")
        self.config, self.store, self.budget_ms, self.progress = config, store, budget_ms, progress
        self.module = config.loaded.module.eval()
        self.example = torch.randn(config.loaded.input_shape, generator=torch.Generator().manual_seed(0))
        self.groups = channel_groups(self.module, self.example, config.importance)
        if not self.groups:
            raise AdvisorError(f"{config.loaded.label} has no prunable convolution channels")
        self.slots = conv_slots(conv_layers(config.loaded), self.groups)
        self.rows = pd.DataFrame()
        self.predictor: Predictor | None = None
        self.anchors: list[dict[str, int]] = []
        self.anchor_ms: list[float] = []
        self.measured_plans: list[dict[str, int]] = []  # plans measured over budget
        self.measured_plan_ms: list[float] = []  # their readings, in the units of the calibration

    def run(self) -> Recommendation:
        started = time.perf_counter()
        self.measure_layers()
        self.calibrate()
        result = self.plan_and_check()
        result.seconds = time.perf_counter() - started
        return result

    def measure_layers(self) -> None:
        """Each distinct convolution at sampled (in, out) widths (stored, resumable), and the fit."""
        specs = sampled_widths(self.config, self.slots, self.groups, np.random.default_rng(self.config.seed))
        log.info("measuring %d distinct convolutions at %d widths", len({_shape_key(s.layer) for s in specs}),
                 sum(len(s.channels) for s in specs))
        for spec in specs:
            run_sweep(spec, self.store, self.progress)
        self.rows = usable(pd.concat([self.store.frame(**spec.fixed_columns()) for spec in specs],
                                     ignore_index=True))
        self.predictor = Predictor(fit(self.rows, source=str(self.store.path)), self.slots)

    def calibrate(self) -> None:
        """The unpruned and the uniformly halved network, measured: the line from summed
        convolution predictions to network latency."""
        full = {g.name: g.channels for g in self.groups}
        half = uniform_counts(self.groups, 0.5)
        log.info("measuring the unpruned and the uniformly halved network to calibrate")
        half_network = prune_to(self.module, self.example, self.groups, half)
        self.anchors = [full, half]
        self.anchor_ms = measure_networks(self.config, [self.module, half_network], self.example)
        self.predictor.calibrate(self.anchors, self.anchor_ms)

    def refit(self) -> None:
        self.predictor.model = fit(self.rows, source=str(self.store.path))
        self.predictor.calibrate(self.anchors, self.anchor_ms, self.measured_plans, self.measured_plan_ms)

    def measure_plan_layers(self, counts: dict[str, int]) -> int:
        """The convolutions a plan would run, measured at the plan's own widths (stored, resumable);
        returns how many widths were new. The planner picks counts where the model predicts a saving,
        so the model's errors there lean one way (docs/recommend.md)."""
        specs = {}
        for slot in self.slots:
            variant = slot.variant(counts)
            variant = replace(variant, name=f"{slot.layer.name}@in{variant.in_channels}")
            specs.setdefault(_shape_key(variant), self.config.sweep(variant, [variant.out_channels]))
        for spec in specs.values():
            run_sweep(spec, self.store)
        frames = [self.store.frame(**spec.fixed_columns()) for spec in specs.values()]
        known = len(self.rows)
        self.rows = pd.concat([self.rows, usable(pd.concat(frames, ignore_index=True))], ignore_index=True)
        self.rows = self.rows.drop_duplicates(subset=["layer", "channels"], keep="last").reset_index(drop=True)
        return len(self.rows) - known

    def _plan(self, aim: float) -> PrunePlan:
        plan = plan_counts(self.predictor, self.groups, aim, self.config.min_ratio)
        if not plan.met and aim < self.budget_ms:  # a tightened aim out of reach: settle for the budget
            plan = plan_counts(self.predictor, self.groups, self.budget_ms, self.config.min_ratio)
        return plan

    def plan_on_measured_layers(self, aim: float) -> PrunePlan:
        """Plan, measure the plan's own convolutions, refit and plan again, until a plan's
        convolutions were all measured already. After REFINES rounds without that, of the plans
        tried, the one keeping the most importance within the aim (else within the budget) under the
        refitted model; failing that, the refitted model's own plan."""
        tried = []
        for _ in range(REFINES):
            plan = self._plan(aim)
            new = self.measure_plan_layers(plan.counts)
            if not new:
                return plan
            tried.append(plan)
            log.info("measured the plan's convolutions at %d new widths; refitting", new)
            self.refit()
        predicted = self.predictor.network([p.counts for p in tried])
        tried = [replace(p, predicted_ms=float(ms), met=bool(ms <= self.budget_ms)) for p, ms in zip(tried, predicted)]
        # within the aim if any is (after a plan measured over budget the aim sits below the budget,
        # and the plan nearest the budget is the likeliest to miss again), else within the budget
        within = [p for p in tried if p.predicted_ms <= aim] or [p for p in tried if p.met]
        if within:
            return max(within, key=lambda p: p.importance_kept)
        return self._plan(aim)

    def plan_and_check(self) -> Recommendation:
        """Plans, each pruned and measured beside the unpruned network and uniform pruning at equal
        parameters, until one meets the budget when measured (at most REPLANS)."""
        aim = self.budget_ms * (1 - MARGIN)  # tightened by each measured overshoot
        result = None
        for attempt in range(1, REPLANS + 1):
            plan = self.plan_on_measured_layers(aim)
            if not plan.met and result is not None:
                break  # recalibration put the budget out of reach: keep the last plan, measured over budget
            unpruned_ms = self.anchor_ms[0]
            result = Recommendation(plan, self.budget_ms, self.groups, unpruned_ms, fit_points=len(self.rows),
                                    attempts=attempt, calibration=self._calibration())
            if not plan.met:
                return result
            pruned = prune_to(self.module, self.example, self.groups, plan.counts)
            uniform, ratio = uniform_at_parameters(self.module, self.example, self.groups, parameters(pruned))
            # the check is the comparison reported: unpruned, recommended and uniform timed interleaved
            log.info("plan %d: measuring unpruned, recommended and uniform networks side by side", attempt)
            result.unpruned_ms, result.recommended_ms, result.uniform_ms = measure_networks(
                self.config, [self.module, pruned, uniform], self.example)
            result.uniform_keep_ratio = ratio
            result.parameters = {"unpruned": parameters(self.module), "recommended": parameters(pruned),
                                 "uniform": parameters(uniform)}
            result.pruned = pruned
            if result.recommended_ms <= self.budget_ms:
                break
            log.info("plan %d: predicted %.3f ms, measured %.3f ms > budget; recalibrating on it", attempt,
                     plan.predicted_ms, result.recommended_ms)
            # in the units of the calibration: the machine's speed drifts, so scale by the unpruned network
            self.measured_plans.append(plan.counts)
            self.measured_plan_ms.append(result.recommended_ms * unpruned_ms / result.unpruned_ms)
            self.predictor.calibrate(self.anchors, self.anchor_ms, self.measured_plans, self.measured_plan_ms)
            aim = next_aim(aim, self.budget_ms, result.recommended_ms, unpruned_ms, result.unpruned_ms)
        result.fit_points = len(self.rows)  # the last refit's, also where the loop kept an earlier plan
        return result

    def _calibration(self) -> dict:
        return {"alpha_ms": self.predictor.alpha, "beta": self.predictor.beta, "scale": self.predictor.scale,
                "measured_anchors_ms": list(self.anchor_ms), "measured_plans_ms": list(self.measured_plan_ms)}


def recommend(config: RecommendConfig, store: ResultStore, budget_ms: float,
              progress: Progress = SILENT) -> Recommendation:
    return Recommender(config, store, budget_ms, progress).run()


def save_outputs(result: Recommendation, config: RecommendConfig, plan_path: Path, model_path: Path | None) -> None:
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_text(json.dumps(result.to_dict(config), indent=1) + "\n")
    if model_path is not None and result.pruned is not None:
        model_path.parent.mkdir(parents=True, exist_ok=True)
        example = torch.zeros(config.loaded.input_shape)
        torch.export.save(torch.export.export(result.pruned.eval(), (example,)), str(model_path))
