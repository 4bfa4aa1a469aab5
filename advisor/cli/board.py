"""Commands for measuring apart from compiling: bundle (here), measure (on the board), import."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from advisor.cli.app import DB, INPUT, MODEL, TUNING_DIR, app, err
from advisor.errors import AdvisorError


@app.command()
def bundle(
    output: Path = typer.Argument(..., help="Folder to write (empty or new)."),
    layer: str = typer.Option(..., "--layer", "-l", help="conv3, or a module path such as layer1.0.conv2."),
    channels: str = typer.Option("32..256", "--channels", "-c", help="START..STOP[:STEP] (step 32) or 32,48,64."),
    model: str = MODEL,
    input: Optional[str] = INPUT,
    target: str = typer.Option("llvm", "--target", "-t", help="llvm, cuda, opencl, a TVM tag, or a JSON dict."),
    trials: int = typer.Option(32, "--trials", help="MetaSchedule trials per channel count (0: default schedules)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Threads recorded with the points (default: all)."),
    tuning_dir: Path = TUNING_DIR,
    cost_model: str = typer.Option("xgb", "--cost-model", help="MetaSchedule cost model: xgb or random."),
    repeats: int = typer.Option(15, "--repeats", help="Timing samples per point, on the board."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 or float16."),
    cc: Optional[str] = typer.Option(None, "--cc", help="Cross compiler for the libraries, e.g. aarch64-linux-gnu-g++."),
) -> None:
    """Compile each channel count and export it, with inputs and reference outputs, to a folder."""
    from advisor.board.timing import TimingPolicy
    from advisor.cli.options import parse_channels
    from advisor.compile.targets import parse_target
    from advisor.measure.bundle import write_bundle
    from advisor.measure.checks import check_measuring
    from advisor.measure.sweep import SweepSpec
    from advisor.measure.threads import use_threads
    from advisor.model.layers import conv_layers, find_layer
    from advisor.model.loading import load_model

    if trials > 0 and not _target_runs_here(parse_target(target)):
        raise AdvisorError("tuning needs the device: bundle with --trials 0 here, or tune over --rpc with "
                           "`advisor sweep` first (its schedules are reused from --tuning-dir)")
    counts = parse_channels(channels)
    check_measuring(trials=trials, repeats=repeats, cost_model=cost_model, dtype=dtype)  # before loading
    thread_count = use_threads(threads)
    target_spec = parse_target(target, thread_count)
    loaded = load_model(model, input)
    chosen = find_layer(conv_layers(loaded), layer)
    spec = SweepSpec(loaded.label, loaded.input_shape, chosen, counts, "tvm", target_spec, trials, thread_count,
                     str(tuning_dir), cost_model, dtype=dtype, policy=TimingPolicy(repeats=repeats))
    path = write_bundle(spec, output, cc)
    err.print(f"wrote {len(counts)} variants and {path}; on the board: "
              f"python -m advisor.board.measure {output}  (or: advisor measure {output})")


def _target_runs_here(spec) -> bool:
    try:
        return spec.can_run_here()
    except Exception:
        return False


@app.command()
def measure(
    bundle_dir: Path = typer.Argument(..., help="A folder written by `advisor bundle`."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds before a variant counts as hung."),
    device_id: int = typer.Option(0, "--device-id", help="Which device of the target's kind."),
) -> None:
    """Time a bundle's variants with the TVM runtime alone (no compiler), writing results.json."""
    from advisor.board.measure import MANIFEST_FILE, measure_bundle, print_result

    if not (bundle_dir / MANIFEST_FILE).is_file():
        raise AdvisorError(f"{bundle_dir} is not a bundle (no {MANIFEST_FILE}): run `advisor bundle` first")
    if timeout <= 0:
        raise AdvisorError("--timeout must be positive")
    err.print(f"wrote {measure_bundle(bundle_dir, timeout, device_id, print_result)}")


@app.command("import")
def import_(bundle_dir: Path = typer.Argument(..., help="A measured bundle folder."), db: Path = DB) -> None:
    """Merge a measured bundle's results.json into the results database."""
    from advisor.measure.bundle import import_results
    from advisor.store.results import ResultStore

    with ResultStore(db) as store:
        counts = import_results(bundle_dir, store)
    err.print(f"imported {counts.get('ok', 0)} measured and {counts.get('failed', 0)} failed points into {db}")
