"""Data sets for density estimation: the generated 2-D toy sets and 8-bit MNIST.

``load_density_data(name, data_dir, num_train, seed)`` returns a :class:`DensityData`: three splits
and whether they are 8-bit (``discrete``: integers 0..255 stored as float32, to be dequantized).
MNIST is read from its four IDX files (``.gz`` or extracted) in ``data_dir`` or
``data_dir/MNIST/raw`` (torchvision's layout): train = the first 50000 training images, valid =
the last 10000, test = the 10000 test images, with their labels.

Example:
    >>> data = load_density_data("moons", num_train=100)
    >>> data.train.shape, data.discrete
    (torch.Size([100, 2]), False)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch

from vaeflows.checks import check_int
from vaeflows.data.files import find_files, read_idx, require_dir

from .dequantization import check_8bit
from .toy import TOY_DATASETS, toy_data

__all__ = ["DensityData", "DENSITY_DATASETS", "load_density_data", "load_mnist_8bit"]

_MNIST_URL = "http://yann.lecun.com/exdb/mnist/ (or torchvision.datasets.MNIST(root, download=True))"


@dataclass
class DensityData:
    """Splits for density estimation.

    Attributes:
        train, valid, test: float32 ``(N, *event_shape)``.
        event_shape: ``(2,)`` or ``(C, H, W)``.
        discrete: the values are 8-bit integers 0..255, to be dequantized.
        name: the data set's name.
        labels: ``{"train": (N,), "valid": ..., "test": ...}`` class labels, or ``None``.
        num_classes: number of classes (0 without labels).
    """

    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    event_shape: Tuple[int, ...]
    discrete: bool
    name: str
    labels: Optional[Dict[str, torch.Tensor]] = None
    num_classes: int = 0

    def __post_init__(self) -> None:
        for split in ("train", "valid", "test"):
            x = getattr(self, split)
            if not torch.is_tensor(x) or x.dtype != torch.float32 or tuple(x.shape[1:]) != tuple(self.event_shape):
                found = f"{x.dtype} {tuple(x.shape)}" if torch.is_tensor(x) else type(x).__name__
                raise ValueError(
                    f"{self.name} {split}: found {found}, expected a float32 tensor of shape "
                    f"(N, {', '.join(map(str, self.event_shape))}) (8-bit data: their values 0..255 as float32)"
                )
            if not torch.isfinite(x).all():
                raise ValueError(f"{self.name} {split} holds NaN or inf values")
            if self.discrete:
                check_8bit(x)


def load_mnist_8bit(data_dir: Optional[str], num_train: int = 50000, seed: int = 0) -> DensityData:
    """MNIST with 8-bit pixel values (0..255 as float32) and labels; see the module docstring.

    Args:
        data_dir: the folder with the IDX files (or torchvision's root).
        num_train: keep the first ``num_train`` training images (at most 50000).
        seed: unused (the splits are fixed).
    """
    root = require_dir(data_dir, "mnist")
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    paths = find_files(root, "MNIST/raw", [[f"{s}.gz" for s in stems], stems], _MNIST_URL)
    train_x, train_y, test_x, test_y = (torch.from_numpy(read_idx(p).copy()) for p in paths)
    images = lambda x: x.float().unsqueeze(1)  # noqa: E731
    n = min(num_train, 50000)
    labels = {"train": train_y[:n].long(), "valid": train_y[50000:].long(), "test": test_y.long()}
    return DensityData(
        images(train_x[:n]), images(train_x[50000:]), images(test_x), (1, 28, 28), True, "mnist", labels, 10
    )


def _load_toy(name: str) -> Callable[..., DensityData]:
    def load(data_dir: Optional[str], num_train: int = 20000, seed: int = 0) -> DensityData:
        test_size = max(num_train // 4, 1000)
        train, valid, test = (toy_data(name, n, seed + k) for k, n in enumerate((num_train, test_size, test_size)))
        return DensityData(train, valid, test, (2,), False, name)

    return load


#: Name -> loader ``(data_dir, num_train, seed) -> DensityData``.
DENSITY_DATASETS: Dict[str, Callable[..., DensityData]] = {
    **{name: _load_toy(name) for name in TOY_DATASETS},
    "mnist": load_mnist_8bit,
}


def load_density_data(
    name: str, data_dir: Optional[str] = None, num_train: Optional[int] = None, seed: int = 0
) -> DensityData:
    """Load ``name`` of :data:`DENSITY_DATASETS` (toy sets: ``num_train`` points, default 20000,
    valid and test a quarter of it, at least 1000; MNIST: default all 50000)."""
    if name not in DENSITY_DATASETS:
        raise ValueError(f"unknown density data set {name!r}; known: {', '.join(DENSITY_DATASETS)}")
    options = {} if num_train is None else {"num_train": check_int("num_train (--num-train)", num_train)}
    return DENSITY_DATASETS[name](data_dir, seed=seed, **options)
