"""Data sets for VAE experiments, with clear errors for missing or malformed files.

Example:
    >>> from vaeflows.data import load_dataset
    >>> data = load_dataset("digits")
    >>> data.image_shape
    (1, 8, 8)
"""

from .base import LIKELIHOODS, VAEData, binarize, check_images
from .loaders import (
    DATASETS,
    load_binarized_mnist,
    load_caltech_silhouettes,
    load_dataset,
    load_digits,
    load_dynamic_mnist,
    load_frey_faces,
    load_omniglot,
)

__all__ = [
    "DATASETS",
    "LIKELIHOODS",
    "VAEData",
    "binarize",
    "check_images",
    "load_binarized_mnist",
    "load_caltech_silhouettes",
    "load_dataset",
    "load_digits",
    "load_dynamic_mnist",
    "load_frey_faces",
    "load_omniglot",
]
