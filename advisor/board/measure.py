"""Time a bundle's variants on the board with TVM's runtime alone: no compiler, no PyTorch.

`python -m advisor.board.measure BUNDLE` (or `advisor measure BUNDLE`) runs each variant in its
own process with TVM_USE_RUNTIME_LIB=1 and writes results.json; advisor.measure.bundle writes
bundles and imports the results on the host. A network artifact (`advisor recommend --backend tvm`
writes one: format advisor-network) has the same layout, one point per whole network, and is
checked against PyTorch's stored output and timed the same way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from advisor.board.runtime import (check_and_time, device_for, device_words, load_device_runtime,
                                   runtime_only_environment)
from advisor.board.timing import TimingPolicy
from advisor.errors import one_line

MANIFEST_FILE = "manifest.json"
RESULTS_FILE = "results.json"
FORMATS = ("advisor-bundle", "advisor-network")  # layer variants; whole networks


def measure_bundle(directory: str | os.PathLike, timeout_s: float = 600.0, device_id: int = 0,
                   on_result: Callable[[dict, dict], None] = lambda _point, _row: None) -> Path:
    """Time every variant of a bundle here, each in its own process; write results.json.

    A variant that crashes its process or runs past `timeout_s` is recorded as failed and the
    others still run. Each process loads only TVM's runtime (TVM_USE_RUNTIME_LIB=1) and numpy.
    """
    root = Path(directory)
    manifest = json.loads((root / MANIFEST_FILE).read_text())
    env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1"}
    results, about = [], {}
    for index, point in enumerate(manifest["points"]):
        started = time.perf_counter()
        command = [sys.executable, "-m", "advisor.board.measure", str(root), "--point", str(index),
                   "--device-id", str(device_id)]
        env["TVM_NUM_THREADS"] = str(point["columns"].get("threads") or os.cpu_count() or 1)
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode != 0 or not lines:
                tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
                row = {"status": "failed", "error": f"crashed (exit status {done.returncode}): {tail}"[:500]}
            else:
                row = json.loads(lines[-1])
                about = row.pop("about", about)
        except subprocess.TimeoutExpired:
            row = {"status": "failed", "error": f"hung: no result within {timeout_s:g} s"}
        row["measure_seconds"] = round(time.perf_counter() - started, 3)
        results.append({"key": point["key"], **row})
        on_result(point, row)
    path = root / RESULTS_FILE
    path.write_text(json.dumps({"format": "advisor-bundle-results", **about, "results": results}, indent=1))
    return path


def measure_one(root: Path, index: int, device_id: int = 0) -> dict:
    """Check and time one variant in this process (the runtime only)."""
    import tvm
    import tvm_ffi
    from tvm.runtime.vm import VirtualMachine

    manifest = json.loads((root / MANIFEST_FILE).read_text())
    point = manifest["points"][index]
    kind = manifest["target_kind"]
    load_device_runtime(kind)
    device = device_for(kind, device_id)
    about = {"device": device_words(kind, device), "hostname": os.uname().nodename,
             "tvm_version": tvm.__version__,
             "compiler_loaded": tvm_ffi.get_global_func("target.build.llvm", allow_missing=True) is not None}
    try:
        if not device.exist:
            raise RuntimeError(f"no {kind} device here")
        vm = VirtualMachine(tvm.runtime.load_module(str(root / point["library"])), device)
        arrays = np.load(root / point["inputs"])
        args = [tvm.runtime.tensor(arrays[name], device) for name in point["arguments"]]
        row = {"status": "ok", **check_and_time(vm, device, args, arrays["reference"], point["tolerance"],
                                                TimingPolicy(**manifest["policy"]))}
    except Exception as error:  # wrong output, missing device, unloadable library
        row = {"status": "failed", "error": one_line(error)}
    return {**row, "about": about}


def print_result(point: dict, row: dict) -> None:
    """One line per variant or network, as it finishes."""
    columns = point["columns"]
    name = columns["network"] if "network" in columns else f"c={columns['channels']}"
    print(f"{name}: {row['status']} {row.get('median_ms', row.get('error'))}", file=sys.stderr)


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m advisor.board.measure",
                                     description="Time a bundle's variants with the TVM runtime alone.")
    parser.add_argument("bundle")
    parser.add_argument("--point", type=int, help="measure only this variant, in this process (JSON on stdout)")
    parser.add_argument("--device-id", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a variant counts as hung")
    args = parser.parse_args(argv)
    root = Path(args.bundle)
    if not (root / MANIFEST_FILE).is_file():
        print(f"error: {root} is not a bundle (no {MANIFEST_FILE})", file=sys.stderr)
        return 2
    try:
        kind = json.loads((root / MANIFEST_FILE).read_text()).get("format")
    except (ValueError, AttributeError):
        kind = None
    if kind not in FORMATS:
        print(f"error: {root / MANIFEST_FILE} is not a bundle or network manifest", file=sys.stderr)
        return 2
    if args.point is not None:
        print(json.dumps(measure_one(root, args.point, args.device_id)))
        return 0
    print(f"wrote {measure_bundle(root, args.timeout, args.device_id, print_result)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    runtime_only_environment()
    sys.exit(main(sys.argv[1:]))
