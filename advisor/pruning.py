"""Torch-Pruning surgery: the channel groups a network must prune together, their importance,
and pruning a copy of the network to chosen per-group counts (or a uniform ratio)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from advisor.errors import AdvisorError

IMPORTANCES = ("magnitude", "lamp", "fpgm", "bn")


@dataclass
class Unit:
    """Channels that must be pruned together (one Torch-Pruning group, rooted at a convolution)."""

    name: str  # the root convolution's module path
    channels: int
    out_convs: list[str]  # convolutions whose outputs are these channels
    in_convs: list[str]  # convolutions whose inputs are these channels
    importance: np.ndarray  # per channel, Torch-Pruning's criterion (normalised within the group)
    multiple: int = 1  # counts must be multiples of this (grouped, non-depthwise convolutions)

    def lost(self, count: int) -> float:
        """Importance of the channels dropped when keeping the `count` most important."""
        ranked = np.sort(self.importance)[::-1]
        return float(ranked[count:].sum())

    def keep(self, count: int) -> list[int]:
        return sorted(np.argsort(-self.importance)[:count].tolist())


def importance_criterion(name: str):
    import torch_pruning as tp

    criteria = {"magnitude": lambda: tp.importance.GroupMagnitudeImportance(p=2),
                "lamp": lambda: tp.importance.LAMPImportance(p=2),
                "fpgm": lambda: tp.importance.FPGMImportance(p=2),
                "bn": lambda: tp.importance.BNScaleImportance()}
    if name not in criteria:
        raise AdvisorError(f"unknown importance {name!r}: use one of {', '.join(IMPORTANCES)}")
    return criteria[name]()


def _graph(module: nn.Module, example: torch.Tensor):
    import torch_pruning as tp

    try:
        return tp.DependencyGraph().build_dependency(module, example_inputs=example)
    except Exception as error:
        raise AdvisorError(f"Torch-Pruning cannot trace this network: {str(error).splitlines()[0][:200]}") from None


def _groups(graph, module: nn.Module):
    """Groups rooted at convolutions; the classifier's outputs and depthwise roots are not roots."""
    outputs = [m for m in module.modules() if isinstance(m, nn.Linear)][-1:]
    return list(graph.get_all_groups(root_module_types=[nn.Conv2d], ignored_layers=outputs))


def pruning_units(module: nn.Module, example: torch.Tensor, importance: str = "magnitude") -> list[Unit]:
    criterion = importance_criterion(importance)
    graph = _graph(module, example)
    names = graph._module2name
    units = []
    with torch.no_grad():
        for group in _groups(graph, module):
            outs, ins, multiple = [], [], 1
            for item in group:
                layer = item.dep.target.module
                if not isinstance(layer, nn.Conv2d):
                    continue
                handler = getattr(item.dep.handler, "__name__", str(item.dep.handler))
                depthwise = layer.groups > 1 and layer.groups == layer.in_channels == layer.out_channels
                if depthwise:
                    outs.append(names[layer])
                    ins.append(names[layer])
                elif "out_channels" in handler:
                    outs.append(names[layer])
                else:
                    ins.append(names[layer])
                if layer.groups > 1 and not depthwise:
                    multiple = math.lcm(multiple, layer.groups)
            root = group[0].dep.target.module
            scores = criterion(group)
            if scores is None:
                raise AdvisorError(f"importance {importance!r} has no score for {names[root]}")
            units.append(Unit(names[root], len(scores), sorted(set(outs)), sorted(set(ins)),
                              scores.detach().cpu().numpy().astype(float), multiple))
    return units


def prune_to(module: nn.Module, example: torch.Tensor, units: list[Unit], counts: dict[str, int]) -> nn.Module:
    """A pruned copy keeping, in each unit, its `counts[name]` most important channels."""
    pruned = copy.deepcopy(module).eval()
    graph = _graph(pruned, example)
    by_name = {graph._module2name[g[0].dep.target.module]: g for g in _groups(graph, pruned)}
    for unit in units:
        count = counts.get(unit.name, unit.channels)
        if count >= unit.channels:
            continue
        if count < 1 or count % unit.multiple:
            raise AdvisorError(f"{unit.name}: cannot keep {count} of {unit.channels} channels")
        group = by_name[unit.name]
        drop = sorted(set(range(unit.channels)) - set(unit.keep(count)))
        graph.get_pruning_group(group[0].dep.target.module, group[0].dep.handler, drop).prune()
    return pruned


def uniform_counts(units: list[Unit], keep_ratio: float) -> dict[str, int]:
    counts = {}
    for unit in units:
        count = max(unit.multiple, int(round(unit.channels * keep_ratio / unit.multiple)) * unit.multiple)
        counts[unit.name] = min(unit.channels, count)
    return counts


def parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def uniform_at_parameters(module: nn.Module, example: torch.Tensor, units: list[Unit],
                          target_parameters: int) -> tuple[nn.Module, float]:
    """Uniform pruning (same keep ratio in every unit) with the parameter count closest to a target."""
    low, high = 0.0, 1.0
    best = (None, 1.0, math.inf)
    for _ in range(14):
        ratio = (low + high) / 2
        pruned = prune_to(module, example, units, uniform_counts(units, ratio))
        count = parameters(pruned)
        if abs(count - target_parameters) < best[2]:
            best = (pruned, ratio, abs(count - target_parameters))
        if count > target_parameters:
            high = ratio
        else:
            low = ratio
    return best[0], best[1]
