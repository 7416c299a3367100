"""Gated convolutions and the gated-convolutional encoder/decoder of the Sylvester-flow VAEs.

A gated layer computes ``out = conv_h(x) * sigmoid(conv_g(x))`` with two convolutions of the same
shape and no other activation. The encoder and decoder are stacks of such layers, written below
as lists of layer specs and turned into modules by one loop, exactly as in the reference code for
28x28 images (MNIST, Omniglot, Caltech silhouettes) and 28x20 images (Frey faces).

Both networks accept extra leading batch dims (e.g. ``(P, B, ...)`` from vectorized particles):
they flatten them, run the convolutions on one batch dim, and restore them.

Example:
    >>> enc = GatedConvEncoder((1, 28, 28))
    >>> dec = GatedConvDecoder(latent_dim=64, image_shape=(1, 28, 28), out_channels_per_pixel=1)
    >>> enc(torch.rand(5, 1, 28, 28)).shape
    torch.Size([5, 256])
    >>> dec(torch.randn(3, 5, 64)).shape
    torch.Size([3, 5, 1, 28, 28])

References:
    van den Berg, Hasenclever, Tomczak, Welling (2018), "Sylvester normalizing flows for
    variational inference", UAI; reference code github.com/riannevdberg/sylvester-flows,
    ``models/layers.py`` (gated layers) and ``models/VAE.py`` (``create_encoder``, ``create_decoder``).
    Dauphin, Fan, Auli, Grangier (2017), "Language modeling with gated convolutional networks", ICML.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
from torch import nn

from vaeflows.nn._shapes import check_trailing, map_leading

__all__ = [
    "GatedConv2d",
    "GatedConvTranspose2d",
    "GatedConvEncoder",
    "GatedConvDecoder",
    "GATED_CONV_IMAGE_SIZES",
]

ImageShape = Tuple[int, int, int]
Kernel = Union[int, Tuple[int, int]]

# (H, W) -> kernel of the encoder's last layer (and the decoder's first), which maps the 7x7 (or
# 7x5) feature map to 1x1 and back; the only image sizes the reference architecture takes.
GATED_CONV_IMAGE_SIZES: Dict[Tuple[int, int], Tuple[int, int]] = {(28, 28): (7, 7), (28, 20): (7, 5)}


class _Gated(nn.Module):
    """``out = h(x) * sigmoid(g(x))`` for two layers ``h``, ``g`` of class ``layer`` built alike."""

    def __init__(self, layer: Type[nn.Module], *args: object) -> None:
        super().__init__()
        self.h = layer(*args)
        self.g = layer(*args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))


class GatedConv2d(_Gated):
    """Gated convolution: ``out = conv_h(x) * sigmoid(conv_g(x))``, no other activation.

    Args:
        in_channels: channels of ``x``.
        out_channels: channels of ``out``.
        kernel_size: as ``nn.Conv2d``.
        stride: as ``nn.Conv2d``.
        padding: as ``nn.Conv2d``.

    Shapes:
        ``x``: ``(N, in_channels, H, W)`` -> ``(N, out_channels, H', W')`` as ``nn.Conv2d``.

    Example:
        >>> GatedConv2d(1, 32, 5, 1, 2)(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 32, 28, 28])

    References:
        van den Berg et al. (2018), code ``models/layers.py``; Dauphin et al. (2017).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: Kernel, stride: int = 1, padding: int = 0
    ) -> None:
        super().__init__(nn.Conv2d, in_channels, out_channels, kernel_size, stride, padding)


class GatedConvTranspose2d(_Gated):
    """Gated transposed convolution: ``out = convT_h(x) * sigmoid(convT_g(x))``, no other activation.

    Args:
        in_channels: channels of ``x``.
        out_channels: channels of ``out``.
        kernel_size: as ``nn.ConvTranspose2d``.
        stride: as ``nn.ConvTranspose2d``.
        padding: as ``nn.ConvTranspose2d``.
        output_padding: as ``nn.ConvTranspose2d``.

    Shapes:
        ``x``: ``(N, in_channels, H, W)`` -> ``(N, out_channels, H', W')`` as ``nn.ConvTranspose2d``.

    Example:
        >>> GatedConvTranspose2d(32, 32, 5, 2, 2, 1)(torch.rand(2, 32, 14, 14)).shape
        torch.Size([2, 32, 28, 28])

    References:
        van den Berg et al. (2018), code ``models/layers.py``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Kernel,
        stride: int = 1,
        padding: int = 0,
        output_padding: int = 0,
    ) -> None:
        super().__init__(nn.ConvTranspose2d, in_channels, out_channels, kernel_size, stride, padding, output_padding)


def _last_kernel(image_shape: Sequence[int]) -> Tuple[int, int]:
    """The kernel that maps the 7x7 (7x5) feature map to 1x1; ValueError for other image sizes."""
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (C, H, W), got {tuple(image_shape)}")
    size = tuple(image_shape[1:])
    if size not in GATED_CONV_IMAGE_SIZES:
        known = ", ".join(f"{h}x{w}" for h, w in GATED_CONV_IMAGE_SIZES)
        raise ValueError(
            f"the gated-conv architecture takes images of size {known} (H x W) only, got "
            f"{size[0]}x{size[1]}; use the 'mlp' architecture for other sizes"
        )
    return GATED_CONV_IMAGE_SIZES[size]


class GatedConvEncoder(nn.Module):
    """Gated-convolutional encoder: images to a 256-d feature ``h``.

    Layers (in -> out channels, kernel, stride, padding), each a :class:`GatedConv2d`:
    ``C->32 (5,1,2)``, ``32->32 (5,2,2)``, ``32->64 (5,1,2)``, ``64->64 (5,2,2)``,
    ``64->64 (5,1,2)``, ``64->256 (7 or (7,5), 1, 0)``; the last kernel is ``(7, 7)`` for 28x28
    images and ``(7, 5)`` for 28x20 ones, so that the map is 1x1 and ``h`` has 256 entries.
    The heads on ``h`` (mean, std, flow parameters) belong to the guide.

    Args:
        image_shape: ``(C, H, W)`` with ``(H, W)`` in ``{(28, 28), (28, 20)}``.

    Attributes:
        feature_dim: 256, the size of ``h``.

    Shapes:
        ``x``: ``(..., C, H, W)`` -> ``h``: ``(..., 256)``.

    Raises:
        ValueError: for another image size (use the ``mlp`` architecture), or, in ``forward``,
            an input whose trailing dims are not ``image_shape``.

    Example:
        >>> GatedConvEncoder((1, 28, 20))(torch.rand(4, 1, 28, 20)).shape
        torch.Size([4, 256])

    References:
        van den Berg et al. (2018), code ``models/VAE.py``, ``VAE.create_encoder``.
    """

    feature_dim: int = 256

    def __init__(self, image_shape: ImageShape) -> None:
        super().__init__()
        last = _last_kernel(image_shape)
        self.image_shape: ImageShape = tuple(image_shape)  # type: ignore[assignment]
        specs: List[Tuple[int, int, Kernel, int, int]] = [  # in, out, kernel, stride, padding
            (image_shape[0], 32, 5, 1, 2),
            (32, 32, 5, 2, 2),
            (32, 64, 5, 1, 2),
            (64, 64, 5, 2, 2),
            (64, 64, 5, 1, 2),
            (64, self.feature_dim, last, 1, 0),
        ]
        self.net = nn.Sequential(*(GatedConv2d(*spec) for spec in specs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``h`` of shape ``(..., 256)`` from images ``x`` of shape ``(..., C, H, W)``."""
        check_trailing(x, self.image_shape, "images")
        return map_leading(self.net, x, 3).flatten(-3)


class GatedConvDecoder(nn.Module):
    """Gated-convolutional decoder: latents ``z`` to per-pixel likelihood parameters.

    ``z`` is read as a ``latent_dim x 1 x 1`` map. Layers, each a :class:`GatedConvTranspose2d`
    (in -> out channels, kernel, stride, padding, output padding): ``z->64 (7 or (7,5),1,0,0)``,
    ``64->64 (5,1,2,0)``, ``64->32 (5,2,2,1)``, ``32->32 (5,1,2,0)``, ``32->32 (5,2,2,1)``,
    ``32->32 (5,1,2,0)``; then a plain 1x1 ``nn.Conv2d`` to ``K * C`` output channels. With
    ``head_channels`` set, a plain ``nn.Conv2d(32, head_channels, 5, 1, 2)`` comes before the 1x1
    convolution (no activation between them), as the reference's head for its 256-way categorical.

    The output channels are grouped parameter-major: channel ``k * C + c`` holds parameter ``k`` of
    image channel ``c``, so ``out.unflatten(-3, (K, C))`` has shape ``(..., K, C, H, W)``
    (the layout of the reference, whose loss views logits as ``(B, 256, C, H, W)``).

    Args:
        latent_dim: size of ``z``.
        image_shape: ``(C, H, W)`` with ``(H, W)`` in ``{(28, 28), (28, 20)}``.
        out_channels_per_pixel: ``K``, parameters per image channel and pixel (the likelihood's
            ``channels_per_pixel``: 1 Bernoulli, 256 categorical, 2 discretized logistic).
        head_channels: channels of the optional 5x5 convolution before the 1x1 one (the reference
            uses 256 with its categorical likelihood, none with Bernoulli).

    Shapes:
        ``z``: ``(..., latent_dim)`` -> ``(..., K * C, H, W)``.

    Raises:
        ValueError: for another image size (use the ``mlp`` architecture), or, in ``forward``,
            ``z`` whose last dim is not ``latent_dim``.

    Example:
        >>> GatedConvDecoder(64, (1, 28, 20), 256, head_channels=256)(torch.randn(2, 64)).shape
        torch.Size([2, 256, 28, 20])

    References:
        van den Berg et al. (2018), code ``models/VAE.py``, ``VAE.create_decoder``.
    """

    def __init__(
        self,
        latent_dim: int,
        image_shape: ImageShape,
        out_channels_per_pixel: int = 1,
        head_channels: Optional[int] = None,
    ) -> None:
        super().__init__()
        first = _last_kernel(image_shape)
        self.latent_dim = latent_dim
        self.image_shape: ImageShape = tuple(image_shape)  # type: ignore[assignment]
        self.out_channels = out_channels_per_pixel * image_shape[0]
        specs: List[Tuple[int, int, Kernel, int, int, int]] = [  # in, out, kernel, stride, padding, output padding
            (latent_dim, 64, first, 1, 0, 0),
            (64, 64, 5, 1, 2, 0),
            (64, 32, 5, 2, 2, 1),
            (32, 32, 5, 1, 2, 0),
            (32, 32, 5, 2, 2, 1),
            (32, 32, 5, 1, 2, 0),
        ]
        layers: List[nn.Module] = [GatedConvTranspose2d(*spec) for spec in specs]
        if head_channels:
            layers.append(nn.Conv2d(32, head_channels, 5, 1, 2))
        layers.append(nn.Conv2d(head_channels or 32, self.out_channels, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters of shape ``(..., K * C, H, W)`` from ``z`` of shape ``(..., latent_dim)``."""
        check_trailing(z, (self.latent_dim,), "latents")
        return map_leading(self.net, z[..., None, None], 3)
