"""torch.nn.Module -> Relax IRModule (weights as separate inputs, so workloads are shape-only).

TVM 0.27's importer gives every 2-D convolution a float32 output, whatever its inputs: a float16
layer would then compute in float16 and return float32 (and one with a bias fails to import, its
float32 output meeting a float16 bias). Here a convolution of float16 inputs still accumulates in
float32 but is cast back to float16 before the bias and whatever follows, as cuDNN's float16
convolutions do; the cast is elementwise, so it fuses into the convolution's kernel, which then
writes float16.
"""

from __future__ import annotations

import gc

import torch

from advisor.compile.quiet import native_stderr_silenced
from advisor.errors import AdvisorError, one_line

_LOW_PRECISION = ("float16", "bfloat16")


def to_relax(module: torch.nn.Module | torch.export.ExportedProgram, example: torch.Tensor | None = None):
    """Return (IRModule after the zero pipeline, list of weight arrays as numpy)."""
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    failure = None
    # an import that fails leaves its BlockBuilder with open blocks, whose destructor logs a
    # warning to file descriptor 2 when the exception's frames are freed: silenced with them
    with native_stderr_silenced():
        try:
            program = module if isinstance(module, torch.export.ExportedProgram) else torch.export.export(
                module.eval(), (example,))
            mod = from_exported_program(program, keep_params_as_input=True,
                                        custom_convert_map={name: _conv2d_in_input_precision
                                                            for name in ("conv2d.default", "convolution.default")})
        except Exception as error:
            failure = one_line(error, 300)
        if failure is not None:
            gc.collect()
    if failure is not None:
        raise AdvisorError(f"TVM cannot import the model: {failure}")
    mod, params = relax.frontend.detach_params(mod)
    weights = [param.numpy() for param in params.get("main", [])]
    return relax.get_pipeline("zero")(mod), weights


def _conv2d_in_input_precision(node, importer):
    """The importer's 2-D convolution, with a float16 (or bfloat16) output for such inputs."""
    from tvm import relax

    name = node.target.__name__
    args = importer.retrieve_args(node)
    x, weight = args[0], args[1]
    dtype = str(x.ty.dtype)
    transposed = name == "convolution.default" and len(args) > 6 and args[6]
    if dtype not in _LOW_PRECISION or transposed or x.ty.ndim != 4:
        return importer._convolution(node) if name == "convolution.default" else importer._conv2d(node)
    bias = args[2] if len(args) > 2 else None
    stride, padding, dilation = (args[i] if len(args) > i else default for i, default in ((3, 1), (4, 0), (5, 1)))
    groups = (args[8] if len(args) > 8 else 1) if name == "convolution.default" else (args[6] if len(args) > 6 else 1)
    builder = importer.block_builder
    conv = builder.emit(relax.op.nn.conv2d(x, weight, strides=stride, padding=padding, dilation=dilation,
                                           groups=groups, data_layout="NCHW", kernel_layout="OIHW",
                                           out_dtype="float32"))
    conv = builder.emit(relax.op.astype(conv, dtype))
    if importer._is_no_bias(bias):
        return conv
    return builder.emit(relax.op.add(conv, relax.op.reshape(bias, (1, -1, 1, 1))))
