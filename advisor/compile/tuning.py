"""MetaSchedule tuning with a reusable database per target (`tuning_logs/<target>/`).

A workload whose database already holds the trials asked for is not tuned again; one that
holds fewer gets only the missing trials, seeded from its best records. A new workload whose
neighbours (the same layer at another channel count) are in the database starts from their
best schedules, replayed and measured on it (advisor.compile.transfer).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from advisor.compile.targets import TargetSpec
from advisor.compile.tvm_setup import builder_worker_init, import_tensor_intrinsics


@dataclass(frozen=True)
class TuningOutcome:
    trials_requested: int  # per task
    trials_run: int  # measured in this call, all tasks together
    seconds: float
    tasks: int
    reused: bool  # every task already had its trials: nothing was tuned
    transferred: int = 0  # neighbours' schedules replayed, measured and committed (part of trials_run)
    transferred_from: tuple[int, ...] = ()  # the neighbours' differing size (their channel counts)


_OPEN_DATABASES: dict[Path, object] = {}


class ScheduleCache:
    """The MetaSchedule JSON database of one target."""

    def __init__(self, root: str | os.PathLike, target: TargetSpec) -> None:
        self.directory = Path(root) / target.slug
        self.target = target

    def open(self):
        """The database, parsed once per process (a few seconds each time for a grown one)."""
        from tvm.s_tir import meta_schedule as ms

        key = self.directory.resolve()
        if key not in _OPEN_DATABASES:
            self.directory.mkdir(parents=True, exist_ok=True)
            _OPEN_DATABASES[key] = ms.database.JSONDatabase(
                path_workload=str(self.directory / "database_workload.json"),
                path_tuning_record=str(self.directory / "database_tuning_record.json"),
                module_equality="structural",
            )
        return _OPEN_DATABASES[key]

    def exists(self) -> bool:
        return (self.directory / "database_tuning_record.json").is_file()


def _records_held(database, task_mod) -> int:
    if not database.has_workload(task_mod):
        return 0
    workload = database.commit_workload(task_mod)
    return len(database.get_top_k(workload, 1 << 30))


def tune(mod, cache: ScheduleCache, trials: int, *, cost_model: str = "xgb",
         builder_timeout_s: float | None = None, seed: int = 0, runner=None, transfer: bool = True,
         transfer_max: int = 8) -> TuningOutcome:
    """Tune every task of a Relax module (after the zero pipeline) to `trials` records each.

    `runner` measures the candidates: MetaSchedule's LocalRunner by default, or an RPCRunner
    (advisor.board.rpc) that runs them on a board. With `transfer`, a task with no records of its own
    whose neighbours were tuned first measures up to `transfer_max` of their best schedules (at
    most half its trials, so the search still explores), then searches for the rest.
    """
    import_tensor_intrinsics()
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.relax_integration import extract_tasks

    started = time.perf_counter()
    target = cache.target.tvm_target()
    database = cache.open()
    tasks = extract_tasks(mod, target)
    held = {task.task_name: _records_held(database, task.dispatched[0]) for task in tasks}
    todo = [task for task in tasks if held[task.task_name] < trials]
    if trials <= 0 or not todo:
        return TuningOutcome(trials, 0, time.perf_counter() - started, len(tasks), reused=True)

    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    if builder_timeout_s is None:  # nvcc per GPU candidate is slow: MetaSchedule's 30 s killed CUDA builds
        builder_timeout_s = 180.0 if cache.target.is_gpu else 60.0
    builder = ms.builder.LocalBuilder(
        max_workers=os.cpu_count(), timeout_sec=builder_timeout_s, initializer=builder_worker_init)
    runner = runner or ms.runner.LocalRunner()
    transferred, sources = 0, set()
    if transfer:
        from advisor.compile.transfer import transfer_to

        for task in todo:
            if held[task.task_name] == 0:  # a resumed task is seeded by its own records already
                moved = transfer_to(database, task, target, min(transfer_max, trials // 2), builder, runner)
                transferred += moved.measured
                sources.update(moved.sources)
    missing = {task.task_name: trials - _records_held(database, task.dispatched[0]) for task in todo}
    todo = [task for task in todo if missing[task.task_name] > 0]
    if todo:
        _search(todo, missing, cache, database, builder, runner, cost_model, seed)
    run = sum(_records_held(database, task.dispatched[0]) - held[task.task_name] for task in tasks)
    return TuningOutcome(trials, run, time.perf_counter() - started, len(tasks), reused=False,
                         transferred=transferred, transferred_from=tuple(sorted(sources)))


def _search(todo, missing: dict, cache: ScheduleCache, database, builder, runner, cost_model: str,
            seed: int) -> None:
    """MetaSchedule's evolutionary search for each task's missing trials."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.relax_integration import extracted_tasks_to_tune_contexts

    # MetaSchedule's logging setup (run by each tuning) lists the handlers on its logger by name and
    # fails on an unnamed one, such as pytest's capture handlers (attached to every logger that does
    # not propagate, as this one stops doing after the first tuning); its setup replaces them anyway.
    ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    for handler in [h for h in ms_logger.handlers if h.get_name() is None]:
        ms_logger.removeHandler(handler)
    per_task = max(missing[task.task_name] for task in todo)
    population = min(512, max(64, 8 * per_task))  # a small budget gains nothing from 512
    contexts, weights = extracted_tasks_to_tune_contexts(
        todo, str(cache.directory), strategy=ms.search_strategy.EvolutionarySearch(population_size=population),
        seed=seed,
    )
    ms.tune_tasks(
        tasks=contexts,
        task_weights=weights,
        work_dir=str(cache.directory),
        max_trials_global=sum(missing[task.task_name] for task in todo),
        max_trials_per_task=per_task,
        num_trials_per_iter=min(64, per_task),
        builder=builder,
        runner=runner,
        database=database,
        cost_model=cost_model,
    )


def compile_tuned(mod, cache: ScheduleCache):
    """Build a Relax module with the cache's best schedules (default schedules where none)."""
    import tvm
    from tvm import relax

    target = cache.target.tvm_target()
    with target, tvm.transform.PassContext(opt_level=3):
        if cache.exists():
            with cache.open():
                mod = relax.transform.MetaScheduleApplyDatabase()(mod)
        if cache.target.is_gpu:
            mod = default_gpu_schedules()(mod)
        return tvm.compile(mod, target=target)


def default_gpu_schedules():
    """dlight's GPU rules, most specific first: they schedule whatever tuning did not cover
    (GPU kernels need thread bindings), and alone they are the untuned (`--trials 0`) baseline."""
    from tvm.s_tir import dlight

    return dlight.ApplyDefaultSchedule(
        dlight.gpu.Matmul(), dlight.gpu.GEMV(), dlight.gpu.Reduction(), dlight.gpu.GeneralReduction(),
        dlight.gpu.Transpose(), dlight.gpu.Fallback(),
    )
