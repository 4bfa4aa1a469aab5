"""Find a network's convolutions in execution order, and build one at another width."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from advisor.errors import AdvisorError
from advisor.model.loading import LoadedModel

# the precisions a layer can be built and measured in
DTYPES = {"float32": torch.float32, "float16": torch.float16}
_CONV_OPS = {torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default}


@dataclass(frozen=True)
class ConvLayer:
    """One 2-D convolution as it sits in the network: plain data, stored beside each result."""

    name: str  # conv1, conv2, ... in execution order
    module_path: str  # e.g. layer1.0.conv2
    input_shape: tuple[int, int, int, int]  # N, C, H, W
    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    bias: bool

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_channels == self.out_channels

    def output_hw(self) -> tuple[int, int]:
        return tuple(
            (size + 2 * pad - dil * (k - 1) - 1) // st + 1
            for size, pad, dil, k, st in zip(
                self.input_shape[2:], self.padding, self.dilation, self.kernel, self.stride
            )
        )

    def with_out_channels(self, channels: int) -> "ConvLayer":
        """This layer with `channels` outputs; a depthwise layer's inputs move with them."""
        if channels < 1:
            raise AdvisorError(f"{self.name}: channels must be at least 1, not {channels}")
        if self.depthwise:
            n, _, h, w = self.input_shape
            return replace(self, out_channels=channels, in_channels=channels, groups=channels,
                           input_shape=(n, channels, h, w))
        if channels % self.groups:
            raise AdvisorError(
                f"{self.name} has {self.groups} groups: its channel counts must be multiples of {self.groups}, "
                f"{channels} is not"
            )
        return replace(self, out_channels=channels)

    def flops(self) -> int:
        """Multiply-adds times two for one forward pass."""
        h, w = self.output_hw()
        per_output = (self.in_channels // self.groups) * self.kernel[0] * self.kernel[1]
        return 2 * self.input_shape[0] * self.out_channels * h * w * per_output

    def to_dict(self) -> dict:
        return asdict(self)

    def build(self, seed: int = 0, dtype: str = "float32") -> tuple[nn.Conv2d, torch.Tensor]:
        """The layer alone, with seeded random weights, and a seeded random input, in `dtype`."""
        if dtype not in DTYPES:
            raise AdvisorError(f"unknown dtype {dtype!r}: use {' or '.join(DTYPES)}")
        generator = torch.Generator().manual_seed(seed)
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel, self.stride, self.padding,
                         self.dilation, self.groups, self.bias)
        with torch.no_grad():
            fan_in = (self.in_channels // self.groups) * self.kernel[0] * self.kernel[1]
            bound = fan_in ** -0.5
            conv.weight.uniform_(-bound, bound, generator=generator)
            if conv.bias is not None:
                conv.bias.uniform_(-bound, bound, generator=generator)
        x = torch.randn(self.input_shape, generator=generator)
        return conv.eval().to(DTYPES[dtype]), x.to(DTYPES[dtype])


def _pair(value, default: int) -> tuple[int, int]:
    if value is None:
        value = default
    if isinstance(value, int):
        return (value, value)
    values = [int(v) for v in value]
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def conv_layers(model: LoadedModel) -> list[ConvLayer]:
    """The 2-D convolutions of the model's exported graph, in execution order."""
    program = model.exported()
    parameters = {**program.graph_signature.inputs_to_parameters}
    layers: list[ConvLayer] = []
    for node in program.graph.nodes:
        if node.op != "call_function" or node.target not in _CONV_OPS:
            continue
        args = list(node.args)
        if node.target == torch.ops.aten.convolution.default:
            if args[6]:  # transposed convolutions are not pruned by output channels here
                continue
            stride, padding, dilation, groups = args[3], args[4], args[5], args[8]
        else:
            args += [None] * (7 - len(args))
            stride, padding, dilation, groups = args[3], args[4], args[5], args[6]
            if isinstance(padding, str):
                continue  # 'same'/'valid' string padding: rare, skip rather than guess
        x_meta, w_meta = args[0].meta["val"], args[1].meta["val"]
        if x_meta.dim() != 4:
            continue
        weight_name = parameters.get(args[1].name, args[1].name)
        layers.append(ConvLayer(
            name=f"conv{len(layers) + 1}",
            module_path=weight_name.removesuffix(".weight"),
            input_shape=tuple(int(d) for d in x_meta.shape),
            in_channels=int(x_meta.shape[1]),
            out_channels=int(w_meta.shape[0]),
            kernel=(int(w_meta.shape[2]), int(w_meta.shape[3])),
            stride=_pair(stride, 1),
            padding=_pair(padding, 0),
            dilation=_pair(dilation, 1),
            groups=int(groups or 1),
            bias=args[2] is not None,
        ))
    if not layers:
        raise AdvisorError(f"{model.label} has no 2-D convolutions")
    return layers


def find_layer(layers: list[ConvLayer], wanted: str) -> ConvLayer:
    for layer in layers:
        if wanted in (layer.name, layer.module_path):
            return layer
    shown = ", ".join(layer.name for layer in layers[:6])
    raise AdvisorError(f"no layer {wanted!r}: this model has {shown}{', ...' if len(layers) > 6 else ''} "
                       f"(see `advisor layers`)")
