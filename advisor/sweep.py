"""Sweep one layer's output channels: measure each count not yet stored, save each as it lands."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from advisor.backends import measure_torch, measure_tvm
from advisor.environment import environment
from advisor.layers import ConvLayer
from advisor.store import KEY_COLUMNS, ResultStore
from advisor.targets import TargetSpec
from advisor.timing import TimingPolicy
from advisor.tuning import ScheduleCache

BACKENDS = ("tvm", "torch")
stderr = Console(stderr=True)


@dataclass
class SweepPlan:
    model_label: str
    input_shape: tuple[int, ...]
    layer: ConvLayer
    channels: list[int]
    backend: str
    target: TargetSpec
    trials: int
    threads: int
    tuning_root: str = "tuning_logs"
    cost_model: str = "xgb"
    dtype: str = "float32"
    remote: object = None  # advisor.rpc.Remote: measure (and tune) on a board over TVM's RPC
    policy: TimingPolicy = field(default_factory=TimingPolicy)

    def key(self, channels: int) -> tuple:
        values = self.fixed_columns() | {"channels": channels}
        return tuple(values[column] for column in KEY_COLUMNS)

    def fixed_columns(self) -> dict:
        return {
            "model": self.model_label, "input_shape": "x".join(map(str, self.input_shape)),
            "layer": self.layer.name, "backend": self.backend, "target": self.target.name,
            "dtype": self.dtype, "trials": self.trials if self.backend == "tvm" else 0,
            "threads": self.threads,
        }


@dataclass
class SweepSummary:
    measured: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)


def series_frame(plan: SweepPlan, store: ResultStore) -> "pd.DataFrame":
    """The stored successful points of this plan's series, at the plan's counts."""
    from advisor.cost_model import usable

    rows = usable(store.frame(**plan.fixed_columns()))
    return rows[rows.channels.isin(plan.channels)]


def geometry_columns(layer: ConvLayer, original_channels: int) -> dict:
    (out_h, out_w) = layer.output_hw()
    n, c, h, w = layer.input_shape
    return {
        "module_path": layer.module_path, "channels": layer.out_channels,
        "original_channels": original_channels, "widened": int(layer.out_channels > original_channels),
        "batch": n, "in_channels": c, "in_h": h, "in_w": w, "out_h": out_h, "out_w": out_w,
        "kernel_h": layer.kernel[0], "kernel_w": layer.kernel[1], "stride_h": layer.stride[0],
        "stride_w": layer.stride[1], "pad_h": layer.padding[0], "pad_w": layer.padding[1],
        "dilation_h": layer.dilation[0], "dilation_w": layer.dilation[1], "groups": layer.groups,
        "bias": int(layer.bias), "flops": layer.flops(),
    }


def measure_point(plan: SweepPlan, variant: ConvLayer) -> dict:
    if plan.backend == "tvm":
        cache = ScheduleCache(plan.tuning_root, plan.target)
        return measure_tvm(variant, plan.target, plan.trials, cache, plan.policy, plan.cost_model, plan.dtype,
                           remote=plan.remote)
    return measure_torch(variant, "cuda" if plan.target.kind == "cuda" else "cpu", plan.policy, plan.dtype)


def run_sweep(plan: SweepPlan, store: ResultStore, show_progress: bool = True) -> SweepSummary:
    summary = SweepSummary()
    done = store.measured_keys(**{k: v for k, v in plan.fixed_columns().items()})
    todo = [count for count in plan.channels if plan.key(count) not in done]
    summary.skipped = [count for count in plan.channels if plan.key(count) in done]
    if summary.skipped and show_progress:
        stderr.print(f"resuming: {len(summary.skipped)} of {len(plan.channels)} points already in {store.path}")
    env = environment(plan.target.kind, plan.threads)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("elapsed"),
               TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn()]
    with Progress(*columns, console=stderr, disable=not show_progress) as progress:
        task = progress.add_task(f"{plan.layer.name} {plan.backend}/{plan.target.name}", total=len(todo))
        for count in todo:
            progress.update(task, description=f"{plan.layer.name} {plan.backend}/{plan.target.name} c={count}")
            variant = plan.layer.with_out_channels(count)
            row = {**plan.fixed_columns(), **geometry_columns(variant, plan.layer.out_channels),
                   "target_config": plan.target.config, **env}
            try:
                row |= {"status": "ok", **measure_point(plan, variant)}
                summary.measured.append(count)
            except KeyboardInterrupt:
                raise
            except Exception as error:  # a failed point is recorded, the sweep goes on
                message = str(error).strip().splitlines()
                row |= {"status": "failed", "error": (message[-1] if message else type(error).__name__)[:500]}
                summary.failed[count] = row["error"]
                stderr.print(f"[red]c={count} failed:[/red] {row['error']}")
                if stderr.is_terminal:
                    stderr.print(traceback.format_exc(limit=3), markup=False)
            store.save(row)
            progress.advance(task)
            if show_progress and not stderr.is_terminal:  # no live bar in a log: a line per point
                _log_point(row, progress.tasks[0])
    return summary


def _log_point(row: dict, task) -> None:
    result = f"{row['median_ms']:.4f} ms" if row["status"] == "ok" else "failed"
    left = f", about {task.time_remaining / 60:.1f} min left" if task.time_remaining else ""
    stderr.print(f"{row['layer']} {row['backend']}/{row['target']} c={row['channels']}: {result} "
                 f"({task.completed:.0f}/{task.total:.0f} done{left})", soft_wrap=True, highlight=False)
