"""Active sweep: measure a few counts, fit, then measure where the model is least sure or
predicts a step, until cross-validated accuracy reaches the stated level.

Each round measures through sweep.run_sweep, so points land in the same database, resume the
same way, and reuse the same schedule cache as an exhaustive sweep.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from rich.console import Console

from advisor.cost_model import WITHIN, CostModel, fit, usable
from advisor.errors import AdvisorError
from advisor.store import ResultStore
from advisor.sweep import SweepPlan, SweepSummary, geometry_columns, run_sweep

stderr = Console(stderr=True)
STEP = 0.06  # predicted jump between neighbouring counts that counts as a step
SURE = 0.04  # ensemble spread (relative) below which the model is sure enough


@dataclass
class ActiveOutcome:
    measured: list[int]  # all counts of the range now measured
    newly_measured: list[int]
    cv_within: float  # cross-validated share within 10%, on the measured points
    max_spread: float  # largest ensemble spread over the counts not measured
    reached: bool  # the accuracy was reached (else: the point limit or the range ran out)
    seconds: float
    model: CostModel
    failed: dict[int, str] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)


def series_rows(plan: SweepPlan, store: ResultStore) -> pd.DataFrame:
    rows = usable(store.frame(**plan.fixed_columns()))
    return rows[rows.channels.isin(plan.channels)]


def cross_validated_within(rows: pd.DataFrame, folds: int = 5, seed: int = 0) -> float:
    """Share of points predicted within 10% by a model that did not see them (k-fold)."""
    rows = rows.reset_index(drop=True)
    folds = min(folds, len(rows))
    order = np.random.default_rng(seed).permutation(len(rows))
    hits = 0
    for fold in range(folds):
        test = rows.iloc[order[fold::folds]]
        train = rows.drop(index=test.index)
        if len(train) < 3:
            return 0.0
        model = fit(train, rounds=150)
        errors = np.abs(model.predict(test) / test[model.column].to_numpy() - 1)
        hits += int((errors <= WITHIN).sum())
    return hits / len(rows)


def candidate_frame(plan: SweepPlan, counts: list[int]) -> pd.DataFrame:
    base = {"backend": plan.backend, "target": plan.target.name}
    return pd.DataFrame([{**base, **geometry_columns(plan.layer.with_out_channels(c), plan.layer.out_channels)}
                         for c in counts])


def pick_next(plan: SweepPlan, model: CostModel, measured: set[int], batch: int) -> tuple[list[int], float]:
    """The unmeasured counts where the ensemble disagrees most or a step is predicted."""
    counts = sorted(plan.channels)
    predicted, spread = model.predict_spread(candidate_frame(plan, counts))
    jump = np.zeros(len(counts))
    relative = np.abs(np.diff(predicted)) / np.minimum(predicted[1:], predicted[:-1])
    jump[1:] = np.maximum(jump[1:], relative)
    jump[:-1] = np.maximum(jump[:-1], relative)
    position = np.array([c in measured for c in counts])
    # distance (in positions) to the nearest measured count: wide gaps are unsure too
    measured_index = np.flatnonzero(position)
    gap = np.array([np.abs(measured_index - i).min() for i in range(len(counts))]) / max(1, len(counts))
    score = spread + np.where(jump > STEP, jump, 0.0) + 0.5 * gap
    score[position] = -np.inf
    open_spread = float(spread[~position].max()) if (~position).any() else 0.0
    chosen: list[int] = []
    for index in np.argsort(-score):
        if not np.isfinite(score[index]) or len(chosen) == batch:
            break
        if all(abs(index - counts.index(c)) > 1 for c in chosen):  # spread a round's picks out
            chosen.append(counts[index])
    return chosen, open_spread


def initial_counts(counts: list[int], how_many: int) -> list[int]:
    """Evenly spread counts first, then a multiple of 16 and the count after it (so the trees see
    alignment early): truncating the list keeps the spread."""
    counts = sorted(counts)
    picks = list(dict.fromkeys(counts[int(round(i))]
                               for i in np.linspace(0, len(counts) - 1, min(how_many, len(counts)))))
    middle = [c for c in counts if c % 16 == 0 and c + 1 in counts]
    if middle:
        pair = middle[len(middle) // 2]
        picks += [c for c in (pair, pair + 1) if c not in picks]
    return picks


def run_active_sweep(plan: SweepPlan, store: ResultStore, *, accuracy: float = 0.95, initial: int = 8,
                     batch: int = 4, max_points: int | None = None, patience: int = 4,
                     show_progress: bool = True) -> ActiveOutcome:
    """Measure until the cross-validated accuracy is reached, it has not improved for `patience`
    rounds (noise-limited), the range is exhausted, or max_points are measured."""
    if not 0 < accuracy <= 1:
        raise AdvisorError(f"--accuracy must be a share between 0 and 1, not {accuracy}")
    if initial < 3 or batch < 1:
        raise AdvisorError("an active sweep needs at least 3 initial counts and 1 per round")
    limit = min(max_points or len(plan.channels), len(plan.channels))
    started = time.perf_counter()
    summary = SweepSummary()
    newly: list[int] = []
    history: list[dict] = []

    def measure(counts: list[int]) -> None:
        result = run_sweep(replace(plan, channels=counts), store, show_progress=show_progress)
        newly.extend(result.measured)
        summary.failed.update(result.failed)

    measured = set(series_rows(plan, store).channels.astype(int))
    if len(measured) < initial:
        measure(sorted([c for c in initial_counts(plan.channels, initial) if c not in measured][:limit]))
    while True:
        rows = series_rows(plan, store)
        measured = set(rows.channels.astype(int))
        if len(rows) < 4:
            raise AdvisorError(f"only {len(rows)} counts measured successfully; cannot fit a model "
                               f"(failures: {summary.failed})")
        within = cross_validated_within(rows)
        model = fit(rows, members=5, seed=len(rows))
        todo = [c for c in plan.channels if c not in measured and c not in summary.failed]
        picks, spread = pick_next(replace(plan, channels=[c for c in plan.channels if c not in summary.failed]),
                                  model, measured, batch) if todo else ([], 0.0)
        history.append({"measured": len(measured), "cv_within_10pct": within, "max_spread": spread,
                        "seconds": time.perf_counter() - started})
        if show_progress:
            stderr.print(f"active: {len(measured)} counts measured, cross-validated within 10%: {within:.0%}, "
                         f"largest spread {spread:.1%}")
        reached = within >= accuracy and spread <= SURE
        # a cross-validation on very few points is optimistic: rounds below twice the initial
        # count are no baseline for "no gain"
        best_before = max((h["cv_within_10pct"] for h in history[:-patience] if h["measured"] >= 2 * initial),
                          default=None)
        stalled = best_before is not None and max(h["cv_within_10pct"] for h in history[-patience:]) <= best_before
        if stalled and show_progress:
            stderr.print(f"active: no gain in accuracy over {patience} rounds: the measurements' noise limits it")
        if reached or stalled or not picks or len(measured) >= limit:
            return ActiveOutcome(sorted(measured), sorted(newly), within, spread, reached,
                                 time.perf_counter() - started, fit(rows, seed=0), summary.failed, history)
        measure(picks[:limit - len(measured)])
