"""The conditioner networks of the coupling layers, with an optional context (e.g. a class one-hot).

Both map the masked input to the coupling's raw parameters and start with a zero last layer, so
that every coupling starts as the identity (Glow). A context of shape ``(..., K)`` is appended to
the input (vectors) or broadcast over the pixels as ``K`` extra channels (images); an image
context ``(..., K, H, W)`` (``image_context=True``, e.g. the data in variational dequantization) is
appended as channels as it is.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from vaeflows.nn import MLP

__all__ = ["CouplingMLP", "CouplingCNN"]


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
    """

    def __init__(
        self,
        dim: int,
        out_dim: int,
        hidden: int,
        context_dim: Optional[int] = None,
        hidden_dims: Optional[Sequence[int]] = None,
    ) -> None:
        super().__init__()
        widths = (hidden, hidden) if hidden_dims is None else tuple(hidden_dims)
        self.mlp = MLP(dim + (context_dim or 0), widths, out_dim)
        _zero_last(self.mlp[-1])

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        if context is not None:
            x = torch.cat([x, context.expand(*x.shape[:-1], context.shape[-1])], dim=-1)
        return self.mlp(x)


class CouplingCNN(nn.Module):
    """``(..., C, H, W)`` -> ``(..., out_channels, H, W)``: conv 3x3, ReLU, conv 1x1, ReLU,
    conv 3x3 (Glow's coupling network), ``hidden`` channels.

    Args:
        channels: ``C``.
        out_channels: output channels.
        hidden: hidden channels.
        context_dim: ``K`` (context channels), or ``None``.
        image_context: the context is an image ``(..., K, H, W)`` rather than a vector.
    """

    def __init__(
        self,
        channels: int,
        out_channels: int,
        hidden: int,
        context_dim: Optional[int] = None,
        image_context: bool = False,
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
        _zero_last(self.net[-1])

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        lead, (_, h, w) = x.shape[:-3], x.shape[-3:]
        if context is not None:
            if not self.image_context:
                context = context[..., None, None]
            context = context.expand(*lead, context.shape[-3], h, w)
            x = torch.cat([x, context], dim=-3)
        out = self.net(x.reshape(-1, *x.shape[-3:]))
        return out.reshape(*lead, *out.shape[-3:])
