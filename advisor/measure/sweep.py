"""Sweep one layer's output channels: measure each count not yet stored, save each as it lands."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from advisor.board.timing import TimingPolicy
from advisor.compile.targets import TargetSpec
from advisor.errors import AdvisorError, one_line
from advisor.measure.backends import get_backend
from advisor.measure.checks import check_measuring
from advisor.measure.environment import environment
from advisor.model.layers import ConvLayer
from advisor.progress import SILENT, Progress
from advisor.store.results import ResultStore, usable
from advisor.store.schema import KEY_COLUMNS

log = logging.getLogger(__name__)


@dataclass
class SweepSpec:
    """What a sweep measures: one layer of one model at some channel counts, on one backend and
    target, tuned and timed a given way. Checks its own values."""

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
    remote: object = None  # advisor.board.rpc.Remote: measure (and tune) on a board over TVM's RPC
    policy: TimingPolicy = field(default_factory=TimingPolicy)

    def __post_init__(self) -> None:
        backend = get_backend(self.backend)
        check_measuring(trials=self.trials, repeats=self.policy.repeats, cost_model=self.cost_model,
                        dtype=self.dtype)
        if self.threads < 1:
            raise AdvisorError(f"--threads must be at least 1, not {self.threads}")
        backend.check_target(self.target)
        if self.remote is not None and not backend.tuned:
            raise AdvisorError("--rpc/--tracker measure TVM-compiled layers: use --backend tvm")
        for count in self.channels:
            self.layer.with_out_channels(count)  # reject impossible counts before measuring any

    def key(self, channels: int) -> tuple:
        values = self.fixed_columns() | {"channels": channels}
        return tuple(values[column] for column in KEY_COLUMNS)

    def fixed_columns(self) -> dict:
        return {
            "model": self.model_label, "input_shape": "x".join(map(str, self.input_shape)),
            "layer": self.layer.name, "backend": self.backend, "target": self.target.name,
            "dtype": self.dtype, "trials": get_backend(self.backend).trials_key(self.trials),
            "threads": self.threads,
        }


@dataclass
class SweepSummary:
    measured: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)


def series_frame(spec: SweepSpec, store: ResultStore) -> "pd.DataFrame":
    """The stored successful points of this spec's series, at the spec's counts."""
    rows = usable(store.frame(**spec.fixed_columns()))
    return rows[rows.channels.isin(spec.channels)]


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


def measure_point(spec: SweepSpec, channels: int) -> dict:
    """Timing columns of the layer at `channels`, on the spec's backend (with how its tuning
    stopped, for a tuned one); raises on failure."""
    backend = get_backend(spec.backend)
    variant = spec.layer.with_out_channels(channels)
    columns = backend.measure_layer(spec, variant)
    if backend.tuned and "tuning_stop" not in columns:
        columns |= tuning_columns(spec, variant)
    return columns


def tuning_columns(spec: SweepSpec, variant: ConvLayer) -> dict:
    """The trials the variant's workload holds and why its tuning stopped, from the schedule cache."""
    from advisor.compile.build import tuning_state
    from advisor.compile.tuning import ScheduleCache

    state = tuning_state(variant, spec.trials, ScheduleCache(spec.tuning_root, spec.target), spec.dtype)
    return {"trials_spent": state.trials_spent, "tuning_stop": state.stopped}


def run_sweep(spec: SweepSpec, store: ResultStore, progress: Progress = SILENT) -> SweepSummary:
    """Measure every count of the spec not yet stored, saving each point (or its failure) as it lands."""
    summary = SweepSummary()
    done = store.measured_keys(**spec.fixed_columns())
    todo = [count for count in spec.channels if spec.key(count) not in done]
    summary.skipped = [count for count in spec.channels if spec.key(count) in done]
    if summary.skipped and progress is not SILENT:
        log.info("resuming: %d of %d points already in %s", len(summary.skipped), len(spec.channels), store.path)
    if spec.remote is not None:  # on boards: compiled here, measured there, a pool's boards at once
        from advisor.measure.pool import run_remote_sweep

        remote = run_remote_sweep(spec, store, todo, progress)
        remote.skipped = summary.skipped
        return remote
    env = environment(spec.target.kind, spec.threads)
    name = f"{spec.layer.name} {spec.backend}/{spec.target.name}"
    with progress.task(name, len(todo)) as task:
        for count in todo:
            task.describe(f"{name} c={count}")
            variant = spec.layer.with_out_channels(count)
            row = {**spec.fixed_columns(), **geometry_columns(variant, spec.layer.out_channels),
                   "target_config": spec.target.config, **env}
            try:
                row |= {"status": "ok", **measure_point(spec, count)}
                summary.measured.append(count)
            except KeyboardInterrupt:
                raise
            except Exception as error:  # a failed point is recorded, the sweep goes on
                row |= {"status": "failed", "error": one_line(error)}
                summary.failed[count] = row["error"]
                log.warning("c=%d failed: %s", count, row["error"], exc_info=log.isEnabledFor(logging.DEBUG))
            store.save(row)
            result = f"{row['median_ms']:.4f} ms" if row["status"] == "ok" else "failed"
            task.advance(f"{name} c={count}: {result}")
    return summary
