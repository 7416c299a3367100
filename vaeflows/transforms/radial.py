"""Radial flows (Rezende & Mohamed 2015): ``z' = z + beta h(alpha, r) (z - z0)``.

``r = |z - z0|``, ``h = 1 / (alpha + r)``. Reuses Pyro's
:class:`~pyro.distributions.transforms.radial.ConditionedRadial`, with
``alpha = softplus(alpha')`` and ``beta = -alpha + softplus(beta')`` so that ``beta >= -alpha``
(invertibility); its log-determinant
``(D - 1) log(1 + beta h) + log(1 + beta h + beta h'(r) r)`` agrees with the autograd Jacobian
(checked in ``tests/transforms``). No analytic inverse: a radial flow scores only its own samples.

References:
    Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
"""

from __future__ import annotations

from typing import List

from pyro.distributions.transforms.radial import ConditionedRadial
from torch.distributions import Transform

from .base import FlowFamily, Params

__all__ = ["radial_family"]


def _radial_steps(params: Params) -> List[Transform]:
    z0, alpha, beta = params["z0"], params["alpha"], params["beta"]
    return [ConditionedRadial((z0[..., k, :], alpha[..., k, :], beta[..., k, :])) for k in range(z0.shape[-2])]


def radial_family(latent_dim: int) -> FlowFamily:
    """Radial steps with raw parameters ``z0`` of shape ``(D,)``, ``alpha'`` and ``beta'`` ``(1,)``."""
    return FlowFamily("radial", {"z0": (latent_dim,), "alpha": (1,), "beta": (1,)}, _radial_steps, False)
