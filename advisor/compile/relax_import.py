"""torch.nn.Module -> Relax IRModule (weights as separate inputs, so workloads are shape-only)."""

from __future__ import annotations

import torch

from advisor.errors import AdvisorError, one_line


def to_relax(module: torch.nn.Module | torch.export.ExportedProgram, example: torch.Tensor | None = None):
    """Return (IRModule after the zero pipeline, list of weight arrays as numpy)."""
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    try:
        program = module if isinstance(module, torch.export.ExportedProgram) else torch.export.export(
            module.eval(), (example,))
        mod = from_exported_program(program, keep_params_as_input=True)
    except Exception as error:
        raise AdvisorError(f"TVM cannot import the model: {one_line(error, 300)}") from None
    mod, params = relax.frontend.detach_params(mod)
    weights = [param.numpy() for param in params.get("main", [])]
    return relax.get_pipeline("zero")(mod), weights
