"""Resolve `--model`: a built-in name, `path/file.py:factory`, or a saved `.pt2` program."""

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

