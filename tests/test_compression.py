"""Data loaders, training, each compression technique and memory accounting, on TinyNet and digits."""

import json

import numpy as np
import pytest
import torch

from advisor.prune.compression import VariantSpec, compress, conv_widths, prunable_weights, variant_specs
from advisor.prune.groups import prune_by_plan, read_plan
from advisor.model.datasets import load_dataset, load_digits, load_image_folder, load_npz
from advisor.errors import AdvisorError
from advisor.measure.memory import stored_size, tensor_bytes, torch_peak_bytes
from advisor.pareto.front import pareto_front
from advisor.model.training import accuracy, build_network, load_evaluate, train


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def trained(digits):
    torch.set_num_threads(1)
    model = build_network("tinynet", digits)
    return train(model, digits.x_train, digits.y_train, epochs=4)


# --- data -------------------------------------------------------------------------------------------------

def test_digits_split_is_held_out_and_stratified(digits):
    assert digits.image_shape == (1, 8, 8) and digits.num_classes == 10
    assert len(digits.y_train) + len(digits.y_test) == 1797
    assert 0.25 < len(digits.y_test) / 1797 < 0.35
    assert set(digits.y_test.tolist()) == set(range(10))
    train_rows = {row.numpy().tobytes() for row in digits.x_train}
    overlap = sum(row.numpy().tobytes() in train_rows for row in digits.x_test)
    assert overlap < 5  # the digits set has a few duplicate images; the split itself shares none
    assert float(digits.x_train.max()) <= 1.0 and float(digits.x_train.min()) >= 0.0
    again = load_digits()
    assert torch.equal(again.y_test, digits.y_test)  # fixed seed: the same split every time


def test_npz_loader(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (40, 6, 6)).astype(np.uint8), np.repeat(np.arange(4), 10)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    data = load_dataset(str(tmp_path / "d.npz"))
    assert data.image_shape == (1, 6, 6) and data.num_classes == 4
    assert len(data.y_test) == 12 and float(data.x_train.max()) <= 1.0
    np.savez(tmp_path / "s.npz", x_train=x[:30, None], y_train=y[:30], x_test=x[30:, None], y_test=y[30:])
    assert len(load_npz(tmp_path / "s.npz").y_test) == 10


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((10, 4)), "y": np.zeros(10, int)}, "expected N x H x W"),
    ({"x": np.zeros((10, 4, 4)), "y": np.zeros(9, int)}, "one per image"),
    ({"x": np.zeros((10, 4, 4)), "y": np.zeros(10)}, "labels must be integers"),
    ({"images": np.zeros((10, 4, 4))}, "expected x and y"),
])
def test_npz_bad_shapes(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(AdvisorError, match=message):
        load_npz(tmp_path / "bad.npz")


def test_bad_data_paths(tmp_path):
    with pytest.raises(AdvisorError, match="not found"):
        load_dataset(str(tmp_path / "nowhere"))
    with pytest.raises(AdvisorError, match="does not exist"):
        load_image_folder(tmp_path / "nowhere")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(AdvisorError, match="not a readable .npz"):
        load_dataset(str(tmp_path / "junk.npz"))
    (tmp_path / "one" / "a").mkdir(parents=True)
    with pytest.raises(AdvisorError, match="class folder"):
        load_image_folder(tmp_path / "one")
    (tmp_path / "one" / "b").mkdir()
    with pytest.raises(AdvisorError, match="holds no images"):
        load_image_folder(tmp_path / "one")


def test_image_folder_loader(tmp_path):
    Image = pytest.importorskip("PIL.Image", reason="the image-folder loader needs Pillow (pip install pillow)")
    for label, value in (("cat", 30), ("dog", 220)):
        (tmp_path / label).mkdir()
        for index in range(5):
            Image.fromarray(np.full((10, 12), value + index, np.uint8)).save(tmp_path / label / f"{index}.png")
    data = load_image_folder(tmp_path, image_size=8)
    assert data.classes == ["cat", "dog"] and data.image_shape == (1, 8, 8)  # grayscale kept as one channel
    assert len(data.y_test) == 4 and len(data.y_train) == 6
    (tmp_path / "dog" / "broken.png").write_text("not an image")
    with pytest.raises(AdvisorError, match="cannot read image"):
        load_image_folder(tmp_path)


# --- training and scores ------------------------------------------------------------------------------------

def test_trained_network_is_far_above_chance(trained, digits):
    assert accuracy(trained, digits.x_test, digits.y_test) > 0.8


def test_evaluate_function_errors(tmp_path, trained):
    (tmp_path / "ev.py").write_text("def good(m):\n    return 0.5\n"
                                    "def boom(m):\n    raise ValueError('no labels here')\n"
                                    "def text(m):\n    return 'high'\n")
    assert load_evaluate(f"{tmp_path}/ev.py:good")(trained) == 0.5
    with pytest.raises(AdvisorError, match="raised ValueError: no labels here"):
        load_evaluate(f"{tmp_path}/ev.py:boom")(trained)
    with pytest.raises(AdvisorError, match="not a number"):
        load_evaluate(f"{tmp_path}/ev.py:text")(trained)
    with pytest.raises(AdvisorError, match="has no function"):
        load_evaluate(f"{tmp_path}/ev.py:missing")
    with pytest.raises(AdvisorError, match="does not exist"):
        load_evaluate(f"{tmp_path}/none.py:good")


# --- techniques -----------------------------------------------------------------------------------------------

def _sparsity(weight: torch.Tensor) -> float:
    return float((weight == 0).float().mean())


def test_weight_pruning_global_and_per_layer(trained, digits):
    base = accuracy(trained, digits.x_test, digits.y_test)
    per_layer = compress(VariantSpec("weight-layer", 0.6), trained, digits).module
    for module, _ in prunable_weights(per_layer):
        assert abs(_sparsity(module.weight) - 0.6) < 0.02
        assert not hasattr(module, "weight_mask")  # pruning made permanent
    glob = compress(VariantSpec("weight-global", 0.6), trained, digits)
    sparsities = [_sparsity(m.weight) for m, _ in prunable_weights(glob.module)]
    total = sum(m.weight.numel() for m, _ in prunable_weights(glob.module))
    zeros = sum(int((m.weight == 0).sum()) for m, _ in prunable_weights(glob.module))
    assert abs(zeros / total - 0.6) < 0.01 and max(sparsities) - min(sparsities) > 0.05  # one threshold
    assert all(_sparsity(m.weight) == 0 for m, _ in prunable_weights(trained))  # original untouched
    tuned = compress(VariantSpec("weight-global", 0.9, finetune=1), trained, digits).module
    untuned = compress(VariantSpec("weight-global", 0.9), trained, digits).module
    pairs = list(zip((m.weight for m, _ in prunable_weights(tuned)), (m.weight for m, _ in prunable_weights(untuned))))
    assert all(torch.equal(t == 0, u == 0) for t, u in pairs)  # the same weights pruned, and kept at zero
    assert sum(not torch.equal(t, u) for t, u in pairs) == len(pairs)  # while every layer's others trained on
    zeros_tuned = sum(int((m.weight == 0).sum()) for m, _ in prunable_weights(tuned))
    assert abs(zeros_tuned / total - 0.9) < 0.01  # fine-tuning keeps the pruned weights at zero
    assert accuracy(tuned, digits.x_test, digits.y_test) >= accuracy(untuned, digits.x_test, digits.y_test) - 0.02
    assert accuracy(untuned, digits.x_test, digits.y_test) < base


def test_channel_pruning_uniform(trained, digits):
    pruned = compress(VariantSpec("channel-uniform", 0.5), trained, digits).module
    assert conv_widths(pruned) == {"conv1": 8, "conv2": 8, "conv3": 16, "conv4": 16}
    assert pruned(digits.x_test[:3]).shape == (3, 10)
    assert stored_size(pruned).dense_bytes < stored_size(trained).dense_bytes / 2


def test_channel_plan(tmp_path, trained, digits):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"layers": {"conv3": 20, "conv4": 24}}))
    result = compress(VariantSpec("channel-plan", plan=str(plan)), trained, digits)
    assert result.notes["reached"] == {"conv3": 20, "conv4": 24}
    assert conv_widths(result.module)["conv1"] == 16
    assert result.module(digits.x_test[:2]).shape == (2, 10)
    recommended = tmp_path / "recommended.json"  # the plan format `advisor recommend` writes
    recommended.write_text(json.dumps({"format": "advisor-plan", "units": [
        {"root": "conv3", "original": 32, "keep": 24, "keep_indices": list(range(24))}]}))
    assert read_plan(recommended) == {"conv3": 24}
    model = build_network("tinynet", digits)
    pruned, notes = prune_by_plan(model, torch.zeros(1, 1, 8, 8), {"conv1": 12})
    assert notes["reached"]["conv1"] == 12 and conv_widths(pruned)["conv2"] == 12  # the coupled depthwise too


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not JSON"),
    ('{"conv3": 20}', "no \\\"layers\\\" object"),
    ('{"layers": {"conv3": -1}}', "not a positive channel count"),
])
def test_bad_plan_files(tmp_path, content, message):
    path = tmp_path / "plan.json"
    path.write_text(content)
    with pytest.raises(AdvisorError, match=message):
        read_plan(path)


def test_plan_that_does_not_fit(digits):
    model = build_network("tinynet", digits)
    with pytest.raises(AdvisorError, match="not a convolution"):
        prune_by_plan(model, torch.zeros(1, 1, 8, 8), {"fc": 4})
    with pytest.raises(AdvisorError, match="cannot widen"):
        prune_by_plan(model, torch.zeros(1, 1, 8, 8), {"conv3": 64})
    with pytest.raises(AdvisorError, match="does not exist"):
        variant_specs(["channel"], [0.5], [0.5], ["/nowhere/plan.json"], 0)
    with pytest.raises(AdvisorError, match="unknown technique"):
        variant_specs(["pruning"], [0.5], [0.5], [], 0)
    with pytest.raises(AdvisorError, match="between 0 and 1"):
        variant_specs(["weight"], [1.5], [0.5], [], 0)


def test_quantisation(trained, digits):
    base = accuracy(trained, digits.x_test, digits.y_test)
    half = compress(VariantSpec("fp16"), trained, digits)
    assert all(p.dtype == torch.float16 for p in half.module.parameters())
    assert abs(accuracy(half.module, digits.x_test, digits.y_test, torch.float16) - base) < 0.02
    int8 = compress(VariantSpec("int8"), trained, digits).module
    assert any(v.is_quantized for v in int8.state_dict().values() if isinstance(v, torch.Tensor))
    assert abs(accuracy(int8, digits.x_test, digits.y_test) - base) < 0.05
    sizes = [stored_size(m).stored_bytes for m in (trained, half.module, int8)]
    assert sizes[0] > sizes[1] > sizes[2]
    assert sizes[2] < sizes[0] / 3


# --- memory ----------------------------------------------------------------------------------------------------

def test_sparse_bytes_are_counted_honestly():
    dense = torch.randn(64, 64)
    assert tensor_bytes(dense) == (64 * 64 * 4, 64 * 64 * 4)
    mostly_zero = torch.zeros(64, 64)
    mostly_zero[:32, 0] = 1.0  # 32 values: CSR (values + column indices + row pointers) is smallest
    stored, full = tensor_bytes(mostly_zero)
    assert stored == 32 * (4 + 4) + 65 * 4 and full == 64 * 64 * 4
    assert stored < 32 * 4 + 64 * 64 // 8  # the bitmask would cost more
    half_zero = dense.clone()
    half_zero[:, ::2] = 0  # at 50% sparsity a bitmask beats CSR
    assert tensor_bytes(half_zero)[0] == 64 * 32 * 4 + 64 * 64 // 8
    few_zero = dense.clone()
    few_zero[0, 0] = 0
    assert tensor_bytes(few_zero)[0] == 64 * 64 * 4  # a few zeros never pay for an index


def test_peak_memory_grows_with_width(digits):
    small = torch_peak_bytes(build_network("tinynet", digits).eval(), torch.zeros(1, 1, 8, 8))
    wide = build_network("resnet18-w16", digits).eval()
    assert 0 < small < torch_peak_bytes(wide, torch.zeros(1, 1, 8, 8))


def test_pareto_front():
    costs, scores = [1.0, 2.0, 3.0, 1.5, 0.5], [0.5, 0.9, 0.95, 0.4, 0.1]
    assert pareto_front(costs, scores) == [4, 0, 1, 2]  # 3 is beaten by 0 (cheaper and better)
    assert pareto_front([1.0, 1.0], [0.5, 0.5]) == [0]
