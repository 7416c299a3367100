"""Shape helpers shared by the encoders and decoders: input checks and extra leading batch dims."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["check_trailing", "map_leading"]


def check_trailing(x: torch.Tensor, shape: Sequence[int], what: str) -> None:
    """Raise ValueError unless the trailing dims of ``x`` are ``shape``.

    Args:
        x: any tensor, of shape ``(..., *shape)`` when correct.
        shape: the expected trailing dims.
        what: the name used in the message, e.g. ``"images"``.
    """
    if x.dim() < len(shape) or tuple(x.shape[x.dim() - len(shape) :]) != tuple(shape):
        raise ValueError(f"expected {what} of shape (..., {', '.join(map(str, shape))}), got {tuple(x.shape)}")


def map_leading(net: nn.Module, x: torch.Tensor, event_ndim: int) -> torch.Tensor:
    """Run ``net``, which takes exactly one batch dim, on ``x`` with any number of leading batch dims.

    Args:
        net: a module mapping ``(N, *event)`` to ``(N, *out)``.
        x: a tensor of shape ``(..., *event)`` where ``event`` has ``event_ndim`` dims.
        event_ndim: the number of trailing dims ``net`` sees per item.

    Returns:
        ``net``'s output with the leading dims restored: shape ``(..., *out)``.
    """
    lead = x.shape[: x.dim() - event_ndim]
    out = net(x.reshape(-1, *x.shape[x.dim() - event_ndim :]))
    return out.reshape(*lead, *out.shape[1:])
