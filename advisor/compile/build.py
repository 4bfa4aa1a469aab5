"""Tune (or reuse) and compile a layer or a whole network: what every TVM measurement starts from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from advisor.compile.relax_import import to_relax
from advisor.compile.tuning import ScheduleCache, TuningOutcome, compile_tuned, tune
from advisor.model.layers import ConvLayer


@dataclass
class Compiled:
    executable: object  # tvm.relax.VMExecutable
    inputs: list[np.ndarray]  # [x, weights...], in the order `main` takes them
    reference: np.ndarray  # PyTorch's output for the same inputs, in float32
    outcome: TuningOutcome


def layer_reference(conv: torch.nn.Conv2d, x: torch.Tensor) -> np.ndarray:
    """PyTorch's output computed in float32 from the (possibly float16-rounded) weights and input."""
    with torch.no_grad():
        return torch.nn.functional.conv2d(x.float(), conv.weight.float(),
                                          None if conv.bias is None else conv.bias.float(),
                                          conv.stride, conv.padding, conv.dilation, conv.groups).numpy()


def network_reference(module: torch.nn.Module, example: torch.Tensor) -> np.ndarray:
    """PyTorch's output of the network as it is (its own precision), as float32."""
    with torch.inference_mode():
        output = module(example)
    output = output[0] if isinstance(output, (tuple, list)) else output
    return output.float().numpy()


def compile_layer(layer: ConvLayer, trials: int, cache: ScheduleCache, cost_model: str = "xgb",
                  dtype: str = "float32", runner=None) -> Compiled:
    """One variant of a layer, tuned to `trials` (reusing the cache) and compiled."""
    conv, x = layer.build(dtype=dtype)
    mod, weights = to_relax(conv, x)
    outcome = tune(mod, cache, trials, cost_model=cost_model, runner=runner)
    executable = compile_tuned(mod, cache)
    return Compiled(executable, [x.numpy(), *weights], layer_reference(conv, x), outcome)


def compile_network(model: torch.nn.Module | torch.export.ExportedProgram, example: torch.Tensor,
                    cache: ScheduleCache, trials: int, cost_model: str = "xgb") -> Compiled:
    """A whole network, each distinct kernel tuned to `trials` (reusing the cache), compiled."""
    mod, weights = to_relax(model, example)
    outcome = tune(mod, cache, trials, cost_model=cost_model)
    module = model.module() if isinstance(model, torch.export.ExportedProgram) else model
    return Compiled(compile_tuned(mod, cache), [example.numpy(), *weights], network_reference(module, example),
                    outcome)
