"""Check and time a compiled layer with the TVM runtime alone: no compiler, no PyTorch.

Used in three places: a local sweep, a sweep over RPC (the VM lives on the board, the timing
loop runs there), and `advisor measure BUNDLE` on a board that has only the TVM runtime and
numpy (`python -m advisor.runtime_measure BUNDLE`, which sets TVM_USE_RUNTIME_LIB=1).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from advisor.timing import Timing, TimingPolicy, steady_allocator

MANIFEST_FILE = "manifest.json"
RESULTS_FILE = "results.json"


def first_output(output):
    return output if hasattr(output, "numpy") else output[0]


def _first_tensor(output):
    while isinstance(output, (tuple, list)):
        output = output[0]
    return output


def check_and_time(vm, device, args: list, reference: np.ndarray, tolerance: float,
                   policy: TimingPolicy) -> dict:
    """Run once and compare with the reference, then time `main` with the runtime's evaluator.

    Raises ValueError when the output differs from the reference by more than `tolerance`.
    """
    vm.set_input("main", *args)  # stateful call: its outputs come back one tensor at a time, also over RPC
    vm.invoke_stateful("main")
    output = _first_tensor(vm.get_outputs("main")).numpy()
    error = float(np.abs(output.astype(np.float64) - reference.astype(np.float64)).max())
    if not error <= tolerance:
        raise ValueError(f"TVM output differs from PyTorch by {error:.3g} (tolerance {tolerance})")
    steady_allocator()
    for _ in range(policy.warmup):
        vm["main"](*args)
    # one call's time measured where it runs (over RPC a Python round trip would dominate)
    probe = vm.time_evaluator("main", device, number=1, repeat=3)(*args).results
    once_ms = max(min(probe) * 1e3, 1e-4)
    number = max(1, math.ceil(policy.min_sample_ms / once_ms))
    evaluator = vm.time_evaluator("main", device, number=number, repeat=policy.repeats)
    samples_ms = [seconds * 1e3 for seconds in evaluator(*args).results]
    return {**Timing.from_samples(samples_ms, number).to_dict(), "max_abs_err": error}


def measure_bundle(directory: str | os.PathLike, timeout_s: float = 600.0, device_id: int = 0) -> Path:
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
        command = [sys.executable, "-m", "advisor.runtime_measure", str(root), "--point", str(index),
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
        print(f"c={point['columns']['channels']}: {row['status']} "
              f"{row.get('median_ms', row.get('error'))}", file=sys.stderr)
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
    _load_device_runtime(kind)
    device = {"llvm": tvm.cpu, "cuda": tvm.cuda, "opencl": tvm.opencl}[kind](device_id)
    about = {"device": _device_words(kind, device), "hostname": os.uname().nodename,
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
        lines = str(error).strip().splitlines()
        row = {"status": "failed", "error": (lines[-1] if lines else type(error).__name__)[:500]}
    return {**row, "about": about}


def _load_device_runtime(kind: str) -> None:
    """The runtime-only TVM loads no GPU backend: load its device library (CUDA, OpenCL) if present."""
    if kind == "llvm":
        return
    from tvm.base import _LOADED_LIBS
    from tvm_ffi.libinfo import load_lib_ctypes

    name = f"tvm_runtime_{kind}"
    if name in _LOADED_LIBS:
        return
    try:
        _LOADED_LIBS[name] = load_lib_ctypes(package="tvm", target_name=name, mode="RTLD_LOCAL",
                                             extra_lib_paths=[Path(_LOADED_LIBS["tvm_runtime"]._name).resolve().parent])
    except (OSError, FileNotFoundError, RuntimeError):
        pass  # a runtime built with the backend inside libtvm_runtime, or none: device.exist decides


def _device_words(kind: str, device) -> str:
    if kind == "llvm":
        import platform

        return f"{platform.machine()} cpu ({os.cpu_count()} cores)"
    try:
        return f"{kind}: {device.device_name}"
    except Exception:
        return kind


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m advisor.runtime_measure",
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
    if args.point is not None:
        print(json.dumps(measure_one(root, args.point, args.device_id)))
        return 0
    print(f"wrote {measure_bundle(root, args.timeout, args.device_id)}", file=sys.stderr)
    return 0


def runtime_only_environment() -> None:
    """Load only TVM's runtime library, and keep PyTorch out, before tvm is first imported."""
    os.environ["TVM_USE_RUNTIME_LIB"] = "1"
    sys.modules.setdefault("torch", None)  # tvm_ffi imports torch if it can: the board has none


if __name__ == "__main__":
    runtime_only_environment()
    sys.exit(main(sys.argv[1:]))
