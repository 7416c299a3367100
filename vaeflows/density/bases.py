"""Base distributions ``p_0(z)`` of the density flows: the standard normal and two learnable ones.

A :class:`~.flows.FlowDensity` scores data as ``log p(x) = log p_0(f^{-1}(x)) - log|det df/dz|``;
the base is a module of :data:`BASES`, chosen with ``density_flow(name, shape, base=...)``:

* ``"normal"``: ``N(0, I)``, no parameters (the default, and what every flow had before).
* ``"mixture"``: a diagonal Gaussian mixture with ``K`` learned components::

      p_0(z) = sum_k pi_k N(z; mu_k, diag(sigma_k^2)),   pi = softmax(logits)

* ``"made"``: an autoregressive Gaussian whose conditionals come from one MADE (Germain et al.
  2015), ``p_0(z) = prod_i N(z_i; m_i(z_<i), exp(S_i(z_<i))^2)``: one MADE pass scores, sampling
  takes ``D`` passes. It is a :class:`~.layers.MAFStep` on a standard normal, whose MADE starts
  with a zero last layer, so the base starts as ``N(0, I)``.

Both learnable bases are exact: ``log_prob`` is the closed form, ``sample`` draws from the very
distribution scored. They act on the flattened noise (``D = prod(noise_shape)``) and are
unconditional (a context conditions the flow, not the base). :meth:`Base.distribution` gives the
base as a Pyro distribution of event shape ``noise_shape``.

Example:
    >>> base = MixtureBase((2,), num_components=3)
    >>> z = base.sample(4, torch.zeros(())); z.shape, base.log_prob(z).shape
    (torch.Size([4, 2]), torch.Size([4]))

References:
    Germain, Gregor, Murray, Larochelle. MADE: masked autoencoder for distribution estimation.
    ICML 2015. Papamakarios, Pavlakou, Murray. Masked autoregressive flow for density estimation.
    NeurIPS 2017 (MADE-Gaussian and mixture-of-Gaussians bases).
"""

from __future__ import annotations

import abc
import math
from typing import Callable, Dict, Optional, Sequence, Tuple, cast

import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import ReshapeTransform

from vaeflows.checks import check_int

from .layers import MAFStep
from .nets import _zero_last

__all__ = ["BASES", "Base", "StandardNormalBase", "MixtureBase", "MADEBase", "standard_normal_log_prob", "build_base"]

Tensor = torch.Tensor
Shape = Tuple[int, ...]
LOG_2PI = math.log(2 * math.pi)


def standard_normal_log_prob(z: Tensor, event_ndim: int) -> Tensor:
    """``log N(z; 0, I)`` summed over the last ``event_ndim`` dims."""
    size = math.prod(z.shape[z.dim() - event_ndim :])
    return -0.5 * (z.pow(2).flatten(-event_ndim).sum(-1) + size * LOG_2PI)


class Base(nn.Module, abc.ABC):
    """A base distribution on events of ``shape`` (the flow's noise shape).

    Shapes: ``log_prob``: ``z`` ``(..., *shape)`` -> ``(...)``; ``sample(n, like)`` ->
    ``(n, *shape)`` in ``like``'s dtype and device.

    Args:
        shape: the event shape, ``(D,)`` or ``(C, H, W)``.
    """

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.dim = math.prod(self.shape)

    @abc.abstractmethod
    def log_prob(self, z: Tensor) -> Tensor:
        """``log p_0(z)`` summed over the event."""

    @abc.abstractmethod
    def sample(self, n: int, like: Tensor) -> Tensor:
        """``n`` draws (reparameterized in the base's continuous parameters)."""

    @abc.abstractmethod
    def _flat_distribution(self, like: Tensor) -> dist.TorchDistribution:
        """The base as a Pyro distribution of event shape ``(D,)``."""

    def distribution(self, like: Optional[Tensor] = None) -> dist.TorchDistribution:
        """The base as a Pyro distribution of event shape ``shape`` (dtype/device of ``like``,
        default float32 on the CPU)."""
        flat = self._flat_distribution(torch.zeros(()) if like is None else like)
        if len(self.shape) == 1:
            return flat
        reshape = ReshapeTransform(torch.Size([self.dim]), torch.Size(self.shape))
        return dist.TransformedDistribution(flat, [reshape])

    def _flat(self, z: Tensor) -> Tensor:
        return z.reshape(*z.shape[: z.dim() - len(self.shape)], self.dim)


class StandardNormalBase(Base):
    """``N(0, I)`` on ``shape``; no parameters."""

    def log_prob(self, z: Tensor) -> Tensor:
        return standard_normal_log_prob(z, len(self.shape))

    def sample(self, n: int, like: Tensor) -> Tensor:
        return torch.randn(n, *self.shape, dtype=like.dtype, device=like.device)

    def _flat_distribution(self, like: Tensor) -> dist.TorchDistribution:
        return dist.Normal(like.new_zeros(self.dim), 1.0).to_event(1)

    def distribution(self, like: Optional[Tensor] = None) -> dist.TorchDistribution:
        like = torch.zeros(()) if like is None else like
        return dist.Normal(like.new_zeros(self.shape), 1.0).to_event(len(self.shape))


class MixtureBase(Base):
    """A diagonal Gaussian mixture with ``K`` learned components on the flattened noise.

    ``log p_0(z) = logsumexp_k [log softmax(logits)_k + sum_d log N(z_d; mu_kd, sigma_kd^2)]``;
    sampling draws a component ``k ~ pi``, then ``mu_k + sigma_k * eps``. Initialized with equal
    weights, unit scales and means drawn from ``N(0, I / D)`` (about unit distance from the
    origin: the components differ, so they can separate, and the base starts near ``N(0, I)``).

    Args:
        shape: the noise shape.
        num_components: ``K``.
    """

    def __init__(self, shape: Sequence[int], num_components: int = 8) -> None:
        super().__init__(shape)
        k = check_int("num_components (--base-components)", num_components)
        self.logits = nn.Parameter(torch.zeros(k))
        self.loc = nn.Parameter(torch.randn(k, self.dim) / math.sqrt(self.dim))
        self.log_scale = nn.Parameter(torch.zeros(k, self.dim))

    def log_prob(self, z: Tensor) -> Tensor:
        flat = self._flat(z)[..., None, :]  # (..., 1, D) against (K, D)
        eps = (flat - self.loc) * torch.exp(-self.log_scale)
        per_component = -0.5 * (eps.pow(2) + LOG_2PI).sum(-1) - self.log_scale.sum(-1)
        return torch.logsumexp(torch.log_softmax(self.logits, -1) + per_component, -1)

    def sample(self, n: int, like: Tensor) -> Tensor:
        k = torch.distributions.Categorical(logits=self.logits.detach()).sample((n,))
        eps = torch.randn(n, self.dim, dtype=like.dtype, device=like.device)
        return (self.loc[k] + torch.exp(self.log_scale[k]) * eps).reshape(n, *self.shape)

    def _flat_distribution(self, like: Tensor) -> dist.TorchDistribution:
        components = dist.Normal(self.loc, torch.exp(self.log_scale)).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), components)


class MADEBase(Base):
    """An autoregressive Gaussian base from one MADE: ``z_i ~ N(m_i(z_<i), exp(S_i(z_<i))^2)``.

    ``log p_0(z) = log N(eps; 0, I) - sum_i S_i`` with ``eps = (z - m(z)) * exp(-S(z))``, one MADE
    pass; sampling pushes ``eps ~ N(0, I)`` through ``D`` passes (a :class:`~.layers.MAFStep`,
    ``S`` its bounded tanh scale). The MADE's last layer starts at zero: the base starts as
    ``N(0, I)``.

    Args:
        shape: the noise shape.
        hidden: width of the MADE's two hidden layers (default ``max(32, 2 * D)``; at least ``D``).
    """

    def __init__(self, shape: Sequence[int], hidden: Optional[int] = None) -> None:
        super().__init__(shape)
        width = max(32, 2 * self.dim) if hidden is None else check_int("hidden of the made base", hidden)
        if width < self.dim:
            raise ValueError(f"the made base needs hidden >= the noise dimension {self.dim} (MADE), got hidden={width}")
        self.step = MAFStep(self.dim, (width, width), torch.arange(self.dim))
        _zero_last(cast(nn.ModuleList, self.step.made.layers)[-1])  # the MADE's output layer

    def log_prob(self, z: Tensor) -> Tensor:
        eps, ladj = self.step.inverse_and_ladj(self._flat(z))
        return standard_normal_log_prob(eps, 1) - ladj

    def sample(self, n: int, like: Tensor) -> Tensor:
        eps = torch.randn(n, self.dim, dtype=like.dtype, device=like.device)
        return self.step.forward_and_ladj(eps)[0].reshape(n, *self.shape)

    def _flat_distribution(self, like: Tensor) -> dist.TorchDistribution:
        return dist.TransformedDistribution(dist.Normal(like.new_zeros(self.dim), 1.0).to_event(1), [self.step])


#: Base name -> ``constructor(noise_shape, **base_options)``.
BASES: Dict[str, Callable[..., Base]] = {
    "normal": StandardNormalBase,
    "mixture": MixtureBase,
    "made": MADEBase,
}


def build_base(name: str, shape: Sequence[int], **options) -> Base:
    """The base ``name`` of :data:`BASES` on events of ``shape``.

    Raises:
        ValueError: an unknown name or a bad option value.
        TypeError: an option the base does not have.

    Example:
        >>> build_base("made", (3,), hidden=8).log_prob(torch.zeros(2, 3)).shape
        torch.Size([2])
    """
    if name not in BASES:
        raise ValueError(f"unknown base {name!r} (--base); known: {', '.join(BASES)}")
    return BASES[name](shape, **options)
