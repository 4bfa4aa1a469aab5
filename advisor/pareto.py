"""Accuracy against latency and memory for compressed variants of one trained network.

Two tables in the results database (beside the sweep's `points`): `pareto_variants` (one row per
variant: accuracy on held-out images, stored bytes) and `pareto_latency` (one row per variant, backend
and thread count: latency and peak memory while running). A run skips every row already stored.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from advisor.compression import Compressed, VariantSpec, compress
from advisor.datasets import Dataset
from advisor.environment import environment
from advisor.errors import AdvisorError
from advisor.memory import rss_growth_bytes, stored_size, torch_peak_bytes
from advisor.store import ResultStore
from advisor.targets import TargetSpec
from advisor.timing import Timing, TimingPolicy, calls_per_sample, steady_allocator, time_callable
from advisor.training import accuracy

stderr = Console(stderr=True)
BACKENDS = ("tvm", "torch")

_VARIANT_COLUMNS = {
    "model": "TEXT NOT NULL", "dataset": "TEXT NOT NULL", "metric": "TEXT NOT NULL",
    "variant": "TEXT NOT NULL", "label": "TEXT NOT NULL", "technique": "TEXT NOT NULL",
    "strength": "REAL NOT NULL", "plan": "TEXT NOT NULL", "finetune": "INTEGER NOT NULL",
    "accuracy": "REAL", "test_images": "INTEGER", "stored_bytes": "INTEGER", "dense_bytes": "INTEGER",
    "parameters": "INTEGER", "nonzero_parameters": "INTEGER", "notes": "TEXT",
    "status": "TEXT NOT NULL", "error": "TEXT", "measured_at": "TEXT NOT NULL",
}
_VARIANT_KEY = ("model", "dataset", "metric", "variant")
_LATENCY_COLUMNS = {
    "model": "TEXT NOT NULL", "dataset": "TEXT NOT NULL", "variant": "TEXT NOT NULL",
    "backend": "TEXT NOT NULL", "target": "TEXT NOT NULL", "threads": "INTEGER NOT NULL",
    "trials": "INTEGER NOT NULL", "batch": "INTEGER NOT NULL",
    "status": "TEXT NOT NULL",  # ok | failed | unavailable (the backend cannot run this variant)
    "error": "TEXT", "median_ms": "REAL", "mean_ms": "REAL", "std_ms": "REAL", "min_ms": "REAL",
    "max_ms": "REAL", "p25_ms": "REAL", "p75_ms": "REAL", "repeats": "INTEGER", "number": "INTEGER",
    "peak_bytes": "INTEGER", "peak_method": "TEXT", "max_abs_err": "REAL", "tuning_seconds": "REAL",
    "cpu_model": "TEXT", "device": "TEXT", "hostname": "TEXT", "tvm_version": "TEXT", "torch_version": "TEXT",
    "measured_at": "TEXT NOT NULL",
}
_LATENCY_KEY = ("model", "dataset", "variant", "backend", "target", "threads", "trials", "batch")


def open_tables(store: ResultStore) -> None:
    """Create the pareto tables in an advisor database (ResultStore has checked the file is ours)."""
    with store.connection as connection:
        for table, columns, key in (("pareto_variants", _VARIANT_COLUMNS, _VARIANT_KEY),
                                    ("pareto_latency", _LATENCY_COLUMNS, _LATENCY_KEY)):
            body = ",\n  ".join(f"{name} {kind}" for name, kind in columns.items())
            connection.execute(f"CREATE TABLE IF NOT EXISTS {table} (\n  id INTEGER PRIMARY KEY,\n  {body},\n"
                               f"  UNIQUE ({', '.join(key)}))")


def _save(store: ResultStore, table: str, row: dict) -> None:
    row = {**row, "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    with store.connection as connection:
        connection.execute(f"INSERT OR REPLACE INTO {table} ({', '.join(row)}) VALUES "
                           f"({', '.join('?' for _ in row)})", list(row.values()))


@dataclass
class ParetoPlan:
    model_label: str  # network and training recipe, e.g. tinynet-digits-e15
    dataset: Dataset
    specs: list[VariantSpec]
    backends: list[str]
    threads: list[int]
    target: TargetSpec
    trials: int
    tuning_root: str = "tuning_logs"
    policy: TimingPolicy = field(default_factory=TimingPolicy)
    metric: str = "accuracy"  # or eval:path/file.py:function
    evaluate: Callable[[torch.nn.Module], float] | None = None
    seed: int = 0

    def latency_keys(self, spec: VariantSpec) -> list[tuple]:
        return [(self.model_label, self.dataset.name, spec.key, backend, self.target.name if backend == "tvm"
                 else "cpu", threads, self.trials if backend == "tvm" else 0, 1)
                for backend in self.backends for threads in self.threads]


@dataclass
class ParetoSummary:
    measured: int = 0
    reused: int = 0
    failed: list[str] = field(default_factory=list)


def _done(store: ResultStore, plan: ParetoPlan) -> tuple[set, set]:
    variants = {row[0] for row in store.connection.execute(
        "SELECT variant FROM pareto_variants WHERE model = ? AND dataset = ? AND metric = ? AND status = 'ok'",
        (plan.model_label, plan.dataset.name, plan.metric))}
    latency = {tuple(row) for row in store.connection.execute(
        f"SELECT {', '.join(_LATENCY_KEY)} FROM pareto_latency WHERE model = ? AND dataset = ? "
        "AND status IN ('ok', 'unavailable')", (plan.model_label, plan.dataset.name))}
    return variants, latency


def run_pareto(plan: ParetoPlan, trained: torch.nn.Module, store: ResultStore,
               show_progress: bool = True) -> ParetoSummary:
    open_tables(store)
    summary = ParetoSummary()
    done_variants, done_latency = _done(store, plan)
    env = {k: v for k, v in environment("llvm", max(plan.threads)).items() if k != "threads"}
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=stderr, disable=not show_progress) as progress:
        task = progress.add_task("variants", total=len(plan.specs))
        for spec in plan.specs:
            progress.update(task, description=f"{spec.label}")
            missing = [key for key in plan.latency_keys(spec) if key not in done_latency]
            if spec.key in done_variants and not missing:
                summary.reused += 1
                progress.advance(task)
                continue
            try:
                compressed = compress(spec, trained, plan.dataset, plan.seed)
            except AdvisorError:
                raise  # bad input (a plan that does not fit): stop with the message
            except Exception as error:
                _save(store, "pareto_variants", _variant_row(plan, spec) | _failure(error))
                summary.failed.append(f"{spec.label}: {_one_line(error)}")
                progress.advance(task)
                continue
            if spec.key not in done_variants:
                _save(store, "pareto_variants", _measure_variant(plan, spec, compressed))
            for key in missing:
                row = dict(zip(_LATENCY_KEY, key)) | env
                row |= _measure_latency(plan, compressed, key[3], key[5])
                if row["status"] == "failed":
                    summary.failed.append(f"{spec.label} {key[3]} {key[5]} thread(s): {row['error']}")
                _save(store, "pareto_latency", row)
            summary.measured += 1
            progress.advance(task)
    return summary


def _variant_row(plan: ParetoPlan, spec: VariantSpec) -> dict:
    return {"model": plan.model_label, "dataset": plan.dataset.name, "metric": plan.metric, "variant": spec.key,
            "label": spec.label, "technique": spec.technique, "strength": spec.strength, "plan": spec.plan,
            "finetune": spec.finetune}


def _measure_variant(plan: ParetoPlan, spec: VariantSpec, compressed: Compressed) -> dict:
    """Accuracy on the held-out images (or the user's score) and the stored size."""
    if plan.evaluate is not None:
        score = plan.evaluate(compressed.module)
    else:
        score = accuracy(compressed.module, plan.dataset.x_test, plan.dataset.y_test, compressed.input_dtype)
    size = stored_size(compressed.module)
    return _variant_row(plan, spec) | {
        "accuracy": score, "test_images": len(plan.dataset.y_test), "stored_bytes": size.stored_bytes,
        "dense_bytes": size.dense_bytes, "parameters": size.parameters,
        "nonzero_parameters": size.nonzero_parameters, "notes": json.dumps(compressed.notes), "status": "ok"}


def _measure_latency(plan: ParetoPlan, compressed: Compressed, backend: str, threads: int) -> dict:
    example = torch.zeros(plan.dataset.input_shape(1), dtype=compressed.input_dtype)
    try:
        if backend == "torch":
            return _torch_latency(compressed.module, example, threads, plan.policy)
        return _tvm_latency(plan, compressed, example, threads)
    except KeyboardInterrupt:
        raise
    except _Unavailable as reason:
        return {"status": "unavailable", "error": str(reason)[:500]}
    except Exception as error:  # a failed measurement is recorded; the run goes on
        if stderr.is_terminal:
            stderr.print(traceback.format_exc(limit=3), markup=False)
        return _failure(error)


class _Unavailable(Exception):
    """The backend cannot run this variant at all (not a measurement failure)."""


def _torch_latency(module: torch.nn.Module, example: torch.Tensor, threads: int, policy: TimingPolicy) -> dict:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            timing = time_callable(lambda: module(example), policy)
        peak = torch_peak_bytes(module, example)
    finally:
        torch.set_num_threads(previous)
    return {"status": "ok", **timing.to_dict(), "peak_bytes": peak, "peak_method": "torch-profiler-allocations"}


_tvm_cache: dict[int, tuple] = {}  # id(compressed) -> (vm, args, error, tuning seconds, rss growth)


def _tvm_latency(plan: ParetoPlan, compressed: Compressed, example: torch.Tensor, threads: int) -> dict:
    import tvm

    vm, args, error, seconds, rss = _tvm_build(plan, compressed, example)
    set_tvm_threads(threads)
    device = tvm.cpu(0)
    steady_allocator()
    for _ in range(plan.policy.warmup):
        vm["main"](*args)
    number = calls_per_sample(lambda: vm["main"](*args), plan.policy, device.sync)
    samples = vm.time_evaluator("main", device, number=number, repeat=plan.policy.repeats)(*args).results
    timing = Timing.from_samples([s * 1e3 for s in samples], number)
    return {"status": "ok", **timing.to_dict(), "peak_bytes": rss, "peak_method": "rss-growth-first-calls",
            "max_abs_err": error, "tuning_seconds": seconds}


def _tvm_build(plan: ParetoPlan, compressed: Compressed, example: torch.Tensor) -> tuple:
    key = id(compressed)
    if key in _tvm_cache and _tvm_cache[key][0] is compressed:
        return _tvm_cache[key][1]
    import numpy as np
    import tvm
    from tvm import relax

    from advisor.relax_import import to_relax
    from advisor.tuning import ScheduleCache, compile_tuned, tune

    try:
        mod, weights = to_relax(compressed.module, example)
    except AdvisorError as error:
        if example.dtype == torch.float16:  # seen with TVM 0.27: its importer fixes conv out_dtype to float32
            raise _Unavailable("TVM cannot import a float16 PyTorch model (its importer makes convolutions "
                               "output float32, which then meets float16 tensors)") from None
        raise _Unavailable(str(error)) from None
    cache = ScheduleCache(plan.tuning_root, plan.target)
    outcome = tune(mod, cache, plan.trials)
    device = tvm.cpu(0)
    vm = relax.VirtualMachine(compile_tuned(mod, cache), device)
    args = [tvm.runtime.tensor(example.numpy(), device)] + [tvm.runtime.tensor(w, device) for w in weights]
    result = {}
    rss = rss_growth_bytes(lambda: result.setdefault("out", vm["main"](*args)))
    output = result["out"]
    output = output[0] if not hasattr(output, "numpy") else output
    with torch.inference_mode():
        reference = compressed.module(example)
    error = float(np.abs(output.numpy().astype(np.float32) - reference.float().numpy()).max())
    built = (vm, args, error, outcome.seconds, rss)
    _tvm_cache.clear()  # one variant at a time: free the previous one's module
    _tvm_cache[key] = (compressed, built)
    return built


def set_tvm_threads(threads: int) -> None:
    """Resize TVM's thread pool in this process, and check that it took.

    The pool can shrink below, but never grow past, the size it started with (TVM_NUM_THREADS)."""
    import tvm

    tvm.get_global_func("runtime.config_threadpool")(1, threads)
    actual = tvm.get_global_func("runtime.NumThreads")()
    if actual != threads:
        raise RuntimeError(f"TVM's thread pool runs {actual} threads, not {threads} (set TVM_NUM_THREADS="
                           f"{threads} or more before TVM starts)")


def _failure(error: Exception) -> dict:
    return {"status": "failed", "error": _one_line(error)}


def _one_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return (lines[-1] if lines else type(error).__name__)[:500]


def results_frame(store: ResultStore, model_label: str, dataset: str, metric: str,
                  plan: ParetoPlan | None = None) -> pd.DataFrame:
    """One row per variant, backend and thread count: accuracy, memory and latency together."""
    open_tables(store)
    variants = pd.read_sql_query("SELECT * FROM pareto_variants WHERE model = ? AND dataset = ? AND metric = ?",
                                 store.connection, params=(model_label, dataset, metric))
    latency = pd.read_sql_query("SELECT * FROM pareto_latency WHERE model = ? AND dataset = ?",
                                store.connection, params=(model_label, dataset))
    if plan is not None:  # only what this run asked for
        variants = variants[variants.variant.isin([s.key for s in plan.specs])]
        keys = {k for s in plan.specs for k in plan.latency_keys(s)}
        latency = latency[[tuple(r) in keys for r in latency[list(_LATENCY_KEY)].itertuples(index=False)]]
    keep = ["variant", "backend", "target", "threads", "trials", "status", "error", "median_ms", "p25_ms",
            "p75_ms", "std_ms", "repeats", "peak_bytes", "peak_method", "max_abs_err"]
    merged = variants.drop(columns=["id", "measured_at"]).rename(columns={"status": "variant_status",
                                                                          "error": "variant_error"})
    merged = merged.merge(latency[keep].rename(columns={"status": "latency_status", "error": "latency_error"}),
                          on="variant", how="left")
    return merged.sort_values(["backend", "threads", "technique", "strength"]).reset_index(drop=True)


def pareto_front(costs: list[float], scores: list[float]) -> list[int]:
    """Indexes of the points no other point beats (lower or equal cost and higher or equal score, one
    strictly), in order of cost."""
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -scores[i]))
    front, best = [], float("-inf")
    for index in order:
        if scores[index] > best:
            front.append(index)
            best = scores[index]
    return front


def default_threads() -> list[int]:
    count = os.cpu_count() or 1
    return [1] if count == 1 else [1, count]
