"""Latency of a whole network: TVM-compiled (tuned from the schedule cache) or PyTorch eager."""

from __future__ import annotations

import numpy as np
import torch

from advisor.relax_import import to_relax
from advisor.targets import TargetSpec
from advisor.timing import Timing, TimingPolicy, calls_per_sample, steady_allocator, time_callable
from advisor.tuning import ScheduleCache, TuningOutcome, compile_tuned, tune


def tvm_network_latency(model: torch.nn.Module | torch.export.ExportedProgram, example: torch.Tensor,
                        target: TargetSpec, cache: ScheduleCache, trials: int, policy: TimingPolicy,
                        cost_model: str = "xgb") -> tuple[Timing, TuningOutcome, float]:
    """Tune each distinct kernel to `trials` (reusing the cache), compile, time.

    Returns the timing, the tuning outcome and the largest absolute difference from PyTorch.
    """
    from tvm import relax
    import tvm

    mod, weights = to_relax(model, example)
    outcome = tune(mod, cache, trials, cost_model=cost_model)
    device = target.device()
    vm = relax.VirtualMachine(compile_tuned(mod, cache), device)
    args = [tvm.runtime.tensor(example.numpy(), device)] + [tvm.runtime.tensor(w, device) for w in weights]
    output = vm["main"](*args)
    output = output[0] if not hasattr(output, "numpy") else output
    module = model.module() if isinstance(model, torch.export.ExportedProgram) else model
    with torch.no_grad():
        reference = module(example)
    reference = reference[0] if isinstance(reference, (tuple, list)) else reference
    error = float(np.abs(output.numpy() - reference.numpy()).max())
    steady_allocator()
    for _ in range(policy.warmup):
        vm["main"](*args)
    number = calls_per_sample(lambda: vm["main"](*args), policy, device.sync)
    samples = vm.time_evaluator("main", device, number=number, repeat=policy.repeats)(*args).results
    return Timing.from_samples([s * 1e3 for s in samples], number), outcome, error


def torch_network_latency(model: torch.nn.Module, example: torch.Tensor, policy: TimingPolicy,
                          device: str = "cpu") -> Timing:
    sync = lambda: None  # noqa: E731
    if device == "cuda":
        model, example, sync = model.cuda(), example.cuda(), torch.cuda.synchronize
    with torch.inference_mode():
        return time_callable(lambda: model(example), policy, sync)
