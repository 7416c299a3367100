"""Convex-combination linear IAF (Tomczak & Welling 2017): ``z' = L z``, ``L = sum_j y_j L_j``.

Each step multiplies ``z`` by a unit lower-triangular matrix

.. math::

    L = \\sum_{j=1}^{J} y_j L_j, \\qquad y = \\mathrm{softmax}(a), \\qquad
    L_j = I + S_j, \\quad S_j \\text{ strictly lower-triangular},

so ``L = I + sum_j y_j S_j`` is unit lower-triangular too: ``log|det L| = 0`` (the flow preserves
volume, like the Householder flow, but it is not orthogonal) and the inverse is a triangular
solve. The ``J`` matrices ``L_j`` of every step are learned parameters shared by all data points;
the mixing logits ``a`` come from the encoder's features through a linear map (or a small MLP,
``hypernet_dims``) in the amortized form, and are free parameters in the global form. Element
``i`` of ``z'`` depends on ``z_1 .. z_i`` only: a linear inverse autoregressive map (Kingma et al.
2016), its matrix a convex combination instead of one full output of the encoder per data point.

Shapes: a step's strict parts ``S_j`` are stored as their ``D (D - 1) / 2`` entries below the
diagonal (``(K, J, D (D - 1) / 2)`` for ``K`` steps), so that every stored number is used; the
logits have shape ``(K, J)`` (global) or ``(..., K, J)`` from a context ``(..., C)`` (amortized).

References:
    Tomczak & Welling, "Improving Variational Auto-Encoders using convex combination linear
    Inverse Autoregressive Flow", Benelearn 2017 (arXiv:1706.02326); Kingma et al., "Improved
    Variational Inference with Inverse Autoregressive Flow", NeurIPS 2016.

Example:
    >>> import torch
    >>> from vaeflows.transforms import posterior_flow
    >>> flow = posterior_flow("cc-liaf", latent_dim=4, num_flows=2, context_dim=8, num_matrices=3)
    >>> t = flow.condition(torch.randn(5, 8))
    >>> z = torch.randn(5, 4); y = t(z)
    >>> torch.allclose(t.inv(y.clone()), z, atol=1e-5), t.log_abs_det_jacobian(z, y).abs().max().item()
    (True, 0.0)
"""

from __future__ import annotations

import math
from typing import List, Sequence

import torch
from torch import nn
from torch.distributions import Transform

from vaeflows.checks import check_int

from .base import AmortizedFlow, CachedLadjTransform, GlobalFlow, Hypernet

__all__ = ["AmortizedCCLinearIAF", "GlobalCCLinearIAF", "UnitLowerTriangularStep"]


class UnitLowerTriangularStep(CachedLadjTransform):
    """``z' = (I + S) z`` for a strictly lower-triangular ``S`` of shape ``(..., D, D)``.

    ``log|det dz'/dz| = 0``; the inverse solves the unit lower-triangular system (forward
    substitution, :func:`torch.linalg.solve_triangular` with ``unitriangular=True``). The leading
    dims of ``S`` broadcast against those of ``z``.
    """

    def __init__(self, strict: torch.Tensor) -> None:
        super().__init__()
        self.strict = strict

    def _call(self, z: torch.Tensor) -> torch.Tensor:
        out = z + (self.strict @ z.unsqueeze(-1)).squeeze(-1)
        self._cached_ladj = out.new_zeros(out.shape[:-1])
        return out

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        strict = self.strict
        lead = torch.broadcast_shapes(strict.shape[:-2], y.shape[:-1])
        d = y.shape[-1]
        # The diagonal is taken as 1 and never read (unitriangular): S itself is the system matrix.
        z = torch.linalg.solve_triangular(
            strict.expand(*lead, d, d), y.expand(*lead, d).unsqueeze(-1), upper=False, unitriangular=True
        ).squeeze(-1)
        self._cached_ladj = None
        return z


def _strict_matrices(entries: torch.Tensor, weights: torch.Tensor, latent_dim: int) -> List[torch.Tensor]:
    """The ``K`` combined strict parts ``sum_j y_j S_j``, each of shape ``(..., D, D)``.

    ``entries``: ``(K, J, D (D - 1) / 2)`` below-diagonal entries; ``weights``: ``(..., K, J)``.
    """
    rows, cols = torch.tril_indices(latent_dim, latent_dim, offset=-1, device=entries.device)
    combined = torch.einsum("...kj,kjm->...km", weights, entries)  # (..., K, M)
    strict = combined.new_zeros(*combined.shape[:-1], latent_dim, latent_dim)
    strict[..., rows, cols] = combined
    return [strict[..., k, :, :] for k in range(entries.shape[0])]


def _init_entries(num_flows: int, num_matrices: int, latent_dim: int) -> nn.Parameter:
    """Below-diagonal entries ``U(-1/sqrt(D), 1/sqrt(D))``, as the other global flows start."""
    bound = 1.0 / math.sqrt(latent_dim)
    size = latent_dim * (latent_dim - 1) // 2
    return nn.Parameter(torch.empty(num_flows, num_matrices, size).uniform_(-bound, bound))


class AmortizedCCLinearIAF(AmortizedFlow):
    """Amortized convex-combination linear IAF: the mixing weights ``y(h)`` from the context.

    ``y_k(h) = softmax(a_k(h))`` over the ``J`` matrices of step ``k``, with the logits ``a(h)``
    of all ``K`` steps from one :class:`~vaeflows.transforms.Hypernet` pass over the encoder's
    features ``h``; the matrices ``L_j`` are learned parameters shared by all data points.

    Args:
        latent_dim: ``D``.
        num_flows: steps ``K``.
        context_dim: size ``C`` of the context.
        num_matrices: ``J``, the matrices combined in each step (default 5).
        hypernet_dims: hidden widths of the logits' network (default: one linear map).

    Example:
        >>> flow = AmortizedCCLinearIAF(4, 2, context_dim=8, num_matrices=3)
        >>> flow.condition(torch.randn(5, 8))(torch.randn(5, 4)).shape
        torch.Size([5, 4])
    """

    def __init__(
        self,
        latent_dim: int,
        num_flows: int,
        context_dim: int,
        num_matrices: int = 5,
        hypernet_dims: Sequence[int] = (),
    ) -> None:
        super().__init__("cc-liaf", latent_dim, num_flows, context_dim, invertible=True)
        self.num_matrices = check_int("num_matrices", num_matrices)
        self.entries = _init_entries(num_flows, num_matrices, latent_dim)
        self.hypernet = Hypernet(context_dim, {"logits": (num_flows, num_matrices)}, hypernet_dims)

    def steps(self, context: torch.Tensor) -> List[Transform]:
        weights = torch.softmax(self.hypernet(context)["logits"], dim=-1)
        return [UnitLowerTriangularStep(s) for s in _strict_matrices(self.entries, weights, self.latent_dim)]


class GlobalCCLinearIAF(GlobalFlow):
    """Global convex-combination linear IAF: free mixing logits ``a`` of shape ``(K, J)``.

    The logits start at 0 (equal weights ``1/J``).

    Args:
        latent_dim: ``D``.
        num_flows: steps ``K``.
        num_matrices: ``J``, the matrices combined in each step (default 5).

    Example:
        >>> flow = GlobalCCLinearIAF(4, 2, num_matrices=3)
        >>> flow(torch.randn(5, 4)).shape
        torch.Size([5, 4])
    """

    def __init__(self, latent_dim: int, num_flows: int, num_matrices: int = 5) -> None:
        super().__init__("cc-liaf", latent_dim, num_flows, invertible=True)
        self.num_matrices = check_int("num_matrices", num_matrices)
        self.entries = _init_entries(num_flows, num_matrices, latent_dim)
        self.logits = nn.Parameter(torch.zeros(num_flows, num_matrices))

    def steps(self) -> List[Transform]:
        weights = torch.softmax(self.logits, dim=-1)
        return [UnitLowerTriangularStep(s) for s in _strict_matrices(self.entries, weights, self.latent_dim)]
