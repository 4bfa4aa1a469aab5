"""Commands that learn from measurements and act on them: fit, steps, recommend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from advisor.cli import DB, INPUT, MODEL, _require_file, _threads, app, err, out
from advisor.errors import AdvisorError


@app.command()
def fit(
    db: Path = DB,
    backend: Optional[str] = typer.Option(None, "--backend", "-b", help="Only this backend (default: each)."),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="Only this target name (default: each)."),
    output: Path = typer.Option(Path("models"), "--output", "-o", help="Folder for cost_<backend>_<target>.json."),
    test_share: float = typer.Option(0.2, "--test-share", help="Share of points held out to report accuracy."),
    seed: int = typer.Option(0, "--seed"),
    statistic: str = typer.Option("min", "--statistic",
                                  help="What to predict: min (fastest sample; robust to a shared machine) or median."),
) -> None:
    """Fit an XGBoost latency model per backend and target; report accuracy on held-out points."""
    from advisor.cost_model import evaluate, fit as fit_model, usable
    from advisor.store import ResultStore

    _require_file(db)
    with ResultStore(db) as store:
        frame = usable(store.frame(backend=backend, target=target))
    if frame.empty:
        raise AdvisorError(f"no measured points in {db}" + (f" for {backend or ''} {target or ''}".rstrip()
                                                             if backend or target else ""))
    if statistic not in ("min", "median"):
        raise AdvisorError(f"unknown statistic {statistic!r}: use min or median")
    table = Table(title=f"cost models of {statistic} latency from {db} (held out: {test_share:.0%} of points)")
    for column in ("backend", "target", "points", "within 10%", "MAPE %", "step pts", "step within 10%",
                   "step MAPE %", "file"):
        table.add_column(column, justify="left" if column in ("backend", "target", "file") else "right")
    for (name, tgt), rows in frame.groupby(["backend", "target"], sort=True):
        result = evaluate(rows, test_share=test_share, seed=seed, statistic=statistic)
        model = fit_model(rows, seed=seed, source=str(db), statistic=statistic)
        model.provenance["held_out"] = result.to_dict()
        slug = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in tgt)
        path = model.save(output / f"cost_{name}_{slug}.json")
        steps = "-" if result.step_within_10pct is None else f"{result.step_within_10pct:.0%}"
        step_err = "-" if result.step_mean_abs_pct_error is None else f"{result.step_mean_abs_pct_error:.1f}"
        table.add_row(name, tgt, str(len(rows)), f"{result.within_10pct:.0%}", f"{result.mean_abs_pct_error:.1f}",
                      str(result.step_points), steps, step_err, str(path))
    out.print(table)


@app.command()
def steps(
    layer: Optional[str] = typer.Option(None, "--layer", "-l", help="One layer (default: every layer)."),
    db: Path = DB,
    model: Optional[str] = typer.Option(None, "--model"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="JSON file (default: stdout)."),
) -> None:
    """Hardware-friendly counts and traps (with their cost) per layer and backend, as JSON."""
    from advisor.cost_model import SERIES, usable
    from advisor.plotting import curve
    from advisor.steps import step_report
    from advisor.store import ResultStore

    _require_file(db)
    with ResultStore(db) as store:
        frame = usable(store.frame(layer=layer, model=model))
    if frame.empty:
        raise AdvisorError(f"no measured points{' for layer ' + repr(layer) if layer else ''} in {db}")
    series = []
    for values, rows in frame.groupby(SERIES, sort=True):
        key = {k: (v.item() if hasattr(v, "item") else v) for k, v in zip(SERIES, values)}
        series.append({**key, "module_path": rows.module_path.iloc[0],
                       "original_channels": int(rows.original_channels.iloc[0]),
                       **step_report(curve(rows.sort_values("channels")))})
    text = json.dumps({"format": "advisor-steps", "version": 1, "series": series}, indent=1)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n")
        err.print(f"wrote {output}: {len(series)} series")
    else:
        print(text)


@app.command()
def recommend(
    budget_ms: str = typer.Option(..., "--budget-ms", help="Latency budget for the whole network, in ms."),
    model: str = MODEL,
    input: Optional[str] = INPUT,
    backend: str = typer.Option("torch", "--backend", "-b",
                                help="torch (eager: oneDNN/cuDNN) or tvm (MetaSchedule-tuned, --trials per kernel)."),
    target: str = typer.Option("llvm", "--target", "-t", help="llvm, cuda, a TVM tag, or a JSON dict."),
    trials: int = typer.Option(8, "--trials", help="MetaSchedule trials per kernel (tvm)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Threads for TVM and PyTorch (default: all)."),
    importance: str = typer.Option("magnitude", "--importance",
                                   help="Torch-Pruning criterion: magnitude, lamp, fpgm or bn."),
    min_ratio: float = typer.Option(0.25, "--min-ratio", help="Keep at least this share of each group's channels."),
    samples: int = typer.Option(7, "--samples", help="Output widths measured per convolution and input width."),
    repeats: int = typer.Option(9, "--repeats", help="Timing samples per measurement."),
    db: Path = DB,
    tuning_dir: Path = typer.Option(Path("tuning_logs"), "--tuning-dir"),
    output: Path = typer.Option(Path("out/plan.json"), "--output", "-o", help="Plan (JSON)."),
    pruned_model: Path = typer.Option(Path("out/pruned.pt2"), "--pruned-model", help="Pruned network (.pt2)."),
) -> None:
    """Per-group channel counts meeting a latency budget, pruned, measured, against uniform pruning."""
    from advisor.model_source import load_model
    from advisor.pruning import IMPORTANCES
    from advisor.recommend import Setup, parse_budget, recommend as run_recommend, save_outputs
    from advisor.store import ResultStore
    from advisor.sweep import BACKENDS
    from advisor.targets import parse_target
    from advisor.timing import TimingPolicy

    budget = parse_budget(budget_ms)
    if backend not in BACKENDS:
        raise AdvisorError(f"unknown backend {backend!r}: use {' or '.join(BACKENDS)}")
    if importance not in IMPORTANCES:
        raise AdvisorError(f"unknown importance {importance!r}: use one of {', '.join(IMPORTANCES)}")
    if not 0 < min_ratio <= 1:
        raise AdvisorError(f"--min-ratio must be in (0, 1], not {min_ratio}")
    if samples < 3 or repeats < 2 or trials < 0:
        raise AdvisorError("--samples must be at least 3, --repeats at least 2, --trials 0 or more")
    if pruned_model.suffix != ".pt2":
        raise AdvisorError(f"--pruned-model must end in .pt2, not {pruned_model.name}")
    thread_count = _threads(threads)
    spec = parse_target(target, thread_count)
    if not spec.can_run_here():
        raise AdvisorError(f"target {spec.name} has no device on this machine")
    with ResultStore(db) as store:
        loaded = load_model(model, input)
        setup = Setup(loaded, backend, spec, trials if backend == "tvm" else 0, thread_count, str(tuning_dir),
                      TimingPolicy(repeats=repeats), samples, min_ratio)
        result = run_recommend(setup, store, budget, importance)
    save_outputs(result, setup, output, pruned_model)
    table = Table(title=f"{loaded.label}: plan for {budget:g} ms on {backend}/{spec.name} "
                        f"({thread_count} threads)")
    for column in ("group (root conv)", "original", "keep", "convs"):
        table.add_column(column, justify="left" if column.startswith(("group", "convs")) else "right")
    for unit in result.units:
        keep = result.plan.counts[unit.name]
        table.add_row(unit.name, str(unit.channels), str(keep) if keep < unit.channels else "-",
                      ", ".join(unit.out_convs))
    out.print(table)
    plan = result.plan
    if not plan.met:
        err.print(f"wrote {output} (the fastest plan found)")
        raise AdvisorError(f"budget {budget:g} ms cannot be met: the fastest plan found (table above, every group "
                           f"down to --min-ratio {min_ratio:g} at most) is predicted at {plan.predicted_ms:.2f} ms; "
                           f"unpruned measured {result.unpruned_ms:.2f} ms")
    error = result.recommended_ms / plan.predicted_ms - 1
    params = result.parameters
    out.print(f"unpruned: {result.unpruned_ms:.3f} ms measured, {params['unpruned']:,} parameters")
    out.print(f"recommended: predicted {plan.predicted_ms:.3f} ms, measured {result.recommended_ms:.3f} ms "
              f"({error:+.1%} vs prediction; budget {budget:g} ms "
              f"{'met' if result.recommended_ms <= budget else 'MISSED when measured'}), "
              f"{params['recommended']:,} parameters, {plan.importance_kept:.1%} of importance kept")
    drifted = result.predicted_at_check_ms
    out.print(f"the machine's speed during the check: unpruned {result.unpruned_ms:.3f} ms beside the plan, "
              f"{result.calibration_unpruned_ms:.3f} ms at calibration; the prediction at that speed "
              f"{drifted:.3f} ms (measured {result.recommended_ms / drifted - 1:+.1%} against it)")
    out.print(f"uniform pruning at equal parameters (keep ratio {result.uniform_keep_ratio:.3f}): measured "
              f"{result.uniform_ms:.3f} ms, {params['uniform']:,} parameters")
    out.print(f"recommended / uniform latency: {result.recommended_ms / result.uniform_ms:.3f}")
    err.print(f"wrote {output} and {pruned_model} in {result.seconds:.0f} s "
              f"(cost model from {result.fit_points} measured layer widths)")
    if result.recommended_ms > budget:
        raise AdvisorError(f"budget {budget:g} ms missed when measured: the recommended network read "
                           f"{result.recommended_ms:.2f} ms after {result.attempts} plans (outputs written)")
