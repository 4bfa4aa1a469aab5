"""Measure one convolution: compiled by TVM, or run by PyTorch (oneDNN / cuDNN)."""

from __future__ import annotations

import numpy as np
import torch

from advisor.layers import ConvLayer
from advisor.relax_import import to_relax
from advisor.targets import TargetSpec
from advisor.timing import Timing, TimingPolicy, calls_per_sample, time_callable
from advisor.tuning import ScheduleCache, compile_tuned, tune

TOLERANCE = 1e-3  # largest absolute difference from PyTorch's output that counts as correct


class WrongOutput(Exception):
    """The compiled layer disagrees with PyTorch."""


def _reference(conv: torch.nn.Conv2d, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return conv(x).numpy()


def measure_tvm(layer: ConvLayer, target: TargetSpec, trials: int, cache: ScheduleCache,
                policy: TimingPolicy, cost_model: str = "xgb") -> dict:
    """Tune (or reuse), compile, check against PyTorch, and time one layer variant."""
    from tvm import relax

    conv, x = layer.build()
    mod, weights = to_relax(conv, x)
    outcome = tune(mod, cache, trials, cost_model=cost_model)
    executable = compile_tuned(mod, cache)
    device = target.device()
    vm = relax.VirtualMachine(executable, device)
    args = [_to_device(x.numpy(), device)] + [_to_device(w, device) for w in weights]
    output = vm["main"](*args)
    output = output[0] if not hasattr(output, "numpy") else output
    error = float(np.abs(output.numpy() - _reference(conv, x)).max())
    if not error <= TOLERANCE:
        raise WrongOutput(f"TVM output differs from PyTorch by {error:.3g} (tolerance {TOLERANCE})")

    for _ in range(policy.warmup):
        vm["main"](*args)
    number = calls_per_sample(lambda: vm["main"](*args), policy, device.sync)
    evaluator = vm.time_evaluator("main", device, number=number, repeat=policy.repeats)
    samples_ms = [seconds * 1e3 for seconds in evaluator(*args).results]
    return {
        **Timing.from_samples(samples_ms, number).to_dict(),
        "max_abs_err": error,
        "trials_run": outcome.trials_run,
        "tuning_seconds": outcome.seconds,
        "schedules_reused": int(outcome.reused),
    }


def _to_device(array: np.ndarray, device):
    import tvm

    return tvm.runtime.tensor(array, device)


def measure_torch(layer: ConvLayer, device: str, policy: TimingPolicy) -> dict:
    """PyTorch eager: oneDNN on the CPU, cuDNN on CUDA (timed after synchronising)."""
    conv, x = layer.build()
    sync = lambda: None  # noqa: E731
    if device == "cuda":
        conv, x = conv.cuda(), x.cuda()
        sync = torch.cuda.synchronize
    with torch.inference_mode():
        timing = time_callable(lambda: conv(x), policy, sync)
    return {**timing.to_dict(), "max_abs_err": 0.0, "trials_run": 0, "tuning_seconds": 0.0,
            "schedules_reused": 0}
