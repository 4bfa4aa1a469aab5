"""Train, fine-tune and score networks on a `Dataset`, deterministically (fixed seed).

Trained weights are cached by network, data set and recipe: in the repository's models/ when the file
is under 1 MB, otherwise in ~/.cache/advisor/models. Setting $ADVISOR_MODEL_CACHE uses that folder
alone, for reading and writing.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from advisor.model.datasets import Dataset
from advisor.errors import AdvisorError
from advisor.model.user_code import load_user_function
from advisor.model.networks import ResNet18, TinyNet

REPO_MODELS = Path(__file__).resolve().parents[1] / "models"
SMALL_BYTES = 1 << 20

# The built-in family, built for the data set's image channels and classes.
NETWORKS: dict[str, Callable[[int, int], nn.Module]] = {
    "tinynet": lambda channels, classes: TinyNet(classes, in_channels=channels, width=16),
    "resnet18-w16": lambda channels, classes: ResNet18(classes, cifar=True, width=16, in_channels=channels),
}


def build_network(name: str, dataset: Dataset, seed: int = 0) -> nn.Module:
    if name not in NETWORKS:
        raise AdvisorError(f"unknown network {name!r} for training: use one of {', '.join(NETWORKS)}")
    torch.manual_seed(seed)
    return NETWORKS[name](dataset.image_shape[0], dataset.num_classes)


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, *, seed: int = 0, lr: float = 3e-3,
          batch_size: int = 64, progress: Callable[[], None] | None = None) -> nn.Module:
    """Adam with a fixed shuffling seed; the model is left in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            index = order[start:start + batch_size]
            if len(index) < 2:
                continue  # batch norm needs two samples
            optimizer.zero_grad()
            loss = loss_fn(model(x[index]), y[index])
            loss.backward()
            optimizer.step()
        if progress:
            progress()
    return model.eval()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype = torch.float32,
             batch_size: int = 256) -> float:
    """Fraction of images whose top class is the label (inputs cast to `dtype`)."""
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            logits = model(x[start:start + batch_size].to(dtype))
            correct += int((logits.float().argmax(1) == y[start:start + batch_size]).sum())
    return correct / len(x)


def trained_network(name: str, dataset: Dataset, epochs: int = 15, seed: int = 0,
                    announce: Callable[[str], None] = lambda _m: None) -> nn.Module:
    """The network trained on the data set's training part: from the cache, or trained now and cached."""
    model = build_network(name, dataset, seed)
    filename = f"{name}-{dataset.name.replace(':', '_').replace('/', '_')}-e{epochs}-s{seed}-{_fingerprint(dataset)}.pt"
    for folder in _folders():
        path = folder / filename
        if path.is_file():
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval()
    announce(f"training {name} on {dataset.name} for {epochs} epochs (seed {seed}); cached afterwards")
    train(model, dataset.x_train, dataset.y_train, epochs, seed=seed)
    _save(model, filename)
    return model


def _save(model: nn.Module, filename: str) -> None:
    import io

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    small = buffer.tell() < SMALL_BYTES and REPO_MODELS.parent.joinpath(".git").exists()
    folder = _folders()[0] if small else _folders()[-1]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / filename).write_bytes(buffer.getvalue())
    except OSError:
        pass  # a read-only place only costs retraining next time


def _folders() -> list[Path]:
    if os.environ.get("ADVISOR_MODEL_CACHE"):
        return [Path(os.environ["ADVISOR_MODEL_CACHE"])]
    return [REPO_MODELS, Path.home() / ".cache" / "advisor" / "models"]


def _fingerprint(dataset: Dataset) -> str:
    digest = hashlib.sha256()
    for tensor in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test):
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()[:10]


def load_evaluate(spec: str) -> Callable[[nn.Module], float]:
    """`path/file.py:function`: a function taking a model and returning a score (higher is better)."""
    function = load_user_function(spec, "--eval")

    def evaluate(model: nn.Module) -> float:
        try:
            score = function(model)
        except Exception as error:
            raise AdvisorError(f"--eval {spec}: the function raised {type(error).__name__}: {error}") from None
        try:
            return float(score)
        except (TypeError, ValueError):
            raise AdvisorError(f"--eval {spec}: returned {score!r}, not a number") from None

    return evaluate
