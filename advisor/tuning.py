"""MetaSchedule tuning with a reusable database per target (`tuning_logs/<target>/`).

A workload whose database already holds the trials asked for is not tuned again; one that
holds fewer gets only the missing trials, seeded from its best records.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from advisor.targets import TargetSpec
from advisor.tvm_setup import builder_worker_init, import_tensor_intrinsics


@dataclass(frozen=True)
class TuningOutcome:
    trials_requested: int  # per task
    trials_run: int  # measured in this call, all tasks together
    seconds: float
    tasks: int
    reused: bool  # every task already had its trials: nothing was tuned


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
         builder_timeout_s: float = 60.0, seed: int = 0, runner=None) -> TuningOutcome:
    """Tune every task of a Relax module (after the zero pipeline) to `trials` records each.

    `runner` measures the candidates: MetaSchedule's LocalRunner by default, or an RPCRunner
    (advisor.rpc) that runs them on a board.
    """
    import_tensor_intrinsics()
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.relax_integration import extract_tasks, extracted_tasks_to_tune_contexts

    started = time.perf_counter()
    target = cache.target.tvm_target()
    database = cache.open()
    tasks = extract_tasks(mod, target)
    missing = {task.task_name: trials - _records_held(database, task.dispatched[0]) for task in tasks}
    todo = [task for task in tasks if missing[task.task_name] > 0]
    if trials <= 0 or not todo:
        return TuningOutcome(trials, 0, time.perf_counter() - started, len(tasks), reused=True)

    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
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
        builder=ms.builder.LocalBuilder(
            max_workers=os.cpu_count(), timeout_sec=builder_timeout_s, initializer=builder_worker_init
        ),
        runner=runner or ms.runner.LocalRunner(),
        database=database,
        cost_model=cost_model,
    )
    run = sum(max(0, _records_held(database, task.dispatched[0]) - (trials - missing[task.task_name]))
              for task in todo)
    return TuningOutcome(trials, run, time.perf_counter() - started, len(tasks), reused=False)


def compile_tuned(mod, cache: ScheduleCache):
    """Build a Relax module with the cache's best schedules (default schedules where none)."""
    import tvm
    from tvm import relax

    target = cache.target.tvm_target()
    with target, tvm.transform.PassContext(opt_level=3):
        if cache.exists():
            with cache.open():
                mod = relax.transform.MetaScheduleApplyDatabase()(mod)
        if cache.target.kind != "llvm":
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
