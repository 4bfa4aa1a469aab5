import textwrap

import pytest
import torch

from advisor.errors import AdvisorError
from advisor.model.layers import conv_layers, find_layer
from advisor.model.loading import load_model
from advisor.model.networks import BUILTIN_NETWORKS


def test_resnet18_cifar_layers_in_execution_order():
    layers = conv_layers(load_model("resnet18-cifar"))
    assert len(layers) == 20
    conv3 = find_layer(layers, "conv3")
    assert conv3.module_path == "layer1.0.conv2"
    assert conv3.input_shape == (1, 64, 32, 32) and conv3.out_channels == 64 and conv3.kernel == (3, 3)
    assert find_layer(layers, "layer1.0.conv2") == conv3
    # the downsample runs before the block's first conv, and halves the map
    downsample = find_layer(layers, "layer2.0.downsample.0")
    assert downsample.stride == (2, 2) and downsample.kernel == (1, 1)


@pytest.mark.parametrize("name", sorted(BUILTIN_NETWORKS))
def test_every_builtin_exports_and_runs(name):
    model = load_model(name)
    layers = conv_layers(model)
    assert layers[0].input_shape == model.input_shape
    if name.startswith(("resnet18", "vgg16", "mobilenet")):
        assert len(layers) >= 13
    x = torch.randn(model.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        eager = model.module.eval()(x)
        exported = model.exported().module()(x)  # the graph the layers were read from computes the same
    assert eager.shape == (1, BUILTIN_NETWORKS[name].classes) and torch.isfinite(eager).all()
    assert torch.allclose(exported, eager, rtol=1e-4, atol=1e-4 * float(eager.abs().max()))
    for layer in (layers[0], layers[-1]):  # a layer alone, as a sweep builds it, has its place's shapes
        conv, alone = layer.build()
        assert tuple(conv(alone).shape) == (1, layer.out_channels, *layer.output_hw())


def test_depthwise_channels_move_together():
    layers = conv_layers(load_model("mobilenet_v2-cifar"))
    depthwise = next(layer for layer in layers if layer.depthwise)
    wider = depthwise.with_out_channels(48)
    assert (wider.in_channels, wider.out_channels, wider.groups, wider.input_shape[1]) == (48, 48, 48, 48)
    conv, x = wider.build()
    assert conv(x).shape[1] == 48


def test_grouped_counts_must_divide():
    layer = conv_layers(load_model("tinynet"))[2].__class__(
        "c", "c", (1, 8, 4, 4), 8, 8, (1, 1), (1, 1), (0, 0), (1, 1), 2, False)
    with pytest.raises(AdvisorError, match="multiples of 2"):
        layer.with_out_channels(7)


def test_user_factory_and_pt2(tmp_path):
    source = tmp_path / "net.py"
    source.write_text(textwrap.dedent("""
        import torch
        def build():
            return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1))
    """))
    model = load_model(f"{source}:build", "1x3x12x12")
    layers = conv_layers(model)
    assert [(l.module_path, l.out_channels, l.bias) for l in layers] == [("0", 8, True), ("2", 4, True)]
    assert layers[1].input_shape == (1, 8, 10, 10)

    saved = tmp_path / "net.pt2"
    torch.export.save(model.exported(), saved)
    again = load_model(str(saved))
    assert again.input_shape == (1, 3, 12, 12)
    assert conv_layers(again) == layers


@pytest.mark.parametrize("spec, shape, words", [
    ("nosuchnet", None, "unknown model"),
    ("missing.py:build", "1x3x8x8", "does not exist"),
    ("missing.pt2", None, "does not exist"),
    ("resnet18", "1x3x", "malformed input shape"),
])
def test_bad_models(spec, shape, words):
    with pytest.raises(AdvisorError, match=words):
        load_model(spec, shape)


def test_factory_needs_input_and_a_module(tmp_path):
    source = tmp_path / "net.py"
    source.write_text("def build():\n    return 3\n")
    with pytest.raises(AdvisorError, match="--input is required"):
        load_model(f"{source}:build")
    with pytest.raises(AdvisorError, match="not a torch.nn.Module"):
        load_model(f"{source}:build", "1x3x8x8")
    with pytest.raises(AdvisorError, match="no function"):
        load_model(f"{source}:other", "1x3x8x8")
