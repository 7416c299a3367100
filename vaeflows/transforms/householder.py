"""Householder flows (Tomczak & Welling 2016): ``z' = H_k z``, ``H = I - 2 v v^T / |v|^2``.

Each step applies ``num_householder`` reflections. Reflections are orthogonal, so the flow is
volume preserving (``log|det| = 0``) and its inverse is the reflections in reverse order. Reuses
Pyro's :class:`~pyro.distributions.transforms.householder.ConditionedHouseholder`.

References:
    Tomczak & Welling, "Improving Variational Auto-Encoders using Householder Flow", 2016.
"""

from __future__ import annotations

from typing import List

from pyro.distributions.transforms.householder import ConditionedHouseholder
from torch.distributions import Transform

from vaeflows.checks import check_int

from .base import FlowFamily, Params

__all__ = ["householder_family"]


def _householder_steps(params: Params) -> List[Transform]:
    v = params["v"]
    return [ConditionedHouseholder(v[..., k, :, :]) for k in range(v.shape[-3])]


def householder_family(latent_dim: int, num_householder: int = 1) -> FlowFamily:
    """Householder steps with raw reflection vectors ``v`` of shape ``(num_householder, D)``."""
    num_householder = check_int("num_householder", num_householder)
    return FlowFamily("householder", {"v": (num_householder, latent_dim)}, _householder_steps, True)
