"""Lean distributions for the VAE's three sample sites: the same densities as Pyro's, fewer operations.

A training step of a small VAE is short enough that the bookkeeping around its arithmetic shows in
its time (``benchmarks/results/step_time_cpu_mlp.md``). ``dist.Normal(loc, scale).to_event(1)`` scores a
point with nine tensor operations (a square of the scale, a division, a broadcast, an
``Independent`` sum, ...) and a Python object per wrapper; a VAE written by hand scores its own
sample from the noise that made it, ``log q = sum(-eps^2 / 2 - log scale) - D log(2 pi) / 2``, in
five. These classes compute the same densities the hand-written way, as Pyro distributions, so a
Pyro ``model``/``guide`` that uses them is still scored by Pyro's ``Trace_ELBO``:

* :class:`DiagonalNormal` -- ``N(loc, diag(scale^2))`` over vectors; its ``log_prob`` of the value
  its own ``rsample`` returned last uses the cached noise ``eps`` instead of ``(z - loc) / scale``
  (equal in exact arithmetic, and with the same gradient: both are the reparameterized
  ``log q(loc + scale * eps)``).
* :class:`StandardNormal` -- ``N(0, I)`` over vectors; ``expand`` (what ``pyro.plate`` does to a
  prior) copies no tensor.
* :class:`IndependentBernoulli` -- Bernoulli logits with the rightmost ``event_dim`` dims as the
  event: ``log p(x) = -sum BCE_with_logits(logits, x)`` in one fused operation and one sum.
* :class:`FlowPosterior` -- Pyro's ``TransformedDistribution(base, [flow])`` for one vector flow;
  its ``log_prob`` of its own last sample is ``log q0(z_0) - log|det dz_K/dz_0|`` from the pass
  that made it, in one subtraction.

All four match ``torch.distributions`` to rounding; ``tests/test_distributions.py`` checks values,
gradients, shapes under ``pyro.plate`` and ``expand``, and support checks under Pyro's validation.

Example:
    >>> q = DiagonalNormal(torch.zeros(2, 3), torch.ones(2, 3))
    >>> z = q.rsample()
    >>> q.batch_shape, q.event_shape, q.log_prob(z).shape
    (torch.Size([2]), torch.Size([3]), torch.Size([2]))
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, TransformedDistribution
from torch.distributions import Distribution, Transform, constraints

__all__ = ["HALF_LOG_2PI", "DiagonalNormal", "StandardNormal", "IndependentBernoulli", "FlowPosterior"]

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

# What torch.distributions.Distribution's sample and expand methods accept (torch.types._size).
SizeLike = Union[torch.Size, List[int], Tuple[int, ...]]


class DiagonalNormal(TorchDistribution):
    """``N(loc, diag(scale^2))`` with event shape ``(D,)``: Pyro's ``Normal(loc, scale).to_event(1)``.

    ``log_prob(z) = sum_d (-eps_d^2 / 2 - log scale_d) - D log(2 pi) / 2``, ``eps = (z - loc) / scale``;
    for the tensor its own ``rsample`` returned last, ``eps`` is the noise that made it (a one-entry
    cache keyed by tensor identity, as Pyro's transforms cache).

    Args:
        loc: means, shape ``batch_shape + (D,)``.
        scale: standard deviations (positive), broadcastable with ``loc``.
    """

    arg_constraints = {"loc": constraints.real_vector, "scale": constraints.independent(constraints.positive, 1)}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, validate_args: Optional[bool] = None) -> None:
        if loc.dim() < 1:
            raise ValueError("DiagonalNormal needs loc of shape (..., D), got a scalar")
        if loc.shape != scale.shape:
            loc, scale = torch.broadcast_tensors(loc, scale)
        self.loc, self.scale = loc, scale
        self._sample: Optional[torch.Tensor] = None
        self._noise: Optional[torch.Tensor] = None
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape: SizeLike, _instance=None) -> "DiagonalNormal":
        if tuple(batch_shape) == self.batch_shape:  # what pyro.plate asks at every site
            return self
        shape = torch.Size(batch_shape) + self.event_shape
        return DiagonalNormal(self.loc.expand(shape), self.scale.expand(shape), validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def variance(self) -> torch.Tensor:
        return self.scale.pow(2)

    def rsample(self, sample_shape: SizeLike = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        eps = torch.empty(shape, dtype=self.loc.dtype, device=self.loc.device).normal_()
        z = self.loc + eps * self.scale
        self._sample, self._noise = z, eps
        return z

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if value is self._sample and self._noise is not None:
            eps = self._noise
        else:
            if self._validate_args:
                self._validate_sample(value)
            eps = (value - self.loc) / self.scale
        return (-0.5 * (eps * eps) - self.scale.log()).sum(-1) - self.event_shape[0] * HALF_LOG_2PI

    def entropy(self) -> torch.Tensor:
        return self.scale.log().sum(-1) + self.event_shape[0] * (0.5 + HALF_LOG_2PI)


class StandardNormal(TorchDistribution):
    """``N(0, I)`` over vectors of size ``dim``: ``log p(z) = -|z|^2 / 2 - dim log(2 pi) / 2``.

    Args:
        dim: the event size ``D``.
        like: samples take this tensor's dtype and device.
        batch_shape: the batch shape (``pyro.plate`` sets it through ``expand``, which copies nothing).
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(
        self,
        dim: int,
        like: torch.Tensor,
        batch_shape: SizeLike = torch.Size(),
        validate_args: Optional[bool] = None,
    ) -> None:
        self._like = like
        super().__init__(torch.Size(batch_shape), torch.Size([dim]), validate_args=validate_args)

    def expand(self, batch_shape: SizeLike, _instance=None) -> "StandardNormal":
        if tuple(batch_shape) == self.batch_shape:
            return self
        return StandardNormal(self.event_shape[0], self._like, batch_shape, validate_args=self._validate_args)

    @property
    def mean(self) -> torch.Tensor:
        return self._like.new_zeros(self._extended_shape())

    @property
    def variance(self) -> torch.Tensor:
        return self._like.new_ones(self._extended_shape())

    def rsample(self, sample_shape: SizeLike = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        return torch.empty(shape, dtype=self._like.dtype, device=self._like.device).normal_()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        log_p = -0.5 * (value * value).sum(-1) - self.event_shape[0] * HALF_LOG_2PI
        if log_p.shape == self.batch_shape:
            return log_p
        return log_p.expand(torch.broadcast_shapes(log_p.shape, self.batch_shape))

    def entropy(self) -> torch.Tensor:
        return self._like.new_full(self.batch_shape, self.event_shape[0] * (0.5 + HALF_LOG_2PI))


class IndependentBernoulli(TorchDistribution):
    """Bernoulli pixels ``x ~ Bernoulli(sigmoid(logits))`` with the rightmost ``event_dim`` dims as
    the event: Pyro's ``Bernoulli(logits=logits).to_event(event_dim)``.

    ``log p(x) = sum(x * logits - softplus(logits)) = -sum BCE_with_logits(logits, x)``.

    Args:
        logits: shape ``batch_shape + event_shape``.
        event_dim: how many rightmost dims of ``logits`` are the event (3 for images ``(C, H, W)``).
    """

    arg_constraints = {"logits": constraints.real}
    has_enumerate_support = False

    def __init__(self, logits: torch.Tensor, event_dim: int, validate_args: Optional[bool] = None) -> None:
        if not 1 <= event_dim <= logits.dim():
            raise ValueError(f"event_dim must be in 1..{logits.dim()} for logits of shape {tuple(logits.shape)}")
        self.logits = logits
        self._event_dim = event_dim
        split = logits.dim() - event_dim
        super().__init__(logits.shape[:split], logits.shape[split:], validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.boolean, self._event_dim)

    def expand(self, batch_shape: SizeLike, _instance=None) -> "IndependentBernoulli":
        if tuple(batch_shape) == self.batch_shape:
            return self
        logits = self.logits.expand(torch.Size(batch_shape) + self.event_shape)
        return IndependentBernoulli(logits, self._event_dim, validate_args=False)

    @property
    def probs(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    @property
    def mean(self) -> torch.Tensor:
        return self.probs

    @property
    def variance(self) -> torch.Tensor:
        return self.probs * (1 - self.probs)

    def sample(self, sample_shape: SizeLike = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return torch.bernoulli(self.probs.expand(self._extended_shape(sample_shape)))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits = self.logits
        if logits.shape != value.shape:
            logits, value = torch.broadcast_tensors(logits, value)
        bce = F.binary_cross_entropy_with_logits(logits, value, reduction="none")
        return -bce.sum(tuple(range(-self._event_dim, 0)))


class FlowPosterior(TransformedDistribution):
    """``z_K = flow(z_0)``, ``z_0 ~ base``: Pyro's ``TransformedDistribution(base, [flow])`` for one
    flow on vectors (event shape ``(D,)``), as a flow-posterior sample site uses it.

    The density is ``TransformedDistribution``'s, ``log q(z_K) = log q0(z_0) - log|det dz_K/dz_0|``.
    For the tensor its own ``rsample`` returned last, ``z_0`` and the log-determinant are those of the
    pass that made it (what ``TransformedDistribution`` finds in the flow's one-entry cache), taken
    without its generic bookkeeping: one subtraction, where it spends two operations and an inverse
    transform object. Any other value goes through ``TransformedDistribution.log_prob`` (the flow's
    inverse, where it has one). ``expand`` to its own batch shape returns itself (``pyro.plate``
    asks at every site, every step).

    Args:
        base_dist: ``q0``, with event shape ``(D,)`` (e.g. :class:`DiagonalNormal`).
        flow: a transform of vectors that caches its last pass (every vaeflows posterior flow).

    Example:
        >>> from vaeflows.transforms import posterior_flow
        >>> flow = posterior_flow("planar", latent_dim=3, num_flows=2)
        >>> q = FlowPosterior(DiagonalNormal(torch.zeros(4, 3), torch.ones(4, 3)), flow)
        >>> z = q.rsample()
        >>> q.log_prob(z).shape
        torch.Size([4])
    """

    def __init__(self, base_dist: TorchDistribution, flow: Transform, validate_args: Optional[bool] = None) -> None:
        if len(base_dist.event_shape) != 1 or flow.domain.event_dim != 1 or flow.codomain.event_dim != 1:
            raise ValueError(
                "FlowPosterior takes a base distribution and a flow on vectors (event shape (D,)), "
                f"got base event shape {tuple(base_dist.event_shape)} and a flow of event dims "
                f"{flow.domain.event_dim} -> {flow.codomain.event_dim}; use TransformedDistribution"
            )
        # What TransformedDistribution.__init__ works out for any transforms, known here: a flow
        # on vectors keeps the event shape (D,), and its forward_shape gives the batch shape (an
        # amortized flow broadcasts an unbatched base against its context's batch).
        self.base_dist, self.transforms, self.flow = base_dist, [flow], flow
        batch_shape = flow.forward_shape(base_dist.batch_shape + base_dist.event_shape)[:-1]
        Distribution.__init__(self, batch_shape, base_dist.event_shape, validate_args=validate_args)
        self._sample: Optional[torch.Tensor] = None
        self._base_sample: Optional[torch.Tensor] = None

    def expand(self, batch_shape: SizeLike, _instance=None) -> "FlowPosterior":
        if tuple(batch_shape) == self.batch_shape:
            return self
        return FlowPosterior(self.base_dist.expand(batch_shape), self.flow, validate_args=False)

    def rsample(self, sample_shape: SizeLike = torch.Size()) -> torch.Tensor:
        z_0 = self.base_dist.rsample(sample_shape)
        z_k = self.flow(z_0)
        self._sample, self._base_sample = z_k, z_0
        return z_k

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        z_0 = self._base_sample
        if value is not self._sample or z_0 is None:
            return super().log_prob(value)
        # TransformedDistribution computes (0 - ladj) + log q0: the same float result.
        return self.base_dist.log_prob(z_0) - self.flow.log_abs_det_jacobian(z_0, value)
