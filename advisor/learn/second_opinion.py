"""Second opinions: a point that looks wrong is measured again and the faster run is kept.

The machine's speed moves in phases of a second or two, so a point measured in a slow phase reads
slow however many samples it takes; a second run, later, usually does not. A suspect is a trap
(slower than some larger count: exactly what a pruning advice rests on) or a point well above what
a model of the other points predicts; the row records both runs.

Where the second run happens: in this process, except for PyTorch on CUDA. These were first built
against shapes that ran slow for the whole life of one process and were run in a fresh one; that
slowness was the allocator (timing.steady_allocator), and since it was fixed a fresh process and
this one read the same: 148 suspects of an exhaustive sweep, each run in both, fresh over this one
median 1.001, and the two lifted the sweep's agreement with a later one alike (81.3% to 92.9% and
91.1%; data/cpu/cost_model_bench.txt). This one costs no start-up (1-2 s on the CPU, more where it
starts CUDA). cuDNN, with cudnn.benchmark, picks its algorithm once per shape and process, and
that choice moves single counts on the H100 and H200: there a second opinion needs a new process.
An active sweep leaves traps out (traps=False) and asks in this process even on CUDA (active.py says
why): there the model, not each measured count, is the result, and a trap the model predicted
within 10% is already corroborated by it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from advisor.compile import tuning
from advisor.errors import one_line
from advisor.learn.cost_model import fit
from advisor.learn.curves import CurvePoint, find_traps
from advisor.measure.backends import get_backend
from advisor.measure.sweep import measure_point, series_frame
from advisor.store.results import ResultStore, usable

log = logging.getLogger(__name__)
TIMING_COLUMNS = {"median_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "p25_ms", "p75_ms", "repeats", "number",
                  "max_abs_err"}
ABOVE = 0.10  # a point this far above the cross-validated prediction is a suspect


@dataclass
class Confirmation:
    suspects: list[int] = field(default_factory=list)
    changed: dict[int, tuple[float, float]] = field(default_factory=dict)  # count: (first, kept) min ms
    seconds: float = 0.0


def can_confirm(spec) -> bool:
    """A second process helps where this process measures; a board's RPC server is its own process."""
    return spec.remote is None


def suspects(rows: pd.DataFrame, folds: int = 5, prior: dict[int, float] | None = None,
             traps: bool = True) -> list[int]:
    """Counts of one series that sit above a model fitted without them (`prior`: count: predicted ms,
    from a model that had not seen them; else a k-fold fit), and with `traps` the traps."""
    rows = usable(rows).sort_values("channels").reset_index(drop=True)
    curve = [CurvePoint(int(r.channels), r.min_ms, r.min_ms, r.min_ms) for r in rows.itertuples()]
    found = {trap.channels for trap in find_traps(curve)} if traps else set()
    if prior is not None:
        measured = rows.set_index("channels").min_ms
        found |= {c for c, ms in prior.items() if c in measured and measured[c] > ms * (1 + ABOVE)}
    elif len(rows) >= 8:
        predicted = np.zeros(len(rows))
        order = np.random.default_rng(0).permutation(len(rows))
        for fold in range(folds):
            test = order[fold::folds]
            model = fit(rows.drop(index=test), rounds=150)
            predicted[test] = model.predict(rows.iloc[test])
        found |= set(rows.channels[rows.min_ms.to_numpy() > predicted * (1 + ABOVE)].astype(int))
    already = set(rows.channels[rows.runs.fillna(1) >= 2].astype(int)) if "runs" in rows else set()
    return sorted(found - already)


def _worker_init(threads: int) -> None:
    os.environ["TVM_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def _measure_elsewhere(spec, count: int) -> dict:
    tuning._OPEN_DATABASES.clear()  # schedules tuned since this process began must be seen
    return measure_point(spec, count)


class ThisProcess:
    """Second runs in this process (see the module's docstring)."""

    def measure(self, spec, count: int) -> dict:
        return measure_point(spec, count)

    def close(self) -> None:
        pass

    def __enter__(self) -> "ThisProcess":
        return self

    def __exit__(self, *_exc) -> None:
        pass


class FreshProcess:
    """One spawned process (nothing of this one's state), started on first use, reused after:
    its own first measurement of each shape is what makes it a second opinion."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._pool: ProcessPoolExecutor | None = None

    def measure(self, spec, count: int) -> dict:
        if self._pool is None:  # its start-up takes 1-2 s on the CPU, more where it starts CUDA
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(1, mp_context=context, initializer=_worker_init,
                                             initargs=(self.threads,))
        try:
            return self._pool.submit(_measure_elsewhere, replace(spec, channels=[count]), count).result()
        except BrokenProcessPool:
            self.close()  # the next suspect gets a new process
            raise

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> "FreshProcess":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def second_runner(spec) -> "FreshProcess | ThisProcess":
    """Where a spec's second runs happen: a fresh process for PyTorch on CUDA (cuDNN's algorithm
    choice is made once per shape and process), this one elsewhere."""
    if get_backend(spec.backend).second_opinion_in_fresh_process(spec.target):
        return FreshProcess(spec.threads)
    return ThisProcess()


def replays_first(spec) -> bool:
    """A tuned point's second opinion starts from its neighbours' best schedules: a slow count is
    as often a search that found less as a slow phase of the machine."""
    from advisor.learn.second_look import can_look_again

    return can_look_again(spec)


def replay_neighbours(spec, count: int, measured: list[int]) -> None:
    """Replay the best schedules of the nearest measured counts below and above `count` on it."""
    from advisor.compile.build import replay_on_layer

    below = [c for c in measured if c < count]
    above = [c for c in measured if c > count]
    sources = ({max(below)} if below else set()) | ({min(above)} if above else set())
    if sources:
        moved = replay_on_layer(spec.layer.with_out_channels(count), tuning.ScheduleCache(spec.tuning_root, spec.target),
                                sources, spec.dtype)
        log.info("second opinion on c=%d: %d schedules of %s replayed", count, moved.measured, sorted(sources))


def _plain(value):
    """A value SQLite can bind: numpy scalars as Python ones, NaN as NULL."""
    value = value.item() if isinstance(value, np.generic) else value
    return None if isinstance(value, float) and np.isnan(value) else value


def confirm(spec, store: ResultStore, counts: list[int] | None = None,
            process: FreshProcess | ThisProcess | None = None, prior: dict[int, float] | None = None,
            traps: bool = True) -> Confirmation:
    """Give the suspects among `counts` (default: the spec's) a second run (in `process`, or where
    second_runner says)."""
    started = time.perf_counter()
    outcome = Confirmation()
    if not can_confirm(spec):
        return outcome
    rows = series_frame(spec, store)
    wanted = set(spec.channels if counts is None else counts)
    outcome.suspects = [c for c in suspects(rows, prior=prior, traps=traps) if c in wanted]
    if not outcome.suspects:
        return outcome
    log.info("second opinion: measuring %d suspect counts again", len(outcome.suspects))
    first = rows.set_index("channels")
    own = process is None
    process = process or second_runner(spec)
    try:
        for count in outcome.suspects:
            try:
                if replays_first(spec):
                    replay_neighbours(spec, count, [int(c) for c in first.index])
                again = process.measure(spec, count)
            except Exception as error:  # the first run stands
                log.warning("second opinion on c=%d failed: %s", count, one_line(error, 200))
                continue
            old = first.loc[count]
            row = {column: old[column] for column in first.columns if column not in ("id",)} | {"channels": count}
            if again["min_ms"] < old.min_ms:  # the timing is the second run's; how it was tuned is not new
                row |= {k: v for k, v in again.items() if k in TIMING_COLUMNS} | {"slower_run_ms": float(old.min_ms)}
                outcome.changed[count] = (float(old.min_ms), float(again["min_ms"]))
            else:
                row |= {"slower_run_ms": float(again["min_ms"])}
            row |= {k: again[k] for k in ("trials_spent", "tuning_stop") if k in again}  # tuned again, maybe
            row |= {"runs": 2, "measured_at": None}
            store.save({key: _plain(value) for key, value in row.items()})
    finally:
        if own:
            process.close()
    outcome.seconds = time.perf_counter() - started
    if outcome.changed:
        moved = ", ".join(f"{c}: {a:.3f}->{b:.3f} ms" for c, (a, b) in list(outcome.changed.items())[:8])
        log.info("second opinion: %d of %d were faster the second time (%s)", len(outcome.changed),
                 len(outcome.suspects), moved)
    return outcome
