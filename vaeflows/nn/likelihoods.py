"""Observation models p(x | z): decoder output to a distribution over images of shape (C, H, W).

A likelihood takes the decoder's output of shape ``(..., K * C, H, W)``, channels grouped
parameter-major (channel ``k * C + c`` is parameter ``k`` of image channel ``c``, see
:class:`~vaeflows.nn.gated.GatedConvDecoder`), and returns a Pyro distribution with
``event_shape == (C, H, W)`` and batch shape ``...``: a per-pixel distribution made
``.to_event(3)``. ``K`` is the class attribute ``channels_per_pixel``.

* ``"bernoulli"``: binary images, one logit per pixel (``K = 1``).
* ``"categorical256"``: 8-bit images given as ``pixel / 255``; a 256-way categorical per pixel
  (``K = 256``) that scores the value ``x`` as category ``round(255 * x)``.
* ``"discretized-logistic"``: 8-bit images given as ``pixel / 255``; a logistic per pixel with a
  mean and a log-scale (``K = 2``), integrated over bins of width 1/255 centred on the levels
  ``k / 255``, the first and last bins extended to -inf and +inf.

The two 8-bit likelihoods have the support :data:`pixel_levels`, the 256 values ``k / 255``;
anything else (e.g. a dequantized or unscaled image) is refused when Pyro's validation is on.

Example:
    >>> lik = LIKELIHOODS["discretized-logistic"]()
    >>> d = lik(torch.zeros(5, 2 * 1, 28, 20))
    >>> d.batch_shape, d.event_shape
    (torch.Size([5]), torch.Size([1, 28, 20]))
    >>> d.log_prob(d.sample()).shape
    torch.Size([5])

References:
    Salimans, Karpathy, Chen, Kingma (2017), "PixelCNN++: improving the PixelCNN with discretized
    logistic mixture likelihood and other modifications", ICLR (the discretized logistic).
    Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling (2016), "Improved variational inference
    with inverse autoregressive flow", NeurIPS (discretized logistic in a VAE).
    van den Berg et al. (2018), "Sylvester normalizing flows for variational inference", UAI;
    code github.com/riannevdberg/sylvester-flows ``optimization/loss.py`` (Bernoulli and 256-way
    categorical; the code takes category ``int(255 * x)``, which can be one too low in floating
    point; here it is ``round(255 * x)``).
"""

from __future__ import annotations

import abc
from typing import Dict, Type

import torch
import torch.nn.functional as F
from pyro.distributions import Categorical, TorchDistribution
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all

from vaeflows.distributions import IndependentBernoulli, SizeLike

__all__ = [
    "NUM_LEVELS",
    "pixel_levels",
    "pixel_index",
    "Categorical256",
    "DiscretizedLogistic",
    "Likelihood",
    "BernoulliLikelihood",
    "Categorical256Likelihood",
    "DiscretizedLogisticLikelihood",
    "LIKELIHOODS",
    "build_likelihood",
]

NUM_LEVELS = 256  # levels of an 8-bit pixel


class _PixelLevels(constraints.Constraint):
    """The 256 values ``k / 255``, ``k = 0..255``, of 8-bit pixels scaled to [0, 1] (within 1e-3 / 255)."""

    is_discrete = True
    event_dim = 0

    def check(self, value: torch.Tensor) -> torch.Tensor:
        scaled = value * (NUM_LEVELS - 1)
        return (value >= 0) & (value <= 1) & ((scaled - scaled.round()).abs() <= 1e-3)

    def __repr__(self) -> str:
        return "PixelLevels(k / 255 for k = 0..255)"


pixel_levels = _PixelLevels()


def pixel_index(x: torch.Tensor) -> torch.Tensor:
    """The level ``k = round(255 * x)`` (a long tensor) of pixels ``x = k / 255``.

    Rounding, not truncation: in floating point ``255 * (k / 255)`` can come out just below ``k``.
    """
    return (x * (NUM_LEVELS - 1)).round().long()


def _levels(like: torch.Tensor) -> torch.Tensor:
    """The 256 values ``k / 255``, shape ``(256,)``, on the device and dtype of ``like``."""
    return torch.arange(NUM_LEVELS, device=like.device, dtype=like.dtype) / (NUM_LEVELS - 1)


def _log1mexp(a: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(-a))`` for ``a > 0``, accurate for small and large ``a`` (Maechler 2012)."""
    return torch.where(a < 0.6931471805599453, torch.log(-torch.expm1(-a)), torch.log1p(-torch.exp(-a)))


class _PixelDistribution(TorchDistribution):
    """A distribution per pixel over the 256 levels ``k / 255``; subclasses give the levels' log-probs."""

    support = pixel_levels

    @abc.abstractmethod
    def level_log_probs(self) -> torch.Tensor:
        """Log-probabilities of all 256 levels, shape ``batch_shape + (256,)``."""

    @property
    def mean(self) -> torch.Tensor:
        """``sum_k p_k * k / 255``, shape ``batch_shape``, in [0, 1]."""
        log_p = self.level_log_probs()
        return (log_p.exp() * _levels(log_p)).sum(-1)


class Categorical256(_PixelDistribution):
    """A 256-way categorical over the pixel levels ``k / 255``: ``p(x) = softmax(logits)[round(255 x)]``.

    ``log_prob(x)`` takes values in [0, 1] (``pixel / 255``) and scores category
    ``round(255 * x)``; ``sample()`` returns ``k / 255`` in the logits' dtype.

    Args:
        logits: unnormalized log-probabilities, shape ``batch_shape + (256,)``.

    Example:
        >>> d = Categorical256(torch.zeros(3, 256))
        >>> d.log_prob(torch.tensor([0.0, 128 / 255, 1.0]))
        tensor([-5.5452, -5.5452, -5.5452])

    References:
        van den Oord, Kalchbrenner, Kavukcuoglu (2016), "Pixel recurrent neural networks", ICML.
    """

    arg_constraints = {"logits": constraints.independent(constraints.real, 1)}

    def __init__(self, logits: torch.Tensor, validate_args: bool | None = None) -> None:
        if logits.dim() < 1 or logits.shape[-1] != NUM_LEVELS:
            raise ValueError(f"Categorical256 needs logits of shape (..., 256), got {tuple(logits.shape)}")
        self._categorical = Categorical(logits=logits, validate_args=False)
        super().__init__(logits.shape[:-1], validate_args=validate_args)

    @property
    def logits(self) -> torch.Tensor:
        """Normalized log-probabilities, shape ``batch_shape + (256,)``."""
        return self._categorical.logits

    def expand(self, batch_shape: SizeLike, _instance: "Categorical256 | None" = None) -> "Categorical256":
        new = self._get_checked_instance(Categorical256, _instance)
        new._categorical = self._categorical.expand(batch_shape)
        super(Categorical256, new).__init__(torch.Size(batch_shape), validate_args=False)
        new._validate_args = self._validate_args
        return new

    def level_log_probs(self) -> torch.Tensor:
        return self.logits

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return self._categorical.log_prob(pixel_index(value))

    def sample(self, sample_shape: SizeLike = torch.Size()) -> torch.Tensor:
        k = self._categorical.sample(sample_shape)
        return k.to(self.logits.dtype) / (NUM_LEVELS - 1)


class DiscretizedLogistic(_PixelDistribution):
    """A logistic ``L(loc, exp(log_scale))`` integrated over the bins of the pixel levels ``k / 255``.

    With ``s = exp(log_scale)``, ``u = (k / 255 + 1 / 510 - loc) / s`` and
    ``l = (k / 255 - 1 / 510 - loc) / s`` (the bin edges, standardized)::

        log p(k / 255) = log sigmoid(u)                        k = 0    (bin (-inf, 1/510])
                       = log sigmoid(-l)                       k = 255  (bin (1 - 1/510, inf))
                       = log(sigmoid(u) - sigmoid(l))          otherwise
                       = log sigmoid(u) + log sigmoid(-l) + log(1 - exp(-(u - l)))

    The last line (``u - l = 1 / (255 s)``) is exact and never takes the log of a difference
    of two nearly equal numbers (PixelCNN++ instead switches to the density at the bin centre when
    the difference falls below 1e-5). ``sample()`` draws a logistic variate and rounds it to the
    nearest level, clamped to [0, 1].

    Args:
        loc: the logistic's mean, in the units of ``x`` (``pixel / 255``), shape ``batch_shape``.
        log_scale: the log of its scale, broadcastable with ``loc``.

    Example:
        >>> d = DiscretizedLogistic(torch.tensor(0.5), torch.tensor(-3.0))
        >>> levels = torch.arange(256) / 255
        >>> round(d.log_prob(levels).exp().sum().item(), 6)
        1.0

    References:
        Salimans et al. (2017), "PixelCNN++", ICLR; Kingma et al. (2016), "Improved variational
        inference with inverse autoregressive flow", NeurIPS.
    """

    arg_constraints = {"loc": constraints.real, "log_scale": constraints.real}

    def __init__(self, loc: torch.Tensor, log_scale: torch.Tensor, validate_args: bool | None = None) -> None:
        self.loc, self.log_scale = broadcast_all(loc, log_scale)
        super().__init__(self.loc.shape, validate_args=validate_args)

    def expand(self, batch_shape: SizeLike, _instance: "DiscretizedLogistic | None" = None) -> "DiscretizedLogistic":
        new = self._get_checked_instance(DiscretizedLogistic, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape)
        new.log_scale = self.log_scale.expand(batch_shape)
        super(DiscretizedLogistic, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        k = pixel_index(value)
        # Bin edges (k -+ 1/2) / 255 computed from k alone, so that neighbouring bins share an edge
        # bit for bit and the probabilities of all bins telescope to 1 even in float32.
        edge = k.to(self.loc.dtype) - 0.5
        inv_scale = torch.exp(-self.log_scale)
        upper = ((edge + 1) / (NUM_LEVELS - 1) - self.loc) * inv_scale
        lower = (edge / (NUM_LEVELS - 1) - self.loc) * inv_scale
        log_cdf_upper = F.logsigmoid(upper)
        log_sf_lower = F.logsigmoid(-lower)
        log_bin = log_cdf_upper + log_sf_lower + _log1mexp(upper - lower)
        return torch.where(k == 0, log_cdf_upper, torch.where(k == NUM_LEVELS - 1, log_sf_lower, log_bin))

    def level_log_probs(self) -> torch.Tensor:
        levels = _levels(self.loc).reshape(NUM_LEVELS, *(1,) * len(self.batch_shape))
        return self.log_prob(levels).movedim(0, -1)

    def sample(self, sample_shape: SizeLike = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device)
            y = self.loc + self.log_scale.exp() * torch.logit(u)  # a logistic variate; u = 0 gives -inf
            return (y * (NUM_LEVELS - 1)).round().clamp(0, NUM_LEVELS - 1) / (NUM_LEVELS - 1)


class Likelihood(abc.ABC):
    """Decoder output ``(..., K * C, H, W)`` to a distribution with event shape ``(C, H, W)``.

    Subclasses set ``channels_per_pixel`` (``K``) and either ``pixel_distribution``, which receives
    the output split as ``(..., K, C, H, W)`` and returns a distribution per pixel (made
    ``.to_event(3)`` by ``distribution``), or ``distribution`` itself, for a distribution with the
    event dims built in.

    Raises:
        ValueError: for decoder output with fewer than 3 dims or a channel count not a multiple of ``K``.
    """

    channels_per_pixel: int

    def pixel_distribution(self, params: torch.Tensor) -> TorchDistribution:
        """A distribution with batch shape ``(..., C, H, W)`` from ``params`` of shape ``(..., K, C, H, W)``."""
        raise NotImplementedError(f"{type(self).__name__} defines neither pixel_distribution nor distribution")

    def __call__(self, decoder_output: torch.Tensor) -> TorchDistribution:
        """``p(x | z)`` with batch shape ``...`` and event shape ``(C, H, W)``."""
        channels = decoder_output.shape[-3] if decoder_output.dim() >= 3 else 0
        if channels == 0 or channels % self.channels_per_pixel:
            raise ValueError(
                f"{type(self).__name__} needs decoder output of shape (..., {self.channels_per_pixel} * C, H, W), "
                f"got {tuple(decoder_output.shape)}; build the decoder with "
                f"out_channels_per_pixel={self.channels_per_pixel}"
            )
        return self.distribution(decoder_output)

    def distribution(self, decoder_output: torch.Tensor) -> TorchDistribution:
        """``p(x | z)`` from a checked decoder output: the pixel distribution made ``.to_event(3)``."""
        k = self.channels_per_pixel
        params = decoder_output.unflatten(-3, (k, decoder_output.shape[-3] // k))
        return self.pixel_distribution(params).to_event(3)

    def mean(self, decoder_output: torch.Tensor) -> torch.Tensor:
        """The expected image ``E[x | z]`` in [0, 1], shape ``(..., C, H, W)`` (for reconstruction pictures)."""
        return self(decoder_output).mean


class BernoulliLikelihood(Likelihood):
    """Binary pixels: ``x ~ Bernoulli(sigmoid(logits))``, one logit per pixel (``K = 1``).

    Example:
        >>> BernoulliLikelihood()(torch.zeros(2, 1, 28, 28)).log_prob(torch.ones(2, 1, 28, 28))
        tensor([-543.4275, -543.4275])

    References:
        Kingma, Welling (2014), "Auto-encoding variational Bayes", ICLR.
    """

    channels_per_pixel = 1

    def distribution(self, decoder_output: torch.Tensor) -> TorchDistribution:
        # Bernoulli(logits).to_event(3) in fewer tensor operations (K = 1: no split needed).
        return IndependentBernoulli(decoder_output, 3)


class Categorical256Likelihood(Likelihood):
    """8-bit pixels ``x = k / 255``: a 256-way :class:`Categorical256` per pixel (``K = 256``).

    The 256 logits of image channel ``c`` are output channels ``k * C + c``, ``k = 0..255``.

    Example:
        >>> Categorical256Likelihood()(torch.zeros(2, 256, 28, 20)).event_shape
        torch.Size([1, 28, 20])

    References:
        van den Berg et al. (2018), code ``optimization/loss.py``, ``multinomial_loss_function``.
    """

    channels_per_pixel = NUM_LEVELS

    def pixel_distribution(self, params: torch.Tensor) -> TorchDistribution:
        return Categorical256(params.movedim(-4, -1))


class DiscretizedLogisticLikelihood(Likelihood):
    """8-bit pixels ``x = k / 255``: a :class:`DiscretizedLogistic` per pixel (``K = 2``).

    Output channels ``c`` hold the means and ``C + c`` the log-scales.

    Example:
        >>> DiscretizedLogisticLikelihood()(torch.zeros(2, 2, 28, 20)).event_shape
        torch.Size([1, 28, 20])

    References:
        Salimans et al. (2017), "PixelCNN++", ICLR; Kingma et al. (2016), "IAF", NeurIPS.
    """

    channels_per_pixel = 2

    def pixel_distribution(self, params: torch.Tensor) -> TorchDistribution:
        loc, log_scale = params.unbind(-4)
        return DiscretizedLogistic(loc, log_scale)


LIKELIHOODS: Dict[str, Type[Likelihood]] = {
    "bernoulli": BernoulliLikelihood,
    "categorical256": Categorical256Likelihood,
    "discretized-logistic": DiscretizedLogisticLikelihood,
}


def build_likelihood(name: str) -> Likelihood:
    """The likelihood registered as ``name`` in :data:`LIKELIHOODS`.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {name!r}; known: {', '.join(LIKELIHOODS)}")
    return LIKELIHOODS[name]()
