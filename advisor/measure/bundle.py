"""Measurement apart from compilation.

`write_bundle` compiles every variant of a sweep here and exports it to a directory: one
shared library per variant (`export_library`), its inputs and PyTorch's reference output
(`.npz`), and `manifest.json` with each point's key and geometry columns. The board times them
with the TVM runtime alone (advisor.board.measure) and writes `results.json`;
`import_results` merges those into the results database.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from advisor.board.measure import MANIFEST_FILE, RESULTS_FILE
from advisor.compile.build import compile_layer
from advisor.compile.cuda_binary import compile_device_code_ahead
from advisor.compile.tuning import ScheduleCache
from advisor.errors import AdvisorError, one_line
from advisor.measure.backends import TOLERANCES, get_backend
from advisor.measure.sweep import SweepSpec, geometry_columns, tuning_columns
from advisor.store.results import ResultStore
from advisor.store.schema import COLUMNS, KEY_COLUMNS

FORMAT = "advisor-bundle"


def write_bundle(spec: SweepSpec, directory: Path, cross_compiler: str | None = None) -> Path:
    """Compile each channel count of `spec` into `directory`."""
    if not get_backend(spec.backend).tuned:
        raise AdvisorError("a bundle holds TVM-compiled variants: use --backend tvm")
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / MANIFEST_FILE).exists():
        raise AdvisorError(f"{directory} already holds a bundle: choose an empty folder")
    fcompile = _cross_compiler(cross_compiler)
    if spec.target.kind == "cuda":  # device code compiled now: the board needs no compiler
        if spec.target.config.lstrip().startswith("{") and '"arch"' not in spec.target.config \
                or spec.target.config == json.dumps({"kind": "cuda"}):
            raise AdvisorError("a CUDA bundle needs the board's architecture in the target, e.g. --target "
                               "'{\"kind\": \"cuda\", \"arch\": \"sm_87\"}' or a tag (nvidia/jetson-orin-nano)")
        compile_device_code_ahead()
    cache = ScheduleCache(spec.tuning_root, spec.target)
    points = []
    for count in spec.channels:
        variant = spec.layer.with_out_channels(count)
        stem = f"c{count}"
        try:
            compiled = compile_layer(variant, spec.trials, cache, spec.cost_model, spec.dtype)
            compiled.executable.export_library(str(directory / f"{stem}.so"),
                                               **({"fcompile": fcompile} if fcompile else {}))
        except AdvisorError:
            raise
        except Exception as error:  # a compiler or linker refusing: say which, in one line
            raise AdvisorError(f"bundle c={count}: {one_line(error)} (a board of another architecture "
                               "needs --cc)") from None
        inputs, reference, outcome = compiled.inputs, compiled.reference, compiled.outcome
        names = ["x", *(f"w{i}" for i in range(len(inputs) - 1))]
        np.savez(directory / f"{stem}.npz", reference=reference, **dict(zip(names, inputs)))
        columns = {**spec.fixed_columns(), **geometry_columns(variant, spec.layer.out_channels),
                   "target_config": spec.target.config, "trials_run": outcome.trials_run,
                   "tuning_seconds": outcome.seconds, "schedules_reused": int(outcome.reused),
                   **tuning_columns(spec, variant)}  # as a sweep stores them: an import equals a sweep
        points.append({"key": {column: columns[column] for column in KEY_COLUMNS}, "columns": columns,
                       "library": f"{stem}.so", "inputs": f"{stem}.npz", "arguments": names,
                       "tolerance": TOLERANCES[spec.dtype]})
    manifest = {"format": FORMAT, "version": 1, "target_kind": spec.target.kind,
                "policy": asdict(spec.policy), "points": points}
    path = directory / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=1))
    return path


def _cross_compiler(compiler: str | None):
    if not compiler:
        return None
    from tvm.contrib import cc

    return cc.cross_compiler(compiler)


def import_results(directory: Path, store: ResultStore) -> dict[str, int]:
    """Merge a measured bundle into the database: one row per point, as a sweep would save it."""
    manifest = _read_json(directory / MANIFEST_FILE, "a bundle manifest", "advisor bundle")
    measured = _read_json(directory / RESULTS_FILE, "bundle results", "advisor measure")
    if manifest.get("format") != FORMAT or measured.get("format") != "advisor-bundle-results":
        raise AdvisorError(f"{directory} does not hold an advisor bundle and its results")
    by_key = {_key(point["key"]): point for point in manifest["points"]}
    counts = {"ok": 0, "failed": 0}
    for result in measured["results"]:
        point = by_key.get(_key(result["key"]))
        if point is None:
            raise AdvisorError(f"{directory / RESULTS_FILE} holds a point the manifest lacks: {result['key']}")
        row = {**point["columns"], "device": measured.get("device"), "hostname": measured.get("hostname"),
               "tvm_version": measured.get("tvm_version")}
        row |= {name: value for name, value in result.items() if name in COLUMNS and name != "key"}
        store.save({name: value for name, value in row.items() if name in COLUMNS})
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts


def _key(key: dict) -> tuple:
    return tuple(key[column] for column in KEY_COLUMNS)


def _read_json(path: Path, what: str, made_by: str) -> dict:
    if not path.is_file():
        raise AdvisorError(f"{path} is missing: run `{made_by}` first")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AdvisorError(f"{path} is not {what} (bad JSON: {error})") from None
