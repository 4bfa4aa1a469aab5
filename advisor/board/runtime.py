"""Run and time a compiled module with TVM's runtime: the part of measuring that needs no
compiler and no PyTorch. A local sweep, a sweep over RPC (the module lives on the board, the
timing loop runs there) and `advisor measure BUNDLE` on a board all time through check_and_time."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np

from advisor.board.timing import Timing, TimingPolicy, steady_allocator

# TVM's device type for each target kind advisor compiles for
DEVICE_TYPES = {"llvm": "cpu", "cuda": "cuda", "opencl": "opencl"}
# folders (os.pathsep-separated) that hold device runtimes built apart from TVM's wheel, such as
# libtvm_runtime_opencl.so: the wheel carries the LLVM and CUDA runtimes only (docs/boards.md)
RUNTIME_PATH = "ADVISOR_TVM_RUNTIME_PATH"


def device_for(kind: str, index: int = 0, session=None):
    """The device of a target kind: on this machine, or on a board's RPC session."""
    if session is not None:
        return session.device(DEVICE_TYPES[kind], index)
    import tvm

    load_device_runtime(kind)
    return tvm.device(DEVICE_TYPES[kind], index)


def first_output(output):
    """The first tensor of what a Relax function returned (a tensor or a tuple of them)."""
    while isinstance(output, (tuple, list)) or (not hasattr(output, "numpy") and hasattr(output, "__getitem__")):
        output = output[0]
    return output


def check_and_time(vm, device, args: list, reference: np.ndarray, tolerance: float,
                   policy: TimingPolicy) -> dict:
    """Run once and compare with the reference, then time `main` with the runtime's evaluator.

    Raises ValueError when the output differs from the reference by more than `tolerance`.
    """
    vm.set_input("main", *args)  # stateful call: its outputs come back one tensor at a time, also over RPC
    vm.invoke_stateful("main")
    output = first_output(vm.get_outputs("main")).numpy()
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


def load_device_runtime(kind: str) -> None:
    """Load the device library of a GPU kind (libtvm_runtime_cuda, libtvm_runtime_opencl) beside
    TVM's runtime or in $ADVISOR_TVM_RUNTIME_PATH, where TVM has not: the runtime-only TVM loads
    none, and the wheel has no OpenCL one. Absent, device.exist decides."""
    if kind == "llvm":
        return
    from tvm.base import _LOADED_LIBS
    from tvm_ffi.libinfo import load_lib_ctypes

    name = f"tvm_runtime_{kind}"
    if name in _LOADED_LIBS:
        return
    folders = [Path(_LOADED_LIBS["tvm_runtime"]._name).resolve().parent]
    folders += [Path(p) for p in os.environ.get(RUNTIME_PATH, "").split(os.pathsep) if p]
    try:
        _LOADED_LIBS[name] = load_lib_ctypes(package="tvm", target_name=name, mode="RTLD_LOCAL",
                                             extra_lib_paths=folders)
    except (OSError, FileNotFoundError, RuntimeError):
        return  # a runtime built with the backend inside libtvm_runtime, or none: device.exist decides
    # processes started from here (MetaSchedule's runners) find it where TVM's import looks
    found = str(Path(_LOADED_LIBS[name]._name).resolve().parent)
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if found not in paths:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([*paths, found])


def device_words(kind: str, device) -> str:
    """The device in words, as stored beside each point."""
    if kind == "llvm":
        import platform

        return f"{platform.machine()} cpu ({os.cpu_count()} cores)"
    try:
        return f"{kind}: {device.device_name}"
    except Exception:
        return kind


def runtime_only_environment() -> None:
    """Load only TVM's runtime library, and keep PyTorch out, before tvm is first imported."""
    os.environ["TVM_USE_RUNTIME_LIB"] = "1"
    sys.modules.setdefault("torch", None)  # tvm_ffi imports torch if it can: the board has none
