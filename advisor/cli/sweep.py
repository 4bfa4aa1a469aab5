"""Commands that measure and show one layer: layers, sweep, show, plot."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from advisor.cli.app import DB, INPUT, MODEL, THREADS, TUNING_DIR, app, err, out, progress, require_file
from advisor.errors import AdvisorError

STRATEGIES = ("exhaustive", "active")


@app.command()
def layers(model: str = MODEL, input: Optional[str] = INPUT) -> None:
    """List the model's convolutions in execution order."""
    from advisor.model.layers import conv_layers
    from advisor.model.loading import load_model
    from advisor.report.tables import layers_table

    loaded = load_model(model, input)
    out.print(layers_table(loaded.label, loaded.input_shape, conv_layers(loaded)))


@app.command()
def sweep(
    layer: str = typer.Option(..., "--layer", "-l", help="conv3, or a module path such as layer1.0.conv2."),
    channels: str = typer.Option("32..256", "--channels", "-c",
                                 help="START..STOP[:STEP] (without a step: every count) or 32,48,64."),
    model: str = MODEL,
    input: Optional[str] = INPUT,
    backend: str = typer.Option("tvm", "--backend", "-b", help="tvm (MetaSchedule-tuned) or torch (eager)."),
    target: str = typer.Option("llvm", "--target", "-t", help="llvm, cuda, opencl, a TVM tag, or a JSON dict."),
    trials: int = typer.Option(32, "--trials", help="MetaSchedule trial cap per count (tvm); tuning stops earlier "
                               "once the best improves by under 2% over the last max(16, cap/4) trials."),
    threads: Optional[int] = THREADS,
    db: Path = DB,
    tuning_dir: Path = TUNING_DIR,
    cost_model: str = typer.Option("xgb", "--cost-model", help="MetaSchedule cost model: xgb or random."),
    repeats: int = typer.Option(15, "--repeats", help="Timing samples per point."),
    strategy: str = typer.Option("active", "--strategy", "-s",
                                 help="active (measure the counts the latency model needs, predict the rest) "
                                      "or exhaustive (measure every count asked)."),
    accuracy: float = typer.Option(0.95, "--accuracy",
                                   help="active: stop when this share of predictions has settled (moves < 10%)."),
    max_points: Optional[int] = typer.Option(None, "--max-points", help="active: measure at most this many."),
    second_opinion: bool = typer.Option(True, "--second-opinion/--no-second-opinion",
                                        help="Measure traps and outliers again and keep the faster run; tuned: "
                                             "replay neighbours' schedules first, and re-tune traps."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 or float16 (weights, input and output)."),
    rpc: Optional[str] = typer.Option(None, "--rpc", help="Measure and tune on a TVM RPC server HOST:PORT."),
    tracker: Optional[str] = typer.Option(None, "--tracker", help="TVM RPC tracker HOST:PORT (with --key)."),
    key: Optional[str] = typer.Option(None, "--key", help="Device key of the tracker's board pool."),
    board_timeout: float = typer.Option(600.0, "--board-timeout",
                                        help="Seconds a board may take for one point before it counts as hung."),
) -> None:
    """Learn a layer's latency at every channel count asked; resumable, one row per point.

    A range without a step means every count. By default (active) the counts the latency model
    needs are measured and the rest predicted (stored as predicted rows); exhaustive measures all."""
    from advisor.board.rpc import Remote
    from advisor.board.timing import TimingPolicy
    from advisor.cli.options import parse_channels
    from advisor.compile.targets import parse_target
    from advisor.measure.checks import check_measuring
    from advisor.measure.sweep import SweepSpec, SweepSummary, run_sweep
    from advisor.measure.threads import use_threads
    from advisor.model.layers import conv_layers, find_layer
    from advisor.model.loading import load_model
    from advisor.report.tables import sweep_tables
    from advisor.store.results import ResultStore

    checks = []
    if strategy not in STRATEGIES:
        raise AdvisorError(f"unknown strategy {strategy!r}: use exhaustive or active")
    if not 0 < accuracy <= 1:
        raise AdvisorError(f"--accuracy must be a share between 0 and 1, not {accuracy}")
    if max_points is not None and max_points < 4:
        raise AdvisorError("--max-points must be at least 4 (a model needs points to fit)")
    counts = parse_channels(channels, default_step=1)
    check_measuring(backend=backend, trials=trials, repeats=repeats, cost_model=cost_model, dtype=dtype)
    thread_count = use_threads(threads)
    spec_target = parse_target(target, thread_count)
    if board_timeout <= 0:
        raise AdvisorError(f"--board-timeout must be positive, not {board_timeout:g}")
    remote = Remote.from_options(rpc, tracker, key, session_timeout_s=board_timeout)
    with ResultStore(db) as store:  # opened first: a bad database fails before any work
        loaded = load_model(model, input)
        chosen = find_layer(conv_layers(loaded), layer)
        spec = SweepSpec(loaded.label, loaded.input_shape, chosen, counts, backend, spec_target, trials,
                         thread_count, str(tuning_dir), cost_model, dtype=dtype, remote=remote,
                         policy=TimingPolicy(repeats=repeats))
        if remote is not None:
            remote.check()
        elif not spec_target.can_run_here():
            raise AdvisorError(f"target {spec_target.name} has no device on this machine; measure there with "
                               "`advisor bundle` + `advisor measure`, or over RPC")
        if strategy == "active":
            from advisor.learn.active import run_active_sweep

            outcome = run_active_sweep(spec, store, accuracy=accuracy, max_points=max_points,
                                       second_opinions=second_opinion, progress=progress())
            summary = SweepSummary(measured=outcome.newly_measured, failed=outcome.failed)
            summary.skipped = [c for c in outcome.measured if c not in outcome.newly_measured]
            checks = outcome.trap_checks
        else:
            summary = run_sweep(spec, store, progress())
            if second_opinion:
                from advisor.learn.second_look import can_look_again, check_traps
                from advisor.learn.second_opinion import confirm

                tuned = can_look_again(spec)
                confirm(spec, store, traps=not tuned)  # a tuned trap gets its own second look
                checks = check_traps(spec, store, progress=progress()) if tuned else []
        frame = store.frame(**spec.fixed_columns())
    for table in sweep_tables(frame[frame.channels.isin(counts)]):
        out.print(table)
    err.print(f"{len(summary.measured)} measured, {len(summary.skipped)} reused from {db}, "
              f"{len(summary.failed)} failed")
    if strategy == "active" and outcome.predicted:
        state = "settled" if outcome.reached else "NOT settled (point limit or range exhausted)"
        err.print(f"active: {len(outcome.measured)} of {len(counts)} counts measured in {outcome.seconds:.1f} s, "
                  f"{len(outcome.predicted)} predicted; model {state} at {accuracy:.0%}; cross-validated share "
                  f"within 10% on the measured counts: {outcome.cv_within:.0%}")
    elif strategy == "active":
        err.print(f"active: every one of the {len(counts)} counts measured, none left to predict")
    if second_opinion and checks:
        from advisor.report.tables import trap_check_line

        err.print(trap_check_line(checks))
    if summary.failed:
        raise typer.Exit(1)


@app.command()
def show(
    db: Path = DB,
    format: str = typer.Option("table", "--format", "-f", help="table, csv or json."),
    layer: Optional[str] = typer.Option(None, "--layer"),
    model: Optional[str] = typer.Option(None, "--model"),
) -> None:
    """Print stored results."""
    from advisor.report.tables import sweep_tables
    from advisor.store.results import ResultStore

    if format not in ("table", "csv", "json"):
        raise AdvisorError(f"unknown format {format!r}: use table, csv or json")
    require_file(db)
    with ResultStore(db) as store:
        frame = store.frame(layer=layer, model=model)
    if format == "csv":
        sys.stdout.write(frame.to_csv(index=False))
    elif format == "json":
        sys.stdout.write(frame.to_json(orient="records", indent=1) + "\n")
    else:
        for table in sweep_tables(frame):
            out.print(table)


@app.command()
def plot(
    layer: str = typer.Option(..., "--layer", "-l"),
    db: Path = DB,
    model: Optional[str] = typer.Option(None, "--model"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="HTML file (default out/<layer>.html)."),
) -> None:
    """Write a plotly page of latency against channels, with the traps marked."""
    from advisor.report.latency_page import write_latency_page
    from advisor.store.results import ResultStore

    require_file(db)
    with ResultStore(db) as store:
        frame = store.frame(layer=layer, model=model)
    if frame.empty or not (frame.status == "ok").any():
        raise AdvisorError(f"no measured points for layer {layer!r} in {db}")
    models = ", ".join(sorted(frame.model.unique()))
    path = write_latency_page(frame, f"{models} {layer}: latency against output channels",
                              output or Path("out") / f"{layer}.html")
    err.print(f"wrote {path}")
