"""Labelled images for accuracy: scikit-learn's digits (no download), an image folder, or an .npz.

Every loader returns a `Dataset` split once, with a fixed seed, into training and held-out images;
accuracy is only ever measured on the held-out part. `fit_to_input` resizes a data set to a network's
input after the split, so the held-out images stay held out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from advisor.errors import AdvisorError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".tif", ".tiff", ".webp")


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor  # float32, N x C x H x W
    y_train: torch.Tensor  # int64, N
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    def input_shape(self, batch: int = 1) -> tuple[int, ...]:
        return (batch, *self.image_shape)


def load_dataset(spec: str, test_fraction: float = 0.3, seed: int = 0, image_size: int = 32) -> Dataset:
    """`digits`, a folder of class subfolders, or a .npz file."""
    spec = (spec or "").strip()
    if spec == "digits":
        return load_digits(test_fraction, seed)
    path = Path(spec)
    if spec.endswith(".npz"):
        return load_npz(path, test_fraction, seed)
    if path.is_dir():
        return load_image_folder(path, image_size, test_fraction, seed)
    if not path.exists():
        raise AdvisorError(f"data set {spec!r} not found: use digits, a folder of class folders, or a .npz file")
    raise AdvisorError(f"data set {spec!r} is neither a folder of class folders nor a .npz file")


def load_digits(test_fraction: float = 0.3, seed: int = 0) -> Dataset:
    """scikit-learn's 1,797 handwritten digits, 8x8 grayscale, scaled to [0, 1]."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise AdvisorError("the digits data set needs scikit-learn: pip install scikit-learn") from None
    digits = sklearn_digits()
    x = digits.images.astype(np.float32)[:, None] / 16.0
    return split(x, digits.target, [str(c) for c in digits.target_names], "digits", test_fraction, seed)


def load_npz(path: Path, test_fraction: float = 0.3, seed: int = 0) -> Dataset:
    """Arrays `x` (N,H,W or N,C,H,W) and `y` (N integer labels); or x_train/y_train/x_test/y_test."""
    if not path.is_file():
        raise AdvisorError(f"{path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            data = {key: arrays[key] for key in arrays.files}
    except Exception as error:  # zipfile, pickle and value errors alike
        raise AdvisorError(f"{path} is not a readable .npz file: {error}") from None
    name = f"npz:{path.name}"
    if {"x_train", "y_train", "x_test", "y_test"} <= set(data):
        x_train, y_train = _check_arrays(data["x_train"], data["y_train"], path, "x_train/y_train")
        x_test, y_test = _check_arrays(data["x_test"], data["y_test"], path, "x_test/y_test")
        if x_train.shape[1:] != x_test.shape[1:]:
            raise AdvisorError(f"{path}: x_train images are {x_train.shape[1:]} but x_test images are "
                               f"{x_test.shape[1:]}")
        classes = [str(c) for c in range(int(max(y_train.max(), y_test.max())) + 1)]
        return Dataset(name, torch.from_numpy(x_train), torch.from_numpy(y_train),
                       torch.from_numpy(x_test), torch.from_numpy(y_test), classes)
    if not {"x", "y"} <= set(data):
        raise AdvisorError(f"{path} holds arrays {sorted(data)}: expected x and y (or x_train, y_train, "
                           "x_test, y_test)")
    x, y = _check_arrays(data["x"], data["y"], path, "x/y")
    return split(x, y, [str(c) for c in range(int(y.max()) + 1)], name, test_fraction, seed)


def _check_arrays(x: np.ndarray, y: np.ndarray, path: Path, names: str) -> tuple[np.ndarray, np.ndarray]:
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise AdvisorError(f"{path}: {names} images have shape {x.shape}; expected N x H x W or N x C x H x W")
    if y.ndim != 1 or len(y) != len(x):
        raise AdvisorError(f"{path}: {names} labels have shape {y.shape}; expected ({len(x)},), one per image")
    if not np.issubdtype(x.dtype, np.number):
        raise AdvisorError(f"{path}: images are of type {x.dtype}, not numbers")
    if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise AdvisorError(f"{path}: labels must be integers 0, 1, 2, ... (got {y.dtype})")
    if len(x) < 2:
        raise AdvisorError(f"{path}: {names} has {len(x)} image(s); need at least 2")
    x = x.astype(np.float32)
    if x.max() > 1.0:
        x = x / 255.0 if x.max() <= 255.0 else x / x.max()
    return np.ascontiguousarray(x), y.astype(np.int64)


def load_image_folder(root: Path, image_size: int = 32, test_fraction: float = 0.3, seed: int = 0) -> Dataset:
    """root/<class>/<image>: grayscale if every image is, RGB otherwise; resized to a square."""
    if not root.is_dir():
        raise AdvisorError(f"image folder {root} does not exist")
    try:
        from PIL import Image
    except ImportError:
        raise AdvisorError("reading an image folder needs Pillow: pip install pillow") from None
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir())
    if len(class_dirs) < 2:
        raise AdvisorError(f"{root} has {len(class_dirs)} class folder(s); expected one folder per class (2+)")
    images, labels = [], []
    for label, folder in enumerate(class_dirs):
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise AdvisorError(f"class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        for file in files:
            try:
                with Image.open(file) as image:
                    images.append(image.convert("RGB").resize((image_size, image_size)))
            except Exception as error:
                raise AdvisorError(f"cannot read image {file}: {error}") from None
            labels.append(label)
    x = np.stack([np.asarray(image, dtype=np.float32) / 255.0 for image in images]).transpose(0, 3, 1, 2)
    if np.allclose(x[:, 0], x[:, 1]) and np.allclose(x[:, 1], x[:, 2]):
        x = x[:, :1]  # grayscale: one channel
    return split(np.ascontiguousarray(x), np.array(labels), [d.name for d in class_dirs], f"folder:{root.name}",
                 test_fraction, seed)


def split(x: np.ndarray, y: np.ndarray, classes: list[str], name: str, test_fraction: float,
          seed: int) -> Dataset:
    """A stratified split with a fixed seed: each class contributes test_fraction of its images."""
    if not 0.0 < test_fraction < 1.0:
        raise AdvisorError(f"test fraction {test_fraction} must be between 0 and 1")
    rng = np.random.default_rng(seed)
    test_index = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        test_index.extend(members[: max(1, int(round(len(members) * test_fraction)))] if len(members) > 1 else [])
    test_mask = np.zeros(len(y), dtype=bool)
    test_mask[test_index] = True
    if test_mask.all() or not test_mask.any():
        raise AdvisorError(f"data set {name} is too small to hold out images for testing")
    x, y = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64)
    return Dataset(name, torch.from_numpy(x[~test_mask]), torch.from_numpy(y[~test_mask]),
                   torch.from_numpy(x[test_mask]), torch.from_numpy(y[test_mask]), classes)


def fit_to_input(dataset: Dataset, input_shape: tuple[int, ...]) -> Dataset:
    """The data set's images resized (bilinear) to the network's height and width, a grayscale image
    repeated over the network's channels or a colour one averaged to one channel. The split is kept."""
    if len(input_shape) != 4:
        raise AdvisorError(f"a network with input {input_shape} does not take images (N x C x H x W)")
    channels, height, width = input_shape[1:]
    have = dataset.image_shape[0]
    if have != channels and 1 not in (have, channels):
        raise AdvisorError(f"{dataset.name} has {have}-channel images; the network takes {channels} channels")
    if dataset.image_shape == (channels, height, width):
        return dataset

    def fit(x: torch.Tensor) -> torch.Tensor:
        if x.shape[2:] != (height, width):
            x = torch.nn.functional.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
        if x.shape[1] != channels:
            x = x.expand(-1, channels, -1, -1) if x.shape[1] == 1 else x.mean(1, keepdim=True)
        return x.contiguous()

    return Dataset(f"{dataset.name}@{channels}x{height}x{width}", fit(dataset.x_train), dataset.y_train,
                   fit(dataset.x_test), dataset.y_test, dataset.classes)
