"""Measure one convolution: compiled by TVM, or run by PyTorch (oneDNN / cuDNN)."""

from __future__ import annotations

import sys

import numpy as np
import torch

from advisor.errors import AdvisorError
from advisor.layers import ConvLayer
from advisor.relax_import import to_relax
from advisor.runtime_measure import check_and_time, first_output
from advisor.targets import TargetSpec
from advisor.timing import Timing, TimingPolicy, time_callable
from advisor.tuning import ScheduleCache, compile_tuned, tune

DTYPES = {"float32": torch.float32, "float16": torch.float16}
# largest absolute difference from PyTorch's fp32 output (same rounded inputs) that counts as correct
TOLERANCES = {"float32": 1e-3, "float16": 5e-2}
TOLERANCE = TOLERANCES["float32"]


class WrongOutput(Exception):
    """The compiled layer disagrees with PyTorch."""


def build_layer(layer: ConvLayer, dtype: str = "float32") -> tuple[torch.nn.Conv2d, torch.Tensor]:
    if dtype not in DTYPES:
        raise AdvisorError(f"unknown dtype {dtype!r}: use {' or '.join(DTYPES)}")
    conv, x = layer.build()
    return conv.to(DTYPES[dtype]), x.to(DTYPES[dtype])


def reference_output(conv: torch.nn.Conv2d, x: torch.Tensor) -> np.ndarray:
    """PyTorch's output in fp32 from the (possibly fp16-rounded) weights and input."""
    with torch.no_grad():
        return conv.float()(x.float()).numpy() if conv.weight.dtype != torch.float32 else conv(x).numpy()


def compile_layer(layer: ConvLayer, trials: int, cache: ScheduleCache, cost_model: str = "xgb",
                  dtype: str = "float32", runner=None, builder_timeout_s: float = 60.0):
    """Tune (or reuse) and compile one variant: (executable, inputs [x, weights...], reference, outcome)."""
    conv, x = build_layer(layer, dtype)
    mod, weights = to_relax(conv, x)
    outcome = tune(mod, cache, trials, cost_model=cost_model, runner=runner, builder_timeout_s=builder_timeout_s)
    executable = compile_tuned(mod, cache)
    return executable, [x.numpy(), *weights], reference_output(conv, x), outcome


def measure_tvm(layer: ConvLayer, target: TargetSpec, trials: int, cache: ScheduleCache,
                policy: TimingPolicy, cost_model: str = "xgb", dtype: str = "float32", remote=None) -> dict:
    """Tune (or reuse), compile, check against PyTorch, and time one layer variant.

    `remote` (an advisor.rpc.Remote) runs both the tuning measurements and this one on a board.
    """
    timeout = 180.0 if target.kind != "llvm" else 60.0  # nvcc per candidate is slow
    executable, inputs, reference, outcome = compile_layer(
        layer, trials, cache, cost_model, dtype, runner=remote.tuning_runner() if remote else None,
        builder_timeout_s=timeout)
    tuning = {"trials_run": outcome.trials_run, "tuning_seconds": outcome.seconds,
              "schedules_reused": int(outcome.reused)}
    if remote is not None:
        return {**remote.measure(executable, inputs, reference, TOLERANCES[dtype], policy, target.kind), **tuning}
    from tvm import relax

    device = target.device()
    vm = relax.VirtualMachine(executable, device)
    args = [_to_device(array, device) for array in inputs]
    try:
        result = check_and_time(vm, device, args, reference, TOLERANCES[dtype], policy)
    except ValueError as error:
        raise WrongOutput(str(error)) from None
    if target.kind == "cuda":  # replace the VM-launch timing with CUDA-graph replays of the same calls
        result |= _cuda_graph_timing(lambda: first_output(vm["main"](*args)), policy)
    return {**result, **tuning}


def _cuda_graph_timing(call, policy: TimingPolicy) -> dict:
    from advisor.cuda_timing import time_cuda

    try:
        timing, method = time_cuda(call, policy, tvm_stream=True)
    except Exception as error:  # keep the runtime evaluator's numbers
        print(f"CUDA-graph timing failed ({str(error).strip()[-200:]}): runtime evaluator's timing kept",
              file=sys.stderr)
        return {}
    print(f"timed by {method}", file=sys.stderr)
    return timing.to_dict()


def _to_device(array: np.ndarray, device):
    import tvm

    return tvm.runtime.tensor(array, device)


def measure_torch(layer: ConvLayer, device: str, policy: TimingPolicy, dtype: str = "float32") -> dict:
    """PyTorch eager: oneDNN on the CPU; cuDNN on CUDA, timed by CUDA-graph replays and events."""
    conv, x = build_layer(layer, dtype)
    tuning = {"max_abs_err": 0.0, "trials_run": 0, "tuning_seconds": 0.0, "schedules_reused": 0}
    if device == "cuda":
        from advisor.cuda_timing import time_cuda

        torch.backends.cudnn.benchmark = True  # cuDNN picks its fastest algorithm, as deployments do
        torch.backends.cudnn.allow_tf32 = False  # float32 means fp32 arithmetic, as TVM's kernels do
        conv, x = conv.cuda(), x.cuda()
        with torch.inference_mode():
            timing, _method = time_cuda(lambda: conv(x), policy)
        return {**timing.to_dict(), **tuning}
    with torch.inference_mode():
        timing: Timing = time_callable(lambda: conv(x), policy)
    return {**timing.to_dict(), **tuning}
