"""A sweep on boards over RPC: each point compiled here, then uploaded, checked and timed on a board
from a child process (Remote.measure). Behind a tracker, a pool of N boards measures up to N points
at once while the next points compile; each point is measured once, and a point whose board drops
or hangs is recorded as failed with the reason and measured again when the sweep is run again."""

from __future__ import annotations

import logging
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from advisor.compile.build import compile_layer
from advisor.compile.tuning import ScheduleCache
from advisor.errors import one_line
from advisor.measure.backends import TOLERANCES
from advisor.measure.environment import environment
from advisor.measure.sweep import SweepSpec, SweepSummary, geometry_columns
from advisor.progress import SILENT, Progress
from advisor.store.results import ResultStore

log = logging.getLogger(__name__)


def run_remote_sweep(spec: SweepSpec, store: ResultStore, todo: list[int],
                     progress: Progress = SILENT) -> SweepSummary:
    """Measure `todo` on the spec's board or pool; rows are saved here, in this thread, as they land."""
    remote = spec.remote
    boards = max(1, remote.boards())
    summary = SweepSummary()
    env = environment(spec.target.kind, spec.threads)
    cache = ScheduleCache(spec.tuning_root, spec.target)
    runner = remote.tuning_runner(workers=boards)
    name = f"{spec.layer.name} {spec.backend}/{spec.target.name}"
    pending: dict[Future, dict] = {}

    def land(done) -> None:
        for future in done:
            row = pending.pop(future)
            count = row["channels"]
            try:
                row |= {"status": "ok", **future.result()}
                summary.measured.append(count)
            except Exception as error:  # an unreachable or hung board, a wrong output: this point only
                row |= {"status": "failed", "error": one_line(error)}
                summary.failed[count] = row["error"]
                log.warning("c=%d failed: %s", count, row["error"])
            store.save(row)
            result = f"{row['median_ms']:.4f} ms" if row["status"] == "ok" else "failed"
            task.advance(f"{name} c={count}: {result}")

    with progress.task(f"{name} on {boards} board{'s' if boards > 1 else ''}", len(todo)) as task, \
            ThreadPoolExecutor(boards) as pool:
        for count in todo:
            task.describe(f"{name} c={count}")
            variant = spec.layer.with_out_channels(count)
            row = {**spec.fixed_columns(), **geometry_columns(variant, spec.layer.out_channels),
                   "target_config": spec.target.config, **env}
            try:  # tuning runs its candidates on the pool too
                compiled = compile_layer(variant, spec.trials, cache, spec.cost_model, spec.dtype, runner=runner)
            except Exception as error:
                row |= {"status": "failed", "error": one_line(error)}
                summary.failed[count] = row["error"]
                store.save(row)
                task.advance(f"{name} c={count}: failed")
                continue
            outcome = compiled.outcome
            row |= {"trials_run": outcome.trials_run, "tuning_seconds": outcome.seconds,
                    "schedules_reused": int(outcome.reused)}
            while len(pending) >= boards:  # every board busy: wait for one
                land(wait(pending, return_when=FIRST_COMPLETED).done)
            pending[pool.submit(remote.measure, compiled.executable, compiled.inputs, compiled.reference,
                                TOLERANCES[spec.dtype], spec.policy, spec.target.kind)] = row
            land([future for future in list(pending) if future.done()])
        while pending:
            land(wait(pending, return_when=FIRST_COMPLETED).done)
    return summary
