"""`advisor recommend`: per-group channel counts that meet a latency budget, planned on a latency
model of the network's own convolutions, pruned with Torch-Pruning, and proven by measuring the
pruned network beside the unpruned one and the baselines users have: Torch-Pruning at one ratio,
plain and with `round_to=8`, each at the largest keep ratio that meets the budget when measured.
With a data set, every network compared is fine-tuned by the same recipe and scored on held-out
images.

The steps (Recommender.run): measure the convolutions at sampled widths and fit -> calibrate on the
unpruned and the uniformly halved network -> plan, measuring each plan's own convolutions and
refitting (a budget out of reach ends here, once the fastest plan is measured) -> find the
baselines by measuring -> prune and check, all four networks side by side, replanning when a plan
measures over budget -> fine-tune and score each. On a tuned backend every network's convolutions
are tuned and measured as layers before the network is compiled, so whole networks compile with
tuned schedules and need no tuning of their own. Every measurement is stored as it lands: layer
points in the database, network timings in the journal (advisor.prune.journal).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from advisor.board.timing import TimingPolicy
from advisor.compile.targets import TargetSpec
from advisor.errors import AdvisorError
from advisor.learn.cost_model import fit
from advisor.measure.backends import TOLERANCES, get_backend
from advisor.measure.checks import check_measuring
from advisor.measure.sweep import SweepSpec, run_sweep, series_frame
from advisor.measure.threads import torch_threads
from advisor.model.datasets import Dataset
from advisor.model.layers import ConvLayer, conv_layers
from advisor.model.loading import LoadedModel, prunable_module
from advisor.model.training import FINETUNE_ONE_CYCLE, TRAIN_ONE_CYCLE, accuracy, finetuned_network
from advisor.progress import SILENT, Progress
from advisor.prune.groups import (IMPORTANCES, ChannelGroup, architecture, channel_groups, counts_of, flops,
                                  parameters, prune_to, torch_pruning_uniform, uniform_counts)
from advisor.prune.journal import Journal
from advisor.prune.planner import (MARGIN, ConvSlot, GroupCurve, Predictor, PrunePlan, conv_slots, floors,
                                   group_curves, next_aim, plan_counts)
from advisor.store.results import ResultStore

log = logging.getLogger(__name__)
IN_SHARES = (1.0, 0.6, 0.3)  # input widths sampled per convolution, as shares of the original
TUNED_IN_SHARES = (1.0, 0.5)  # on a tuned backend, where every width measured is a tuning of its own
REPLANS = 3  # plans measured at most: a plan measured over budget recalibrates the next
REFINES = 4  # rounds of measuring a plan's own convolutions and refitting before it is built
ROUNDS = 5  # interleaved rounds when timing whole networks
KEEP_STEP = 0.05  # the baselines' keep ratios: 1, 0.95, ... down to --min-ratio
ROUND_TO = 8  # Torch-Pruning's README advises rounding kept channels to multiples of 8
PLAUSIBLE = 1.1  # a baseline predicted within this factor of the budget is worth measuring first
FALLBACK = 2  # baselines predicted further off measured when none of those met the budget
SLACK = 3  # a plan measured more than this many margins under the budget leaves room for another
NETWORKS = ("unpruned", "recommended", "uniform", f"uniform-r{ROUND_TO}")


@dataclass(frozen=True)
class Budget:
    """A latency budget: milliseconds, or a share of the unpruned network's latency measured beside
    the pruned one (a ratio from one interleaved measurement, whatever the machine's speed)."""

    ms: float | None = None
    share: float | None = None

    def limit(self, unpruned_ms: float) -> float:
        """The budget in ms, given the unpruned network's reading in the same measurement."""
        return self.ms if self.ms is not None else self.share * unpruned_ms

    @property
    def text(self) -> str:
        return f"{self.ms:g} ms" if self.ms is not None else f"{self.share:.0%} of the unpruned latency"


def parse_budget(text: str | float) -> Budget:
    """`20` (ms) or `50%` (of the unpruned network's latency)."""
    raw = str(text).strip()
    share = raw.endswith("%")
    try:
        value = float(raw[:-1] if share else raw)
    except ValueError:
        raise AdvisorError(f"malformed budget {text!r}: give milliseconds, e.g. --budget-ms 20, or a share of "
                           "the unpruned latency, e.g. --budget-ms 50%") from None
    if not np.isfinite(value) or value <= 0:
        raise AdvisorError(f"budget {text!r} must be a positive number of milliseconds or percent")
    if share:
        if value > 100:
            raise AdvisorError(f"budget {text!r}: a share of the unpruned latency is at most 100%")
        return Budget(share=value / 100)
    return Budget(ms=value)


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
    margin: float = MARGIN  # the planner aims this share under the budget
    plans: int = REPLANS  # plans measured at most
    cost_model: str = "xgb"  # MetaSchedule's, when tuning

    def __post_init__(self) -> None:
        backend = get_backend(self.backend)
        self.trials = backend.trials_key(self.trials)  # checked as keyed: trials do not apply to torch
        check_measuring(trials=self.trials, repeats=self.policy.repeats, cost_model=self.cost_model)
        if self.importance not in IMPORTANCES:
            raise AdvisorError(f"unknown importance {self.importance!r}: use one of {', '.join(IMPORTANCES)}")
        if not 0 < self.min_ratio <= 1:
            raise AdvisorError(f"--min-ratio must be in (0, 1], not {self.min_ratio}")
        if self.samples < 3:
            raise AdvisorError(f"--samples must be at least 3, not {self.samples}")
        if not -0.5 <= self.margin < 0.5:
            raise AdvisorError(f"--margin must be in [-0.5, 0.5), not {self.margin}")
        if self.plans < 1:
            raise AdvisorError(f"--plans must be at least 1, not {self.plans}")
        backend.check_target(self.target)

    def sweep(self, layer: ConvLayer, counts: list[int]) -> SweepSpec:
        return SweepSpec(self.loaded.label, self.loaded.input_shape, layer, counts, self.backend, self.target,
                         self.trials, self.threads, self.tuning_root, self.cost_model, policy=self.policy)

    def fingerprint(self, budget: Budget, weights: str) -> str:
        """What the journal's entries depend on: how everything is measured and planned."""
        about = {"model": self.loaded.label, "input": list(self.loaded.input_shape), "backend": self.backend,
                 "target": self.target.config, "trials": self.trials, "threads": self.threads,
                 "policy": asdict(self.policy), "samples": self.samples, "min_ratio": self.min_ratio,
                 "seed": self.seed, "importance": self.importance, "margin": self.margin, "plans": self.plans,
                 "cost_model": self.cost_model, "budget": asdict(budget), "weights": weights}
        return hashlib.sha256(json.dumps(about, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Scoring:
    """How the networks compared are fine-tuned and scored: held-out accuracy on `dataset`, or the
    user's `evaluate` (higher is better)."""

    dataset: Dataset
    finetune: int = 3  # epochs, the same recipe for every network (advisor.model.training.finetune)
    evaluate: Callable[[nn.Module], float] | None = None
    metric: str = "accuracy"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.finetune < 0:
            raise AdvisorError(f"--finetune must be 0 or more, not {self.finetune}")

    def score(self, module: nn.Module) -> float:
        if self.evaluate is not None:
            return self.evaluate(module)
        return accuracy(module, self.dataset.x_test, self.dataset.y_test)

    def batches(self, count: int = 4, size: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A few batches of training images (fixed seed), for a gradient criterion."""
        order = torch.randperm(len(self.dataset.y_train), generator=torch.Generator().manual_seed(self.seed))
        picks = [order[i * size:(i + 1) * size] for i in range(count) if i * size < len(order)]
        return [(self.dataset.x_train[p], self.dataset.y_train[p]) for p in picks]


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
    sampled_shares = TUNED_IN_SHARES if get_backend(config.backend).tuned else IN_SHARES
    distinct = {}
    for slot in slots:
        distinct.setdefault(_shape_key(slot.layer), slot)
    specs = []
    for slot in distinct.values():
        layer = slot.layer
        out_step = 1 if layer.depthwise else _step(layer.groups, multiple.get(slot.out_group, 1))
        in_step = _step(layer.groups, multiple.get(slot.in_group, 1))
        low = max(out_step, int(layer.out_channels * config.min_ratio))
        shares = sampled_shares if (slot.in_group and not layer.depthwise) else (1.0,)
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
class Compared:
    """One network of the side-by-side comparison."""

    name: str  # one of NETWORKS
    module: nn.Module
    counts: dict[str, int]
    keep_ratio: float | None  # the one ratio of a uniform baseline (1 unpruned); None for the plan
    parameters: int
    flops: int
    within_budget: bool | None = None  # as found when searching (a baseline), None if not searched
    measured_ms: float | None = None  # in the side-by-side check
    score_before: float | None = None  # before fine-tuning
    score: float | None = None  # after the same fine-tuning as every other network
    finetuned: nn.Module | None = None

    def to_dict(self) -> dict:
        return {"measured_ms": self.measured_ms, "keep_ratio": self.keep_ratio, "parameters": self.parameters,
                "flops": self.flops, "score_before_finetune": self.score_before, "score": self.score,
                "within_budget_when_searched": self.within_budget, "counts": self.counts}


@dataclass
class Recommendation:
    plan: PrunePlan
    budget: Budget
    groups: list[ChannelGroup]
    unpruned_ms: float
    networks: dict[str, Compared] = field(default_factory=dict)
    fit_points: int = 0
    attempts: int = 1
    calibration: dict = field(default_factory=dict)
    seconds: float = 0.0
    fastest_ms: float | None = None  # the fastest plan measured, when no plan was predicted within budget
    limit_ms: float | None = None  # the budget in ms at the check (a share: of the unpruned reading there)
    searches: dict = field(default_factory=dict)  # each baseline's keep ratios measured
    curves: list[GroupCurve] = field(default_factory=list)
    scoring: dict = field(default_factory=dict)
    artifact: Path | None = None

    @property
    def reachable(self) -> bool:
        return self.plan.met or (self.fastest_ms is not None and self.fastest_ms <= (self.limit_ms or math.inf))

    @property
    def budget_ms(self) -> float:
        return self.limit_ms if self.limit_ms is not None else self.budget.limit(self.unpruned_ms)

    def _ms(self, name: str) -> float | None:
        network = self.networks.get(name)
        return None if network is None else network.measured_ms

    @property
    def recommended_ms(self) -> float | None:
        return self._ms("recommended")

    @property
    def uniform_ms(self) -> float | None:
        return self._ms("uniform")

    @property
    def uniform_keep_ratio(self) -> float | None:
        return self.networks["uniform"].keep_ratio if "uniform" in self.networks else None

    @property
    def parameters(self) -> dict[str, int]:
        return {name: network.parameters for name, network in self.networks.items()}

    @property
    def pruned(self) -> nn.Module | None:
        network = self.networks.get("recommended")
        if network is None:
            return None
        return network.finetuned if network.finetuned is not None else network.module

    @property
    def met(self) -> bool:
        return self.recommended_ms is not None and self.recommended_ms <= self.budget_ms

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
            "format": "advisor-plan", "version": 2, "model": config.loaded.label,
            "input_shape": list(config.loaded.input_shape), "backend": config.backend, "target": config.target.name,
            "trials": config.trials, "threads": config.threads, "budget": self.budget.text,
            "budget_ms": self.budget_ms, "budget_share": self.budget.share,
            "budget_met_predicted": self.plan.met, "budget_met_measured": self.met if self.networks else None,
            "predicted_ms": self.plan.predicted_ms, "measured_ms": self.recommended_ms,
            "predicted_at_check_ms": self.predicted_at_check_ms, "fastest_plan_measured_ms": self.fastest_ms,
            "unpruned_ms": self.unpruned_ms, "unpruned_at_calibration_ms": self.calibration_unpruned_ms,
            "uniform_ms": self.uniform_ms, "uniform_keep_ratio": self.uniform_keep_ratio,
            "parameters": self.parameters, "importance_kept": self.plan.importance_kept,
            "cost_model_points": self.fit_points, "plans_measured": self.attempts, "calibration": self.calibration,
            "seconds": self.seconds, "networks": {name: n.to_dict() for name, n in self.networks.items()},
            "baseline_searches": self.searches, "scoring": self.scoring,
            "artifact": None if self.artifact is None else str(self.artifact),
            "curves": [asdict(c) for c in self.curves],
            "units": [{"root": g.name, "original": g.channels, "keep": self.plan.counts[g.name],
                       "out_convs": g.out_convs, "in_convs": g.in_convs, "multiple": g.multiple,
                       "keep_indices": g.keep(self.plan.counts[g.name])} for g in self.groups],
        }


def measure_networks(config: RecommendConfig, modules: list[nn.Module], example: torch.Tensor,
                     prepared: dict | None = None) -> list[float]:
    """Median latency of each network, measured interleaved: ROUNDS rounds, each timing every
    network once (a third of the policy's samples), and the median of the rounds' medians. On a
    shared machine, load that comes and goes then falls on all the networks alike. A tuned backend
    compiles each network with the schedules its database holds (no tuning here: Recommender tunes
    a network's convolutions as layers first). `prepared` keeps compiled networks by architecture."""
    backend = get_backend(config.backend)
    per_round = replace(config.policy, warmup=1, repeats=max(2, config.policy.repeats // 3))
    prepared = {} if prepared is None else prepared
    networks = []
    for module in modules:
        key = architecture(module)
        if key not in prepared:
            prepared[key] = backend.network(module.eval(), example, config.target, tuning_root=config.tuning_root,
                                            trials=0)
        networks.append(prepared[key])
    for network in networks:  # a network that computes something else is not timed
        if network.max_abs_err is not None and not network.max_abs_err <= TOLERANCES["float32"]:
            raise AdvisorError(f"the compiled network's output differs from PyTorch's by {network.max_abs_err:.3g}")
    samples = [[network.time(per_round, config.threads).median_ms for network in networks] for _ in range(ROUNDS)]
    return [float(np.median([round_[i] for round_ in samples])) for i in range(len(modules))]


def weights_digest(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class Recommender:
    """One recommendation's state: the layer rows measured so far, the latency model and its
    calibration, the plans measured over budget, and the networks compiled so far."""

    def __init__(self, config: RecommendConfig, store: ResultStore, budget: Budget | float,
                 progress: Progress = SILENT, scoring: Scoring | None = None, journal: Journal | None = None) -> None:
        self.config, self.store, self.progress, self.scoring = config, store, progress, scoring
        self.budget = budget if isinstance(budget, Budget) else Budget(ms=float(budget))
        self.module = prunable_module(config.loaded).eval()
        self.example = torch.randn(config.loaded.input_shape, generator=torch.Generator().manual_seed(0))
        self.batches = scoring.batches() if scoring is not None else None  # for a gradient criterion
        self.groups = channel_groups(self.module, self.example, config.importance, self.batches)
        if not self.groups:
            raise AdvisorError(f"{config.loaded.label} has no prunable convolution channels")
        self.slots = conv_slots(conv_layers(config.loaded), self.groups)
        weights = weights_digest(self.module) + (f"|{scoring.dataset.name}" if scoring is not None else "")
        self.journal = (journal or Journal(None)).bind(config.fingerprint(self.budget, weights))
        self.tuned = get_backend(config.backend).tuned
        self.rows = pd.DataFrame()
        self.predictor: Predictor | None = None
        self.anchors: list[dict[str, int]] = []
        self.anchor_ms: list[float] = []
        self.measured_plans: list[dict[str, int]] = []  # plans measured (and the fastest plan, if measured)
        self.measured_plan_ms: list[float] = []  # their readings, in the units of the calibration
        self.prepared: dict = {}  # compiled networks by architecture

    def run(self) -> Recommendation:
        started = time.perf_counter()
        self.measure_layers()
        self.calibrate()
        result = self.plan_and_check()
        if result.networks and self.scoring is not None:
            self.score(result)
        result.seconds = time.perf_counter() - started
        return result

    # --- measuring ----------------------------------------------------------------------------------

    def measure_layers(self) -> None:
        """Each distinct convolution at sampled (in, out) widths (stored, resumable), and the fit."""
        specs = sampled_widths(self.config, self.slots, self.groups, np.random.default_rng(self.config.seed))
        log.info("measuring %d distinct convolutions at %d widths", len({_shape_key(s.layer) for s in specs}),
                 sum(len(s.channels) for s in specs))
        for spec in specs:
            run_sweep(spec, self.store, self.progress)
        # each series at its own counts only: a rerun sees the rows this run saw (the same series
        # gains counts from plans), so it fits the same model and makes the same plans
        self.rows = pd.concat([series_frame(spec, self.store) for spec in specs], ignore_index=True)
        if self.rows.empty:
            raise AdvisorError(f"no convolution of {self.config.loaded.label} could be measured on "
                               f"{self.config.backend}/{self.config.target.name} (see the failures above)")
        self.predictor = Predictor(fit(self.rows, source=str(self.store.path)), self.slots)

    def measure_plan_layers(self, counts: dict[str, int]) -> int:
        """The convolutions a plan would run, measured at the plan's own widths (stored, resumable);
        returns how many widths were new. The planner picks counts where the model predicts a saving,
        so the model's errors there lean one way (docs/recommend.md). On a tuned backend this tunes
        them, which is what the network's compilation then applies."""
        specs = {}
        for slot in self.slots:
            variant = slot.variant(counts)
            variant = replace(variant, name=f"{slot.layer.name}@in{variant.in_channels}")
            specs.setdefault(_shape_key(variant), self.config.sweep(variant, [variant.out_channels]))
        for spec in specs.values():
            run_sweep(spec, self.store)
        frames = [series_frame(spec, self.store) for spec in specs.values()]
        known = len(self.rows)
        self.rows = pd.concat([self.rows, *frames], ignore_index=True)
        self.rows = self.rows.drop_duplicates(subset=["layer", "channels"], keep="last").reset_index(drop=True)
        return len(self.rows) - known

    def measure(self, modules: list[nn.Module], what: str) -> list[float]:
        """Networks timed interleaved (measure_networks), or their readings from the journal. On a
        tuned backend, each network's convolutions are tuned and measured as layers first."""
        if self.tuned:  # stored points are not measured again; their rows join the model's either way
            for module in modules:
                self.measure_plan_layers(counts_of(module, self.groups))
        key = f"networks:{','.join(architecture(m) for m in modules)}"
        stored = self.journal.get(key)
        if stored is not None:
            log.info("%s: read from the journal", what)
            return list(stored)
        log.info("%s: measuring %d networks side by side", what, len(modules))
        readings = measure_networks(self.config, modules, self.example, self.prepared)
        self.journal.put(key, readings)
        return readings

    def calibrate(self) -> None:
        """The unpruned and the uniformly halved network, measured: the line from summed
        convolution predictions to network latency."""
        full = {g.name: g.channels for g in self.groups}
        half = uniform_counts(self.groups, 0.5)
        half_network = prune_to(self.module, self.example, self.groups, half)
        self.anchors = [full, half]
        self.anchor_ms = self.measure([self.module, half_network], "calibration (unpruned and halved)")
        self.predictor.calibrate(self.anchors, self.anchor_ms)

    def refit(self) -> None:
        self.predictor.model = fit(self.rows, source=str(self.store.path))
        self.predictor.calibrate(self.anchors, self.anchor_ms, self.measured_plans, self.measured_plan_ms)

    # --- planning -----------------------------------------------------------------------------------

    @property
    def limit_at_calibration(self) -> float:
        """The budget in the units of the calibration."""
        return self.budget.limit(self.anchor_ms[0])

    def _plan(self, aim: float) -> PrunePlan:
        plan = plan_counts(self.predictor, self.groups, aim, self.config.min_ratio)
        if not plan.met and aim < self.limit_at_calibration:  # a tightened aim out of reach: settle for the budget
            plan = plan_counts(self.predictor, self.groups, self.limit_at_calibration, self.config.min_ratio)
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
        limit = self.limit_at_calibration
        predicted = self.predictor.network([p.counts for p in tried])
        # met as plan_counts means it: within the aim, or within the budget where the aim is below it
        # (a negative margin aims above the budget; judged on the budget, such a plan fell to the floors)
        reach = max(aim, limit)
        tried = [replace(p, predicted_ms=float(ms), met=bool(ms <= reach)) for p, ms in zip(tried, predicted)]
        # within the aim if any is (after a plan measured over budget the aim sits below the budget,
        # and the plan nearest the budget is the likeliest to miss again), else within the budget
        within = [p for p in tried if p.predicted_ms <= aim] or [p for p in tried if p.met]
        if within:
            return max(within, key=lambda p: p.importance_kept)
        return self._plan(aim)

    def _record_measured_plan(self, counts: dict[str, int], measured_ms: float, unpruned_ms: float) -> None:
        """A plan's reading, in the units of the calibration (the machine's speed drifts, so scaled by
        the unpruned network beside it), sets the scale on every prediction."""
        self.measured_plans.append(counts)
        self.measured_plan_ms.append(measured_ms * self.anchor_ms[0] / unpruned_ms)
        self.predictor.calibrate(self.anchors, self.anchor_ms, self.measured_plans, self.measured_plan_ms)

    def _next_aim(self, aim: float, measured_ms: float, unpruned_ms: float) -> float:
        if self.budget.ms is not None:
            return next_aim(aim, self.budget.ms, measured_ms, self.anchor_ms[0], unpruned_ms, self.config.margin)
        # a share: judged in the calibration's units, where the machine's drift cancels
        measured = measured_ms * self.anchor_ms[0] / unpruned_ms
        limit = self.limit_at_calibration
        return next_aim(aim, limit, measured, self.anchor_ms[0], self.anchor_ms[0], self.config.margin)

    def _compared(self, name: str, module: nn.Module, keep_ratio: float | None) -> Compared:
        return Compared(name, module, counts_of(module, self.groups), keep_ratio, parameters(module),
                        flops(module, self.example))

    def check_fastest(self, plan: PrunePlan) -> Recommendation | None:
        """No plan is predicted within budget: measure the fastest one (every group at its floor)
        beside the unpruned network. Over budget: the recommendation that says so. Within: it joins
        the calibration and None is returned (planning goes on)."""
        lows = floors(self.groups, self.config.min_ratio)
        self.measure_plan_layers(lows)
        fastest = prune_to(self.module, self.example, self.groups, lows)
        unpruned_ms, fastest_ms = self.measure([self.module, fastest], "the fastest plan")
        limit = self.budget.limit(unpruned_ms)
        if fastest_ms > limit:
            floor_plan = replace(plan, counts=dict(lows), predicted_ms=float(self.predictor.network([lows])[0]))
            return Recommendation(floor_plan, self.budget, self.groups, unpruned_ms, fit_points=len(self.rows),
                                  calibration=self._calibration(), fastest_ms=fastest_ms, limit_ms=limit)
        self._record_measured_plan(lows, fastest_ms, unpruned_ms)
        return None

    def find_baseline(self, name: str, round_to: int | None) -> tuple[Compared, list[dict]]:
        """Torch-Pruning at one ratio (with `round_to`), at the largest keep ratio whose network meets
        the budget when measured. Keep ratios run from 1 down by KEEP_STEP to --min-ratio (distinct
        networks only). Those predicted within PLAUSIBLE of the budget are measured beside the
        unpruned network, two at a time from the largest, until one meets it; failing that, the
        FALLBACK others predicted fastest; the one above the largest that meets is measured too. With
        round_to a smaller ratio can keep more channels (a count rounded to 0 leaves its group
        whole), so the search does not assume that latency falls with the ratio."""
        ratios = [round(1 - KEEP_STEP * i, 4) for i in range(int((1 - self.config.min_ratio) / KEEP_STEP + 1e-9) + 1)]
        if ratios[-1] > self.config.min_ratio:
            ratios.append(self.config.min_ratio)
        candidates, seen = [], set()
        for ratio in ratios:
            module = torch_pruning_uniform(self.module, self.example, ratio, self.config.importance, round_to,
                                           self.batches)
            if (key := architecture(module)) not in seen:
                seen.add(key)
                candidates.append((ratio, module))
        predicted = self.predictor.network([counts_of(m, self.groups) for _, m in candidates])
        plausible = [i for i, ms in enumerate(predicted) if ms <= self.limit_at_calibration * PLAUSIBLE]
        # then the FALLBACK predicted fastest of the others: the model orders networks better than it
        # places them, and every network measured on a tuned backend costs its convolutions' tuning
        others = sorted((i for i in range(len(candidates)) if i not in plausible), key=lambda i: predicted[i])
        order = plausible + others[:FALLBACK]
        measured: dict[int, tuple[float, bool]] = {}
        while not any(meets for _, meets in measured.values()) and len(measured) < len(order):
            todo = [i for i in order if i not in measured][:2]
            readings = self.measure([self.module, *[candidates[i][1] for i in todo]],
                                    f"{name}: keep ratio {', '.join(f'{candidates[i][0]:.2f}' for i in todo)}")
            limit = self.budget.limit(readings[0])
            for i, ms in zip(todo, readings[1:]):
                measured[i] = (ms / readings[0], ms <= limit)
        meeting = [i for i, (_, meets) in measured.items() if meets]
        best = min(meeting) if meeting else None
        while best is not None and best > 0 and best - 1 not in measured:  # the one above: over budget?
            above = best - 1
            readings = self.measure([self.module, candidates[above][1]],
                                    f"{name}: keep ratio {candidates[above][0]:.2f}")
            measured[above] = (readings[1] / readings[0], readings[1] <= self.budget.limit(readings[0]))
            best = above if measured[above][1] else best
        search = [{"keep_ratio": candidates[i][0], "to_unpruned": share, "within_budget": meets,
                   "predicted_ms": float(predicted[i])} for i, (share, meets) in sorted(measured.items())]
        chosen = best if best is not None else len(candidates) - 1  # none meets: the smallest, marked so
        compared = self._compared(name, candidates[chosen][1], candidates[chosen][0])
        compared.within_budget = best is not None
        return compared, search

    def plan_and_check(self) -> Recommendation:
        """Plans, each pruned and measured beside the unpruned network and the baselines (at most
        config.plans). Every plan measured sets the scale on predictions (its reading over its
        prediction, with the others'). A plan over budget makes the next aim lower; one within
        budget but more than SLACK margins under it lets the next plan use the room left. The
        result is the plan within budget that keeps the most importance, else the last one."""
        margin = self.config.margin
        first_aim = aim = self.limit_at_calibration * (1 - margin)  # tightened by each measured overshoot
        plan = self.plan_on_measured_layers(aim)
        if not plan.met:
            unreachable = self.check_fastest(plan)
            if unreachable is not None:
                return unreachable
            plan = self.plan_on_measured_layers(aim)
            if not plan.met:  # the fastest plan met when measured, and nothing slower is predicted to
                lows = floors(self.groups, self.config.min_ratio)
                plan = replace(plan, counts=dict(lows), predicted_ms=float(self.predictor.network([lows])[0]),
                               met=True)
        baselines, searches = {}, {}
        for name, round_to in ((NETWORKS[2], None), (NETWORKS[3], ROUND_TO)):
            baselines[name], searches[name] = self.find_baseline(name, round_to)
        unpruned = self._compared(NETWORKS[0], self.module, 1.0)
        best = last = None
        tried = []
        for attempt in range(1, self.config.plans + 1):
            if attempt > 1:
                plan = self.plan_on_measured_layers(aim)
                if not plan.met or plan.counts in tried:
                    break  # out of reach after recalibrating, or a plan measured already
            tried.append(plan.counts)
            recommended = self._compared(NETWORKS[1], prune_to(self.module, self.example, self.groups, plan.counts),
                                         None)
            networks = {unpruned.name: unpruned, recommended.name: recommended, **baselines}
            readings = self.measure([n.module for n in networks.values()], f"plan {attempt}")
            networks = {name: replace(n, measured_ms=ms) for (name, n), ms in zip(networks.items(), readings)}
            last = Recommendation(plan, self.budget, self.groups, readings[0], networks, len(self.rows), attempt,
                                  self._calibration(), limit_ms=self.budget.limit(readings[0]), searches=searches)
            self._record_measured_plan(plan.counts, readings[1], readings[0])
            if readings[1] <= last.limit_ms:
                if best is None or plan.importance_kept > best.plan.importance_kept:
                    best = last
                if readings[1] >= last.limit_ms * (1 - SLACK * max(margin, 0.01)):
                    break
                log.info("plan %d: measured %.3f ms, well within the budget's %.3f ms; planning on the room left",
                         attempt, readings[1], last.limit_ms)
                aim = first_aim
            else:
                log.info("plan %d: predicted %.3f ms, measured %.3f ms > budget %.3f ms; recalibrating on it",
                         attempt, plan.predicted_ms, readings[1], last.limit_ms)
                aim = self._next_aim(aim, readings[1], readings[0])
        result = best or last
        result.attempts = len(tried)
        result.fit_points = len(self.rows)  # the last refit's, also where the loop kept an earlier plan
        result.curves = self._curves(result.plan.counts)
        return result

    def _curves(self, counts: dict[str, int]) -> list[GroupCurve]:
        curves = group_curves(self.predictor, self.groups, counts, self.config.min_ratio)
        by_width = {(int(r.in_channels), int(r.channels), int(r.in_h), int(r.kernel_h), int(r.stride_h),
                     int(r.groups)): float(getattr(r, self.predictor.model.column)) for r in self.rows.itertuples()}
        for item in curves:
            touched = [s.variant(counts) for s in self.slots if item.group in (s.out_group, s.in_group)]
            keys = [(v.in_channels, v.out_channels, v.input_shape[2], v.kernel[0], v.stride[0], v.groups)
                    for v in touched]
            if all(key in by_width for key in keys):
                item.measured_ms = sum(by_width[key] for key in keys)
        return curves

    def _calibration(self) -> dict:
        return {"alpha_ms": self.predictor.alpha, "beta": self.predictor.beta, "scale": self.predictor.scale,
                "measured_anchors_ms": list(self.anchor_ms), "measured_plans_ms": list(self.measured_plan_ms)}

    # --- accuracy -----------------------------------------------------------------------------------

    def score(self, result: Recommendation) -> None:
        """Every network compared fine-tuned by the same recipe (cached by its starting weights) and
        scored on held-out images, before and after; training runs on every core."""
        scoring = self.scoring
        with torch_threads(os.cpu_count()):
            for network in result.networks.values():
                network.score_before = scoring.score(network.module)
                log.info("%s: fine-tuning for %d epochs", network.name, scoring.finetune)
                network.finetuned = finetuned_network(network.module, scoring.dataset, scoring.finetune,
                                                      scoring.seed, recipe=FINETUNE_ONE_CYCLE)
                network.score = scoring.score(network.finetuned)
        result.scoring = {"metric": scoring.metric, "dataset": scoring.dataset.name,
                          "train_images": len(scoring.dataset.y_train), "test_images": len(scoring.dataset.y_test),
                          "finetune_epochs": scoring.finetune, "finetune_recipe": asdict(FINETUNE_ONE_CYCLE),
                          "train_recipe": asdict(TRAIN_ONE_CYCLE), "seed": scoring.seed}

    def export(self, result: Recommendation, directory: Path) -> Path | None:
        """The compared networks as a deployable artifact: a tuned backend's networks compiled (with
        the schedules the database holds) from the fine-tuned modules, since compilation bakes the
        batch norms' statistics into the code; None where the backend compiles nothing."""
        backend = get_backend(self.config.backend)
        if not backend.tuned or not result.networks:
            return None
        entries = {}
        for name, network in result.networks.items():
            module = (network.finetuned if network.finetuned is not None else network.module).eval()
            entries[name] = (backend.network(module, self.example, self.config.target,
                                             tuning_root=self.config.tuning_root, trials=0), module)
        return backend.export_networks(entries, self.example, directory, self.config.target, self.config.policy,
                                       self.config.threads)


def recommend(config: RecommendConfig, store: ResultStore, budget_ms: Budget | float,
              progress: Progress = SILENT, scoring: Scoring | None = None,
              journal: Journal | None = None) -> Recommendation:
    return Recommender(config, store, budget_ms, progress, scoring, journal).run()


def save_outputs(result: Recommendation, config: RecommendConfig, plan_path: Path, model_path: Path | None) -> None:
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_text(json.dumps(result.to_dict(config), indent=1) + "\n")
    if model_path is not None and result.pruned is not None:
        model_path.parent.mkdir(parents=True, exist_ok=True)
        example = torch.zeros(config.loaded.input_shape)
        torch.export.save(torch.export.export(result.pruned.eval(), (example,)), str(model_path))


def journal_path(plan_path: Path) -> Path:
    """Where a recommendation keeps its network timings: beside its plan."""
    return plan_path.with_name(re.sub(r"\.json$", "", plan_path.name) + ".journal.json")


def with_data(loaded: LoadedModel, data: str, epochs: int, seed: int = 0,
              announce: Callable[[str], None] = lambda _m: None) -> tuple[LoadedModel, Dataset]:
    """The network with weights that mean something, and the data set resized to its input (after
    the split, so held-out images stay held out): a built-in network trained on the data set's
    training images (once; cached), or a user's network with the weights it carries, whose head
    must give one score per class of the data set."""
    from advisor.model.datasets import fit_to_input, load_dataset
    from advisor.model.networks import BUILTIN_NETWORKS
    from advisor.model.training import head_width, trained_network

    shape = loaded.input_shape
    dataset = fit_to_input(load_dataset(data, image_size=shape[-1]), shape)
    if loaded.label in BUILTIN_NETWORKS:
        if epochs < 1:
            raise AdvisorError(f"--epochs must be at least 1, not {epochs}")
        with torch_threads(os.cpu_count()):
            module = trained_network(loaded.label, dataset, epochs, seed, announce, TRAIN_ONE_CYCLE)
        return LoadedModel(loaded.label, shape, module), dataset
    module = prunable_module(loaded)
    width = head_width(module, shape)
    if width != dataset.num_classes:
        raise AdvisorError(f"{dataset.name} has {dataset.num_classes} classes but {loaded.label} gives {width} "
                           "scores per image: give a data set of its classes (or a network with that head)")
    return LoadedModel(loaded.label, shape, module, loaded.program), dataset
