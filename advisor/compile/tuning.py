"""MetaSchedule tuning with a reusable database per target (`tuning_logs/<target>/`), stopped by a rule.

Each workload is tuned until its best run time has settled (StopRule: under 2% better over the
last `patience` trials) or it holds `cap` trials; the rule is judged on the workload's records in
the order the database holds them, so a workload that has settled is not tuned again and one
that was interrupted resumes where it stopped. A new workload whose neighbours (the same layer
at another channel count) are in the database starts from their best schedules, replayed and
measured on it (advisor.compile.transfer). One cost model per tuning directory and process
learns from every workload tuned, so later counts search with a model trained on earlier ones.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import time
from dataclasses import dataclass
from pathlib import Path

from advisor.compile.targets import TargetSpec
from advisor.compile.tvm_setup import builder_worker_init, import_tensor_intrinsics

FAILED = float("inf")  # the run time of a candidate that failed to build or run
MIN_PATIENCE = 16  # trials without a better best before a workload counts as settled, at the least
TOLERANCE = 0.02  # "better": by more than this share
BATCH = 16  # candidates per search round at most (and at most the patience): the rule is checked between rounds


@dataclass(frozen=True)
class StopRule:
    """When the tuning of one workload stops: once its best run time has improved by less than
    `tolerance` over its last `patience` trials (and it holds more than `patience`), or at `cap`.

    The patience is a quarter of the cap (at least MIN_PATIENCE): a larger budget is also more
    patient, so raising the cap lets the search go on past a plateau."""

    cap: int
    patience: int
    tolerance: float = TOLERANCE

    @classmethod
    def for_cap(cls, cap: int) -> "StopRule":
        return cls(cap, max(MIN_PATIENCE, cap // 4))

    def stop(self, history: list[float]) -> str | None:
        """'cap' or 'converged' once the rule stops a workload with these run times (in the
        order they were measured), else None."""
        if len(history) >= self.cap:
            return "cap"
        if len(history) <= self.patience:
            return None
        before = min(history[:-self.patience])
        return "converged" if min(history) >= before * (1 - self.tolerance) and before < FAILED else None

    def describe(self) -> str:
        return (f"until the best improves by under {self.tolerance:.0%} over {self.patience} trials, "
                f"at most {self.cap}")


@dataclass(frozen=True)
class TuningOutcome:
    trials_requested: int  # the cap per task
    trials_run: int  # measured in this call, all tasks together
    seconds: float
    tasks: int
    reused: bool  # every task had already stopped by the rule: nothing was tuned
    transferred: int = 0  # neighbours' schedules replayed, measured and committed (part of trials_run)
    transferred_from: tuple[int, ...] = ()  # the neighbours' differing size (their channel counts)
    trials_spent: int = 0  # records the tasks hold after this call (every call's trials)
    stopped: str = ""  # why tuning stopped: converged, cap (several tasks: both), untuned (no trials)
    best_us: float | None = None  # the best run time MetaSchedule measured (one task), microseconds


_OPEN_DATABASES: dict[Path, object] = {}
_COST_MODELS: dict[tuple[Path, str], object] = {}


class ScheduleCache:
    """The MetaSchedule JSON database of one target."""

    def __init__(self, root: str | os.PathLike, target: TargetSpec) -> None:
        self.directory = Path(root) / target.slug
        self.target = target
        self._history = RecordHistory(self.directory)

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

    @property
    def records(self) -> Path:
        return self.directory / "database_tuning_record.json"

    def exists(self) -> bool:
        return self.records.is_file()

    def tensorizes(self) -> bool:
        """Whether a record's trace tensorizes (int8 dot products, tensor cores): applying it then
        needs TVM's tensor intrinsics registered (the instruction `Tensorize`, the annotation
        `meta_schedule.auto_tensorize`)."""
        if not self.exists() or self.records.stat().st_size == 0:
            return False
        with open(self.records, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as text:
            return text.find(b"ensorize") >= 0

    def history(self, task_mod) -> list[float]:
        """Run times (s; failures inf) of the workload's records, in the order they were committed."""
        from tvm_ffi import structural_hash

        return self._history.of(str(structural_hash(task_mod)))

    def cost_model(self, kind: str):
        """MetaSchedule's cost model for a search: 'random' as named; 'xgb' one model per directory
        and process, kept between workloads, so each count's search ranks candidates with what
        the earlier counts taught it (MetaSchedule shares one the same way among a network's tasks)."""
        if kind != "xgb":
            return kind
        from tvm.s_tir import meta_schedule as ms

        key = (self.directory.resolve(), kind)
        if key not in _COST_MODELS:
            _COST_MODELS[key] = ms.cost_model.XGBModel(num_tuning_cores=os.cpu_count() or 1)
        return _COST_MODELS[key]


class RecordHistory:
    """Each workload's run times in commit order, read from the JSON database's files (which
    MetaSchedule appends to) and kept per process; each call reads only what was appended since."""

    _states: dict[Path, dict] = {}

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def of(self, shash: str) -> list[float]:
        key = self.directory.resolve()
        state = self._states.get(key)
        records = self.directory / "database_tuning_record.json"
        if state is None or state["r_at"] > (records.stat().st_size if records.is_file() else 0):
            state = self._states[key] = {"workloads": [], "w_at": 0, "r_at": 0, "runs": {}}  # new or replaced
        state["w_at"] = _read_lines(self.directory / "database_workload.json", state["w_at"],
                                    lambda entry: state["workloads"].append(str(entry[0])))

        def add(entry) -> None:
            index, record = entry[0], entry[1]
            secs = [float(s) for s in (record[1] or [])]
            run = sorted(secs)[len(secs) // 2] if secs else FAILED
            state["runs"].setdefault(index, []).append(FAILED if run >= 1e9 else run)

        state["r_at"] = _read_lines(self.directory / "database_tuning_record.json", state["r_at"], add)
        indices = [i for i, known in enumerate(state["workloads"]) if known == shash]
        return [run for i in indices for run in state["runs"].get(i, [])]


def _read_lines(path: Path, offset: int, handle) -> int:
    """Feed each complete JSON line after `offset` to `handle`; return the offset after the last."""
    if not path.is_file():
        return offset
    with open(path, "rb") as stream:
        stream.seek(offset)
        for line in stream:
            if not line.endswith(b"\n"):
                break  # being written: read it next time
            offset += len(line)
            try:
                handle(json.loads(line))
            except (ValueError, IndexError, TypeError):
                continue  # not a record (a damaged line): MetaSchedule skips it too
    return offset


def tune(mod, cache: ScheduleCache, trials: int, *, cost_model: str = "xgb",
         builder_timeout_s: float | None = None, seed: int = 0, runner=None, transfer: bool = True,
         transfer_max: int = 8, rule: StopRule | None = None) -> TuningOutcome:
    """Tune every task of a Relax module (after the zero pipeline) until the rule stops it
    (default StopRule.for_cap(trials): `trials` is the cap per task).

    `runner` measures the candidates: MetaSchedule's LocalRunner by default, or an RPCRunner
    (advisor.board.rpc) that runs them on a board. With `transfer`, a task with no records of its own
    whose neighbours were tuned first measures up to `transfer_max` of their best schedules (at
    most half its cap, so the search still explores), then searches until the rule stops it.
    """
    if cache.target.is_gpu:  # GPU tasks look wmma intrinsics up without a search (test_opencl.py failed so)
        import_tensor_intrinsics()
    from tvm.s_tir.meta_schedule.relax_integration import extract_tasks

    started = time.perf_counter()
    rule = rule or StopRule.for_cap(trials)
    target = cache.target.tvm_target()
    database = cache.open()
    tasks = extract_tasks(mod, target)
    held = {task.task_name: len(cache.history(task.dispatched[0])) for task in tasks}
    todo = [task for task in tasks if rule.stop(cache.history(task.dispatched[0])) is None]
    if trials <= 0 or not todo:
        return _outcome(tasks, cache, rule, trials, held, started, reused=True)
    import_tensor_intrinsics()  # the search's schedule rules need them; reading the records does not

    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    builder = _builder(cache, builder_timeout_s)
    runner = runner or _local_runner()
    transferred, sources = 0, set()
    if transfer:
        from advisor.compile.transfer import transfer_to

        for task in todo:
            if held[task.task_name] == 0:  # a resumed task is seeded by its own records already
                moved = transfer_to(database, task, target, min(transfer_max, rule.cap // 2), builder, runner)
                transferred += moved.measured
                sources.update(moved.sources)
    todo = [task for task in todo if rule.stop(cache.history(task.dispatched[0])) is None]
    if todo:
        _search(todo, rule, cache, database, builder, runner, cost_model, seed)
    return _outcome(tasks, cache, rule, trials, held, started, reused=False, transferred=transferred,
                    sources=sources)


def _outcome(tasks, cache: ScheduleCache, rule: StopRule, trials: int, held: dict, started: float, *,
             reused: bool, transferred: int = 0, sources=()) -> TuningOutcome:
    histories = [cache.history(task.dispatched[0]) for task in tasks]
    reasons = sorted({rule.stop(h) or "unsettled" for h in histories}) if rule.cap > 0 else ["untuned"]
    best = min(histories[0]) * 1e6 if len(histories) == 1 and histories[0] and min(histories[0]) < FAILED else None
    run = sum(len(h) for h in histories) - sum(held.values())
    return TuningOutcome(trials, run, time.perf_counter() - started, len(tasks), reused=reused,
                         transferred=transferred, transferred_from=tuple(sorted(sources)),
                         trials_spent=sum(len(h) for h in histories), stopped="+".join(reasons), best_us=best)


_WORKERS: dict[tuple, object] = {}


def _builder(cache: ScheduleCache, timeout_s: float | None):
    """MetaSchedule's local builder, one per timeout and process: each one checks itself in a new
    process pool when made (a second or two; a sweep makes several per count)."""
    from tvm.s_tir import meta_schedule as ms

    if timeout_s is None:  # nvcc per GPU candidate is slow: MetaSchedule's 30 s killed CUDA builds
        timeout_s = 180.0 if cache.target.is_gpu else 60.0
    key = ("builder", timeout_s)
    if key not in _WORKERS:
        _WORKERS[key] = ms.builder.LocalBuilder(max_workers=os.cpu_count(), timeout_sec=timeout_s,
                                                initializer=builder_worker_init)
    return _WORKERS[key]


def _local_runner():
    """MetaSchedule's local runner, one per process: its worker (which imports TVM) is kept."""
    from tvm.s_tir import meta_schedule as ms

    if "runner" not in _WORKERS:
        _WORKERS["runner"] = ms.runner.LocalRunner()
    return _WORKERS["runner"]


def _search(todo, rule: StopRule, cache: ScheduleCache, database, builder, runner, cost_model: str,
            seed: int) -> None:
    """MetaSchedule's evolutionary search for each task, each stopped by the rule."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.relax_integration import extracted_tasks_to_tune_contexts

    # MetaSchedule's logging setup (run by each tuning) lists the handlers on its logger by name and
    # fails on an unnamed one, such as pytest's capture handlers (attached to every logger that does
    # not propagate, as this one stops doing after the first tuning); its setup replaces them anyway.
    ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    for handler in [h for h in ms_logger.handlers if h.get_name() is None]:
        ms_logger.removeHandler(handler)
    missing = {task.task_name: rule.cap - len(cache.history(task.dispatched[0])) for task in todo}
    per_task = max(missing.values())
    population = min(512, max(64, 4 * rule.cap))  # a small budget gains nothing from 512
    strategy = settling_search(rule, cache, ms.search_strategy.EvolutionarySearch(population_size=population))
    contexts, weights = extracted_tasks_to_tune_contexts(todo, str(cache.directory), strategy=strategy, seed=seed)
    ms.tune_tasks(
        tasks=contexts,
        task_weights=weights,
        work_dir=str(cache.directory),
        max_trials_global=sum(missing.values()),
        max_trials_per_task=per_task,
        num_trials_per_iter=min(BATCH, rule.patience, per_task),
        builder=builder,
        runner=runner,
        database=database,
        cost_model=cache.cost_model(cost_model),
    )


def settling_search(rule: StopRule, cache: ScheduleCache, inner):
    """A search strategy that runs `inner` (an EvolutionarySearch) and ends a task's search once
    the rule stops it, judged on the workload's records before this search and the run times
    of the rounds since (MetaSchedule ends a task whose strategy offers no more candidates)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.search_strategy import PySearchStrategy

    @derived_object
    class SettlingSearch(PySearchStrategy):
        def __init__(self, inner) -> None:
            self.inner, self.history = inner, []

        def _initialize_with_tune_context(self, context) -> None:
            self.history = list(cache.history(context.mod))
            self.inner._initialize_with_tune_context(context)

        def pre_tuning(self, max_trials, num_trials_per_iter, design_spaces, database=None, cost_model=None):
            self.inner.pre_tuning(max_trials, num_trials_per_iter, design_spaces, database, cost_model)

        def post_tuning(self) -> None:
            self.inner.post_tuning()

        def generate_measure_candidates(self):
            if rule.stop(self.history) is not None:
                return None
            return self.inner.generate_measure_candidates()

        def notify_runner_results(self, measure_candidates, results) -> None:
            self.inner.notify_runner_results(measure_candidates, results)
            for result in results:
                secs = sorted(float(s) for s in (result.run_secs or [])) if result.error_msg is None else []
                self.history.append(secs[len(secs) // 2] if secs else FAILED)

        def clone(self):
            return SettlingSearch(self.inner.clone())

    return SettlingSearch(inner)


def replay_from(mod, cache: ScheduleCache, sources: set[int], count: int = 8, runner=None,
                builder_timeout_s: float | None = None):
    """Replay the best schedules of the neighbours whose changed size is in `sources` (their
    channel counts) on each task of `mod`, measure and commit them (advisor.compile.transfer);
    the sum of the Transfers."""
    import_tensor_intrinsics()
    from tvm.s_tir.meta_schedule.relax_integration import extract_tasks

    from advisor.compile.transfer import Transfer, transfer_to

    target = cache.target.tvm_target()
    database = cache.open()
    builder = _builder(cache, builder_timeout_s)
    runner = runner or _local_runner()
    measured, failed, used = 0, 0, set()
    for task in extract_tasks(mod, target):
        moved = transfer_to(database, task, target, count, builder, runner, sizes=set(sources))
        measured, failed, used = measured + moved.measured, failed + moved.failed, used | set(moved.sources)
    return Transfer(measured, failed, tuple(sorted(used)))


def retune(mod, cache: ScheduleCache, trials: int, *, seed: int, cost_model: str = "xgb",
           runner=None) -> TuningOutcome:
    """`trials` more search trials for each task of `mod`, from another seed, whatever the rule said."""
    from tvm.s_tir.meta_schedule.relax_integration import extract_tasks

    tasks = extract_tasks(mod, cache.target.tvm_target())
    held = max(len(cache.history(task.dispatched[0])) for task in tasks)
    return tune(mod, cache, held + trials, cost_model=cost_model, seed=seed, runner=runner, transfer=False,
                rule=StopRule(held + trials, patience=held + trials))


def compile_tuned(mod, cache: ScheduleCache):
    """Build a Relax module with the cache's best schedules (default schedules where none)."""
    import tvm
    from tvm import relax

    target = cache.target.tvm_target()
    with target, tvm.transform.PassContext(opt_level=3):
        if cache.exists():
            if cache.target.is_gpu or cache.tensorizes():
                import_tensor_intrinsics()
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
