"""The conditioner networks of the coupling layers, with an optional context (e.g. a class one-hot).

Both map the masked input to the coupling's raw parameters and start with a zero last layer, so that
every coupling starts as the identity (Glow); ``zero_init=False`` keeps PyTorch's default
initialization instead (ReZero couplings, whose learned gates start at zero in their place).
:class:`ZeroConv` is Glow's zero-initialized 3x3 convolution (its learned split priors). A context
of shape ``(..., K)`` is appended to the input (vectors) or broadcast over the pixels as ``K`` extra
channels (images); an image context ``(..., K, H, W)`` (``image_context=True``, e.g. the data in
variational dequantization) is appended as channels as it is.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from vaeflows.checks import check_int
from vaeflows.nn import MLP

__all__ = ["CouplingMLP", "CouplingResNet", "CouplingCNN", "ZeroConv"]


def _zero_last(layer: nn.Module) -> None:
    """Zero the weight and bias of a network's last layer: the coupling starts as the identity."""
    for parameter in layer.parameters():
        nn.init.zeros_(parameter)


class CouplingMLP(nn.Module):
    """``(..., D)`` (and context ``(..., K)``) -> ``(..., out_dim)``: an MLP with two hidden layers
    of width ``hidden`` (or the widths ``hidden_dims``) and ReLU.

    Args:
        dim: ``D``.
        out_dim: output size.
        hidden: hidden width.
        context_dim: ``K``, or ``None``.
        hidden_dims: the hidden widths, in place of ``(hidden, hidden)``.
        zero_init: start with a zero last layer.
    """

    def __init__(
        self,
        dim: int,
        out_dim: int,
        hidden: int,
        context_dim: Optional[int] = None,
        hidden_dims: Optional[Sequence[int]] = None,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        widths = (hidden, hidden) if hidden_dims is None else tuple(hidden_dims)
        self.mlp = MLP(dim + (context_dim or 0), widths, out_dim)
        if zero_init:
            _zero_last(self.mlp[-1])

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        if context is not None:
            x = torch.cat([x, context.expand(*x.shape[:-1], context.shape[-1])], dim=-1)
        return self.mlp(x)


class CouplingResNet(nn.Module):
    """``(..., D)`` (and context ``(..., K)``) -> ``(..., out_dim)``: nflows' ``ResidualNet`` (the
    conditioner of normflows' spline couplings), without dropout or batch norm::

        h_0 = W_0 [x, c],    h_b = h_{b-1} + W_b2 relu(W_b1 relu(h_{b-1})),    out = W_out h_B

    ``num_blocks`` residual blocks of width ``hidden``; each block's second layer starts at
    ``U(-1e-3, 1e-3)`` (nflows' ``zero_initialization``), so every block starts near the identity.
    One difference from nflows: a context is appended to the input (as :class:`CouplingMLP`), where
    nflows also gates each block's output with a GLU of the context.

    Args:
        dim: ``D``.
        out_dim: output size.
        hidden: the blocks' width.
        context_dim: ``K``, or ``None``.
        num_blocks: residual blocks, ``>= 1`` (nflows' default 2).
        zero_init: start with a zero last layer (the coupling starts as the identity); ``False``
            keeps PyTorch's default initialization, as nflows.

    Example:
        >>> net = CouplingResNet(4, 6, 8, num_blocks=2)
        >>> net(torch.randn(3, 4)).abs().max().item()  # a zero last layer
        0.0
    """

    def __init__(
        self,
        dim: int,
        out_dim: int,
        hidden: int,
        context_dim: Optional[int] = None,
        num_blocks: int = 2,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        num_blocks = check_int("num_blocks (--num-blocks)", num_blocks, minimum=1)
        self.initial = nn.Linear(dim + (context_dim or 0), hidden)
        blocks = []
        for _ in range(num_blocks):
            last = nn.Linear(hidden, hidden)
            for parameter in last.parameters():
                nn.init.uniform_(parameter, -1e-3, 1e-3)
            blocks.append(nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), last))
        self.blocks = nn.ModuleList(blocks)
        self.final = nn.Linear(hidden, out_dim)
        if zero_init:
            _zero_last(self.final)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        if context is not None:
            x = torch.cat([x, context.expand(*x.shape[:-1], context.shape[-1])], dim=-1)
        h = self.initial(x)
        for block in self.blocks:
            h = h + block(h)
        return self.final(h)


class CouplingCNN(nn.Module):
    """``(..., C, H, W)`` -> ``(..., out_channels, H, W)``: conv 3x3, ReLU, conv 1x1, ReLU,
    conv 3x3 (Glow's coupling network), ``hidden`` channels.

    Args:
        channels: ``C``.
        out_channels: output channels.
        hidden: hidden channels.
        context_dim: ``K`` (context channels), or ``None``.
        image_context: the context is an image ``(..., K, H, W)`` rather than a vector.
        zero_init: start with a zero last layer.
    """

    def __init__(
        self,
        channels: int,
        out_channels: int,
        hidden: int,
        context_dim: Optional[int] = None,
        image_context: bool = False,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        self.image_context = image_context
        self.net = nn.Sequential(
            nn.Conv2d(channels + (context_dim or 0), hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(),
            nn.Conv2d(hidden, out_channels, 3, padding=1),
        )
        if zero_init:
            _zero_last(self.net[-1])

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        return _conv_images(self.net, x, context, self.image_context)


def _conv_images(net: nn.Module, x: torch.Tensor, context: Optional[torch.Tensor], image_context: bool) -> torch.Tensor:
    """``net`` on images ``(..., C, H, W)`` of any leading shape, a context appended as channels."""
    lead, (_, h, w) = x.shape[:-3], x.shape[-3:]
    if context is not None:
        if not image_context:
            context = context[..., None, None]
        context = context.expand(*lead, context.shape[-3], h, w)
        x = torch.cat([x, context], dim=-3)
    out = net(x.reshape(-1, *x.shape[-3:]))
    return out.reshape(*lead, *out.shape[-3:])


class ZeroConv(nn.Module):
    """``(..., C, H, W)`` (and context ``(..., K)``) -> ``(..., out_channels, H, W)``: one 3x3
    convolution, zero-initialized (Glow's ``Conv2dZeros``), a context broadcast as ``K`` channels.

    Args:
        channels: ``C``.
        out_channels: output channels.
        context_dim: ``K``, or ``None``.
    """

    def __init__(self, channels: int, out_channels: int, context_dim: Optional[int] = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels + (context_dim or 0), out_channels, 3, padding=1)
        _zero_last(self.conv)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        return _conv_images(self.conv, x, context, False)
