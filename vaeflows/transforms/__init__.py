"""Normalizing flows for posteriors in Pyro guides, amortized and global, behind one registry.

Every flow maps base noise ``z_0`` to ``z_K`` (the generative direction, as in Pyro) and returns
``sum_k log|det dz_k/dz_(k-1)|`` from the same computation. ``posterior_flow(name, latent_dim,
num_flows, context_dim)`` builds the whole stack of ``num_flows`` steps as one module:

* with ``context_dim``: an amortized Pyro ``ConditionalTransformModule``; ``.condition(h)`` with
  encoder features ``h`` of shape ``(..., context_dim)`` gives the transform for those data points;
* without: a global Pyro ``TransformModule`` with learned parameters.

Example:
    >>> import torch, pyro.distributions as dist
    >>> flow = posterior_flow("sylvester-orthogonal", latent_dim=4, num_flows=2, context_dim=8)
    >>> h, loc, scale = torch.randn(3, 8), torch.zeros(3, 4), torch.ones(3, 4)
    >>> q = dist.TransformedDistribution(dist.Normal(loc, scale), [flow.condition(h)])
    >>> z = q.rsample(); q.log_prob(z).shape
    torch.Size([3])
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Union, overload

from .base import (
    AmortizedFamilyFlow,
    AmortizedFlow,
    FlowFamily,
    FlowStack,
    FunctionStep,
    GlobalFamilyFlow,
    GlobalFlow,
    Hypernet,
    NoInverseError,
    check_sizes,
)
from .ffjord import AmortizedFFJORD, GlobalFFJORD
from .householder import householder_family
from .iaf import AmortizedIAF, GlobalIAF
from .linear_iaf import AmortizedCCLinearIAF, GlobalCCLinearIAF
from .planar_flows import planar, planar_family
from .radial import radial_family
from .residual import AmortizedResidual, GlobalResidual
from .spline import (
    AmortizedSplineAutoregressive,
    AmortizedSplineCoupling,
    GlobalSplineAutoregressive,
    GlobalSplineCoupling,
    rational_quadratic_spline,
)
from .sylvester_flows import (
    orthogonalize,
    sylvester,
    sylvester_householder_family,
    sylvester_orthogonal_family,
    sylvester_triangular_family,
)

__all__ = [
    "POSTERIOR_FLOWS",
    "posterior_flow",
    "AmortizedFlow",
    "GlobalFlow",
    "AmortizedFamilyFlow",
    "GlobalFamilyFlow",
    "AmortizedIAF",
    "GlobalIAF",
    "AmortizedResidual",
    "GlobalResidual",
    "AmortizedFFJORD",
    "GlobalFFJORD",
    "AmortizedSplineAutoregressive",
    "GlobalSplineAutoregressive",
    "AmortizedSplineCoupling",
    "GlobalSplineCoupling",
    "AmortizedCCLinearIAF",
    "GlobalCCLinearIAF",
    "FlowFamily",
    "FlowStack",
    "Hypernet",
    "NoInverseError",
    "FunctionStep",
    "planar",
    "sylvester",
    "orthogonalize",
    "rational_quadratic_spline",
]

PosteriorFlow = Union[AmortizedFlow, GlobalFlow]


def _family_factory(make_family: Callable[..., FlowFamily]) -> Callable[..., PosteriorFlow]:
    """A registry factory for a family whose amortized parameters come from a hypernetwork."""

    def factory(
        latent_dim: int,
        num_flows: int,
        context_dim: Optional[int] = None,
        hypernet_dims: Sequence[int] = (),
        **family_options,
    ) -> PosteriorFlow:
        check_sizes(latent_dim, num_flows)
        family = make_family(latent_dim, **family_options)
        if context_dim is None:
            if hypernet_dims:
                raise ValueError("hypernet_dims applies to amortized flows only: give context_dim")
            return GlobalFamilyFlow(family, latent_dim, num_flows)
        return AmortizedFamilyFlow(family, latent_dim, num_flows, context_dim, hypernet_dims)

    factory.__doc__ = make_family.__doc__
    return factory


def _iaf_factory(
    latent_dim: int,
    num_flows: int,
    context_dim: Optional[int] = None,
    hidden_dims: Sequence[int] = (320, 320),
    reverse_order: bool = True,
    sigmoid_bias: Optional[float] = None,
    update: str = "gated",
    activation: str = "elu",
    zero_init: Optional[bool] = None,
) -> PosteriorFlow:
    """IAF steps, each with its own MADE of width ``hidden_dims``, gated or affine; see :mod:`.iaf`."""
    options = (reverse_order, sigmoid_bias, update, activation, zero_init)
    if context_dim is None:
        return GlobalIAF(latent_dim, num_flows, hidden_dims, *options)
    return AmortizedIAF(latent_dim, num_flows, context_dim, hidden_dims, *options)


def _forms_factory(amortized: type, global_: type, doc: str) -> Callable[..., PosteriorFlow]:
    """A registry factory choosing between an amortized and a global class by ``context_dim``."""

    def factory(latent_dim: int, num_flows: int, context_dim: Optional[int] = None, **options) -> PosteriorFlow:
        if context_dim is None:
            return global_(latent_dim, num_flows, **options)
        return amortized(latent_dim, num_flows, context_dim, **options)

    factory.__doc__ = doc
    return factory


#: Flow name -> ``factory(latent_dim, num_flows, context_dim=None, **options)``.
POSTERIOR_FLOWS: Dict[str, Callable[..., PosteriorFlow]] = {
    "planar": _family_factory(planar_family),
    "radial": _family_factory(radial_family),
    "iaf": _iaf_factory,
    "sylvester-orthogonal": _family_factory(sylvester_orthogonal_family),
    "sylvester-householder": _family_factory(sylvester_householder_family),
    "sylvester-triangular": _family_factory(sylvester_triangular_family),
    "householder": _family_factory(householder_family),
    "residual": _forms_factory(
        AmortizedResidual,
        GlobalResidual,
        "Invertible residual steps ``z + g(z)``, estimated or exact log-det; see :mod:`.residual`.",
    ),
    "ffjord": _forms_factory(
        AmortizedFFJORD, GlobalFFJORD, "Continuous normalizing flow steps (needs torchdiffeq); see :mod:`.ffjord`."
    ),
    "spline-autoregressive": _forms_factory(
        AmortizedSplineAutoregressive,
        GlobalSplineAutoregressive,
        "Inverse-autoregressive rational-quadratic spline steps (MADE conditioners); see :mod:`.spline`.",
    ),
    "spline-coupling": _forms_factory(
        AmortizedSplineCoupling,
        GlobalSplineCoupling,
        "Rational-quadratic spline coupling steps, analytic inverse; see :mod:`.spline`.",
    ),
    "cc-liaf": _forms_factory(
        AmortizedCCLinearIAF,
        GlobalCCLinearIAF,
        "Convex-combination linear IAF steps ``z' = (sum_j y_j L_j) z``, volume preserving; see :mod:`.linear_iaf`.",
    ),
}


@overload
def posterior_flow(name: str, latent_dim: int, num_flows: int, context_dim: int, **options: Any) -> AmortizedFlow: ...
@overload
def posterior_flow(
    name: str, latent_dim: int, num_flows: int, context_dim: None = None, **options: Any
) -> GlobalFlow: ...
@overload
def posterior_flow(
    name: str, latent_dim: int, num_flows: int, context_dim: Optional[int] = None, **options: Any
) -> PosteriorFlow: ...


def posterior_flow(
    name: str,
    latent_dim: int,
    num_flows: int,
    context_dim: Optional[int] = None,
    **options: Any,
) -> PosteriorFlow:
    """Build a stack of ``num_flows`` steps of the flow ``name`` as one module.

    Args:
        name: a key of :data:`POSTERIOR_FLOWS`.
        latent_dim: size ``D`` of the latent variable.
        num_flows: number of steps ``K``.
        context_dim: size of the context (encoder features) for an amortized flow; ``None`` for a
            global flow.
        **options: ``hypernet_dims`` (hidden widths of the amortizing hypernetwork, default one
            linear map); ``num_ortho_vecs`` (O-SNF's ``M``); ``num_householder`` (H-SNF's ``H``,
            reflections per Householder-flow step); for ``iaf``: ``hidden_dims``, ``reverse_order``,
            ``update`` (``"gated"``, the default, or ``"affine"``), ``sigmoid_bias``, ``activation``
            (``"elu"``, the default, or ``"relu"``), ``zero_init`` (zero MADE output layers;
            default for the affine update); for
            ``residual``: ``hidden_dims``, ``coeff``, ``ladj`` (``"exact"``, ``"hutchinson"``,
            ``"roulette"``), ``eval_ladj``, ``n_terms``, ... (see :class:`AmortizedResidual`); for
            ``ffjord``: ``hidden_dims``, ``trace`` (``"exact"``, ``"hutchinson"``), ``eval_trace``,
            ``rtol``, ``atol``, ``method``, ``adjoint``, ``time_length``, ``solver_steps``
            (fixed-grid ``method="rk4"``), RNODE's ``kinetic_weight`` and ``jacobian_weight``,
            ``learn_time`` (see :class:`AmortizedFFJORD`); for ``spline-autoregressive``: ``hidden_dims`` (MADE widths,
            each ``>= D``, default ``(320, 320)``), ``count_bins`` (default 8), ``bound`` (tail
            bound ``B``, default 3), ``reverse_order``; for ``spline-coupling``: ``hidden_dims``
            (conditioner MLP widths, default ``(320, 320)``), ``count_bins``, ``bound`` (see
            :class:`AmortizedSplineCoupling`); global splines also ``zero_init`` (every step
            the identity at the start); for ``cc-liaf``: ``num_matrices`` (``J``, default 5)
            and, amortized, ``hypernet_dims`` (see :class:`AmortizedCCLinearIAF`).
            ``flow.log_det_kind`` says whether the log-det is exact, exact up to an ODE
            tolerance, or estimated.

    Returns:
        An :class:`AmortizedFlow` (``ConditionalTransformModule``) when ``context_dim`` is given,
        else a :class:`GlobalFlow` (``TransformModule``).

    Raises:
        ValueError: for an unknown name, ``latent_dim < 1`` or ``num_flows < 1``, or a bad option
            (e.g. ``count_bins < 2``, ``bound <= 0``, non-positive ``hidden_dims``, or MADE widths below ``D``).
    """
    try:
        factory = POSTERIOR_FLOWS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown posterior flow {name!r}; known flows: {', '.join(POSTERIOR_FLOWS)}") from None
    return factory(latent_dim, num_flows, context_dim, **options)
