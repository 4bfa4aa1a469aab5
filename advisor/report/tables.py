"""Terminal tables: each takes plain data (layers, stored rows, results) and returns a rich Table."""

from __future__ import annotations

import pandas as pd
from rich.table import Table

from advisor.learn.curves import curve, find_traps
from advisor.report.latency_page import series_label
from advisor.store.results import usable
from advisor.store.schema import SERIES


def layers_table(label: str, input_shape: tuple[int, ...], layers) -> Table:
    table = Table(title=f"{label}, input {'x'.join(map(str, input_shape))}")
    for column in ("name", "module", "input", "kernel", "stride", "groups", "in", "out", "GFLOP"):
        table.add_column(column, justify="right" if column in ("in", "out", "groups", "GFLOP") else "left")
    for layer in layers:
        table.add_row(layer.name, layer.module_path, "x".join(map(str, layer.input_shape)),
                      "x".join(map(str, layer.kernel)), "x".join(map(str, layer.stride)), str(layer.groups),
                      str(layer.in_channels), str(layer.out_channels), f"{layer.flops() / 1e9:.3f}")
    return table


def sweep_tables(frame: pd.DataFrame) -> list[Table]:
    """One table per series (model, layer, backend, target, ...): measured points with traps (and
    their second look) and failures noted, predicted points marked with the model's spread."""
    tables = []
    for values, rows in frame.groupby(SERIES, sort=True):
        key = dict(zip(SERIES, values))
        traps = {t.channels: t for t in find_traps(curve(usable(rows)))}
        predicted = rows[rows.status == "predicted"]
        title = f"{key['model']} {key['layer']}: {series_label(key)}"
        if not predicted.empty:
            title += (f"\n{len(rows) - len(predicted)} measured, {len(predicted)} predicted (~): the model predicts "
                      f"{predicted.model_cv_within.iloc[0]:.0%} of measured counts within 10% (cross-validated)")
        table = Table(title=title)
        for column in ("channels", "median ms", "IQR ms", "note"):
            table.add_column(column, justify="left" if column == "note" else "right")
        for row in rows.sort_values("channels").itertuples():
            note = ["widened"] if row.widened else []
            check = getattr(row, "trap_check", None)
            if row.channels in traps:
                trap = traps[row.channels]
                confirmed = f" ({check} by a second look)" if check == "confirmed" else ""
                note.append(f"[red]trap: {trap.faster_channels} ch run {trap.slowdown:.2f}x faster{confirmed}[/red]")
            elif isinstance(check, str) and check.startswith("luck"):
                note.append(f"tuning luck: the trap went away on a {check.removeprefix('luck-')}")
            if row.status == "predicted":
                note.append("predicted")
                table.add_row(str(row.channels), f"~{row.predicted_ms:.4f}", f"±{row.predicted_spread:.0%} (model)",
                              ", ".join(note), style="dim")
                continue
            if row.status != "ok":
                note.append(f"[red]failed: {row.error}[/red]")
                table.add_row(str(row.channels), "", "", ", ".join(note))
                continue
            table.add_row(str(row.channels), f"{row.median_ms:.4f}", f"{row.p25_ms:.4f}-{row.p75_ms:.4f}",
                          ", ".join(note))
        tables.append(table)
    return tables


def trap_check_line(checks) -> str:
    """One line on the second looks at tuned traps (second_look.TrapCheck)."""
    verdicts = ", ".join(f"{c.channels} (vs {c.faster_channels}): {c.verdict}" for c in checks)
    return f"second look at {len(checks)} trap{'s' if len(checks) != 1 else ''}: {verdicts}"


def fit_table(title: str, fits: list[dict]) -> Table:
    """One row per fitted model: {backend, target, points, evaluation, path}."""
    table = Table(title=title)
    for column in ("backend", "target", "points", "within 10%", "MAPE %", "step pts", "step within 10%",
                   "step MAPE %", "file"):
        table.add_column(column, justify="left" if column in ("backend", "target", "file") else "right")
    for fitted in fits:
        result = fitted["evaluation"]
        steps = "-" if result.step_within_10pct is None else f"{result.step_within_10pct:.0%}"
        step_err = "-" if result.step_mean_abs_pct_error is None else f"{result.step_mean_abs_pct_error:.1f}"
        table.add_row(fitted["backend"], fitted["target"], str(fitted["points"]), f"{result.within_10pct:.0%}",
                      f"{result.mean_abs_pct_error:.1f}", str(result.step_points), steps, step_err,
                      str(fitted["path"]))
    return table
