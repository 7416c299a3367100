"""Discrete data under a continuous flow: uniform and variational dequantization, bits per dimension.

8-bit data ``x`` (integers 0..255, ``D`` of them) are dequantized to ``y = (x + u) / 256`` in
``[0, 1)^D`` with noise ``u ~ q(u | x)`` on ``[0, 1)^D``; the flow models ``y``. Since the density
of ``x + u`` is ``p(y) / 256^D``, Jensen's inequality gives the bound (Theis et al. 2016;
Ho et al. 2019)::

    log P(x) >= E_q[ log p(y) - D log 256 - log q(u | x) ]

Uniform dequantization has ``log q = 0``; variational dequantization (Flow++) learns ``q`` as a flow
conditioned on ``x``. Bits per dimension are ``-log P(x) / (D log 2)``, where ``log p(y)`` already
holds any logit-preprocessing Jacobian (it is a layer of the model, :class:`~.layers.Logit`).

Example:
    >>> x = torch.randint(0, 256, (4, 1, 4, 4)).float()
    >>> y, log_q = UniformDequantizer()(x)
    >>> bool((y >= 0).all() and (y < 1).all()), log_q.shape
    (True, torch.Size([4]))

References:
    Theis, van den Oord, Bethge. A note on the evaluation of generative models. ICLR 2016.
    Ho, Chen, Srinivas, Duan, Abbeel. Flow++. ICML 2019 (variational dequantization).
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from .flows import FlowDensity, standard_normal_log_prob
from .layers import Coupling, FlowSequence, Logit, checkerboard_mask
from .nets import CouplingCNN

__all__ = [
    "NUM_LEVELS",
    "UniformDequantizer",
    "VariationalDequantizer",
    "DEQUANTIZERS",
    "dequantized_log_likelihood",
    "bits_per_dim",
    "check_8bit",
]

#: Levels of 8-bit data.
NUM_LEVELS = 256


def check_8bit(x: torch.Tensor) -> None:
    """Raise a ValueError unless ``x`` holds integers in ``[0, 255]`` (any float or int dtype)."""
    if not torch.isfinite(x).all():
        raise ValueError("the 8-bit data hold NaN or inf values")
    if (x < 0).any() or (x > NUM_LEVELS - 1).any() or (x != x.round()).any():
        raise ValueError(
            "dequantization expects 8-bit values, integers in [0, 255]; for images in [0, 1] "
            "pass pixels * 255 (rounded)"
        )


class UniformDequantizer(nn.Module):
    """``y = (x + u) / 256`` with ``u ~ U[0, 1)^D``; ``log q(u | x) = 0``.

    Shapes: ``x`` ``(B, *event)`` -> ``y`` of the same shape and ``log_q`` ``(B,)``.
    """

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return (x + torch.rand_like(x)) / NUM_LEVELS, x.new_zeros(x.shape[0])


class VariationalDequantizer(nn.Module):
    """Flow++'s variational dequantization: ``u = sigmoid(g(e; x))``, ``e ~ N(0, I)``.

    Direction: noise ``e`` to dequantization noise ``u`` in ``(0, 1)^D``. ``g`` is ``num_steps``
    checkerboard affine couplings whose conv nets also see the image ``x / 255 - 0.5`` as extra
    channels; ``log q(u | x) = log N(e) - log|det du/de|`` from the same pass.

    Args:
        shape: the images' ``(C, H, W)``.
        num_steps: couplings.
        hidden: conv channels.
    """

    def __init__(self, shape: Sequence[int], num_steps: int = 4, hidden: int = 32) -> None:
        super().__init__()
        shape = tuple(shape)
        if len(shape) != 3:
            raise ValueError(f"variational dequantization is for images (C, H, W), got {shape}")
        c = shape[0]
        couplings = [
            Coupling(
                checkerboard_mask(shape, k % 2),
                CouplingCNN(c, 2 * c, hidden, context_dim=c, image_context=True),
            )
            for k in range(num_steps)
        ]
        self.flow = FlowSequence([*couplings, Logit(3, alpha=0.0)])

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        e = torch.randn_like(x)
        u, ladj = self.flow.forward_and_ladj(e, x / (NUM_LEVELS - 1) - 0.5)
        return (x + u) / NUM_LEVELS, standard_normal_log_prob(e, 3) - ladj


#: ``--dequantization`` name -> dequantizer constructor ``(event_shape) -> module``.
DEQUANTIZERS: Dict[str, Callable[[Sequence[int]], nn.Module]] = {
    "uniform": lambda shape: UniformDequantizer(),
    "variational": VariationalDequantizer,
}


def dequantized_log_likelihood(
    model: FlowDensity,
    x: torch.Tensor,
    dequantizer: nn.Module,
    context: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """One-sample estimate of the bound ``log P(x) >= log p(y) - D log 256 - log q(u | x)``, nats.

    Args:
        model: a density on ``[0, 1]^D`` (the event shape of ``x``).
        x: 8-bit values ``(B, *event_shape)`` (floats 0..255).
        dequantizer: :class:`UniformDequantizer` or :class:`VariationalDequantizer`.
        context: the model's context, if conditional.

    Returns:
        ``(B,)`` lower bounds of ``log P(x)`` in nats.
    """
    y, log_q = dequantizer(x)
    num_dims = math.prod(model.event_shape)
    return model.log_prob(y, context) - num_dims * math.log(NUM_LEVELS) - log_q


def bits_per_dim(log_likelihood: torch.Tensor, num_dims: int) -> torch.Tensor:
    """``-log P(x) / (D log 2)``: nats per data point to bits per dimension."""
    return -log_likelihood / (num_dims * math.log(2))
