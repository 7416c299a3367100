"""An autoguide for any Pyro model: a learned affine base, then any registry flow.

:class:`AutoFlow` works as Pyro's ``AutoContinuous`` guides do: it runs the model once, maps
every latent site to unconstrained space (``biject_to(site.support).inv``) and concatenates them
into one vector of size ``D``. Its posterior on that vector is

    ``z_0 ~ N(0, I_D)``,  ``u = A z_0``,  ``x = loc + f_K(... f_1(u))``,

a learned affine map ``A`` (``base="diagonal"``: ``A = diag(scale)``; ``"full"``: ``A`` lower
triangular, as ``AutoMultivariateNormal``; ``"lowrank"``: ``A = diag(scale) + U U^T`` with ``U``
of shape ``(D, rank)``; ``"standard"``: no affine layer, ``A = I`` and ``loc = 0``) followed by
``num_flows`` steps of a flow of :data:`vaeflows.transforms.POSTERIOR_FLOWS`, each site's
constrained value being the bijection of its slice of ``x``.
``log q(x) = log N(z_0; 0, I) - log|det A| - sum_k log|det dz_k/dz_(k-1)|``.
The flow acts on the centred latent ``u`` and ``loc`` comes last, so that ``loc`` starts where
``init_loc_fn`` puts it whatever the flow's initial map.

Why the affine layers: Pyro's ``AutoNormalizingFlow`` puts the flow on a fixed ``N(0, I)``, so a
flow must learn the posterior's location and scale with its own nonlinear steps (a Householder
flow there is a rotation of ``N(0, I)``: it can learn nothing). Here the affine layer starts where
``AutoDiagonalNormal`` starts (``loc`` from ``init_loc_fn``, ``scale = init_scale``), the flow
starts near the identity, and the flow only has to learn what a Gaussian cannot.

The ``"standard"`` base is the layout of Pyro's ``AutoNormalizingFlow`` and zuko's flows: the
flow alone on ``N(0, I)``, for flows that carry their own shift and scale (``iaf``, the splines).
With the affine IAF (whose steps start as the identity) neither start wins everywhere: on the
banana and eight schools the diagonal base with ``init_scale=1`` ends 0.02 and 0.003 nats above the
standard base, on the logistic regression the full base is best
(``benchmarks/results/pyro_guides_standard.md``).

``get_base_dist()`` is ``N(0, I)`` and ``get_transform()`` the affine map then the flow, so
``pyro.infer.reparam.NeuTraReparam`` runs NUTS in ``z_0``'s space, where the flow has made the
posterior close to a standard normal.

References:
    Kucukelbir, Tran, Ranganath, Gelman & Blei, "Automatic Differentiation Variational
    Inference", JMLR 2017.
    Hoffman, Sountsov, Dillon, Langmore, Tran & Vasudevan, "NeuTra-lizing Bad Geometry in
    Hamiltonian Monte Carlo Using Neural Transport", 2019.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence, Union, cast

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.transforms import LowerCholeskyAffine
from pyro.distributions.util import eye_like
from pyro.infer.autoguide import AutoContinuous
from pyro.infer.autoguide.initialization import init_to_median
from pyro.nn import PyroParam
from torch import nn
from torch.distributions import AffineTransform, ComposeTransform, Transform, biject_to

from ..transforms import POSTERIOR_FLOWS, posterior_flow

__all__ = ["AutoFlow", "LowRankAffine", "BASES"]

#: Flows whose conditioners default to one hidden layer of ``3 D + 1`` units in :class:`AutoFlow`
#: (``AutoIAFNormal``'s width), not the amortized default ``(320, 320)``: a global guide of a few
#: latents needs no 200k-parameter conditioner (the splines' had 220k-360k for ``D = 2-11``).
GLOBAL_WIDTH_FLOWS = ("iaf", "spline-autoregressive", "spline-coupling")

#: The bases of :class:`AutoFlow`: three learned affine layers, or none (``"standard"``).
BASES = ("diagonal", "full", "lowrank", "standard")


class LowRankAffine(Transform):
    """The square map ``y = loc + (diag(scale) + U U^T) x``: diagonal plus low-rank, invertible.

    ``A = diag(scale) + U U^T`` is symmetric positive definite for ``scale > 0``, so it is always
    invertible, and every covariance is ``A A^T`` of such an ``A`` (its SPD square root) when
    ``rank = D``. With ``rank = r < D`` it costs ``O(D r)`` per point:

    * ``log|det A| = sum log scale + log det(I_r + U^T diag(1/scale) U)`` (matrix determinant
      lemma; the ``r x r`` matrix is SPD, its log-det from a Cholesky factor);
    * ``A^-1 v = v/s - (U/s) (I_r + U^T diag(1/s) U)^-1 U^T (v/s)`` (Woodbury).

    Direction ``x -> y``; event dim 1. Caches its last ``(x, y)`` (so a ``TransformedDistribution``
    scores its own sample exactly).

    Args:
        loc: ``(D,)``.
        scale: ``(D,)``, positive.
        factor: ``U``, ``(D, r)``.

    Example:
        >>> t = LowRankAffine(torch.zeros(3), torch.ones(3), torch.ones(3, 1))
        >>> t(torch.tensor([1.0, 0.0, 0.0]))
        tensor([2., 1., 1.])
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, factor: torch.Tensor) -> None:
        super().__init__(cache_size=1)
        self.loc, self.scale, self.factor = loc, scale, factor

    def _capacitance_tril(self) -> torch.Tensor:
        """Cholesky factor of ``I_r + U^T diag(1/scale) U``."""
        u = self.factor
        capacitance = eye_like(u, u.shape[-1]) + (u / self.scale.unsqueeze(-1)).mT @ u
        return torch.linalg.cholesky(capacitance)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return self.loc + self.scale * x + (x @ self.factor) @ self.factor.mT

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        v = (y - self.loc) / self.scale
        w = torch.cholesky_solve((v @ self.factor).unsqueeze(-1), self._capacitance_tril()).squeeze(-1)
        return v - (w @ self.factor.mT) / self.scale

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        tril = self._capacitance_tril()
        ladj = self.scale.log().sum(-1) + 2 * torch.diagonal(tril, dim1=-2, dim2=-1).log().sum(-1)
        return ladj.expand(x.shape[:-1])


class _VectorAffine(AffineTransform):
    """``AffineTransform(loc, scale, event_dim=1)`` with ``loc`` and ``scale`` vectors ``(D,)`` or
    numbers, whose shape maps skip ``torch.broadcast_shapes`` for shapes ending in ``D`` (about
    90 us a call in torch 2.14; a ``TransformedDistribution`` built at every step calls them three
    times per affine layer, a tenth of a small model's step)."""

    def __init__(
        self, loc: torch.Tensor, scale: Union[torch.Tensor, float], event_dim: int = 1, cache_size: int = 1
    ) -> None:
        super().__init__(loc, scale, event_dim=event_dim, cache_size=cache_size)
        vectors = event_dim == 1 and loc.dim() == 1 and (not isinstance(scale, torch.Tensor) or scale.dim() <= 1)
        self._size = loc.shape[-1] if vectors else None  # the D of the shapes mapped to themselves

    def forward_shape(self, shape: Sequence[int]) -> torch.Size:
        if self._size is not None and len(shape) and shape[-1] == self._size:
            return torch.Size(shape)
        return super().forward_shape(shape)

    inverse_shape = forward_shape


class AutoFlow(AutoContinuous):
    """Automatic flow guide for any Pyro model: a learned affine base, then a registry flow.

    See :mod:`vaeflows.guides.auto` for the posterior. Works with ``SVI`` and every Pyro ELBO,
    ``Predictive``, ``median()`` / ``quantiles()`` and ``NeuTraReparam`` + ``NUTS``.

    Args:
        model: a Pyro model whose latent sites are all continuous.
        flow: a key of :data:`~vaeflows.transforms.POSTERIOR_FLOWS`, or ``None`` for the affine
            base alone (``"diagonal"``: ``AutoDiagonalNormal``'s posterior; ``"full"``:
            ``AutoMultivariateNormal``'s).
        num_flows: number of flow steps ``K``.
        base: the affine layer, one of :data:`BASES` (``"standard"``: none, the flow alone on
            ``N(0, I)``; ``init_loc_fn`` and ``init_scale`` then play no part).
        rank: ``r`` of the ``"lowrank"`` base (default ``round(sqrt(D))``, as Pyro's
            ``AutoLowRankMultivariateNormal``).
        init_loc_fn: per-site initialization of ``loc`` (Pyro's ``init_to_*``).
        init_scale: initial ``scale`` of the affine layer, as ``AutoDiagonalNormal``'s.
        **flow_options: options of the flow (see :func:`~vaeflows.transforms.posterior_flow`);
            ``iaf``, ``spline-autoregressive`` and ``spline-coupling`` default to one hidden
            layer of ``3 D + 1`` units, the width of Pyro's ``AutoIAFNormal``.

    Raises:
        ValueError: for an unknown flow or base, ``num_flows < 1``, a bad ``rank`` or
            ``init_scale``.

    Example:
        >>> def model():
        ...     pyro.sample("x", dist.Normal(0.0, 1.0))
        ...     pyro.sample("y", dist.LogNormal(0.0, 1.0).expand([2]).to_event(1))
        >>> guide = AutoFlow(model, "sylvester-householder", num_flows=2)
        >>> sorted(guide().keys()), guide.latent_dim
        (['x', 'y'], 3)
    """

    scale_constraint = constraints.softplus_positive
    # PyroModule reads a PyroParam attribute back as its constrained tensor
    loc: torch.Tensor
    scale: torch.Tensor
    scale_tril: torch.Tensor
    factor: torch.Tensor

    def __init__(
        self,
        model: Callable,
        flow: Optional[str] = "iaf",
        num_flows: int = 2,
        base: str = "diagonal",
        rank: Optional[int] = None,
        init_loc_fn: Callable = init_to_median,
        init_scale: float = 0.1,
        **flow_options,
    ) -> None:
        if flow is not None and flow not in POSTERIOR_FLOWS:
            raise ValueError(f"unknown flow {flow!r}; known flows: {', '.join(POSTERIOR_FLOWS)}, or None")
        if base not in BASES:
            raise ValueError(f"unknown base {base!r}; known bases: {', '.join(BASES)}")
        if not isinstance(num_flows, int) or isinstance(num_flows, bool) or num_flows < 1:
            raise ValueError(f"num_flows must be an integer >= 1, got {num_flows!r}")
        if rank is not None and (base != "lowrank" or not isinstance(rank, int) or rank < 1):
            raise ValueError(f"rank is an integer >= 1 of the lowrank base, got rank={rank!r}, base={base!r}")
        if not isinstance(init_scale, (int, float)) or isinstance(init_scale, bool) or not init_scale > 0:
            raise ValueError(f"init_scale must be a number > 0, got {init_scale!r}")
        if flow is None and flow_options:
            raise ValueError(f"flow options {sorted(flow_options)} given without a flow")
        if flow is None and base == "standard":
            raise ValueError("base='standard' without a flow is N(0, I) itself: give a flow, or a learned base")
        self._flow_name = flow
        self._num_flows = num_flows
        self._flow_options = dict(flow_options)
        self._base = base
        self.rank = rank
        self._init_scale = float(init_scale)
        super().__init__(model, init_loc_fn=init_loc_fn)

    def _setup_prototype(self, *args, **kwargs) -> None:
        super()._setup_prototype(*args, **kwargs)
        dim = self.latent_dim
        if self._base == "standard":  # no parameters: loc stays 0 (a buffer, for dtype and device)
            self.register_buffer("loc", torch.zeros_like(self._init_loc()))
        else:
            self.loc = nn.Parameter(self._init_loc())
            scale = self.loc.new_full((dim,), self._init_scale)
            self.scale = PyroParam(scale, self.scale_constraint)  # type: ignore[assignment]  # read back as a tensor
        if self._base == "full":
            tril = PyroParam(eye_like(self.loc, dim), constraints.unit_lower_cholesky)
            self.scale_tril = tril  # type: ignore[assignment]  # read back as a tensor
        elif self._base == "lowrank":
            self.rank = self.rank or max(1, int(round(dim**0.5)))
            # diag(U U^T) starts at a quarter of init_scale: the base starts near AutoDiagonalNormal
            factor = torch.randn(dim, self.rank, dtype=self.loc.dtype, device=self.loc.device)
            self.factor = nn.Parameter(factor * 0.5 * (self._init_scale / self.rank) ** 0.5)
        self.flow = None
        if self._flow_name is not None:
            options = dict(self._flow_options)
            if self._flow_name in GLOBAL_WIDTH_FLOWS:
                options.setdefault("hidden_dims", (3 * dim + 1,))
            flow = posterior_flow(self._flow_name, dim, self._num_flows, **options)
            self.flow = flow.to(dtype=self.loc.dtype, device=self.loc.device)

    def get_base_dist(self) -> dist.TorchDistribution:
        """``N(0, I_D)``, the distribution of ``z_0``."""
        return dist.Normal(torch.zeros_like(self.loc), torch.ones_like(self.loc)).to_event(1)

    def _affine(self, loc: torch.Tensor) -> Transform:
        """``u = loc + A z_0``."""
        if self._base == "full":
            return LowerCholeskyAffine(loc, self.scale.unsqueeze(-1) * self.scale_tril).with_cache(1)
        if self._base == "lowrank":
            return LowRankAffine(loc, self.scale, self.factor)
        return _VectorAffine(loc, self.scale)

    def _transforms(self) -> Sequence[Transform]:
        """``A z_0``, the flow, then ``+ loc``: the flow acts on the centred latent, so that ``loc``
        starts where ``init_loc_fn`` puts it whatever the flow's initial map (a Householder step
        is no near-identity: before ``loc`` it would reflect it) and a step's nonlinearity sits
        at the posterior's centre, not at the origin of the unconstrained space."""
        # each read of a parameter or of the flow module is a pyro.param / pyro.module call, the
        # flow's a registration of all its parameters (0.7 ms in eight schools): read each once
        loc = self.loc
        if self._flow_name is None:
            return [self._affine(loc)]
        if self._base == "standard":
            return [cast(Transform, self.flow)]
        return [self._affine(torch.zeros_like(loc)), cast(Transform, self.flow), _VectorAffine(loc, 1.0)]

    def get_transform(self, *args, **kwargs) -> Transform:
        """The map ``z_0 -> x``: ``A``, the flow, ``+ loc`` (what ``NeuTraReparam`` uses)."""
        return ComposeTransform(list(self._transforms()), cache_size=1)

    def get_posterior(self, *args, **kwargs) -> dist.TorchDistribution:
        """The posterior of the unconstrained latent vector ``(D,)``: the push-forward of
        :meth:`get_base_dist` by :meth:`get_transform`."""
        if self._base == "standard":
            return dist.TransformedDistribution(self.get_base_dist(), [cast(Transform, self.flow)])
        if self._flow_name is not None and self._base == "diagonal":
            # The same distribution with one transform fewer a step: with a diagonal A, A z_0 is
            # N(0, diag(scale^2)) itself (the same draws, at a fixed seed, and the same log q).
            loc, flow = self.loc, cast(Transform, self.flow)
            base = dist.Normal(torch.zeros_like(loc), self.scale).to_event(1)
            return dist.TransformedDistribution(base, [flow, _VectorAffine(loc, 1.0)])
        return dist.TransformedDistribution(self.get_base_dist(), list(self._transforms()))

    def _loc_scale(self, *args, **kwargs):
        if self._flow_name is not None:
            raise NotImplementedError("a flow posterior has no closed-form loc and scale")
        if self._base == "full":
            return self.loc, (self.scale.unsqueeze(-1) * self.scale_tril).pow(2).sum(-1).sqrt()
        if self._base == "lowrank":
            a = torch.diag_embed(self.scale) + self.factor @ self.factor.mT
            return self.loc, a.pow(2).sum(-1).sqrt()
        return self.loc, self.scale

    @torch.no_grad()
    def quantiles(
        self, quantiles: Union[Sequence[float], torch.Tensor], *args, num_samples: int = 4000, **kwargs
    ) -> Dict[str, torch.Tensor]:
        """Posterior quantiles of every latent site, element by element, in constrained space.

        Without a flow they are exact (the Gaussian's, mapped through each site's bijection, as
        Pyro's Gaussian autoguides). With a flow there is no closed form: they are the empirical
        quantiles of ``num_samples`` draws from the guide (each site's constrained values, so
        they are right for any support, simplexes included), with Monte Carlo error about
        ``sqrt(q (1 - q) / num_samples) / density``.

        Args:
            quantiles: levels in ``[0, 1]``.
            num_samples: draws for the Monte Carlo quantiles of a flow posterior.

        Returns:
            site name -> tensor of shape ``(len(quantiles), *site_shape)``.
        """
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        if self._flow_name is None:
            return super().quantiles(quantiles, *args, **kwargs)
        levels = torch.as_tensor(quantiles, dtype=self.loc.dtype, device=self.loc.device)
        if levels.dim() != 1 or not ((levels >= 0) & (levels <= 1)).all():
            raise ValueError(f"quantiles must be a list of levels in [0, 1], got {quantiles!r}")
        if not isinstance(num_samples, int) or num_samples < 2:
            raise ValueError(f"num_samples must be an integer >= 2, got {num_samples!r}")
        latent = self.get_posterior(*args, **kwargs).sample((num_samples,))
        result, start = {}, 0
        assert self.prototype_trace is not None  # set up by get_posterior's first call
        # each site's slice, with the draws on the left of its own shape (plates included)
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            shape = self._unconstrained_shapes[name]
            size = math.prod(shape)
            unconstrained = latent[:, start : start + size].reshape((num_samples,) + tuple(shape))
            start += size
            value = biject_to(site["fn"].support)(unconstrained)
            result[name] = torch.quantile(value, levels, dim=0)
        return result

    @torch.no_grad()
    def median(self, *args, num_samples: int = 4000, **kwargs) -> Dict[str, torch.Tensor]:
        """Posterior median of every latent site, element by element (see :meth:`quantiles`)."""
        if self._flow_name is None:
            if self.prototype_trace is None:
                self._setup_prototype(*args, **kwargs)
            return super().median(*args, **kwargs)
        return {name: q[0] for name, q in self.quantiles([0.5], *args, num_samples=num_samples, **kwargs).items()}
