"""Train, fine-tune and score networks on a `Dataset`, deterministically (fixed seed).

Trained weights are cached by network, data set and recipe: in the repository's models/ when the file
is under 1 MB, otherwise in ~/.cache/advisor/models. Fine-tuned weights are cached in the latter by
what they started from and the recipe. Setting $ADVISOR_MODEL_CACHE uses that folder alone, for
reading and writing.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from advisor.model.datasets import Dataset
from advisor.errors import AdvisorError, one_line
from advisor.model.user_code import load_user_function
from advisor.model.networks import BUILTIN_NETWORKS

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"
SMALL_BYTES = 1 << 20
FINETUNE_LR = 1e-3  # fine-tuning after compression: a third of the training rate, from the trained weights


@dataclass(frozen=True)
class Recipe:
    """How a network is trained or fine-tuned: Adam at `lr`, constant, or 'one-cycle' (warm up to
    `lr` over the first 15% of steps, then a cosine down to nearly 0: a few epochs of digits resized
    to 32x32 reach 98-99% with it where a constant rate left 60-95%, swinging between epochs)."""

    lr: float = 3e-3
    schedule: str = "constant"  # or one-cycle
    batch_size: int = 64

    @property
    def tag(self) -> str:
        """Part of a cached file's name (empty for pareto's constant recipe, whose files predate it)."""
        return "" if self == Recipe() else f"-{self.schedule}-lr{self.lr:g}-b{self.batch_size}"


# what `advisor recommend` trains built-in networks and fine-tunes every network compared with
TRAIN_ONE_CYCLE = Recipe(lr=1e-2, schedule="one-cycle")
FINETUNE_ONE_CYCLE = Recipe(lr=FINETUNE_LR, schedule="one-cycle")

# the family `advisor pareto` trains (any built-in can be trained: build_network)
NETWORKS = ("tinynet", "resnet18-w16")


def build_network(name: str, dataset: Dataset, seed: int = 0) -> nn.Module:
    """A built-in network, untrained (seeded), for the data set's image channels and classes."""
    if name not in BUILTIN_NETWORKS:
        raise AdvisorError(f"unknown network {name!r} for training: use one of {', '.join(BUILTIN_NETWORKS)}")
    torch.manual_seed(seed)
    return BUILTIN_NETWORKS[name].build(dataset.num_classes, dataset.image_shape[0])


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, *, seed: int = 0, lr: float = 3e-3,
          batch_size: int = 64, progress: Callable[[], None] | None = None, schedule: str = "constant") -> nn.Module:
    """Adam with a fixed shuffling seed, at a constant rate or one-cycle (Recipe); the model is left
    in eval mode."""
    if schedule not in ("constant", "one-cycle"):
        raise AdvisorError(f"unknown learning-rate schedule {schedule!r}")
    generator = torch.Generator().manual_seed(seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=lr)
    scheduler = None
    if schedule == "one-cycle" and epochs > 0:
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, pct_start=0.15,
                                                        total_steps=epochs * math.ceil(len(x) / batch_size))
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            index = order[start:start + batch_size]
            if len(index) >= 2:  # batch norm needs two samples
                optimizer.zero_grad()
                loss = loss_fn(model(x[index]), y[index])
                loss.backward()
                optimizer.step()
            if scheduler is not None:
                scheduler.step()
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
                    announce: Callable[[str], None] = lambda _m: None, recipe: Recipe = Recipe()) -> nn.Module:
    """The network trained on the data set's training part: from the cache, or trained now and cached."""
    model = build_network(name, dataset, seed)
    filename = (f"{name}-{dataset.name.replace(':', '_').replace('/', '_')}-e{epochs}-s{seed}{recipe.tag}-"
                f"{_fingerprint(dataset)}.pt")
    for folder in _folders():
        path = folder / filename
        if path.is_file():
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval()
    announce(f"training {name} on {dataset.name} for {epochs} epochs (seed {seed}); cached afterwards")
    train(model, dataset.x_train, dataset.y_train, epochs, seed=seed, lr=recipe.lr, batch_size=recipe.batch_size,
          schedule=recipe.schedule)
    _save(model, filename)
    return model


def finetune(model: nn.Module, dataset: Dataset, epochs: int, seed: int = 0,
             recipe: Recipe = Recipe(lr=FINETUNE_LR)) -> nn.Module:
    """Fine-tuning after compression: `epochs` of the recipe (pareto's: Adam at FINETUNE_LR,
    constant) on the training images, with its own shuffling seed; in place, left in eval mode."""
    if epochs > 0:
        train(model, dataset.x_train, dataset.y_train, epochs, seed=seed + 1, lr=recipe.lr,
              batch_size=recipe.batch_size, schedule=recipe.schedule)
    return model.eval()


def finetuned_network(model: nn.Module, dataset: Dataset, epochs: int, seed: int = 0,
                      announce: Callable[[str], None] = lambda _m: None,
                      recipe: Recipe = FINETUNE_ONE_CYCLE) -> nn.Module:
    """`model` (not touched) fine-tuned by the recipe: from the cache, keyed by the weights it starts
    from, the data set and the recipe, or fine-tuned now and cached (a rerun does not train again)."""
    import copy

    tuned = copy.deepcopy(model).eval()
    if epochs <= 0:
        return tuned
    digest = hashlib.sha256(f"{epochs}|{seed}|{recipe}|{_fingerprint(dataset)}".encode())
    for name, tensor in tuned.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    path = _folders()[-1] / f"finetuned-{digest.hexdigest()[:16]}.pt"
    if path.is_file():
        try:
            tuned.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return tuned.eval()
        except Exception:  # a damaged file: fine-tune again
            pass
    announce(f"fine-tuning for {epochs} epochs")
    finetune(tuned, dataset, epochs, seed, recipe)
    _save(tuned, path.name, small_in_repo=False)
    return tuned


def head_width(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """How many scores the network gives per image (its classes)."""
    with torch.inference_mode():
        try:
            output = model.eval()(torch.zeros(input_shape))
        except Exception as error:
            raise AdvisorError(f"the network does not run on input {input_shape}: {one_line(error, 200)}") from None
    output = output[0] if isinstance(output, (tuple, list)) else output
    if output.dim() != 2:
        raise AdvisorError(f"the network returns shape {tuple(output.shape)}, not one score per class")
    return int(output.shape[1])


def _save(model: nn.Module, filename: str, small_in_repo: bool = True) -> None:
    import io

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    small = small_in_repo and buffer.tell() < SMALL_BYTES and REPO_MODELS.parent.joinpath(".git").exists()
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
