"""Active sweep: measure a few counts, fit, then measure where the model is least sure or
predicts a step, until the model has settled.

Settled: for two rounds running, the model predicted the counts it chose to measure (its least
sure ones) within 10% before measuring them, and at least the asked share of its predictions
over the whole range moved by less than 5% when those measurements came in. Suspect points
(traps, or far above the model) get a second opinion from a fresh process each round.

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
from advisor.second_opinion import FreshProcess, can_confirm, confirm
from advisor.store import ResultStore
from advisor.sweep import SweepPlan, SweepSummary, geometry_columns, run_sweep, series_frame

stderr = Console(stderr=True)
STEP = 0.06  # predicted jump between neighbouring counts that counts as a step
MOVED = 0.05  # a prediction that changes less than this between rounds has settled
SETTLED_ROUNDS = 2  # rounds in a row that must look settled before stopping


@dataclass
class ActiveOutcome:
    measured: list[int]  # all counts of the range now measured
    newly_measured: list[int]
    cv_within: float  # cross-validated share within 10%, on the measured points
    max_spread: float  # largest ensemble spread over the counts not measured
    reached: bool  # the model settled (else: the point limit or the range ran out)
    seconds: float
    model: CostModel
    failed: dict[int, str] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)


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


def run_active_sweep(plan: SweepPlan, store: ResultStore, *, accuracy: float = 0.95, initial: int = 12,
                     batch: int = 2, max_points: int | None = None, min_points: int | None = None,
                     show_progress: bool = True, second_opinions: bool = True) -> ActiveOutcome:
    """Measure until the model has settled (see the module's docstring), the range is exhausted,
    or max_points are measured. min_points (default a tenth of the range) guards against a model
    that settles on too few points."""
    if not 0 < accuracy <= 1:
        raise AdvisorError(f"--accuracy must be a share between 0 and 1, not {accuracy}")
    if initial < 3 or batch < 1:
        raise AdvisorError("an active sweep needs at least 3 initial counts and 1 per round")
    limit = min(max_points or len(plan.channels), len(plan.channels))
    floor = min(limit, min_points if min_points is not None else max(initial + 2 * batch, len(plan.channels) // 10))
    started = time.perf_counter()
    summary = SweepSummary()
    newly: list[int] = []
    history: list[dict] = []
    counts = sorted(plan.channels)
    candidates = candidate_frame(plan, counts)
    confirming = second_opinions and can_confirm(plan)
    fresh = FreshProcess(plan.threads)

    def measure(todo: list[int], prior: dict[int, float] | None = None) -> None:
        """Measure, then second opinions on this round's suspects: traps, and points well above
        what the last model predicted for them (the initial round: a k-fold fit)."""
        result = run_sweep(replace(plan, channels=todo), store, show_progress=show_progress)
        newly.extend(result.measured)
        summary.failed.update(result.failed)
        if confirming:
            confirm(plan, store, show_progress=show_progress, process=fresh, prior=prior)

    try:
        measured = set(series_frame(plan, store).channels.astype(int))
        if len(measured) < initial:
            measure(sorted([c for c in initial_counts(counts, initial) if c not in measured][:limit]))
        previous = None  # the last round's predictions over the whole range
        picks: list[int] = []
        while True:
            rows = series_frame(plan, store)
            measured = set(rows.channels.astype(int))
            if len(rows) < 4:
                raise AdvisorError(f"only {len(rows)} counts measured successfully; cannot fit a model "
                                   f"(failures: {summary.failed})")
            model = fit(rows, seed=0)
            predicted = model.predict(candidates)
            moved = stayed = picked_right = None
            if previous is not None:
                stayed = float((np.abs(predicted / previous - 1) <= MOVED).mean())
                measured_ms = rows.set_index("channels")[model.column]
                hits = [abs(previous[counts.index(c)] / measured_ms[c] - 1) <= WITHIN for c in picks if c in measured_ms]
                picked_right = float(np.mean(hits)) if hits else None
            settled_now = stayed is not None and stayed >= accuracy and picked_right == 1.0
            history.append({"measured": len(measured), "unchanged_share": stayed, "picks_within_10pct": picked_right,
                            "settled": settled_now, "seconds": time.perf_counter() - started})
            if show_progress:
                shown = "-" if stayed is None else f"{stayed:.0%}"
                right = "-" if picked_right is None else f"{picked_right:.0%}"
                stderr.print(f"active: {len(measured)} counts measured; predictions unchanged (within 5%): {shown}; "
                             f"last picks predicted within 10%: {right}")
            reached = (len(history) >= SETTLED_ROUNDS and all(h["settled"] for h in history[-SETTLED_ROUNDS:])
                       and len(measured) >= floor)
            todo = [c for c in counts if c not in measured and c not in summary.failed]
            ensemble = fit(rows, members=5, seed=len(rows))
            picks, spread = pick_next(replace(plan, channels=[c for c in counts if c not in summary.failed]),
                                      ensemble, measured, batch) if todo else ([], 0.0)
            if reached or not picks or len(measured) >= limit:
                return ActiveOutcome(sorted(measured), sorted(newly), cross_validated_within(rows), spread, reached,
                                     time.perf_counter() - started, model, summary.failed, history)
            previous = predicted
            picks = picks[:limit - len(measured)]
            measure(picks, prior={c: float(predicted[counts.index(c)]) for c in picks})
    finally:
        fresh.close()
