"""Commands that learn from measurements: fit, steps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from advisor.cli.app import DB, app, err, out, require_file
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
    from advisor.learn.cost_model import STATISTICS, LatencyModel, evaluate
    from advisor.report.tables import fit_table
    from advisor.store.results import ResultStore, usable

    if statistic not in STATISTICS:
        raise AdvisorError(f"unknown statistic {statistic!r}: use min or median")
    if not 0 < test_share < 1:
        raise AdvisorError(f"--test-share must be between 0 and 1, not {test_share}")
    require_file(db)
    with ResultStore(db) as store:
        frame = usable(store.frame(backend=backend, target=target))
    if frame.empty:
        raise AdvisorError(f"no measured points in {db}" + (f" for {backend or ''} {target or ''}".rstrip()
                                                             if backend or target else ""))
    fits = []
    for (name, tgt), rows in frame.groupby(["backend", "target"], sort=True):
        result = evaluate(rows, test_share=test_share, seed=seed, statistic=statistic)
        model = LatencyModel(statistic=statistic, seed=seed).fit(rows, source=str(db))
        model.provenance_["held_out"] = result.to_dict()
        slug = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in tgt)
        path = model.save(output / f"cost_{name}_{slug}.json")
        fits.append({"backend": name, "target": tgt, "points": len(rows), "evaluation": result, "path": path})
    out.print(fit_table(f"cost models of {statistic} latency from {db} (held out: {test_share:.0%} of points)",
                        fits))


@app.command()
def steps(
    layer: Optional[str] = typer.Option(None, "--layer", "-l", help="One layer (default: every layer)."),
    db: Path = DB,
    model: Optional[str] = typer.Option(None, "--model"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="JSON file (default: stdout)."),
) -> None:
    """Hardware-friendly counts and traps (with their cost) per layer and backend, as JSON: measured
    counts apart from predicted ones, how sure the model is, which traps a second look confirmed."""
    from advisor.learn.curves import curve, step_report
    from advisor.store.results import ResultStore, usable
    from advisor.store.schema import SERIES

    require_file(db)
    with ResultStore(db) as store:
        frame = store.frame(layer=layer, model=model)
    frame = frame[frame.index.isin(usable(frame).index) | (frame.status == "predicted")]
    if not (frame.status == "ok").any():
        raise AdvisorError(f"no measured points{' for layer ' + repr(layer) if layer else ''} in {db}")
    series = []
    for values, rows in frame.groupby(SERIES, sort=True):
        if not (rows.status == "ok").any():
            continue  # predictions alone: nothing measured to stand on
        key = {k: (v.item() if hasattr(v, "item") else v) for k, v in zip(SERIES, values)}
        checks = {int(r.channels): r.trap_check for r in rows.itertuples() if isinstance(r.trap_check, str)}
        predicted = rows[rows.status == "predicted"]
        model_note = {} if predicted.empty else {"latency_model": {
            "cv_within_10pct": float(predicted.model_cv_within.iloc[0]),
            "settled": bool(predicted.model_settled.fillna(0).astype(int).min()),
            "median_spread": float(predicted.predicted_spread.median())}}
        series.append({**key, "module_path": rows.module_path.iloc[0],
                       "original_channels": int(rows.original_channels.iloc[0]),
                       **step_report(curve(rows.sort_values("channels")), checks=checks), **model_note})
    text = json.dumps({"format": "advisor-steps", "version": 2, "series": series}, indent=1)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n")
        err.print(f"wrote {output}: {len(series)} series")
    else:
        print(text)
