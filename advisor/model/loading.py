"""Resolve `--model`: a built-in name, `path/file.py:factory`, or a saved `.pt2` program; and, for
what prunes and trains, the network as an nn.Module (a `.pt2` program rebuilt as one)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from advisor.errors import AdvisorError, one_line
from advisor.model.user_code import load_user_function
from advisor.model.networks import BUILTIN_NETWORKS


@dataclass
class LoadedModel:
    label: str  # what identifies the model in results
    input_shape: tuple[int, ...]
    module: nn.Module | None  # None for a .pt2 program (it can be measured, not pruned)
    program: torch.export.ExportedProgram | None = None

    def exported(self) -> torch.export.ExportedProgram:
        if self.program is None:
            example = torch.zeros(self.input_shape)
            try:
                self.program = torch.export.export(self.module.eval(), (example,))
            except Exception as error:
                raise AdvisorError(f"torch.export cannot trace {self.label}: {one_line(error, 300)}") from None
        return self.program


def parse_input_shape(text: str) -> tuple[int, ...]:
    if not re.fullmatch(r"\s*\d+(\s*x\s*\d+){1,4}\s*", text or ""):
        raise AdvisorError(f"malformed input shape {text!r}: expected e.g. 1x3x224x224")
    shape = tuple(int(part) for part in text.split("x"))
    if min(shape) < 1:
        raise AdvisorError(f"input shape {text!r} has a zero dimension")
    return shape


def load_model(spec: str, input_shape: str | None = None) -> LoadedModel:
    spec = (spec or "").strip()
    shape = parse_input_shape(input_shape) if input_shape else None
    if spec in BUILTIN_NETWORKS:
        network = BUILTIN_NETWORKS[spec]
        torch.manual_seed(0)  # the same weights every time: results are comparable
        return LoadedModel(spec, shape or network.input_shape, network.factory().eval())
    if spec.endswith(".pt2"):
        return _load_exported(spec, shape)
    if ".py:" in spec:
        return _load_factory(spec, shape)
    known = ", ".join(BUILTIN_NETWORKS)
    raise AdvisorError(f"unknown model {spec!r}: use one of {known}, path/file.py:factory or a .pt2 file")


def _load_exported(spec: str, shape: tuple[int, ...] | None) -> LoadedModel:
    path = Path(spec)
    if not path.is_file():
        raise AdvisorError(f"model file {spec} does not exist")
    try:
        program = torch.export.load(str(path))
    except Exception as error:
        raise AdvisorError(f"{spec} is not a loadable torch.export program: {one_line(error, 300)}") from None
    user_inputs = [
        node for node in program.graph.nodes
        if node.op == "placeholder" and node.name in program.graph_signature.user_inputs
    ]
    if len(user_inputs) != 1:
        raise AdvisorError(f"{spec} takes {len(user_inputs)} inputs; advisor handles one image input")
    saved_shape = tuple(int(d) for d in user_inputs[0].meta["val"].shape)
    if shape is not None and shape != saved_shape:
        raise AdvisorError(f"{spec} was exported for input {saved_shape}, not {shape}")
    return LoadedModel(str(path), saved_shape, None, program)


def _load_factory(spec: str, shape: tuple[int, ...] | None) -> LoadedModel:
    if not Path(spec.rpartition(":")[0]).is_file():
        raise AdvisorError(f"model file {spec.rpartition(':')[0]} does not exist")
    if shape is None:
        raise AdvisorError(f"--input is required for {spec} (e.g. --input 1x3x224x224)")
    factory = load_user_function(spec, "--model")
    torch.manual_seed(0)
    try:
        network = factory()
    except Exception as error:
        raise AdvisorError(f"{spec}() raised: {one_line(error, 300)}") from None
    if not isinstance(network, nn.Module):
        raise AdvisorError(f"{spec}() returned {type(network).__name__}, not a torch.nn.Module")
    return LoadedModel(spec, shape, network.eval())



def prunable_module(loaded: LoadedModel) -> nn.Module:
    """The network as an nn.Module whose convolutions, batch norms and linear layers are modules
    (what Torch-Pruning prunes and PyTorch trains): the module itself, or rebuilt from a program."""
    if loaded.module is not None:
        return loaded.module
    return rebuild_module(loaded.exported(), loaded.label)


def rebuild_module(program: torch.export.ExportedProgram, label: str) -> nn.Module:
    """A torch.fx module running the program's graph with its convolutions, batch norms and linear
    layers as nn.Modules holding the program's parameters, under their original names; every other
    operation is called as the graph calls it. AdvisorError if a parameter feeds anything else."""
    from torch import fx

    signature = program.graph_signature
    names = {**signature.inputs_to_parameters, **signature.inputs_to_buffers}  # placeholder -> path
    tensors = {**program.state_dict, **program.constants}
    graph, values, modules = fx.Graph(), {}, {}

    def value(arg):
        if isinstance(arg, fx.Node):
            if arg.name in names:
                raise AdvisorError(f"{label}: its parameter {names[arg.name]} feeds an operation that cannot be "
                                   "rebuilt as a module (recommend rebuilds conv2d, batch_norm and linear); give "
                                   "its nn.Module as path/file.py:factory instead")
            return values[arg.name]
        return arg

    for node in program.graph.nodes:
        if node.op == "placeholder":
            if node.name not in names:
                values[node.name] = graph.placeholder(node.name)
        elif node.op == "output":
            outputs = fx.node.map_aggregate(node.args[0], value)
            single = program.call_spec.out_spec is not None and program.call_spec.out_spec.is_leaf()
            graph.output(outputs[0] if single and len(outputs) == 1 else outputs)
        elif node.op == "call_function" and node.target in _REBUILDERS:
            path, module = _REBUILDERS[node.target](node, names, tensors)
            modules.setdefault(path, module)
            values[node.name] = graph.call_module(path, (value(node.args[0]),))
        else:
            values[node.name] = graph.call_function(node.target, fx.node.map_aggregate(node.args, value),
                                                    fx.node.map_aggregate(node.kwargs, value))
    rebuilt = fx.GraphModule(modules, graph)
    return rebuilt.eval()


def _tensor(node, names: dict, tensors: dict) -> torch.Tensor | None:
    return None if node is None else tensors[names[node.name]].detach().clone()


def _path(node, names: dict) -> str:
    return names[node.name].rpartition(".")[0] or names[node.name]


def _conv2d(node, names: dict, tensors: dict) -> tuple[str, nn.Module]:
    args = list(node.args) + [None] * (7 - len(node.args))
    weight, bias = _tensor(args[1], names, tensors), _tensor(args[2], names, tensors)
    stride, padding, dilation, groups = args[3] or 1, args[4] or 0, args[5] or 1, args[6] or 1
    if isinstance(padding, str):
        raise AdvisorError(f"{names[args[1].name]}: padding {padding!r} cannot be rebuilt; give path/file.py:factory")
    conv = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), stride, padding, dilation,
                     groups, bias is not None)
    conv.weight = nn.Parameter(weight)
    if bias is not None:
        conv.bias = nn.Parameter(bias)
    return _path(args[1], names), conv


def _batch_norm(node, names: dict, tensors: dict) -> tuple[str, nn.Module]:
    _input, weight, bias, mean, var, _training, momentum, eps = node.args[:8]
    named = next(arg for arg in (weight, mean) if arg is not None)
    rank = node.args[0].meta["val"].dim()
    kind = nn.BatchNorm2d if rank == 4 else nn.BatchNorm1d
    norm = kind(tensors[names[named.name]].shape[0], eps, momentum, affine=weight is not None,
                track_running_stats=mean is not None)
    if weight is not None:
        norm.weight, norm.bias = nn.Parameter(_tensor(weight, names, tensors)), nn.Parameter(_tensor(bias, names, tensors))
    if mean is not None:
        norm.running_mean, norm.running_var = _tensor(mean, names, tensors), _tensor(var, names, tensors)
    return _path(named, names), norm


def _linear(node, names: dict, tensors: dict) -> tuple[str, nn.Module]:
    args = list(node.args) + [None] * (3 - len(node.args))
    weight, bias = _tensor(args[1], names, tensors), _tensor(args[2], names, tensors)
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias is not None)
    linear.weight = nn.Parameter(weight)
    if bias is not None:
        linear.bias = nn.Parameter(bias)
    return _path(args[1], names), linear


_REBUILDERS = {torch.ops.aten.conv2d.default: _conv2d, torch.ops.aten.batch_norm.default: _batch_norm,
               torch.ops.aten.linear.default: _linear}
