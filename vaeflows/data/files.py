"""Shared helpers of the loaders: finding files, reading them, and turning arrays into image splits.

Each helper raises one clear error (which file, what was found, what was expected, what to do), so
the loaders in :mod:`vaeflows.data.loaders` stay a few lines each.
"""

from __future__ import annotations

import gzip
import importlib
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .base import check_images

__all__ = [
    "binarize_fixed",
    "find_files",
    "images",
    "import_optional",
    "load_arrays",
    "load_text",
    "read_idx",
    "require_dir",
    "shuffle",
    "split",
]


def import_optional(module: str, package: str, purpose: str) -> ModuleType:
    """Import an optional dependency, or raise an ImportError saying how to install it.

    Args:
        module: the module to import, e.g. ``"scipy.io"``.
        package: the pip package that provides it, e.g. ``"scipy"``.
        purpose: what it is needed for, for the message.

    Returns:
        The imported module.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{purpose} needs the optional dependency {package!r}: `pip install {package}` "
            f"(or `pip install vaeflows[data]`)"
        ) from error


def require_dir(data_dir: Optional[str], dataset: str) -> Path:
    """Return ``data_dir`` as a Path, or raise if the caller gave none.

    Raises:
        ValueError: ``data_dir`` is None.
    """
    if data_dir is None:
        raise ValueError(
            f"data set {dataset!r} is read from files: pass their folder with --data-dir (data_dir= in Python)"
        )
    return Path(data_dir).expanduser()


def find_files(data_dir: Path, subdir: str, candidates: Sequence[Sequence[str]], url: str) -> List[Path]:
    """Find the first complete group of files among ``candidates``.

    Each group is looked for in ``data_dir`` and then in ``data_dir / subdir`` (the layout of a
    shared data folder holding several data sets).

    Args:
        data_dir: the user's data folder.
        subdir: the conventional sub-folder of this data set, e.g. ``"frey_faces"``.
        candidates: groups of file names in order of preference; a group is used if all its files
            exist in one folder.
        url: where to get the files, for the message.

    Returns:
        The paths of the first complete group.

    Raises:
        FileNotFoundError: no group is complete; the message lists the files and folders looked
            for and where to get the files.
    """
    folders = [data_dir, data_dir / subdir]
    for group in candidates:
        for folder in folders:
            paths = [folder / name for name in group]
            if all(path.is_file() for path in paths):
                return paths
    wanted = " or ".join("{" + ", ".join(group) + "}" for group in candidates)
    looked = " and ".join(f"'{folder}'" for folder in folders)
    raise FileNotFoundError(f"could not find {wanted} in {looked}. Download them from {url} into '{data_dir}'.")


def load_arrays(path: Path, keys: Sequence[str]) -> Dict[str, np.ndarray]:
    """Read named arrays from a ``.npz`` file or a MATLAB ``.mat`` file (the latter needs scipy).

    Raises:
        ImportError: a ``.mat`` file and scipy is not installed.
        ValueError: the file cannot be read or lacks one of ``keys``.
    """
    try:
        if path.suffix == ".npz":
            with np.load(path) as npz:
                contents = {key: npz[key] for key in npz.files}
        else:
            scipy_io = import_optional("scipy.io", "scipy", f"reading the MATLAB file '{path.name}'")
            contents = scipy_io.loadmat(str(path))
    except ImportError:
        raise
    except Exception as error:  # numpy and scipy raise several types for corrupt files
        raise ValueError(f"'{path}' is not a readable {path.suffix} file: {error}") from error
    missing = [key for key in keys if key not in contents]
    if missing:
        found = sorted(key for key in contents if not key.startswith("__"))
        raise ValueError(f"'{path}' lacks the arrays {missing}; it holds {found}")
    return {key: contents[key] for key in keys}


def load_text(path: Path) -> np.ndarray:
    """Read a whitespace-separated text matrix (e.g. ``.amat``), one image per line.

    Raises:
        ValueError: rows of unequal length or non-numbers.
    """
    try:
        return np.loadtxt(path, dtype=np.float32, ndmin=2)
    except ValueError as error:
        raise ValueError(f"'{path}' is not a text matrix of one image per line: {error}") from error


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (MNIST's format), ``.gz`` or extracted.

    Raises:
        ValueError: the file is truncated, not gzip where it says ``.gz``, or not an IDX file of
            unsigned bytes whose size matches its header; the message says to fetch it again.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:  # gzip: BadGzipFile (an OSError) or EOFError when cut short
        raise ValueError(f"'{path}' cannot be read ({error}): download it again") from None
    ndim = raw[3] if len(raw) > 3 else 0
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = len(raw) - 4 - 4 * ndim
    if ndim == 0 or raw[:3] != b"\x00\x00\x08" or size != int(np.prod(shape)):
        raise ValueError(
            f"'{path}' is not a complete IDX file of unsigned bytes (header shape {shape}, "
            f"{max(size, 0)} data bytes): it is truncated or another file; download it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def images(array: np.ndarray, image_hw: Tuple[int, int], source: str, order: str = "C") -> torch.Tensor:
    """Turn a matrix of flattened images (N, H*W) into a float32 tensor (N, 1, H, W).

    Args:
        array: one flattened image per row.
        image_hw: (H, W).
        source: the file (and key) the array came from, for the message.
        order: ``"C"`` if each row is row-major, ``"F"`` if column-major (MATLAB).

    Raises:
        ValueError: ``array`` is not (N, H*W).
    """
    height, width = image_hw
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[1] != height * width or array.shape[0] == 0:
        raise ValueError(
            f"{source}: found an array of shape {array.shape}, expected (N, {height * width}): "
            f"one flattened {height}x{width} image per row"
        )
    if order == "F":
        array = array.reshape(-1, width, height).transpose(0, 2, 1)
    array = np.ascontiguousarray(array, dtype=np.float32).reshape(-1, 1, height, width)
    return torch.from_numpy(array)


def shuffle(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Shuffle the first dimension with ``numpy.random.RandomState(seed).permutation``."""
    return x[torch.from_numpy(np.random.RandomState(seed).permutation(len(x)))]


def split(x: torch.Tensor, sizes: Sequence[int], source: str) -> Tuple[torch.Tensor, ...]:
    """Cut ``x`` along its first dimension into consecutive parts of the given sizes.

    Raises:
        ValueError: ``x`` does not hold exactly ``sum(sizes)`` images.
    """
    if len(x) != sum(sizes):
        raise ValueError(
            f"{source}: found {len(x)} images, expected {sum(sizes)} (split {' / '.join(map(str, sizes))})"
        )
    return tuple(part.clone() for part in torch.split(x, list(sizes)))


def binarize_fixed(splits: Sequence[torch.Tensor], seed: int, where: str) -> Tuple[torch.Tensor, ...]:
    """Binarize grey images once, reproducibly: ``RandomState(seed).binomial(1, x)`` split by split.

    One random stream runs through the splits in order, as ``np.random.seed(seed)`` followed by
    ``np.random.binomial`` calls does in the reference code.

    Raises:
        ValueError: a value is not a probability in [0, 1].
    """
    rng = np.random.RandomState(seed)
    out = []
    for x in splits:
        check_images(x, "bernoulli", where, dynamic=True)
        out.append(torch.from_numpy(rng.binomial(1, x.numpy()).astype(np.float32)))
    return tuple(out)
