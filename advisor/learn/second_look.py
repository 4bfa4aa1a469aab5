"""A second look at a tuned point: a count can read slow because its search was unlucky, not
because the hardware dislikes it. Before a trap of a tuned backend is reported, the faster
count's best schedules are replayed on the trap count and measured (advisor.compile.transfer),
and if the trap survives, the trap count is tuned again from another seed; a trap that either
step removes is recorded as tuning luck (`trap_check` luck-replay or luck-retune), one that
survives both as confirmed. Both counts are measured again after each step, one right after the
other, and each keeps its faster run (as second opinions do), so the machine's drift between
the sweep and the check moves neither alone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from advisor.compile.build import replay_on_layer, retune_layer
from advisor.compile.tuning import ScheduleCache, StopRule
from advisor.errors import one_line
from advisor.learn.curves import curve, find_traps
from advisor.measure.backends import get_backend
from advisor.measure.sweep import SweepSpec, measure_point, series_frame
from advisor.progress import SILENT, Progress
from advisor.store.results import ResultStore

log = logging.getLogger(__name__)
TIMING_COLUMNS = ("median_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "p25_ms", "p75_ms", "repeats", "number",
                  "max_abs_err")
RETUNE_SEED = 1  # the sweep's own search used seed 0
CHECKS = 8  # at most this many traps looked at again per call (each costs a replay and maybe a search)


@dataclass(frozen=True)
class TrapCheck:
    channels: int
    faster_channels: int
    before_ms: float  # the trap count's median when the check began
    after_ms: float
    verdict: str  # confirmed, luck-replay or luck-retune
    seconds: float


def can_look_again(spec: SweepSpec) -> bool:
    """Only a tuned backend's points depend on a search, and only on this machine (not over RPC)."""
    return get_backend(spec.backend).tuned and spec.remote is None and spec.trials > 0


def _plain(value):
    value = value.item() if isinstance(value, np.generic) else value
    return None if isinstance(value, float) and np.isnan(value) else value


def remeasure(spec: SweepSpec, store: ResultStore, count: int, **columns) -> dict:
    """Measure a stored count again and keep its faster run (how it is tuned now is recorded
    either way); `columns` are stored with it. Returns the stored row."""
    rows = series_frame(spec, store).set_index("channels")
    old = rows.loc[count]
    again = measure_point(spec, count)
    row = {column: old[column] for column in rows.columns if column != "id"} | {"channels": count}
    if again["min_ms"] < old.min_ms:
        row |= {k: v for k, v in again.items() if k in TIMING_COLUMNS} | {"slower_run_ms": float(old.min_ms)}
    else:
        row |= {"slower_run_ms": float(again["min_ms"])}
    row |= {k: again[k] for k in ("trials_spent", "tuning_stop") if k in again}
    row |= {"runs": int(old.runs if old.runs == old.runs and old.runs else 1) + 1, "measured_at": None, **columns}
    row = {key: _plain(value) for key, value in row.items()}
    store.save(row)
    return row


def still_a_trap(spec: SweepSpec, store: ResultStore, count: int):
    """The trap at `count` among the stored points now, or None."""
    rows = series_frame(spec, store).sort_values("channels")
    return next((trap for trap in find_traps(curve(rows)) if trap.channels == count), None)


def check_traps(spec: SweepSpec, store: ResultStore, *, limit: int = CHECKS,
                progress: Progress = SILENT) -> list[TrapCheck]:
    """Look again at each trap among the spec's stored points not looked at before (module docstring)."""
    if not can_look_again(spec):
        return []
    cache = ScheduleCache(spec.tuning_root, spec.target)
    retune_trials = StopRule.for_cap(spec.trials).patience
    checks: list[TrapCheck] = []
    looked: set[int] = set()
    while len(checks) < limit:
        rows = series_frame(spec, store).sort_values("channels")
        # a confirmed trap is not looked at again; one found luck that is a trap again (other counts
        # moved since) is
        confirmed = set(rows.channels[rows.trap_check == "confirmed"].astype(int))
        traps = [t for t in find_traps(curve(rows)) if t.channels not in confirmed | looked]
        if not traps:
            break
        trap = traps[0]
        looked.add(trap.channels)
        started = time.perf_counter()
        variant = spec.layer.with_out_channels(trap.channels)
        verdict = "confirmed"
        with progress.task(f"second look at the trap at {trap.channels} (vs {trap.faster_channels})", 2) as task:
            try:
                moved = replay_on_layer(variant, cache, {trap.faster_channels}, spec.dtype)
                log.info("trap %d: %d schedules of %d replayed", trap.channels, moved.measured, trap.faster_channels)
                if _measure_pair(spec, store, trap) is None:
                    verdict = "luck-replay"
                task.advance(f"replayed: {'gone' if verdict != 'confirmed' else 'still a trap'}")
                if verdict == "confirmed":
                    retune_layer(variant, cache, retune_trials, RETUNE_SEED, spec.dtype, spec.cost_model)
                    if _measure_pair(spec, store, trap) is None:
                        verdict = "luck-retune"
                    task.advance(f"tuned again: {'gone' if verdict != 'confirmed' else 'still a trap'}")
                else:
                    task.advance("not tuned again")
            except Exception as error:  # the trap stays unchecked; the next run looks again
                log.warning("second look at c=%d failed: %s", trap.channels, one_line(error, 200))
                continue
        row = remeasure_mark(spec, store, trap.channels, verdict)
        checks.append(TrapCheck(trap.channels, trap.faster_channels, trap.median_ms, float(row["median_ms"]),
                                verdict, time.perf_counter() - started))
        log.info("trap at %d (%.4f ms against %.4f at %d): %s", trap.channels, trap.median_ms, trap.faster_ms,
                 trap.faster_channels, verdict)
    return checks


def _measure_pair(spec: SweepSpec, store: ResultStore, trap):
    """Measure the trap count, then its faster count, again; the trap among the stored points now."""
    remeasure(spec, store, trap.channels)
    remeasure(spec, store, trap.faster_channels)
    return still_a_trap(spec, store, trap.channels)


def remeasure_mark(spec: SweepSpec, store: ResultStore, count: int, verdict: str) -> dict:
    """Record the verdict on the stored row (no new measurement)."""
    rows = series_frame(spec, store).set_index("channels")
    old = rows.loc[count]
    row = {column: _plain(old[column]) for column in rows.columns if column != "id"} | {"channels": count,
                                                                                        "trap_check": verdict}
    store.save(row)
    return row
