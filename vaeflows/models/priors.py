"""Learnable priors ``p(z)`` for the VAE: the VampPrior and a density flow on ``z``.

Each is a module with learned parameters and gives, at every call of the VAE's ``model``, a Pyro
distribution for the latent site ``z`` (event shape ``(D,)``, any batch shape through ``expand``,
as ``pyro.plate`` asks), so that Pyro's ELBOs, vaeflows' ELBO and the importance-sampled NLL
score it like any other site:

* :class:`VampPrior` (Tomczak & Welling 2018): the mixture of the variational posterior at ``K``
  learned pseudo-inputs ``u_k``,

  .. math::

      p(z) = \\frac{1}{K} \\sum_{k=1}^{K} q_0(z \\mid u_k), \\qquad
      \\log p(z) = \\operatorname{logsumexp}_k \\log q_0(z \\mid u_k) - \\log K,

  where ``q_0(z | u) = N(mu(u), diag(sigma(u)^2))`` is the encoder's Gaussian (with a flow
  posterior, the Gaussian before the flow: the flowed posterior of planar, radial or Sylvester
  flows cannot score a point it did not draw). The pseudo-inputs are images
  ``u_k = hardtanh(w_k, 0, 1)`` with ``w_k ~ N(0.05, 0.01^2)`` per pixel at the start, as in the
  paper's code (``pseudoinputs_mean = 0.05``, ``pseudoinputs_std = 0.01``, 500 components);
* :class:`FlowPrior`: ``p(z)`` a density flow of :data:`vaeflows.density.DENSITY_FLOWS` on
  ``(D,)`` (``z = f(eps)``, ``eps ~ N(0, I)``, scored exactly through ``f^{-1}``), as Pyro's
  VAE-with-a-flow-prior tutorial does with a MAF.

References:
    Tomczak & Welling, "VAE with a VampPrior", AISTATS 2018; Chen et al., "Variational Lossy
    Autoencoder", ICLR 2017 (an autoregressive flow prior).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from torch import nn
from torch.distributions import constraints

from vaeflows.checks import check_int, check_real

if TYPE_CHECKING:
    from vaeflows.density import FlowDensity

__all__ = [
    "PRIORS",
    "VampPrior",
    "VampPriorDistribution",
    "FlowPrior",
    "FlowPriorDistribution",
    "build_prior",
]

_LOG_2PI = math.log(2 * math.pi)
#: Elements of the largest temporary ``(points, components, D)`` tensor that a VampPrior's
#: ``log_prob`` builds at once (about 64 MiB in float32); more components are done in chunks.
_CHUNK_ELEMENTS = 2**24


class VampPriorDistribution(TorchDistribution):
    """The uniform mixture ``(1/K) sum_k N(loc_k, diag(scale_k^2))``, event shape ``(D,)``.

    ``log_prob(z) = logsumexp_k log N(z; loc_k, diag(scale_k^2)) - log K``, computed over chunks
    of components so that memory stays bounded for many samples (the importance-sampled NLL) and
    many components. ``sample`` draws a component uniformly, then its Gaussian; it has no
    reparameterized sample (the component is discrete), which a model site does not need.

    Args:
        loc: component means ``(K, D)``.
        scale: component standard deviations ``(K, D)``, positive.
        batch_shape: the batch shape (``pyro.plate`` sets it through ``expand``).
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(
        self,
        loc: torch.Tensor,
        scale: torch.Tensor,
        batch_shape: Sequence[int] = (),
        validate_args: Optional[bool] = None,
    ) -> None:
        if loc.dim() != 2 or loc.shape != scale.shape:
            raise ValueError(
                f"VampPriorDistribution needs loc and scale of one shape (K, D), got {tuple(loc.shape)} "
                f"and {tuple(scale.shape)}"
            )
        self.loc, self.scale = loc, scale
        super().__init__(torch.Size(batch_shape), loc.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None) -> "VampPriorDistribution":
        if tuple(batch_shape) == self.batch_shape:
            return self
        return VampPriorDistribution(self.loc, self.scale, batch_shape, validate_args=False)

    @property
    def num_components(self) -> int:
        return self.loc.shape[0]

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        d = self.event_shape[0]
        flat = value.reshape(-1, d)
        inv_scale = self.scale.reciprocal()
        norm = -self.scale.log().sum(-1) - 0.5 * d * _LOG_2PI  # (K,)
        chunk = max(1, _CHUNK_ELEMENTS // max(1, flat.shape[0] * d))
        parts = []
        for start in range(0, self.num_components, chunk):
            sl = slice(start, start + chunk)
            eps = (flat.unsqueeze(-2) - self.loc[sl]) * inv_scale[sl]  # (N, k, D)
            parts.append(torch.logsumexp(norm[sl] - 0.5 * eps.pow(2).sum(-1), dim=-1))
        log_p = parts[0] if len(parts) == 1 else torch.logsumexp(torch.stack(parts, -1), dim=-1)
        log_p = (log_p - math.log(self.num_components)).reshape(value.shape[:-1])
        return log_p.expand(torch.broadcast_shapes(log_p.shape, self.batch_shape))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            k = torch.randint(self.num_components, shape[:-1], device=self.loc.device)
            noise = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
            return self.loc[k] + self.scale[k] * noise


class VampPrior(nn.Module):
    """The VampPrior's learned pseudo-inputs ``u_k`` (see the module docstring for the density).

    The VAE turns them into ``p(z)`` with its own encoder and Gaussian heads:
    ``distribution(encode)`` with ``encode(u) -> (loc, scale)``.

    Args:
        image_shape: ``(C, H, W)`` of the data.
        num_components: ``K`` pseudo-inputs (the paper: 500).
        init_mean, init_std: the pre-activations start ``N(init_mean, init_std^2)`` per pixel
            (the paper's code: 0.05 and 0.01).

    Example:
        >>> prior = VampPrior((1, 4, 4), num_components=3)
        >>> prior.pseudo_inputs().shape
        torch.Size([3, 1, 4, 4])
        >>> p = prior.distribution(lambda u: (u.flatten(1)[:, :2], torch.ones(3, 2)))
        >>> p.log_prob(torch.zeros(5, 2)).shape
        torch.Size([5])
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        num_components: int = 500,
        init_mean: float = 0.05,
        init_std: float = 0.01,
    ) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.num_components = check_int("num_components", num_components)
        check_real("init_mean", init_mean)
        check_real("init_std", init_std, above=0.0)
        self.weight = nn.Parameter(
            torch.empty(num_components, math.prod(self.image_shape)).normal_(init_mean, init_std)
        )

    def pseudo_inputs(self) -> torch.Tensor:
        """``u = hardtanh(w, 0, 1)``: images of shape ``(K, C, H, W)`` in ``[0, 1]``."""
        return F.hardtanh(self.weight, 0.0, 1.0).reshape(self.num_components, *self.image_shape)

    def distribution(
        self, encode: Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]
    ) -> VampPriorDistribution:
        """``p(z) = (1/K) sum_k N(loc(u_k), diag(scale(u_k)^2))`` with ``encode(u) -> (loc, scale)``."""
        loc, scale = encode(self.pseudo_inputs())
        return VampPriorDistribution(loc, scale)


class FlowPriorDistribution(TorchDistribution):
    """``p(z)`` of a :class:`~vaeflows.density.FlowDensity` on vectors, as a Pyro distribution.

    ``log_prob`` is the flow's exact log-density (one inverse pass); ``rsample`` pushes draws of
    the flow's base (standard normal, or a learned base) through the flow (reparameterized).
    Any leading dims are flattened for the flow and restored.

    Args:
        density: a density flow of event shape ``(D,)``.
        batch_shape: the batch shape (``pyro.plate`` sets it through ``expand``).
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(
        self, density: "FlowDensity", batch_shape: Sequence[int] = (), validate_args: Optional[bool] = None
    ) -> None:
        event_shape = tuple(density.event_shape)
        if len(event_shape) != 1:
            raise ValueError(f"a flow prior needs a density flow on vectors (D,), got event shape {event_shape}")
        self.density = density
        super().__init__(torch.Size(batch_shape), torch.Size(event_shape), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None) -> "FlowPriorDistribution":
        if tuple(batch_shape) == self.batch_shape:
            return self
        return FlowPriorDistribution(self.density, batch_shape, validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        d = self.event_shape[0]
        log_p = self.density.log_prob(value.reshape(-1, d)).reshape(value.shape[:-1])
        return log_p.expand(torch.broadcast_shapes(log_p.shape, self.batch_shape))

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        return self.density.sample(math.prod(shape[:-1])).reshape(shape)  # the flow's own base


class FlowPrior(nn.Module):
    """A density flow of :data:`vaeflows.density.DENSITY_FLOWS` on the latent ``z`` as ``p(z)``.

    Args:
        latent_dim: ``D``.
        flow: a density flow name (default ``"maf"``, the flow of Pyro's flow-prior tutorial).
        num_steps: the flow's steps (default: the builder's).
        hidden: the flow's hidden width (default: the builder's; MAF needs ``hidden >= D``).
        base: the flow's base distribution, a key of :data:`vaeflows.density.BASES` (default
            ``"normal"``; ``"mixture"`` or ``"made"`` learn it).

    Example:
        >>> prior = FlowPrior(2, "realnvp", num_steps=2, hidden=8)
        >>> p = prior.distribution()
        >>> z = p.rsample((5,)); p.log_prob(z).shape
        torch.Size([5])
    """

    def __init__(
        self,
        latent_dim: int,
        flow: str = "maf",
        num_steps: Optional[int] = None,
        hidden: Optional[int] = None,
        base: str = "normal",
    ) -> None:
        super().__init__()
        from vaeflows.density import density_flow

        options: Dict[str, Any] = {}
        if num_steps is not None:
            options["num_steps"] = num_steps
        if hidden is not None:
            options["hidden"] = hidden
        self.name = flow
        self.density = density_flow(flow, (check_int("latent_dim", latent_dim),), base=base, **options)
        self.density.check_values = False  # its inputs are the guide's samples, not data to check

    def distribution(self) -> FlowPriorDistribution:
        return FlowPriorDistribution(self.density)


def _vamp(
    latent_dim: int,
    image_shape: Sequence[int],
    num_components: int = 500,
    init_mean: float = 0.05,
    init_std: float = 0.01,
) -> VampPrior:
    return VampPrior(image_shape, num_components, init_mean, init_std)


def _flow(
    latent_dim: int,
    image_shape: Sequence[int],
    flow: str = "maf",
    num_steps: Optional[int] = None,
    hidden: Optional[int] = None,
    base: str = "normal",
) -> FlowPrior:
    return FlowPrior(latent_dim, flow, num_steps, hidden, base)


#: Prior name -> ``factory(latent_dim, image_shape, **options)``; ``"standard"`` is ``N(0, I)``
#: with no parameters (``build_prior`` returns ``None`` for it).
PRIORS: Dict[str, Optional[Callable[..., nn.Module]]] = {"standard": None, "vamp": _vamp, "flow": _flow}


def build_prior(name: str, latent_dim: int, image_shape: Sequence[int], **options) -> Optional[nn.Module]:
    """The prior module ``name`` of :data:`PRIORS`, or ``None`` for ``"standard"``.

    Args:
        name: ``"standard"``, ``"vamp"`` or ``"flow"``.
        latent_dim: ``D``.
        image_shape: ``(C, H, W)`` of the data (the VampPrior's pseudo-inputs).
        **options: ``vamp``: ``num_components``, ``init_mean``, ``init_std``; ``flow``: ``flow``
            (a density flow name), ``num_steps``, ``hidden``, ``base``.

    Raises:
        ValueError: an unknown name or a bad option value.
        TypeError: an option the prior does not have.

    Example:
        >>> build_prior("vamp", 4, (1, 8, 8), num_components=10).weight.shape
        torch.Size([10, 64])
    """
    if name not in PRIORS:
        raise ValueError(f"unknown prior {name!r}; known priors: {', '.join(PRIORS)}")
    factory = PRIORS[name]
    if factory is None:
        if options:
            raise TypeError(f"the standard prior has no options, got {', '.join(map(repr, options))}")
        return None
    return factory(latent_dim, image_shape, **options)
