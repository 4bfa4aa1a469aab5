"""The `advisor` command line."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from advisor.errors import AdvisorError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Which channel counts does your hardware like? Sweep, model, prune, prove.")
out = Console(width=max(100, Console().width))
err = Console(stderr=True)

MODEL = typer.Option("resnet18-cifar", "--model", "-m",
                     help="Built-in name, path/file.py:factory (with --input), or a .pt2 program.")
INPUT = typer.Option(None, "--input", help="Input shape, e.g. 1x3x224x224 (built-ins have a default).")
DB = typer.Option(Path("advisor.db"), "--db", help="Results database (SQLite).")


def _threads(threads: Optional[int]) -> int:
    """Use the same thread count for TVM's pool and PyTorch's OpenMP, set before either starts."""
    count = threads or os.cpu_count() or 1
    if count < 1:
        raise AdvisorError("--threads must be at least 1")
    os.environ["TVM_NUM_THREADS"] = str(count)
    import torch

    torch.set_num_threads(count)
    return count


@app.command()
def layers(model: str = MODEL, input: Optional[str] = INPUT) -> None:
    """List the model's convolutions in execution order."""
    from advisor.layers import conv_layers
    from advisor.model_source import load_model

    loaded = load_model(model, input)
    table = Table(title=f"{loaded.label}, input {'x'.join(map(str, loaded.input_shape))}")
    for column in ("name", "module", "input", "kernel", "stride", "groups", "in", "out", "GFLOP"):
        table.add_column(column, justify="right" if column in ("in", "out", "groups", "GFLOP") else "left")
    for layer in conv_layers(loaded):
        table.add_row(layer.name, layer.module_path, "x".join(map(str, layer.input_shape)),
                      "x".join(map(str, layer.kernel)), "x".join(map(str, layer.stride)), str(layer.groups),
                      str(layer.in_channels), str(layer.out_channels), f"{layer.flops() / 1e9:.3f}")
    out.print(table)


@app.command()
def sweep(
    layer: str = typer.Option(..., "--layer", "-l", help="conv3, or a module path such as layer1.0.conv2."),
    channels: str = typer.Option("32..256", "--channels", "-c", help="START..STOP[:STEP] (step 32) or 32,48,64."),
    model: str = MODEL,
    input: Optional[str] = INPUT,
    backend: str = typer.Option("tvm", "--backend", "-b", help="tvm (MetaSchedule-tuned) or torch (eager)."),
    target: str = typer.Option("llvm", "--target", "-t", help="llvm, cuda, opencl, a TVM tag, or a JSON dict."),
    trials: int = typer.Option(32, "--trials", help="MetaSchedule trials per channel count (tvm)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Threads for TVM and PyTorch (default: all)."),
    db: Path = DB,
    tuning_dir: Path = typer.Option(Path("tuning_logs"), "--tuning-dir", help="Tuned-schedule cache."),
    cost_model: str = typer.Option("xgb", "--cost-model", help="MetaSchedule cost model: xgb or random."),
    repeats: int = typer.Option(15, "--repeats", help="Timing samples per point."),
    strategy: str = typer.Option("exhaustive", "--strategy", "-s",
                                 help="exhaustive (every count) or active (few counts, fitted; range step 1)."),
    accuracy: float = typer.Option(0.95, "--accuracy",
                                   help="active: stop when this share of predictions has settled (moves < 10%)."),
    max_points: Optional[int] = typer.Option(None, "--max-points", help="active: measure at most this many."),
    second_opinion: bool = typer.Option(True, "--second-opinion/--no-second-opinion",
                                        help="Measure traps and outliers again and keep the faster run."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 or float16 (weights, input and output)."),
    rpc: Optional[str] = typer.Option(None, "--rpc", help="Measure and tune on a TVM RPC server HOST:PORT."),
    tracker: Optional[str] = typer.Option(None, "--tracker", help="TVM RPC tracker HOST:PORT (with --key)."),
    key: Optional[str] = typer.Option(None, "--key", help="Device key of the tracker's board pool."),
) -> None:
    """Measure a layer's latency at each channel count; resumable, one row per point.

    With --strategy active a range without a step means every count (step 1), but only the counts
    the model needs are measured."""
    from advisor.channels import parse_channels
    from advisor.layers import conv_layers, find_layer
    from advisor.model_source import load_model
    from advisor.store import ResultStore
    from advisor.sweep import BACKENDS, SweepPlan, SweepSummary, run_sweep
    from advisor.targets import parse_target
    from advisor.timing import TimingPolicy

    if backend not in BACKENDS:
        raise AdvisorError(f"unknown backend {backend!r}: use {' or '.join(BACKENDS)}")
    if trials < 0:
        raise AdvisorError("--trials must be 0 or more")
    if repeats < 2:
        raise AdvisorError("--repeats must be at least 2 (a spread needs two samples)")
    if cost_model not in ("xgb", "random"):
        raise AdvisorError(f"unknown cost model {cost_model!r}: use xgb or random")
    if strategy not in ("exhaustive", "active"):
        raise AdvisorError(f"unknown strategy {strategy!r}: use exhaustive or active")
    if not 0 < accuracy <= 1:
        raise AdvisorError(f"--accuracy must be a share between 0 and 1, not {accuracy}")
    if max_points is not None and max_points < 4:
        raise AdvisorError("--max-points must be at least 4 (a model needs points to fit)")
    counts = parse_channels(channels, default_step=1 if strategy == "active" else 32)
    thread_count = _threads(threads)
    spec = parse_target(target, thread_count)
    if backend == "torch" and spec.kind == "opencl":
        raise AdvisorError("PyTorch has no OpenCL backend: use --backend tvm for opencl")
    from advisor.backends import DTYPES
    from advisor.rpc import Remote

    if dtype not in DTYPES:
        raise AdvisorError(f"unknown dtype {dtype!r}: use {' or '.join(DTYPES)}")
    remote = Remote.from_options(rpc, tracker, key)
    if remote is not None:
        if backend != "tvm":
            raise AdvisorError("--rpc/--tracker measure TVM-compiled layers: use --backend tvm")
        remote.check()
    elif not spec.can_run_here():
        raise AdvisorError(f"target {spec.name} has no device on this machine; measure there with "
                           "`advisor bundle` + `advisor measure`, or over RPC")
    with ResultStore(db) as store:  # opened first: a bad database fails before any work
        loaded = load_model(model, input)
        chosen = find_layer(conv_layers(loaded), layer)
        for count in counts:
            chosen.with_out_channels(count)  # reject impossible counts before measuring any
        plan = SweepPlan(loaded.label, loaded.input_shape, chosen, counts, backend, spec, trials, thread_count,
                         str(tuning_dir), cost_model, dtype=dtype, remote=remote,
                         policy=TimingPolicy(repeats=repeats))
        if strategy == "active":
            from advisor.active import run_active_sweep

            outcome = run_active_sweep(plan, store, accuracy=accuracy, max_points=max_points,
                                       second_opinions=second_opinion)
            summary = SweepSummary(measured=outcome.newly_measured, failed=outcome.failed)
            summary.skipped = [c for c in outcome.measured if c not in outcome.newly_measured]
        else:
            summary = run_sweep(plan, store)
            if second_opinion:
                from advisor.second_opinion import confirm

                confirm(plan, store)
        frame = store.frame(model=loaded.label, layer=chosen.name, backend=backend, target=spec.name)
    shown = frame[frame.channels.isin(counts)]
    _print_table(shown[shown.trials == plan.fixed_columns()["trials"]])
    err.print(f"{len(summary.measured)} measured, {len(summary.skipped)} reused from {db}, "
              f"{len(summary.failed)} failed")
    if strategy == "active":
        state = "settled" if outcome.reached else "NOT settled (point limit or range exhausted)"
        err.print(f"active: {len(outcome.measured)} of {len(counts)} counts measured in {outcome.seconds:.1f} s; "
                  f"model {state} at {accuracy:.0%}; cross-validated share within 10% on the measured counts: "
                  f"{outcome.cv_within:.0%}")
    if summary.failed:
        raise typer.Exit(1)


def _print_table(frame) -> None:
    """One table per series (model, layer, backend, target, ...), traps and failures noted."""
    from advisor.plotting import SERIES, curve, series_label
    from advisor.steps import find_traps

    for values, rows in frame.groupby(SERIES, sort=True):
        key = dict(zip(SERIES, values))
        traps = {t.channels: t for t in find_traps(curve(rows[rows.status == "ok"]))}
        table = Table(title=f"{key['model']} {key['layer']}: {series_label(key)}")
        for column in ("channels", "median ms", "IQR ms", "note"):
            table.add_column(column, justify="left" if column == "note" else "right")
        for row in rows.sort_values("channels").itertuples():
            note = ["widened"] if row.widened else []
            if row.channels in traps:
                trap = traps[row.channels]
                note.append(f"[red]trap: {trap.faster_channels} ch run {trap.slowdown:.2f}x faster[/red]")
            if row.status != "ok":
                note.append(f"[red]failed: {row.error}[/red]")
                table.add_row(str(row.channels), "", "", ", ".join(note))
                continue
            table.add_row(str(row.channels), f"{row.median_ms:.4f}", f"{row.p25_ms:.4f}-{row.p75_ms:.4f}",
                          ", ".join(note))
        out.print(table)


@app.command()
def show(
    db: Path = DB,
    format: str = typer.Option("table", "--format", "-f", help="table, csv or json."),
    layer: Optional[str] = typer.Option(None, "--layer"),
    model: Optional[str] = typer.Option(None, "--model"),
) -> None:
    """Print stored results."""
    from advisor.store import ResultStore

    if format not in ("table", "csv", "json"):
        raise AdvisorError(f"unknown format {format!r}: use table, csv or json")
    _require_file(db)
    with ResultStore(db) as store:
        frame = store.frame(layer=layer, model=model)
    if format == "csv":
        sys.stdout.write(frame.to_csv(index=False))
    elif format == "json":
        sys.stdout.write(frame.to_json(orient="records", indent=1) + "\n")
    else:
        _print_table(frame)


@app.command()
def plot(
    layer: str = typer.Option(..., "--layer", "-l"),
    db: Path = DB,
    model: Optional[str] = typer.Option(None, "--model"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="HTML file (default out/<layer>.html)."),
) -> None:
    """Write a plotly page of latency against channels, with the traps marked."""
    from advisor.plotting import write_latency_page
    from advisor.store import ResultStore

    _require_file(db)
    with ResultStore(db) as store:
        frame = store.frame(layer=layer, model=model)
    if frame.empty or not (frame.status == "ok").any():
        raise AdvisorError(f"no measured points for layer {layer!r} in {db}")
    models = ", ".join(sorted(frame.model.unique()))
    path = write_latency_page(frame, f"{models} {layer}: latency against output channels",
                              output or Path("out") / f"{layer}.html")
    err.print(f"wrote {path}")


def _require_file(path: Path) -> None:
    if not path.exists():
        raise AdvisorError(f"{path} does not exist: run `advisor sweep` first")


def main() -> None:
    # MetaSchedule's worker processes inherit this: torch.export's FutureWarnings are noise there
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        app()
    except AdvisorError as error:
        err.print(f"[red]error:[/red] {escape(str(error))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted: every finished point is saved; run the same command to resume")
        sys.exit(130)


# Command modules: each registers its commands on `app` when imported.
from advisor import cli_model  # noqa: E402,F401
from advisor import cli_device  # noqa: E402,F401
from advisor import cli_pareto  # noqa: E402,F401
