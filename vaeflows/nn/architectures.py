"""The VAE architectures by name: one builder for the encoder/decoder pair.

``build_encoder_decoder(arch, image_shape, latent_dim, likelihood)`` returns an encoder
(images ``(..., C, H, W)`` to features ``(..., encoder.feature_dim)``) and a decoder (latents
``(..., latent_dim)`` to the likelihood's parameters ``(..., K * C, H, W)``, ``K`` the likelihood's
``channels_per_pixel``).

* ``"gated-conv"``: :class:`~vaeflows.nn.gated.GatedConvEncoder` / ``GatedConvDecoder``, the
  reference architecture, for 28x28 and 28x20 images only; with ``"categorical256"`` the decoder
  gets the reference's extra 5x5 convolution to 256 channels before the 1x1 output convolution.
  No options.
* ``"mlp"``: :class:`~vaeflows.nn.mlp.MLPEncoder` / ``MLPDecoder``, any image size. Options
  ``hidden_dims`` (encoder hidden sizes, default ``(300, 300)``; the decoder takes them reversed)
  and ``activation`` (default ``nn.ReLU``).

Example:
    >>> enc, dec = build_encoder_decoder("gated-conv", (1, 28, 28), 64, "bernoulli")
    >>> enc.feature_dim, dec(torch.randn(2, 64)).shape
    (256, torch.Size([2, 1, 28, 28]))

References:
    van den Berg et al. (2018), "Sylvester normalizing flows for variational inference", UAI;
    code github.com/riannevdberg/sylvester-flows ``models/VAE.py``.
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple, Type

from torch import nn

from vaeflows.checks import check_dims
from vaeflows.nn.gated import GatedConvDecoder, GatedConvEncoder
from vaeflows.nn.likelihoods import build_likelihood
from vaeflows.nn.mlp import MLPDecoder, MLPEncoder

__all__ = ["ARCHITECTURES", "build_encoder_decoder"]

ImageShape = Tuple[int, int, int]
EncoderDecoder = Tuple[nn.Module, nn.Module]


def _gated_conv(image_shape: ImageShape, latent_dim: int, likelihood: str) -> EncoderDecoder:
    """The reference gated-conv pair; the 256-way categorical gets the reference's 5x5 head."""
    head_channels = 256 if likelihood == "categorical256" else None
    channels_per_pixel = build_likelihood(likelihood).channels_per_pixel
    return (
        GatedConvEncoder(image_shape),
        GatedConvDecoder(latent_dim, image_shape, channels_per_pixel, head_channels),
    )


def _mlp(
    image_shape: ImageShape,
    latent_dim: int,
    likelihood: str,
    hidden_dims: Sequence[int] = (300, 300),
    activation: Type[nn.Module] = nn.ReLU,
) -> EncoderDecoder:
    """An MLP pair, the decoder's hidden sizes mirroring the encoder's."""
    channels_per_pixel = build_likelihood(likelihood).channels_per_pixel
    return (
        MLPEncoder(image_shape, hidden_dims, activation),
        MLPDecoder(latent_dim, image_shape, tuple(reversed(hidden_dims)), channels_per_pixel, activation),
    )


ARCHITECTURES: Dict[str, Callable[..., EncoderDecoder]] = {"mlp": _mlp, "gated-conv": _gated_conv}


def build_encoder_decoder(
    arch: str, image_shape: ImageShape, latent_dim: int, likelihood: str, **options: object
) -> EncoderDecoder:
    """The encoder and decoder of architecture ``arch`` for images of ``image_shape``.

    Args:
        arch: a key of :data:`ARCHITECTURES`: ``"mlp"`` or ``"gated-conv"``.
        image_shape: ``(C, H, W)``.
        latent_dim: the size of ``z``.
        likelihood: a key of :data:`~vaeflows.nn.likelihoods.LIKELIHOODS`; sets the decoder's
            output channels per pixel.
        **options: architecture options (``mlp``: ``hidden_dims``, ``activation``).

    Returns:
        ``(encoder, decoder)``; ``encoder.feature_dim`` is the size of the features.

    Raises:
        ValueError: for an unknown architecture or likelihood (listing the known ones), an image
            shape that is not three sizes >= 1, or one the architecture cannot take (gated-conv:
            28x28 and 28x20 only).
        TypeError: for an option the architecture does not have.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    shape = check_dims("image_shape", image_shape)
    if len(shape) != 3:
        raise ValueError(f"image_shape must be (C, H, W), e.g. (1, 28, 28), got {image_shape!r}")
    return ARCHITECTURES[arch](shape, latent_dim, likelihood, **options)
