"""Channel groups, the one channel-pruning module of recommend and pareto: the channels a network
must prune together (Torch-Pruning's dependency graph), their importance, and a pruned copy of the
network at chosen per-group counts, at a uniform ratio, or as a plan file asks; and Torch-Pruning's
own pruner at one ratio (optionally rounding kept channels, `round_to`), the baseline users run."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from advisor.errors import AdvisorError, one_line

IMPORTANCES = ("magnitude", "lamp", "fpgm", "bn", "taylor")
NEEDS_DATA = ("taylor",)  # criteria computed from the loss's gradients on labelled images


@dataclass
class ChannelGroup:
    """Channels that must be pruned together (one Torch-Pruning group, rooted at a convolution)."""

    name: str  # the root convolution's module path
    channels: int
    out_convs: list[str]  # convolutions whose outputs are these channels
    in_convs: list[str]  # convolutions whose inputs are these channels
    importance: np.ndarray  # per channel, Torch-Pruning's criterion (normalised within the group)
    multiple: int = 1  # counts must be multiples of this (grouped, non-depthwise convolutions)

    def lost(self, count: int) -> float:
        """Importance of the channels dropped when keeping `count` (those `keep` picks)."""
        return float(self.importance.sum() - self.importance[self.keep(count)].sum())

    def keep(self, count: int) -> list[int]:
        """The channels kept: the `count` most important; in a group that grouped convolutions read
        (multiple > 1), the same positions in each of its `multiple` blocks, the most important
        over all blocks, as a grouped convolution can only lose the same channels in every group
        (Torch-Pruning prunes their inputs that way)."""
        if self.multiple == 1:
            return sorted(np.argsort(-self.importance, kind="stable")[:count].tolist())
        size = self.channels // self.multiple
        scores = self.importance.reshape(self.multiple, size).sum(0)
        positions = np.argsort(-scores, kind="stable")[:count // self.multiple]
        return sorted(int(block * size + p) for block in range(self.multiple) for p in positions)


def importance_criterion(name: str):
    import torch_pruning as tp

    criteria = {"magnitude": lambda: tp.importance.GroupMagnitudeImportance(p=2),
                "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),  # pareto's uniform and plan pruning
                "lamp": lambda: tp.importance.LAMPImportance(p=2),
                "fpgm": lambda: tp.importance.FPGMImportance(p=2),
                "bn": lambda: tp.importance.BNScaleImportance(),
                # first-order Taylor (|weight x gradient of the loss|), not normalised within groups, so
                # that one group's channels compare with another's as the planner compares them (HALP)
                "taylor": lambda: tp.importance.GroupTaylorImportance(normalizer=None)}
    if name not in criteria or name not in (*IMPORTANCES, "l1"):
        raise AdvisorError(f"unknown importance {name!r}: use one of {', '.join(IMPORTANCES)}")
    return criteria[name]()


def _graph(module: nn.Module, example: torch.Tensor):
    import torch_pruning as tp

    try:
        return tp.DependencyGraph().build_dependency(module, example_inputs=example)
    except Exception as error:
        raise AdvisorError(f"Torch-Pruning cannot trace this network: {one_line(error, 200)}") from None


def _groups(graph, module: nn.Module):
    """Groups rooted at convolutions; the classifier's outputs and depthwise roots are not roots."""
    outputs = [m for m in module.modules() if isinstance(m, nn.Linear)][-1:]
    return list(graph.get_all_groups(root_module_types=[nn.Conv2d], ignored_layers=outputs))


def loss_gradients(module: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """The cross-entropy loss's gradients on labelled batches, accumulated in the parameters' .grad
    (what a gradient criterion reads); batch norms use their running statistics (eval mode)."""
    module.eval().zero_grad()
    for x, y in batches:
        torch.nn.functional.cross_entropy(module(x), y).backward()


def channel_groups(module: nn.Module, example: torch.Tensor, importance: str = "magnitude",
                   batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> list[ChannelGroup]:
    """The network's channel groups rooted at convolutions, each channel scored by `importance`
    (a gradient criterion on `batches` of labelled images)."""
    criterion = importance_criterion(importance)
    if importance in NEEDS_DATA:
        if not batches:
            raise AdvisorError(f"importance {importance!r} needs labelled images: give --data")
        loss_gradients(module, batches)
    graph = _graph(module, example)
    names = graph._module2name
    groups = []
    with torch.no_grad():
        for tp_group in _groups(graph, module):
            outs, ins, multiple = [], [], 1
            for item in tp_group:
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
            root = tp_group[0].dep.target.module
            scores = criterion(tp_group)
            if scores is None:
                raise AdvisorError(f"importance {importance!r} has no score for {names[root]}")
            groups.append(ChannelGroup(names[root], len(scores), sorted(set(outs)), sorted(set(ins)),
                                       scores.detach().cpu().numpy().astype(float), multiple))
    if importance in NEEDS_DATA:
        module.zero_grad(set_to_none=True)
    return groups


def prune_to(module: nn.Module, example: torch.Tensor, groups: list[ChannelGroup],
             counts: dict[str, int]) -> nn.Module:
    """A pruned copy keeping, in each group, its `counts[name]` most important channels."""
    pruned = copy.deepcopy(module).eval()
    graph = _graph(pruned, example)
    by_name = {graph._module2name[g[0].dep.target.module]: g for g in _groups(graph, pruned)}
    for group in groups:
        count = counts.get(group.name, group.channels)
        if count >= group.channels:
            continue
        if count < 1 or count % group.multiple:
            raise AdvisorError(f"{group.name}: cannot keep {count} of {group.channels} channels")
        tp_group = by_name[group.name]
        drop = sorted(set(range(group.channels)) - set(group.keep(count)))
        try:
            graph.get_pruning_group(tp_group[0].dep.target.module, tp_group[0].dep.handler, drop).prune()
        except Exception as error:
            raise AdvisorError(f"Torch-Pruning cannot keep {count} of {group.name}'s {group.channels} channels: "
                               f"{one_line(error, 200)}") from None
    return pruned


def counts_of(module: nn.Module, groups: list[ChannelGroup]) -> dict[str, int]:
    """Each group's count in a pruned copy of the network the groups were found in (its root
    convolution's outputs)."""
    modules = dict(module.named_modules())
    counts = {}
    for group in groups:
        conv = modules.get(group.name)
        counts[group.name] = conv.out_channels if isinstance(conv, nn.Conv2d) else group.channels
    return counts


def architecture(module: nn.Module) -> str:
    """What a network's latency depends on besides its operations: every convolution's and linear
    layer's shape, as one short key."""
    import hashlib

    shapes = [f"{name}:{tuple(m.weight.shape)}:{getattr(m, 'groups', 1)}" for name, m in module.named_modules()
              if isinstance(m, (nn.Conv2d, nn.Linear))]
    return hashlib.sha256("|".join(shapes).encode()).hexdigest()[:16]


def flops(module: nn.Module, example: torch.Tensor) -> int:
    """Floating-point operations of one forward pass of the convolutions and linear layers (two per
    multiply-add), counted on their outputs' shapes."""
    total = [0]

    def count(layer, _inputs, output):
        if isinstance(layer, nn.Conv2d):
            per_output = (layer.in_channels // layer.groups) * layer.kernel_size[0] * layer.kernel_size[1]
        else:
            per_output = layer.in_features
        total[0] += 2 * output.numel() * per_output

    hooks = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.inference_mode():
            module.eval()(example)
    finally:
        for hook in hooks:
            hook.remove()
    return total[0]


def torch_pruning_uniform(module: nn.Module, example: torch.Tensor, keep_ratio: float, importance: str = "magnitude",
                          round_to: int | None = None,
                          batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> nn.Module:
    """A copy pruned by Torch-Pruning's own pruner at one ratio (1 - keep_ratio) in every group rooted
    at a convolution, keeping its most important channels (a gradient criterion on `batches`); with
    `round_to`, each kept count rounded down to a multiple of it (Torch-Pruning leaves a group whole
    where that would keep none). The classifier's outputs are not pruned."""
    import torch_pruning as tp

    pruned = copy.deepcopy(module).eval()
    if keep_ratio >= 1:
        return pruned
    if importance in NEEDS_DATA:
        if not batches:
            raise AdvisorError(f"importance {importance!r} needs labelled images: give --data")
        loss_gradients(pruned, batches)
    outputs = [m for m in pruned.modules() if isinstance(m, nn.Linear)][-1:]
    try:
        pruner = tp.pruner.BasePruner(pruned, example, importance=importance_criterion(importance),
                                      pruning_ratio=1 - keep_ratio, ignored_layers=outputs, round_to=round_to,
                                      root_module_types=[nn.Conv2d])
        pruner.step()
        pruned.zero_grad(set_to_none=True)
    except Exception as error:
        raise AdvisorError(f"Torch-Pruning cannot prune this network at ratio {1 - keep_ratio:.2f}: "
                           f"{one_line(error, 200)}") from None
    return pruned.eval()


def uniform_counts(groups: list[ChannelGroup], keep_ratio: float) -> dict[str, int]:
    counts = {}
    for group in groups:
        count = max(group.multiple, int(round(group.channels * keep_ratio / group.multiple)) * group.multiple)
        counts[group.name] = min(group.channels, count)
    return counts


def parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def uniform_at_parameters(module: nn.Module, example: torch.Tensor, groups: list[ChannelGroup],
                          target_parameters: int) -> tuple[nn.Module, float]:
    """Uniform pruning (same keep ratio in every group) with the parameter count closest to a target."""
    low, high = 0.0, 1.0
    best = (None, 1.0, math.inf)
    for _ in range(14):
        ratio = (low + high) / 2
        pruned = prune_to(module, example, groups, uniform_counts(groups, ratio))
        count = parameters(pruned)
        if abs(count - target_parameters) < best[2]:
            best = (pruned, ratio, abs(count - target_parameters))
        if count > target_parameters:
            high = ratio
        else:
            low = ratio
    return best[0], best[1]


def read_plan(path: str | Path) -> dict[str, int]:
    """`{"layers": {"layer1.0.conv1": 48, ...}}`, or the plan `advisor recommend` writes
    (`{"format": "advisor-plan", "units": [{"root": path, "keep": count}, ...]}`: its counts are used,
    its channel choice is not, since it was made on other weights)."""
    path = Path(path)
    if not path.is_file():
        raise AdvisorError(f"plan file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AdvisorError(f"plan file {path} is not JSON: {error}") from None
    layers = data.get("layers") if isinstance(data, dict) else None
    if layers is None and isinstance(data, dict) and data.get("format") == "advisor-plan":
        try:
            layers = {unit["root"]: unit["keep"] for unit in data["units"]}
        except (KeyError, TypeError):
            raise AdvisorError(f"plan file {path}: its units lack root and keep") from None
    if not isinstance(layers, dict) or not layers:
        raise AdvisorError(f"plan file {path} has no \"layers\" object mapping module paths to channel counts")
    for name, count in layers.items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise AdvisorError(f"plan file {path}: {name} -> {count!r} is not a positive channel count")
    return layers


def prune_by_plan(model: nn.Module, example: torch.Tensor, plan: dict[str, int],
                  importance: str = "l1") -> tuple[nn.Module, dict]:
    """A copy pruned so that each planned convolution keeps its count of output channels, the most
    important of its group (everything coupled to them pruned alike). Returns the copy and the
    counts asked for and reached."""
    modules = dict(model.named_modules())
    groups = channel_groups(model, example, importance)
    group_of = {conv: group for group in groups for conv in group.out_convs}
    counts = {}
    for name, count in plan.items():
        module = modules.get(name)
        if not isinstance(module, nn.Conv2d):
            raise AdvisorError(f"plan layer {name!r} is not a convolution of this network")
        if count > module.out_channels:
            raise AdvisorError(f"plan asks {name} for {count} channels; it has {module.out_channels} "
                               "(pruning cannot widen)")
        if name not in group_of:
            raise AdvisorError(f"Torch-Pruning cannot prune {name} (its outputs are not prunable)")
        group = group_of[name]
        if count % group.multiple:
            raise AdvisorError(f"Torch-Pruning cannot prune {name} to {count} channels (a multiple of "
                               f"{group.multiple} is needed)")
        counts[group.name] = min(count, counts.get(group.name, count))
    pruned = prune_to(model, example, groups, counts)
    widths = dict(pruned.named_modules())
    return pruned, {"asked": dict(plan), "reached": {name: widths[name].out_channels for name in plan}}


def prune_uniform(model: nn.Module, example: torch.Tensor, ratio: float, importance: str = "l1") -> nn.Module:
    """A copy with `ratio` of every group's channels removed, the least important first."""
    groups = channel_groups(model, example, importance)
    return prune_to(model, example, groups, uniform_counts(groups, 1 - ratio))
