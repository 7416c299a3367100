"""Inverse autoregressive flows (Kingma et al. 2016) with the numerically stable gated update.

One step: ``(m, s) = MADE(z[, h])``, ``gate = sigmoid(s + sigmoid_bias)``,
``z' = gate * z + (1 - gate) * m``, ``log|det| = sum_i log gate_i`` (``sigmoid_bias = 1`` as in
van den Berg et al. 2018's code, the "forget bias"). Reuses Pyro's
:class:`~pyro.distributions.transforms.AffineAutoregressive` (``stable=True``) and its conditional
form with a MADE (:class:`~pyro.nn.AutoRegressiveNN`, ELU activations) that takes the encoder's
features as context in its first layer. The variable order is reversed every other step
(``reverse_order=True``). The inverse is exact but sequential over the ``D`` dimensions.

References:
    Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling, "Improving Variational Inference
    with Inverse Autoregressive Flow", NeurIPS 2016.
"""

from __future__ import annotations

import warnings
from typing import List, Sequence

import torch
from pyro.distributions.transforms import AffineAutoregressive, ConditionalAffineAutoregressive
from pyro.nn import AutoRegressiveNN, ConditionalAutoRegressiveNN
from torch import nn
from torch.distributions import Transform

from .base import AmortizedFlow, GlobalFlow

__all__ = ["AmortizedIAF", "GlobalIAF"]


def _order(latent_dim: int, step: int, reverse_order: bool) -> torch.Tensor:
    order = torch.arange(latent_dim)
    return order.flip(0) if reverse_order and step % 2 == 1 else order


def _made(latent_dim: int, context_dim: int, hidden_dims: Sequence[int], permutation: torch.Tensor):
    with warnings.catch_warnings():  # Pyro warns for D = 1, a legitimate (conditional) affine map
        warnings.filterwarnings("ignore", message=".*input_dim = 1.*")
        if context_dim:
            return ConditionalAutoRegressiveNN(
                latent_dim, context_dim, list(hidden_dims), permutation=permutation, nonlinearity=nn.ELU()
            )
        return AutoRegressiveNN(latent_dim, list(hidden_dims), permutation=permutation, nonlinearity=nn.ELU())


class AmortizedIAF(AmortizedFlow):
    """IAF whose MADEs take the context (encoder features) as an extra input of their first layer.

    Direction ``z_0 -> z_K``. ``.condition(context)`` gives the stack for contexts ``(..., C)``.

    Args:
        latent_dim: ``D``.
        num_flows: number of steps ``K``, each with its own MADE.
        context_dim: ``C``.
        hidden_dims: MADE hidden widths (the paper: 320).
        reverse_order: reverse the autoregressive order every other step.
        sigmoid_bias: added to ``s`` before the gate's sigmoid.

    Example:
        >>> flow = AmortizedIAF(latent_dim=4, num_flows=2, context_dim=8, hidden_dims=(16,))
        >>> stack = flow.condition(torch.randn(3, 8))
        >>> z = stack(torch.randn(3, 4)); stack.log_abs_det_jacobian(None, z).shape  # doctest: +SKIP
    """

    def __init__(
        self,
        latent_dim: int,
        num_flows: int,
        context_dim: int,
        hidden_dims: Sequence[int] = (320, 320),
        reverse_order: bool = True,
        sigmoid_bias: float = 1.0,
    ) -> None:
        super().__init__("iaf", latent_dim, num_flows, context_dim, invertible=True)
        self.flows = nn.ModuleList(
            ConditionalAffineAutoregressive(
                _made(latent_dim, context_dim, hidden_dims, _order(latent_dim, k, reverse_order)),
                stable=True,
                sigmoid_bias=sigmoid_bias,
            )
            for k in range(num_flows)
        )

    def steps(self, context: torch.Tensor) -> List[Transform]:
        return [flow.condition(context) for flow in self.flows]


class GlobalIAF(GlobalFlow):
    """IAF with MADEs of ``z`` alone, shared by all data points. Direction ``z_0 -> z_K``.

    Args:
        latent_dim: ``D``.
        num_flows: number of steps ``K``.
        hidden_dims: MADE hidden widths.
        reverse_order: reverse the autoregressive order every other step.
        sigmoid_bias: added to ``s`` before the gate's sigmoid.
    """

    def __init__(
        self,
        latent_dim: int,
        num_flows: int,
        hidden_dims: Sequence[int] = (320, 320),
        reverse_order: bool = True,
        sigmoid_bias: float = 1.0,
    ) -> None:
        super().__init__("iaf", latent_dim, num_flows, invertible=True)
        self.flows = nn.ModuleList(
            AffineAutoregressive(
                _made(latent_dim, 0, hidden_dims, _order(latent_dim, k, reverse_order)),
                stable=True,
                sigmoid_bias=sigmoid_bias,
            )
            for k in range(num_flows)
        )

    def steps(self) -> List[Transform]:
        return list(self.flows)
