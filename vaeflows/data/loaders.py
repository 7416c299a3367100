"""Loaders of the VAE benchmark data sets, and the registry the CLI and benchmarks use.

Every loader has the signature ``loader(data_dir=None, seed=123, download=False) -> VAEData``.
File-based loaders look for their files in ``data_dir`` and then in ``data_dir/<sub-folder>`` (the
layout of a shared data folder: ``binarized_mnist/``, ``frey_faces/``, ``caltech101_silhouettes/``,
``omniglot/``, and torchvision's ``MNIST/raw/``), so one ``--data-dir`` can serve all of them.

References:
    van den Berg, Hasenclever, Tomczak, Welling. Sylvester normalizing flows for variational
    inference. UAI 2018 (the protocol, and the reference code's ``utils/load_data.py``).
    Larochelle, Murray. The neural autoregressive distribution estimator. AISTATS 2011
    (statically binarized MNIST).
    Burda, Grosse, Salakhutdinov. Importance weighted autoencoders. ICLR 2016 (Omniglot split).

Example:
    >>> data = load_dataset("digits")  # embedded in scikit-learn, no files needed
    >>> data.train.shape, data.likelihood
    (torch.Size([1437, 1, 8, 8]), 'bernoulli')
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from .base import VAEData
from .files import (
    binarize_fixed,
    find_files,
    images,
    import_optional,
    load_arrays,
    load_text,
    read_idx,
    require_dir,
    shuffle,
    split,
)

__all__ = [
    "DATASETS",
    "load_binarized_mnist",
    "load_caltech_silhouettes",
    "load_dataset",
    "load_digits",
    "load_dynamic_mnist",
    "load_frey_faces",
    "load_omniglot",
]

_SPLITS = ("train", "valid", "test")
#: Seed of the one-off binarization of dynamically binarized sets' valid/test splits (protocol).
_EVAL_BINARIZATION_SEED = 777

_URLS = {
    "binarized-mnist": "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/ "
    "(binarized_mnist_{train,valid,test}.amat)",
    "frey-faces": "https://cs.nyu.edu/~roweis/data/frey_rawface.mat",
    "caltech-silhouettes": "https://people.cs.umass.edu/~marlin/data/caltech101_silhouettes_28_split1.mat",
    "omniglot": "https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/chardata.mat",
    "dynamic-mnist": "http://yann.lecun.com/exdb/mnist/ (or pass download=True to "
    "load_dataset('dynamic-mnist', ...) to let torchvision fetch them)",
}


def load_binarized_mnist(data_dir: Optional[str] = None, seed: int = 123, download: bool = False) -> VAEData:
    """Statically binarized MNIST (Larochelle & Murray): 50000 / 10000 / 10000 binary 28x28 images.

    Accepts, in this order of preference: ``binarized_mnist.npz`` (keys train/valid/test, each
    (N, 784) 0/1), the MATLAB files ``binarized_mnist_{train,valid,test}.mat`` (key ``X``), or the
    published text files ``binarized_mnist_{train,valid,test}.amat`` (one image per line, 784
    space-separated 0/1). The splits are returned in file order; the test file is sorted by digit
    (its first ~1000 images are zeros), so draw subsets of it at random.

    Args:
        data_dir: the folder holding the files.
        seed: unused (the splits are fixed).
        download: unused; the error for missing files says where to get them.

    Returns:
        A :class:`VAEData` with a Bernoulli likelihood.
    """
    name = "binarized-mnist"
    paths = find_files(
        require_dir(data_dir, name),
        "binarized_mnist",
        [
            ("binarized_mnist.npz",),
            tuple(f"binarized_mnist_{s}.mat" for s in _SPLITS),
            tuple(f"binarized_mnist_{s}.amat" for s in _SPLITS),
        ],
        _URLS[name],
    )
    if len(paths) == 1:
        arrays = load_arrays(paths[0], _SPLITS)
        sources = [f"'{paths[0]}' key '{s}'" for s in _SPLITS]
    else:
        paths_by_split = dict(zip(_SPLITS, paths))
        if paths[0].suffix == ".mat":
            arrays = {s: load_arrays(p, ["X"])["X"] for s, p in paths_by_split.items()}
        else:
            arrays = {s: load_text(p) for s, p in paths_by_split.items()}
        sources = [f"'{p}'" for p in paths]
    train, valid, test = (images(arrays[s], (28, 28), src) for s, src in zip(_SPLITS, sources))
    return VAEData(train, valid, test, (1, 28, 28), "bernoulli", False, name, _describe(paths))


def load_dynamic_mnist(data_dir: Optional[str] = None, seed: int = 123, download: bool = False) -> VAEData:
    """MNIST with dynamic binarization: grey training images, binarized afresh for every batch.

    Reads the two image files ``train-images-idx3-ubyte`` and ``t10k-images-idx3-ubyte`` (IDX,
    extracted or ``.gz``) from ``data_dir`` or ``data_dir/MNIST/raw`` (torchvision's layout); a
    read-only folder is fine, nothing is written. Train: the first 50000 of the 60000 training
    images; valid: the last 10000; test: the 10000 test images. Pixels / 255. Train keeps its grey
    values (``dynamic_binarization=True``); valid and test are binarized once with seed 777.

    Args:
        data_dir: the folder holding the files (or torchvision's root).
        seed: unused (the splits are fixed; the evaluation binarization uses seed 777).
        download: if the files are missing, let ``torchvision.datasets.MNIST`` download them into
            ``data_dir/MNIST/raw`` (the network is never tried otherwise).

    Returns:
        A :class:`VAEData` with a Bernoulli likelihood and ``dynamic_binarization=True``.

    Raises:
        FileNotFoundError: the files are missing and ``download`` is False.
        ValueError: a file is truncated or not an IDX file.
    """
    name = "dynamic-mnist"
    root = require_dir(data_dir, name)
    stems = ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")
    candidates = [stems, tuple(f"{s}.gz" for s in stems)]
    try:
        paths = find_files(root, "MNIST/raw", candidates, _URLS[name])
    except FileNotFoundError:
        if not download:
            raise
        datasets = import_optional("torchvision.datasets", "torchvision", "downloading MNIST")
        for train_split in (True, False):
            datasets.MNIST(str(root), train=train_split, download=True)
        paths = find_files(root, "MNIST/raw", candidates, _URLS[name])
    train_grey, test_grey = (torch.from_numpy(read_idx(p).astype(np.float32) / 255).unsqueeze(1) for p in paths)
    train, valid = split(train_grey, (50000, 10000), f"'{paths[0]}'")
    valid, test = binarize_fixed((valid, test_grey), _EVAL_BINARIZATION_SEED, f"{name} '{paths[1]}'")
    return VAEData(train, valid, test, (1, 28, 28), "bernoulli", True, name, _describe(paths))


def load_frey_faces(data_dir: Optional[str] = None, seed: int = 123, download: bool = False) -> VAEData:
    """Frey faces (Roweis): 1965 grey 28x20 faces, shuffled with ``seed``, split 1565 / 200 / 200.

    Reads ``frey_rawface.mat`` (key ``ff``, uint8 (560, 1965)): each column is one image whose
    560 pixels are the 28 rows of 20 pixels one after another (row-major; checked by rendering,
    this orientation gives upright faces). The images are shuffled with
    ``numpy.random.RandomState(seed).permutation`` before the split, as the reference code does.
    Pixels / 255, modelled by a 256-way categorical likelihood.

    Args:
        data_dir: the folder holding ``frey_rawface.mat``.
        seed: the shuffling seed (the protocol's 123).
        download: unused; the error for a missing file says where to get it.

    Returns:
        A :class:`VAEData` with ``likelihood="categorical256"`` and ``image_shape=(1, 28, 20)``.
    """
    name = "frey-faces"
    (path,) = find_files(require_dir(data_dir, name), "frey_faces", [("frey_rawface.mat",)], _URLS[name])
    faces = load_arrays(path, ["ff"])["ff"]
    source = f"'{path}' key 'ff' transposed (one image per column)"
    x = shuffle(images(np.asarray(faces).T, (28, 20), source) / 255, seed)
    train, valid, test = split(x, (1565, 200, 200), source)
    return VAEData(train, valid, test, (1, 28, 20), "categorical256", False, name, _describe([path]))


def load_caltech_silhouettes(data_dir: Optional[str] = None, seed: int = 123, download: bool = False) -> VAEData:
    """Caltech 101 Silhouettes (Marlin), 28x28: 4100 / 2264 / 2307 binary images.

    Reads ``caltech101_silhouettes_28_split1.mat`` (keys ``train_data``, ``val_data``,
    ``test_data``, each (N, 784) 0/1, each image stored column-major). In the file the object is 0
    on a background of 1; like the reference code this loader returns ``1 - x``, so the silhouette
    is 1 on a 0 background.

    Args:
        data_dir: the folder holding the ``.mat`` file.
        seed: unused (the splits are fixed).
        download: unused; the error for a missing file says where to get it.

    Returns:
        A :class:`VAEData` with a Bernoulli likelihood.
    """
    name = "caltech-silhouettes"
    filename = "caltech101_silhouettes_28_split1.mat"
    (path,) = find_files(require_dir(data_dir, name), "caltech101_silhouettes", [(filename,)], _URLS[name])
    keys = ("train_data", "val_data", "test_data")
    arrays = load_arrays(path, keys)
    train, valid, test = (1 - images(arrays[k], (28, 28), f"'{path}' key '{k}'", order="F") for k in keys)
    return VAEData(train, valid, test, (1, 28, 28), "bernoulli", False, name, _describe([path]))


def load_omniglot(data_dir: Optional[str] = None, seed: int = 123, download: bool = False) -> VAEData:
    """Omniglot (the IWAE split), 28x28, dynamically binarized: 23000 / 1345 / 8070 images.

    Reads ``chardata.mat`` (keys ``data`` (784, N_train) and ``testdata`` (784, N_test), grey
    values in [0, 1], one column-major image per column, as the IWAE repository's loader reads it).
    The training images are shuffled with ``numpy.random.RandomState(seed).permutation`` (the
    reference code shuffles them before the split) and the last 1345 become the validation set.
    Train keeps its grey values (``dynamic_binarization=True``); valid and test are binarized once
    with seed 777, as in the protocol.

    Args:
        data_dir: the folder holding ``chardata.mat``.
        seed: the seed of the shuffle before the train/valid split.
        download: unused; the error for a missing file says where to get it.

    Returns:
        A :class:`VAEData` with a Bernoulli likelihood and ``dynamic_binarization=True``.
    """
    name, n_valid = "omniglot", 1345
    (path,) = find_files(require_dir(data_dir, name), "omniglot", [("chardata.mat",)], _URLS[name])
    arrays = load_arrays(path, ["data", "testdata"])
    train_grey, test_grey = (
        images(np.asarray(arrays[k]).T, (28, 28), f"'{path}' key '{k}' transposed", order="F")
        for k in ("data", "testdata")
    )
    train_grey = shuffle(train_grey, seed)
    n_train = max(len(train_grey) - n_valid, 0)
    train, valid = split(train_grey, (n_train, n_valid), f"'{path}' key 'data'")
    valid, test = binarize_fixed((valid, test_grey), _EVAL_BINARIZATION_SEED, f"{name} '{path}'")
    return VAEData(train, valid, test, (1, 28, 28), "bernoulli", True, name, _describe([path]))


def load_digits(data_dir: Optional[str] = None, seed: int = 123, download: bool = False) -> VAEData:
    """scikit-learn's embedded handwritten digits, binarized: 1437 / 180 / 180 images of 8x8.

    ``sklearn.datasets.load_digits`` ships 1797 real 8x8 digits (values 0..16) inside
    scikit-learn, so this data set needs no files and no network: the quick data set of tests,
    examples and smoke runs. Pixels >= 8 become 1, the others 0; the images are shuffled with
    ``numpy.random.RandomState(seed).permutation`` and split 1437 / 180 / 180 (80 / 10 / 10 %).

    Args:
        data_dir: ignored.
        seed: the shuffling seed.
        download: ignored.

    Returns:
        A :class:`VAEData` with a Bernoulli likelihood and ``image_shape=(1, 8, 8)``.

    Raises:
        ImportError: scikit-learn is not installed (``pip install scikit-learn``).
    """
    sklearn_datasets = import_optional("sklearn.datasets", "scikit-learn", "the 'digits' data set")
    grey = sklearn_datasets.load_digits().images
    binary = (grey.reshape(len(grey), 64) >= 8).astype(np.float32)
    source = "sklearn.datasets.load_digits"
    train, valid, test = split(shuffle(images(binary, (8, 8), source), seed), (1437, 180, 180), source)
    return VAEData(train, valid, test, (1, 8, 8), "bernoulli", False, "digits", source)


def _describe(paths: List[Path]) -> str:
    return ", ".join(f"'{p}'" for p in paths)


#: Data set name -> loader ``(data_dir=None, seed=123, download=False) -> VAEData``.
DATASETS: Dict[str, Callable[..., VAEData]] = {
    "binarized-mnist": load_binarized_mnist,
    "dynamic-mnist": load_dynamic_mnist,
    "frey-faces": load_frey_faces,
    "caltech-silhouettes": load_caltech_silhouettes,
    "omniglot": load_omniglot,
    "digits": load_digits,
}


def load_dataset(name: str, data_dir: Optional[str] = None, seed: int = 123, download: bool = False) -> VAEData:
    """Load a data set of :data:`DATASETS` by name.

    Args:
        name: a key of :data:`DATASETS`.
        data_dir: the folder holding the data set's files (ignored by ``"digits"``).
        seed: the seed of the loaders that shuffle (Frey faces, Omniglot, digits).
        download: let ``"dynamic-mnist"`` download missing files through torchvision.

    Returns:
        The data set's :class:`VAEData`.

    Raises:
        ValueError: an unknown name (the message lists the known ones), or ``data_dir=None`` for a
            data set read from files, or files of the wrong shape or values.
        FileNotFoundError: the files are missing; the message says which, where, and where to get
            them.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name](data_dir, seed=seed, download=download)
