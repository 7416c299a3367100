"""The container for VAE data sets, and the checks that images fit a likelihood.

Every loader returns a :class:`VAEData`; :func:`check_images` is the one place that decides whether
a batch of images lies in a likelihood's support (the loaders use it, and so can the VAE code).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, cast

import torch

__all__ = ["LIKELIHOODS", "VAEData", "binarize", "check_images"]


def _check_binary(x: torch.Tensor) -> Tuple[torch.Tensor, str]:
    return ~((x == 0) | (x == 1)), "outside {0, 1}"


def _check_unit_interval(x: torch.Tensor) -> Tuple[torch.Tensor, str]:
    return ~((x >= 0) & (x <= 1)), "outside [0, 1]"


def _check_256_levels(x: torch.Tensor) -> Tuple[torch.Tensor, str]:
    bad, what = _check_unit_interval(x)
    if bad.any():
        return bad, what
    levels = x.double() * 255
    return (levels - levels.round()).abs() > 1e-3, "not a multiple of 1/255"


#: Likelihood name -> function returning (mask of pixels outside the support, what the support is).
LIKELIHOODS: Dict[str, Callable[[torch.Tensor], Tuple[torch.Tensor, str]]] = {
    "bernoulli": _check_binary,
    "categorical256": _check_256_levels,
}

_HINTS = {
    "bernoulli": "a Bernoulli likelihood needs binary pixels: binarize the images first "
    "(threshold them, or Bernoulli-sample grey values with `binarize`)",
    "categorical256": "a 256-way categorical likelihood needs 8-bit pixels stored as k/255, "
    "k in 0..255 (divide uint8 images by 255)",
    "grey": "grey values to be Bernoulli-sampled per batch must be probabilities in [0, 1] "
    "(divide uint8 images by 255)",
}


def check_images(x: torch.Tensor, likelihood: str, where: str, *, dynamic: bool = False) -> None:
    """Check that a batch of images is finite and lies in a likelihood's support.

    Supports: ``"bernoulli"``: every value in {0, 1}; ``"categorical256"``: every value in [0, 1]
    and a multiple of 1/255 (pixels / 255). With ``dynamic=True`` a Bernoulli batch may hold grey
    values in [0, 1] (the probabilities that dynamic binarization samples per batch).

    Args:
        x: images of any shape, usually (N, C, H, W).
        likelihood: a key of :data:`LIKELIHOODS`.
        where: what the batch is, for the message, e.g. ``"binarized-mnist train (file.npz)"``.
        dynamic: ``x`` holds Bernoulli probabilities rather than binary pixels.

    Raises:
        ValueError: unknown likelihood, a non-finite value, or a value outside the support; the
            message names ``where``, how many values are wrong, the first one and its index.

    Example:
        >>> check_images(torch.tensor([[0.0, 1.0]]), "bernoulli", "my batch")
    """
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"{where}: unknown likelihood {likelihood!r}; known: {', '.join(sorted(LIKELIHOODS))}")
    if not torch.is_tensor(x):
        raise ValueError(f"{where}: expected a torch.Tensor of images, got {type(x).__name__}")
    # Checked a block of images at a time: the masks of a whole split are temporaries of several
    # times its size, which were the peak memory of loading a data set (benchmarks/memory.py). A
    # failing check is then repeated on the whole tensor for the message.
    if x.is_floating_point() and not all(torch.isfinite(part).all() for part in _blocks(x)):
        _raise_bad_values(x, ~torch.isfinite(x), "NaN or infinite", "remove or repair them", where)
    kind = "grey" if dynamic and likelihood == "bernoulli" else likelihood
    check = _check_unit_interval if kind == "grey" else LIKELIHOODS[likelihood]
    if any(check(part)[0].any() for part in _blocks(x)):
        bad, problem = check(x)
        _raise_bad_values(x, bad, problem, _HINTS[kind], where)


def _blocks(x: torch.Tensor, elements: int = 1 << 20) -> List[torch.Tensor]:
    """Views of ``x`` along its first dim of about ``elements`` values each (``[x]`` if it is small)."""
    if x.dim() == 0 or x.numel() <= elements:
        return [x]
    rows = max(1, elements // max(1, x[0].numel()))
    return list(x.split(rows))


def _raise_bad_values(x: torch.Tensor, bad: torch.Tensor, problem: str, hint: str, where: str) -> None:
    index = tuple(int(i) for i in bad.nonzero()[0])
    raise ValueError(
        f"{where}: {int(bad.sum())} of {x.numel()} values are {problem} "
        f"(first: {x[index].item()!r} at index {index}); {hint}."
    )


def binarize(batch: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Dynamic binarization: sample binary pixels ``x ~ Bernoulli(batch)``.

    Args:
        batch: grey values in [0, 1], any shape.
        generator: a ``torch.Generator`` on ``batch``'s device, for reproducible samples.

    Returns:
        A tensor of ``batch``'s shape, dtype and device holding 0s and 1s.

    Example:
        >>> binarize(torch.full((2, 1, 8, 8), 0.5)).unique().tolist()  # doctest: +SKIP
        [0.0, 1.0]
    """
    return torch.bernoulli(batch, generator=generator)


@dataclass
class VAEData:
    """A VAE data set: three splits of images and how to model them.

    Attributes:
        train: float32 tensor (N_train, C, H, W). With ``dynamic_binarization`` it holds grey values
            in [0, 1] that the trainer Bernoulli-samples per batch (see :meth:`binarize`).
        valid: float32 tensor (N_valid, C, H, W), always in the likelihood's support.
        test: float32 tensor (N_test, C, H, W), always in the likelihood's support.
        image_shape: (C, H, W).
        likelihood: ``"bernoulli"`` (binary pixels) or ``"categorical256"`` (pixels / 255).
        dynamic_binarization: whether ``train`` is to be binarized afresh for every batch.
        name: the data set's name, e.g. ``"binarized-mnist"``.
        source: where the data came from (file names), for logs and messages.

    Construction checks shapes, dtypes and values, raising ``ValueError`` with a clear message.

    Example:
        >>> x = torch.zeros(4, 1, 2, 2)
        >>> VAEData(x, x, x, (1, 2, 2), "bernoulli", False, "zeros").train.shape
        torch.Size([4, 1, 2, 2])
    """

    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    image_shape: Tuple[int, int, int]
    likelihood: str
    dynamic_binarization: bool
    name: str
    source: str = ""

    def __post_init__(self) -> None:
        # Normalizes what the caller passed (a list, numpy ints); the split checks below compare it with the data.
        self.image_shape = cast(Tuple[int, int, int], tuple(int(s) for s in self.image_shape))
        where = f"{self.name}" + (f" ({self.source})" if self.source else "")
        for split in ("train", "valid", "test"):
            x = getattr(self, split)
            if not torch.is_tensor(x) or x.dtype != torch.float32 or tuple(x.shape[1:]) != self.image_shape:
                found = f"{x.dtype} {tuple(x.shape)}" if torch.is_tensor(x) else type(x).__name__
                raise ValueError(
                    f"{where} {split}: found {found}, expected a float32 tensor of shape "
                    f"(N, {', '.join(map(str, self.image_shape))})"
                )
            dynamic = self.dynamic_binarization and split == "train"
            check_images(x, self.likelihood, f"{where} {split}", dynamic=dynamic)

    def binarize(self, batch: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Return a training batch as the model should see it.

        Bernoulli-samples ``batch`` (see :func:`binarize`) when ``dynamic_binarization`` is set,
        and returns it unchanged otherwise, so a trainer can call this on every batch.

        Args:
            batch: a batch of ``train``.
            generator: an optional ``torch.Generator`` on the batch's device.

        Returns:
            The batch, binary where the likelihood is Bernoulli.
        """
        return binarize(batch, generator) if self.dynamic_binarization else batch

    def __repr__(self) -> str:
        sizes = "/".join(str(len(x)) for x in (self.train, self.valid, self.test))
        return (
            f"VAEData(name={self.name!r}, train/valid/test={sizes}, image_shape={self.image_shape}, "
            f"likelihood={self.likelihood!r}, dynamic_binarization={self.dynamic_binarization})"
        )
