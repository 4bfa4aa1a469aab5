"""Tune (or reuse) and compile a layer or a whole network: what every TVM measurement starts from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from advisor.compile.relax_import import to_relax
from advisor.compile.transfer import Transfer
from advisor.compile.tuning import ScheduleCache, StopRule, TuningOutcome, compile_tuned, replay_from, retune, tune
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


def layer_module(layer: ConvLayer, dtype: str = "float32"):
    """The layer's Relax module (after the zero pipeline): what tuning sees of it."""
    conv, x = layer.build(dtype=dtype)
    return to_relax(conv, x)[0]


def compile_layer(layer: ConvLayer, trials: int, cache: ScheduleCache, cost_model: str = "xgb",
                  dtype: str = "float32", runner=None, *, seed: int = 0) -> Compiled:
    """One variant of a layer, tuned by StopRule.for_cap(trials) (reusing the cache), compiled."""
    conv, x = layer.build(dtype=dtype)
    mod, weights = to_relax(conv, x)
    outcome = tune(mod, cache, trials, cost_model=cost_model, runner=runner, seed=seed)
    executable = compile_tuned(mod, cache)
    return Compiled(executable, [x.numpy(), *weights], layer_reference(conv, x), outcome)


def replay_on_layer(layer: ConvLayer, cache: ScheduleCache, sources: set[int], dtype: str = "float32",
                    count: int = 8, runner=None) -> Transfer:
    """The best schedules of the layer at the channel counts `sources`, replayed and measured on it."""
    return replay_from(layer_module(layer, dtype), cache, sources, count, runner=runner)


def retune_layer(layer: ConvLayer, cache: ScheduleCache, trials: int, seed: int, dtype: str = "float32",
                 cost_model: str = "xgb", runner=None) -> TuningOutcome:
    """`trials` more search trials for the layer from another seed."""
    return retune(layer_module(layer, dtype), cache, trials, seed=seed, cost_model=cost_model, runner=runner)


def tuning_state(layer: ConvLayer, trials: int, cache: ScheduleCache, dtype: str = "float32") -> TuningOutcome:
    """What the cache holds for the layer, judged by StopRule.for_cap(trials); tunes nothing."""
    return tune(layer_module(layer, dtype), cache, 0, rule=StopRule.for_cap(trials))


def compile_network(model: torch.nn.Module | torch.export.ExportedProgram, example: torch.Tensor,
                    cache: ScheduleCache, trials: int, cost_model: str = "xgb") -> Compiled:
    """A whole network, each distinct kernel tuned by StopRule.for_cap(trials) (reusing the cache)."""
    mod, weights = to_relax(model, example)
    outcome = tune(mod, cache, trials, cost_model=cost_model)
    module = model.module() if isinstance(model, torch.export.ExportedProgram) else model
    return Compiled(compile_tuned(mod, cache), [example.numpy(), *weights], network_reference(module, example),
                    outcome)
