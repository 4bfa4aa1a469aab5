"""Every table of a results database: its columns and the key that makes two rows one measurement."""

from __future__ import annotations

from dataclasses import dataclass

FORMAT = "advisor-results"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Table:
    name: str
    columns: dict[str, str]  # name: SQLite type and constraints
    key: tuple[str, ...]  # a row whose key is stored replaces the stored one

    def create_sql(self) -> str:
        body = ",\n  ".join(f"{name} {kind}" for name, kind in self.columns.items())
        return (f"CREATE TABLE IF NOT EXISTS {self.name} (\n  id INTEGER PRIMARY KEY,\n  {body},\n"
                f"  UNIQUE ({', '.join(self.key)}))")


_ENVIRONMENT = {"cpu_model": "TEXT", "device": "TEXT", "hostname": "TEXT", "tvm_version": "TEXT",
                "torch_version": "TEXT"}
_TIMING = {"median_ms": "REAL", "mean_ms": "REAL", "std_ms": "REAL", "min_ms": "REAL", "max_ms": "REAL",
           "p25_ms": "REAL", "p75_ms": "REAL", "repeats": "INTEGER", "number": "INTEGER"}

# one measured point of a layer sweep
POINTS = Table("points", {
    "model": "TEXT NOT NULL", "input_shape": "TEXT NOT NULL", "layer": "TEXT NOT NULL",
    "module_path": "TEXT NOT NULL", "backend": "TEXT NOT NULL", "target": "TEXT NOT NULL",
    "target_config": "TEXT NOT NULL", "dtype": "TEXT NOT NULL", "trials": "INTEGER NOT NULL",
    "threads": "INTEGER NOT NULL", "channels": "INTEGER NOT NULL",
    "original_channels": "INTEGER NOT NULL", "widened": "INTEGER NOT NULL",
    # the layer's geometry at this width: what a cost model learns from
    "batch": "INTEGER", "in_channels": "INTEGER", "in_h": "INTEGER", "in_w": "INTEGER",
    "out_h": "INTEGER", "out_w": "INTEGER", "kernel_h": "INTEGER", "kernel_w": "INTEGER",
    "stride_h": "INTEGER", "stride_w": "INTEGER", "pad_h": "INTEGER", "pad_w": "INTEGER",
    "dilation_h": "INTEGER", "dilation_w": "INTEGER", "groups": "INTEGER", "bias": "INTEGER",
    "flops": "INTEGER",
    "status": "TEXT NOT NULL",  # ok | failed | predicted (by an active sweep's model: no timing)
    "error": "TEXT", **_TIMING,
    "max_abs_err": "REAL", "trials_run": "INTEGER", "tuning_seconds": "REAL", "schedules_reused": "INTEGER",
    # tuned backends: the trials the count's workload holds (every call's), and why its tuning stopped
    # (converged: the stop rule; cap: the trial cap; untuned)
    "trials_spent": "INTEGER", "tuning_stop": "TEXT",
    # processes that measured the point (a suspect gets a second opinion; the faster run is kept)
    "runs": "INTEGER DEFAULT 1", "slower_run_ms": "REAL",
    # a tuned trap's second look: confirmed, luck-replay or luck-retune (removed by that step)
    "trap_check": "TEXT",
    # an active sweep's model at this count (predicted rows): median latency, the ensemble's relative
    # spread, and the share of measured counts the model predicts within 10% (cross-validated)
    "predicted_ms": "REAL", "predicted_spread": "REAL", "model_cv_within": "REAL",
    "model_settled": "INTEGER",  # 1: the sweep stopped by its rule (0: at its point limit)
    **_ENVIRONMENT, "measured_at": "TEXT NOT NULL",
}, ("model", "input_shape", "layer", "backend", "target", "dtype", "trials", "threads", "channels"))

# one compressed variant of a trained network (advisor pareto): its score and its size
PARETO_VARIANTS = Table("pareto_variants", {
    "model": "TEXT NOT NULL", "dataset": "TEXT NOT NULL", "metric": "TEXT NOT NULL",
    "variant": "TEXT NOT NULL", "label": "TEXT NOT NULL", "technique": "TEXT NOT NULL",
    "strength": "REAL NOT NULL", "plan": "TEXT NOT NULL", "finetune": "INTEGER NOT NULL",
    "accuracy": "REAL", "test_images": "INTEGER", "stored_bytes": "INTEGER", "dense_bytes": "INTEGER",
    "parameters": "INTEGER", "nonzero_parameters": "INTEGER", "notes": "TEXT",
    "status": "TEXT NOT NULL", "error": "TEXT", "measured_at": "TEXT NOT NULL",
}, ("model", "dataset", "metric", "variant"))

# one variant's latency on one backend and thread count
PARETO_LATENCY = Table("pareto_latency", {
    "model": "TEXT NOT NULL", "dataset": "TEXT NOT NULL", "variant": "TEXT NOT NULL",
    "backend": "TEXT NOT NULL", "target": "TEXT NOT NULL", "threads": "INTEGER NOT NULL",
    "trials": "INTEGER NOT NULL", "batch": "INTEGER NOT NULL",
    "status": "TEXT NOT NULL",  # ok | failed | unavailable (the backend cannot run this variant)
    "error": "TEXT", **_TIMING,
    "peak_bytes": "INTEGER", "peak_method": "TEXT", "max_abs_err": "REAL", "tuning_seconds": "REAL",
    **_ENVIRONMENT, "measured_at": "TEXT NOT NULL",
}, ("model", "dataset", "variant", "backend", "target", "threads", "trials", "batch"))

TABLES = {table.name: table for table in (POINTS, PARETO_VARIANTS, PARETO_LATENCY)}
KEY_COLUMNS = POINTS.key
COLUMNS = tuple(POINTS.columns)
# the columns that make points one curve: the key without the channel count
SERIES = [column for column in KEY_COLUMNS if column != "channels"]
