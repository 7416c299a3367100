"""Fully connected networks: a plain MLP, and the MLP encoder/decoder of the VAEs for any image size.

The networks act on the last dim (``nn.Linear`` broadcasts over leading dims), so extra leading
batch dims such as ``(P, B, ...)`` from vectorized particles pass through unchanged.

Example:
    >>> enc = MLPEncoder((1, 8, 8))
    >>> dec = MLPDecoder(latent_dim=2, image_shape=(1, 8, 8), out_channels_per_pixel=1)
    >>> enc(torch.rand(5, 1, 8, 8)).shape
    torch.Size([5, 300])
    >>> dec(torch.randn(3, 5, 2)).shape
    torch.Size([3, 5, 1, 8, 8])

References:
    Kingma, Welling (2014), "Auto-encoding variational Bayes", ICLR (MLP encoder and decoder).
    Rezende, Mohamed (2015), "Variational inference with normalizing flows", ICML.
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple, Type

import torch
from torch import nn

from vaeflows.checks import check_dims
from vaeflows.nn._shapes import check_trailing

__all__ = ["MLP", "MLPEncoder", "MLPDecoder"]

ImageShape = Tuple[int, int, int]


class MLP(nn.Sequential):
    """Multilayer perceptron: ``Linear, activation`` per hidden layer, then a last ``Linear``.

    ``y = W_L a(... a(W_1 x + b_1) ...) + b_L``; no activation on the output. Unlike
    ``pyro.nn.DenseNN`` it takes ``hidden_dims=()`` (one linear map) and returns one tensor.

    Args:
        in_dim: size of ``x``.
        hidden_dims: sizes of the hidden layers, possibly empty.
        out_dim: size of ``y``.
        activation: the activation's class, instantiated once per hidden layer.

    Shapes:
        ``x``: ``(..., in_dim)`` -> ``y``: ``(..., out_dim)``.

    Example:
        >>> MLP(4, (16, 16), 3)(torch.randn(7, 2, 4)).shape
        torch.Size([7, 2, 3])

    References:
        Rumelhart, Hinton, Williams (1986), "Learning representations by back-propagating errors".
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dims: Sequence[int],
        out_dim: int,
        activation: Type[nn.Module] = nn.ReLU,
    ) -> None:
        dims = [in_dim, *check_dims("hidden_dims", hidden_dims, allow_empty=True)]
        layers = []
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(d_in, d_out), activation()]
        super().__init__(*layers, nn.Linear(dims[-1], out_dim))


class MLPEncoder(nn.Module):
    """MLP encoder: flattened images to the activated last hidden layer ``h``.

    ``h = a(MLP(flatten(x)))`` with hidden sizes ``hidden_dims[:-1]`` and output size
    ``hidden_dims[-1]``, so every layer, the last included, is followed by the activation.

    Args:
        image_shape: ``(C, H, W)``, any size.
        hidden_dims: hidden layer sizes, at least one; the last is ``feature_dim``.
        activation: the activation's class.

    Attributes:
        feature_dim: ``hidden_dims[-1]``, the size of ``h``.

    Shapes:
        ``x``: ``(..., C, H, W)`` -> ``h``: ``(..., feature_dim)``.

    Raises:
        ValueError: for empty ``hidden_dims``, or, in ``forward``, an input whose trailing dims are
            not ``image_shape``.

    Example:
        >>> MLPEncoder((1, 28, 20), hidden_dims=(200,))(torch.rand(3, 1, 28, 20)).shape
        torch.Size([3, 200])

    References:
        Kingma, Welling (2014), "Auto-encoding variational Bayes", ICLR.
    """

    def __init__(
        self,
        image_shape: ImageShape,
        hidden_dims: Sequence[int] = (300, 300),
        activation: Type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        hidden_dims = check_dims("hidden_dims", hidden_dims)  # the last size is the feature size
        self.image_shape: ImageShape = tuple(image_shape)  # type: ignore[assignment]
        self.feature_dim = hidden_dims[-1]
        self.net = nn.Sequential(
            MLP(math.prod(image_shape), hidden_dims[:-1], hidden_dims[-1], activation), activation()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``h`` of shape ``(..., feature_dim)`` from images ``x`` of shape ``(..., C, H, W)``."""
        check_trailing(x, self.image_shape, "images")
        return self.net(x.flatten(-3))


class MLPDecoder(nn.Module):
    """MLP decoder: latents ``z`` to per-pixel likelihood parameters.

    ``out = MLP(z)`` reshaped to ``(K * C, H, W)``, channels grouped parameter-major as in
    :class:`~vaeflows.nn.gated.GatedConvDecoder` (channel ``k * C + c`` is parameter ``k`` of
    image channel ``c``).

    Args:
        latent_dim: size of ``z``.
        image_shape: ``(C, H, W)``, any size.
        hidden_dims: hidden layer sizes.
        out_channels_per_pixel: ``K``, the likelihood's ``channels_per_pixel``.
        activation: the activation's class.

    Shapes:
        ``z``: ``(..., latent_dim)`` -> ``(..., K * C, H, W)``.

    Raises:
        ValueError: in ``forward``, ``z`` whose last dim is not ``latent_dim``.

    Example:
        >>> MLPDecoder(2, (1, 8, 8), out_channels_per_pixel=2)(torch.randn(5, 2)).shape
        torch.Size([5, 2, 8, 8])

    References:
        Kingma, Welling (2014), "Auto-encoding variational Bayes", ICLR.
    """

    def __init__(
        self,
        latent_dim: int,
        image_shape: ImageShape,
        hidden_dims: Sequence[int] = (300, 300),
        out_channels_per_pixel: int = 1,
        activation: Type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.image_shape: ImageShape = tuple(image_shape)  # type: ignore[assignment]
        self.out_shape = (out_channels_per_pixel * image_shape[0], *image_shape[1:])
        self.net = MLP(latent_dim, hidden_dims, math.prod(self.out_shape), activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters of shape ``(..., K * C, H, W)`` from ``z`` of shape ``(..., latent_dim)``."""
        check_trailing(z, (self.latent_dim,), "latents")
        return self.net(z).unflatten(-1, self.out_shape)
