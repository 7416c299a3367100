"""Planar flows (Rezende & Mohamed 2015): ``z' = z + u_hat tanh(w^T z + b)``.

Reuses Pyro's :class:`~pyro.distributions.transforms.planar.ConditionedPlanar`, whose maths works
on batched parameters and whose log-determinant ``log|1 + u_hat^T psi(z)|``,
``psi(z) = (1 - tanh^2(w^T z + b)) w``, agrees with the autograd Jacobian (checked in
``tests/transforms``). Invertibility: ``u_hat = u + (softplus(w^T u) - 1 - w^T u) w / |w|^2`` makes
``w^T u_hat >= -1``. No analytic inverse: a planar flow scores only its own samples.

References:
    Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
"""

from __future__ import annotations

from typing import List

from pyro.distributions.transforms.planar import ConditionedPlanar
from torch.distributions import Transform

from .base import FlowFamily, Params

__all__ = ["planar_family"]


def _planar_steps(params: Params) -> List[Transform]:
    b, u, w = params["b"], params["u"], params["w"]
    return [
        ConditionedPlanar((b[..., k, :], u[..., k, :], w[..., k, :])) for k in range(u.shape[-2])
    ]


def planar_family(latent_dim: int) -> FlowFamily:
    """Planar steps with raw parameters ``u, w`` of shape ``(D,)`` and ``b`` of shape ``(1,)``."""
    return FlowFamily(
        "planar", {"u": (latent_dim,), "w": (latent_dim,), "b": (1,)}, _planar_steps, False
    )
