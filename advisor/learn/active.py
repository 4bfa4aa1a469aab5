"""Active sweep: measure a few counts, fit, then measure where the model is least sure or
predicts a step, and one count at random, until the model has settled.

Settled: for three rounds running, the model predicted the counts it chose to measure (its least
sure ones and the random one, an unbiased check) within 10% before measuring them, and at least the asked share of its predictions
over the whole range moved by less than 10% when those measurements came in. Points well above
what the model predicted for them get a second run each round (second_opinion).

ActiveSearch decides (which counts next, when to stop) from measured rows alone; run_active_sweep
measures what it asks through sweep.run_sweep, so points land in the same database, resume the
same way, and reuse the same schedule cache as an exhaustive sweep. benchmarks/active_replay.py
replays the same decisions against a recorded exhaustive sweep.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from advisor.learn.cost_model import PRIOR_MARGIN, WITHIN, LatencyModel, fit
from advisor.errors import AdvisorError
from advisor.learn.features import feature_frame
from advisor.learn.second_look import check_traps
from advisor.learn.second_opinion import ThisProcess, can_confirm, confirm
from advisor.measure.environment import environment
from advisor.progress import SILENT, Progress
from advisor.store.results import ResultStore
from advisor.measure.sweep import SweepSpec, SweepSummary, geometry_columns, run_sweep, series_frame
from advisor.compile.targets import simd_lanes

log = logging.getLogger(__name__)
STEP = 0.06  # predicted jump between neighbouring counts that counts as a step
MOVED = 0.10  # a prediction that moves less than this between rounds has settled (5% rarely did on noisy curves)
SETTLED_ROUNDS = 3  # rounds in a row that must look settled before stopping (2 was fooled by luck)
UNSEEN_BLOCK = 0.5  # score added to counts in a tile-block with nothing measured inside it
# boosting rounds of the search's fits: at eta 0.08, 100 rounds instead of 300 moved predictions from
# 20 points of conv3 by a median 0.02-0.09% (at most 1.7%), and replays of recorded curves (CPU,
# H100, H200) used as many counts and were as accurate, deciding ~25% faster (the fits between
# rounds are most of an active sweep's time on a GPU). 60 rounds once stopped conv11 at 92% of counts.
SEARCH_ROUNDS = 100


@dataclass
class ActiveOutcome:
    measured: list[int]  # all counts of the range now measured
    newly_measured: list[int]
    cv_within: float  # cross-validated share within 10% (median latency), on the measured points
    reached: bool  # the model settled (else: the point limit or the range ran out)
    seconds: float
    model: LatencyModel | None  # None: under four counts, all measured
    failed: dict[int, str] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    trap_checks: list = field(default_factory=list)  # second_look.TrapCheck of the traps looked at again
    predicted: list[int] = field(default_factory=list)  # the counts given a predicted row


@dataclass
class Decision:
    model: LatencyModel  # fitted on every measured row
    picks: list[int]  # counts to measure next (empty: stop)
    prior: dict[int, float]  # the model's predictions for the picks, before measuring them
    reached: bool  # the model settled


def cross_validated_within(rows: pd.DataFrame, folds: int = 5, seed: int = 0,
                           tile_prior: int | None = None, statistic: str = "min") -> float:
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
        model = fit(train, rounds=SEARCH_ROUNDS, tile_prior=tile_prior, statistic=statistic)
        errors = np.abs(model.predict(test) / test[model.column].to_numpy() - 1)
        hits += int((errors <= WITHIN).sum())
    return hits / len(rows)


def candidate_frame(spec: SweepSpec, counts: list[int]) -> pd.DataFrame:
    base = {"backend": spec.backend, "target": spec.target.name}
    return pd.DataFrame([{**base, **geometry_columns(spec.layer.with_out_channels(c), spec.layer.out_channels)}
                         for c in counts])


ALIGNMENTS = (1, 4, 16, 2, 8, 32)  # the order in which the initial counts cycle through alignments


def alignment(count: int, cap: int = 32) -> int:
    """Largest power of two (up to cap) that divides count."""
    power = 1
    while power < cap and count % (power * 2) == 0:
        power *= 2
    return power


def initial_counts(counts: list[int], how_many: int) -> list[int]:
    """Evenly spread counts, each moved to the nearest count of an alignment class taken in turn
    (odd, multiple of 4, of 16, ...), so that the trees see alignments apart from size and a
    multiple of 4 is not mistaken for a multiple of 16; then a multiple of 16 and the count after it.
    Truncating the list keeps the spread."""
    counts = sorted(counts)
    picks: list[int] = []
    positions = np.linspace(0, len(counts) - 1, min(how_many, len(counts)))
    for turn, position in enumerate(positions):
        wanted = alignment(counts[int(round(position))]) if turn in (0, len(positions) - 1) \
            else ALIGNMENTS[turn % len(ALIGNMENTS)]
        near = sorted((abs(i - position), c) for i, c in enumerate(counts)
                      if c not in picks and alignment(c) == wanted)
        fallback = sorted((abs(i - position), c) for i, c in enumerate(counts) if c not in picks)
        if near and near[0][0] <= max(1.0, len(counts) / (2 * len(positions))):
            picks.append(near[0][1])
        elif fallback:
            picks.append(fallback[0][1])
    middle = [c for c in counts if c % 16 == 0 and c + 1 in counts]
    if middle:
        pair = middle[len(middle) // 2]
        picks += [c for c in (pair, pair + 1) if c not in picks]
    return picks


def unseen_block(counts: list[int], measured: np.ndarray, tile: int) -> np.ndarray:
    """1 for counts whose block of `tile` channels (the tile the model's baseline fitted) has no
    measured count inside it, else 0. The multiple of the tile closing a block does not count as
    inside: it often runs apart from its block (oneDNN on conv3: 176 channels 1.23 ms, 161-175
    1.38 ms), and a block seen only there was the commonest miss in replays (177-191 predicted 12%
    slow from 192 alone). Each block then gets its own level, which the trees cannot guess from
    the neighbours: 7, 11 and 13 tiles of 16 run ~30% slower per channel than 6, 8 or 12."""
    counts = np.asarray(counts)
    if tile <= 1:
        return np.zeros(len(counts))
    blocks = (counts - 1) // tile
    seen = set(blocks[measured & (counts % tile != 0)])
    return np.array([block not in seen for block in blocks], dtype=float)


class ActiveSearch:
    """Which counts to measure next and when to stop, from the rows measured so far."""

    def __init__(self, counts: list[int], candidates: pd.DataFrame, *, accuracy: float = 0.95, initial: int = 12,
                 batch: int = 2, explore: int = 1, max_points: int | None = None, min_points: int | None = None,
                 tile_prior: int | None = None):
        if not 0 < accuracy <= 1:
            raise AdvisorError(f"--accuracy must be a share between 0 and 1, not {accuracy}")
        if initial < 3 or batch < 1:
            raise AdvisorError("an active sweep needs at least 3 initial counts and 1 per round")
        self.counts = sorted(counts)
        self.candidates = candidates.reset_index(drop=True)  # one geometry row per count, in order
        self._candidate_features = feature_frame(self.candidates)
        self.accuracy, self.initial, self.batch = accuracy, initial, batch
        self.tile_prior = tile_prior  # the channel tile the hardware suggests (cost_model.fit_baseline)
        self.explore = min(explore, batch - 1)  # random picks per round; at least one pick is scored
        self.limit = min(max_points or len(counts), len(counts))
        self.floor = min(self.limit, min_points if min_points is not None else initial + SETTLED_ROUNDS * batch)
        self.history: list[dict] = []
        self._previous: np.ndarray | None = None  # the last round's predictions over the whole range
        self._picks: list[int] = []

    def first(self, measured: set[int]) -> list[int]:
        if len(measured) >= self.initial:
            return []
        return sorted([c for c in initial_counts(self.counts, self.initial) if c not in measured][:self.limit])

    def decide(self, rows: pd.DataFrame, failed: set[int] = frozenset(), elapsed: float = 0.0) -> Decision:
        """Fit on the measured rows, judge whether the model has settled, and pick the next counts."""
        measured = set(rows.channels.astype(int))
        model = fit(rows, seed=0, rounds=SEARCH_ROUNDS, tile_prior=self.tile_prior)
        predicted = model.predict(self.candidates, self._candidate_features)
        stayed = picked_right = None
        if self._previous is not None:
            stayed = float((np.abs(predicted / self._previous - 1) <= MOVED).mean())
            measured_ms = rows.set_index("channels")[model.column]
            hits = [abs(self._previous[self.counts.index(c)] / measured_ms[c] - 1) <= WITHIN
                    for c in self._picks if c in measured_ms]
            picked_right = float(np.mean(hits)) if hits else None
        settled_now = stayed is not None and stayed >= self.accuracy and picked_right == 1.0
        self.history.append({"measured": len(measured), "unchanged_share": stayed, "picks_within_10pct": picked_right,
                             "settled": settled_now, "seconds": elapsed})
        reached = (len(self.history) >= SETTLED_ROUNDS and all(h["settled"] for h in self.history[-SETTLED_ROUNDS:])
                   and len(measured) >= self.floor)
        open_counts = [c for c in self.counts if c not in failed]
        picks = []
        if not reached and len(measured) < self.limit and any(c not in measured for c in open_counts):
            ensemble = fit(rows, members=5, seed=len(rows), rounds=SEARCH_ROUNDS, tile_prior=self.tile_prior)
            picks = self._least_sure(ensemble, measured, set(failed))[:self.limit - len(measured)]
        self._previous, self._picks = predicted, picks
        return Decision(model, picks, {c: float(predicted[self.counts.index(c)]) for c in picks}, reached)

    def _least_sure(self, model: LatencyModel, measured: set[int], failed: set[int]) -> list[int]:
        """The unmeasured counts where the ensemble disagrees most or a step is predicted."""
        keep = np.array([c not in failed for c in self.counts])
        counts = [c for c in self.counts if c not in failed]
        predicted, spread = model.predict_spread(self.candidates[keep], self._candidate_features[keep])
        jump = np.zeros(len(counts))
        relative = np.abs(np.diff(predicted)) / np.minimum(predicted[1:], predicted[:-1])
        jump[1:] = np.maximum(jump[1:], relative)
        jump[:-1] = np.maximum(jump[:-1], relative)
        position = np.array([c in measured for c in counts])
        # distance (in positions) to the nearest measured count: wide gaps are unsure too
        measured_index = np.flatnonzero(position)
        gap = np.array([np.abs(measured_index - i).min() for i in range(len(counts))]) / max(1, len(counts))
        score = (spread + np.where(jump > STEP, jump, 0.0) + 0.5 * gap
                 + UNSEEN_BLOCK * unseen_block(counts, position, model.tile_))
        score[position] = -np.inf
        chosen: list[int] = []
        if self.explore and (~position).sum() > self.batch:
            # random picks: the stop rule's check of the picks then includes counts the scores did not
            # choose, an unbiased sample of the model's error (without them the search settled once at a
            # model right on half of a cuDNN fp16 curve, measuring mostly multiples of 8)
            generator = np.random.default_rng(len(measured))
            chosen = [int(c) for c in generator.choice(np.array(counts)[~position], self.explore, replace=False)]
        for index in np.argsort(-score):
            if not np.isfinite(score[index]) or len(chosen) == self.batch:
                break
            if all(abs(index - counts.index(c)) > 1 for c in chosen):  # spread a round's picks out
                chosen.append(counts[index])
        return chosen


def replay(curve: pd.DataFrame, reference: pd.DataFrame | None = None, **options) -> dict:
    """Run the search against a recorded exhaustive sweep (usable rows of one series, every count
    of the range): picks read their latency from the recording instead of measuring. Returns how
    many counts it used and how well the final model predicts the counts it never picked: against
    the recording, or against `reference` (the same counts measured apart from it)."""
    curve = curve.sort_values("channels").reset_index(drop=True)
    counts = curve.channels.astype(int).tolist()
    search = ActiveSearch(counts, curve, **options)
    measured = set(search.first(set()))
    started = time.perf_counter()
    while True:
        decision = search.decide(curve[curve.channels.isin(measured)])
        if not decision.picks:
            break
        measured |= set(decision.picks)
    scored = curve if reference is None else reference
    unseen = scored[~scored.channels.isin(measured)]
    errors = np.abs(decision.model.predict(unseen) / unseen[decision.model.column].to_numpy() - 1)
    return {"counts": len(counts), "measured": len(measured), "reached": decision.reached,
            "within": float((errors <= WITHIN).mean()) if len(errors) else 1.0,
            "mape": float(errors.mean() * 100) if len(errors) else 0.0,
            "worst": float(errors.max() * 100) if len(errors) else 0.0,
            "decision_seconds": time.perf_counter() - started, "tile": decision.model.tile_}


def run_active_sweep(spec: SweepSpec, store: ResultStore, *, accuracy: float = 0.95, initial: int = 12,
                     batch: int = 2, max_points: int | None = None, min_points: int | None = None,
                     progress: Progress = SILENT, second_opinions: bool = True) -> ActiveOutcome:
    """Measure until the model has settled (see the module's docstring), the range is exhausted,
    or max_points are measured; never stop before min_points. Then, on a tuned backend, give
    each measured trap a second look (second_look.check_traps), and store the model's prediction
    for every count of the range left unmeasured (status `predicted`). A rerun after a finished
    sweep finds those predictions newer than every measured point and measures nothing."""
    counts = sorted(spec.channels)
    lanes = simd_lanes(spec.target, spec.dtype)
    if lanes:
        log.info("active: the model's channel tile starts from %d (%s lanes of one vector register on this "
                 "target); other tiles must fit the points %sx better", lanes, spec.dtype, PRIOR_MARGIN)
    search = ActiveSearch(counts, candidate_frame(spec, counts), accuracy=accuracy, initial=initial, batch=batch,
                          max_points=max_points, min_points=min_points, tile_prior=lanes)
    started = time.perf_counter()
    summary = SweepSummary()
    newly: list[int] = []
    confirming = second_opinions and can_confirm(spec)

    def measure(todo: list[int], prior: dict[int, float] | None = None) -> None:
        """Measure, then second opinions on this round's suspects: points well above what the
        last model predicted for them (the initial round: a k-fold fit)."""
        result = run_sweep(replace(spec, channels=todo), store, progress)
        newly.extend(result.measured)
        summary.failed.update(result.failed)
        if confirming:
            # in this process even on CUDA: the model, not each count, is the result (docs/active-sweep.md)
            confirm(spec, store, process=ThisProcess(), prior=prior, traps=False)

    finished = finished_before(spec, store, search.limit)
    decision = None
    if len(counts) <= search.floor:  # too few counts to leave any to a model: measure them all
        measure([c for c in counts if c not in set(series_frame(spec, store).channels.astype(int))])
        rows = series_frame(spec, store)
        checks = check_traps(spec, store, progress=progress) if second_opinions else []
        model = fit(rows, seed=0, rounds=SEARCH_ROUNDS, tile_prior=lanes) if len(rows) >= 4 else None
        return ActiveOutcome(sorted(rows.channels.astype(int)), sorted(newly), float("nan"), True,
                             time.perf_counter() - started, model, summary.failed, trap_checks=checks)
    if finished is None:
        first = search.first(set(series_frame(spec, store).channels.astype(int)))
        if first:
            measure(first)
        while True:
            rows = _rows_to_fit(spec, store, summary)
            decision = search.decide(rows, set(summary.failed), time.perf_counter() - started)
            last = search.history[-1]
            shown = "-" if last["unchanged_share"] is None else f"{last['unchanged_share']:.0%}"
            right = "-" if last["picks_within_10pct"] is None else f"{last['picks_within_10pct']:.0%}"
            log.info("active: %d counts measured; predictions unchanged (within 10%%): %s; "
                     "last picks predicted within 10%%: %s", len(rows), shown, right)
            if not decision.picks:
                break
            measure(decision.picks, prior=decision.prior)
        reached = decision.reached
    else:
        reached = finished
        log.info("active: this range was finished before (its predictions are newer than its points): "
                 "nothing to measure")
    checks = check_traps(spec, store, progress=progress) if second_opinions else []
    rows = _rows_to_fit(spec, store, summary)
    model = decision.model if decision is not None and not checks else fit(rows, seed=0, rounds=SEARCH_ROUNDS,
                                                                            tile_prior=lanes)
    predictions = store_predictions(spec, store, rows, reached, lanes)
    return ActiveOutcome(sorted(rows.channels.astype(int)), sorted(newly), predictions.cv_within, reached,
                         time.perf_counter() - started, model, summary.failed, search.history,
                         trap_checks=checks, predicted=predictions.counts)


def _rows_to_fit(spec: SweepSpec, store: ResultStore, summary: SweepSummary) -> pd.DataFrame:
    rows = series_frame(spec, store)
    if len(rows) < 4:
        raise AdvisorError(f"only {len(rows)} counts measured successfully; cannot fit a model "
                           f"(failures: {summary.failed})")
    return rows


def series_rows(spec: SweepSpec, store: ResultStore) -> pd.DataFrame:
    """Every stored row of the spec's series at its counts: measured, failed and predicted."""
    rows = store.frame(**spec.fixed_columns())
    return rows[rows.channels.isin(spec.channels)]


def finished_before(spec: SweepSpec, store: ResultStore, limit: int) -> bool | None:
    """Whether an earlier active sweep of this range finished on the points stored now: every
    count measured, failed or predicted, the predictions newer than every measured point, and
    its model settled or the point limit reached. Returns whether it settled, or None."""
    rows = series_rows(spec, store)
    predicted = rows[rows.status == "predicted"]
    if predicted.empty or set(rows.channels) != set(spec.channels):
        return None
    measured = rows[rows.status != "predicted"]
    if not measured.empty and predicted.measured_at.min() < measured.measured_at.max():
        return None
    settled = bool(predicted.model_settled.fillna(0).astype(int).min())
    return settled if settled or (measured.status == "ok").sum() >= limit else None


@dataclass
class Predictions:
    counts: list[int]  # the counts given a predicted row
    cv_within: float  # cross-validated share of measured counts predicted within 10%


def store_predictions(spec: SweepSpec, store: ResultStore, rows: pd.DataFrame, settled: bool,
                      tile_prior: int | None) -> Predictions:
    """A `predicted` row for each count of the range with no measured or failed row: the median
    latency a five-member ensemble fitted on the measured rows predicts, the ensemble's relative
    spread there, and the share of measured counts a k-fold fit predicted within 10%. The median,
    not the search's minimum: measured points are shown and compared by their median."""
    cv = cross_validated_within(rows, tile_prior=tile_prior, statistic="median")
    stored = series_rows(spec, store)
    taken = set(stored.channels[stored.status != "predicted"].astype(int))
    todo = [c for c in spec.channels if c not in taken]
    if not todo:
        return Predictions([], cv)
    ensemble = fit(rows, members=5, seed=0, rounds=SEARCH_ROUNDS, statistic="median", tile_prior=tile_prior)
    predicted, spread = ensemble.predict_spread(candidate_frame(spec, todo))
    env = environment(spec.target.kind, spec.threads)
    for count, ms, relative in zip(todo, predicted, spread):
        store.save({**spec.fixed_columns(), **geometry_columns(spec.layer.with_out_channels(count), spec.layer.out_channels),
                    "target_config": spec.target.config, **env, "status": "predicted", "predicted_ms": float(ms),
                    "predicted_spread": float(relative), "model_cv_within": cv, "model_settled": int(settled)})
    return Predictions(todo, cv)
