"""Integer discrete flows (IDF) for 8-bit images: a bijection on integers and an exact pmf.

An integer discrete flow maps integer images ``x`` to integer latents ``z`` with additive
couplings whose translations are rounded (Hoogeboom et al. 2019). Data to noise, one coupling
splits the channels into ``(x_a, x_b)`` and computes::

    z_a = x_a,    z_b = x_b + round(t(x_a))

which is a bijection on integers whatever ``t`` is (the inverse subtracts the same rounded
translation). A bijection on a discrete set changes no volume, so there is no Jacobian term::

    log P(x) = log P_Z(f^{-1}(x))

and the model's bits/dim is an achievable code length: an entropy coder under ``P_Z`` stores
``x`` in about ``-log2 P(x)`` bits (:mod:`.codec`). In training, ``round`` passes its gradient
straight through (``round_ste(t) = t + (round(t) - t).detach()``).

Layout (``num_levels`` levels, data to noise): each level squeezes ``(C, H, W)`` to
``(4C, H/2, W/2)``, runs ``num_steps`` pairs of (fixed channel permutation, integer coupling of
one half of the channels on the other) and, except at the last level, factors out the first half
of the channels. The prior is a discretized logistic mixture on every latent: conditional at a
factor-out (its parameters are a conv net of the channels that go on, as in the paper), with
learned free parameters per latent at the last level. Direction (as everywhere in vaeflows):
the layers' ``forward`` maps noise to data and ``inverse`` data to noise.

Example:
    >>> model = idf((1, 8, 8), num_steps=2, hidden=8)
    >>> x = torch.randint(0, 256, (3, 1, 8, 8)).float()
    >>> torch.equal(model.decode(model.encode(x)[0]), x)
    True
    >>> model.log_prob(x).shape
    torch.Size([3])

References:
    Hoogeboom, Peters, van den Berg, Welling. Integer discrete flows and lossless compression.
    NeurIPS 2019.
    Salimans, Karpathy, Chen, Kingma. PixelCNN++ (the discretized logistic mixture). ICLR 2017.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple, cast

import torch
import torch.nn.functional as F
from torch import nn

from vaeflows.checks import check_int

from .dequantization import NUM_LEVELS
from .layers import Bijection, FlowSequence, squeeze, unsqueeze
from .nets import CouplingCNN

__all__ = [
    "INTEGER_FLOWS",
    "IntegerDiscreteFlow",
    "IntegerCoupling",
    "ChannelPermutation",
    "LogisticMixturePrior",
    "idf",
    "round_ste",
    "discretized_logistic_mixture_log_pmf",
    "discretized_logistic_mixture_pmf_table",
]

Tensor = torch.Tensor
Pair = Tuple[Tensor, Tensor]
#: The three parameter tensors of a discretized logistic mixture: ``(logits, loc, log_scale)``,
#: each ``(*shape, M)``.
MixtureParams = Tuple[Tensor, Tensor, Tensor]


def round_ste(t: Tensor) -> Tensor:
    """``round(t)`` in the forward pass, the identity's gradient in the backward pass.

    Example:
        >>> t = torch.tensor([0.4, 1.6], requires_grad=True)
        >>> y = round_ste(t); y.sum().backward(); y.tolist(), t.grad.tolist()
        ([0.0, 2.0], [1.0, 1.0])
    """
    return t + (torch.round(t) - t).detach()


def _log1mexp(d: Tensor) -> Tensor:
    """``log(1 - exp(-d))`` for ``d > 0``, accurate for small and large ``d`` (Maechler 2012)."""
    return torch.where(d < math.log(2), torch.log(-torch.expm1(-d)), torch.log1p(-torch.exp(-d)))


def discretized_logistic_mixture_log_pmf(k: Tensor, logits: Tensor, loc: Tensor, log_scale: Tensor) -> Tensor:
    """``log P(k)`` of a mixture of logistics discretized to the integers, exact in the tails.

    With ``a = (k + 1/2 - mu_m) / s_m`` and ``b = (k - 1/2 - mu_m) / s_m``::

        P(k) = sum_m pi_m [sigmoid(a) - sigmoid(b)]
        sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(-1/s_m))

    (the right-hand side, in logs, loses no precision far from ``mu_m``). Summed over all the
    integers the pmf is 1: the terms telescope; the support is all of Z (no edge bins).

    Args:
        k: integer values (any float dtype), shape ``S``.
        logits: mixture logits ``(*S, M)``; ``pi = softmax(logits)``.
        loc: locations ``mu`` ``(*S, M)``.
        log_scale: ``log s`` ``(*S, M)``.

    Returns:
        ``log P(k)``, shape ``S``.

    Example:
        >>> k = torch.arange(-3000.0, 3000.0, dtype=torch.float64)[:, None]  # every integer near 0
        >>> logits, loc = torch.tensor([0.0, 1.0]).double(), torch.tensor([3.0, 200.0]).double()
        >>> log_pmf = discretized_logistic_mixture_log_pmf(k, logits, loc, torch.full((2,), 2.5).double())
        >>> round(float(log_pmf.exp().sum()), 12)
        1.0
    """
    centered = k.unsqueeze(-1) - loc
    inv_scale = torch.exp(-log_scale)
    a = (centered + 0.5) * inv_scale
    b = (centered - 0.5) * inv_scale
    log_bins = F.logsigmoid(a) + F.logsigmoid(-b) + _log1mexp(inv_scale)
    return torch.logsumexp(F.log_softmax(logits, -1) + log_bins, -1)


def discretized_logistic_mixture_pmf_table(
    logits: Tensor, loc: Tensor, log_scale: Tensor, low: int, high: int
) -> Tensor:
    """The pmf of every integer ``low..high`` under each of ``N`` mixtures: ``(N, high - low + 1)``.

    Computed as differences of the mixture CDF ``F(v) = sum_m pi_m sigmoid((v - mu_m) / s_m)`` at
    the bin edges ``low - 1/2, ..., high + 1/2`` (absolute error about ``1e-16`` in float64: far
    below the ``2^-24`` resolution of an entropy coder's frequencies). The mass outside the range
    is left out: an entropy coder renormalizes. Elementwise maths only, so the same parameters
    give the same table bit for bit in any batch layout.

    Args:
        logits, loc, log_scale: ``(N, M)`` (see :func:`discretized_logistic_mixture_log_pmf`).
        low, high: the range of integers, inclusive.

    Example:
        >>> zeros = torch.zeros(1, 1, dtype=torch.float64)
        >>> table = discretized_logistic_mixture_pmf_table(zeros, zeros, zeros - 20, -1, 1)
        >>> table.tolist()
        [[0.0, 1.0, 0.0]]
    """
    edges = torch.arange(low, high + 2, dtype=loc.dtype, device=loc.device) - 0.5
    weights = torch.softmax(logits, -1)
    inv_scale = torch.exp(-log_scale)
    cdf = (weights[:, None, :] * torch.sigmoid((edges[None, :, None] - loc[:, None, :]) * inv_scale[:, None, :])).sum(
        -1
    )
    return (cdf[:, 1:] - cdf[:, :-1]).clamp_min(0)


def _unit(v: Tensor) -> Tensor:
    """Integer pixel-scale values to a network's input scale, about ``[-0.5, 0.5]``."""
    return v / (NUM_LEVELS - 1) - 0.5


class IntegerCoupling(Bijection):
    """Additive integer coupling: ``z_b = x_b + round(t(x_a))`` from data to noise.

    Direction: noise to data, ``x_b = z_b - round(t(z_a))``, ``x_a = z_a``; ``x_a`` is the first
    ``split`` channels. The log-determinant is 0 (a bijection on integers). ``t`` is a
    :class:`~.nets.CouplingCNN` of ``x_a / 255 - 0.5``, zero at initialization (the identity);
    its rounding passes gradients straight through (:func:`round_ste`).

    Shapes: ``(..., C, H, W)`` both ways; the log-det ``(...)``.

    Args:
        channels: ``C``.
        hidden: conv channels of ``t``.
        split: channels of ``x_a`` (default ``C // 2``).
    """

    def __init__(self, channels: int, hidden: int, split: Optional[int] = None) -> None:
        super().__init__(3)
        self.split = channels // 2 if split is None else split
        if not 0 < self.split < channels:
            raise ValueError(f"an integer coupling of {channels} channels needs 0 < split < {channels}")
        self.net = CouplingCNN(self.split, channels - self.split, hidden)

    def _translation(self, v_a: Tensor) -> Tensor:
        return round_ste(self.net(_unit(v_a)))

    def forward_and_ladj(self, z: Tensor, context: Optional[Tensor] = None) -> Pair:
        z_a, z_b = z[..., : self.split, :, :], z[..., self.split :, :, :]
        return torch.cat([z_a, z_b - self._translation(z_a)], -3), z.new_zeros(z.shape[:-3])

    def inverse_and_ladj(self, x: Tensor, context: Optional[Tensor] = None) -> Pair:
        x_a, x_b = x[..., : self.split, :, :], x[..., self.split :, :, :]
        return torch.cat([x_a, x_b + self._translation(x_a)], -3), x.new_zeros(x.shape[:-3])


class ChannelPermutation(Bijection):
    """A fixed random permutation of the channels (IDF's mixing between couplings).

    Direction: noise to data, ``x[c] = z[perm[c]]``; log-det 0. The permutation is a buffer, so it
    is saved with the model.

    Args:
        channels: ``C``.
        seed: seed of the permutation.
    """

    perm: Tensor
    inverse_perm: Tensor

    def __init__(self, channels: int, seed: int = 0) -> None:
        super().__init__(3)
        perm = torch.randperm(channels, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))

    def forward_and_ladj(self, z: Tensor, context: Optional[Tensor] = None) -> Pair:
        return z[..., self.perm, :, :], z.new_zeros(z.shape[:-3])

    def inverse_and_ladj(self, x: Tensor, context: Optional[Tensor] = None) -> Pair:
        return x[..., self.inverse_perm, :, :], x.new_zeros(x.shape[:-3])


class LogisticMixturePrior(nn.Module):
    """A discretized logistic mixture on integer latents ``(C, H, W)``, one mixture per latent.

    Unconditional (``context_channels=None``): the logits, locations and log-scales are free
    parameters ``(C, H, W, M)``. Conditional: a :class:`~.nets.CouplingCNN` of the context
    ``(..., K, H, W)`` (scaled as pixels, ``v / 255 - 0.5``) gives them, zero at initialization;
    either way they start at the same values: equal weights, locations spread over ``0..255``,
    scale 16. The free parameters are stored divided by :attr:`GAINS` (logits, location in pixels,
    log-scale), so that an optimizer's steps of about the learning rate move them at the pace
    of a network's outputs.

    Args:
        shape: ``(C, H, W)`` of the latents.
        num_mixtures: ``M``.
        context_channels: ``K``, or ``None``.
        hidden: conv channels of the conditional network.
    """

    base_loc: Tensor
    #: Multipliers of the free parameters ``(logits, loc, log_scale)``.
    GAINS = (4.0, 32.0, 4.0)

    def __init__(
        self, shape: Sequence[int], num_mixtures: int, context_channels: Optional[int] = None, hidden: int = 64
    ) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.num_mixtures = num_mixtures
        c, h, w = self.shape
        self.register_buffer("base_loc", torch.linspace(0.0, NUM_LEVELS - 1.0, num_mixtures))
        self.base_log_scale = math.log(16.0)
        self.net: Optional[CouplingCNN] = None
        if context_channels is None:
            self.raw = nn.Parameter(torch.zeros(3, c, h, w, num_mixtures))
        else:
            self.net = CouplingCNN(context_channels, 3 * num_mixtures * c, hidden)

    def params(self, context: Optional[Tensor] = None, batch: int = 1) -> MixtureParams:
        """``(logits, loc, log_scale)``, each ``(B, C, H, W, M)``; ``B`` is the context's leading
        size, or ``batch`` for an unconditional prior."""
        if self.net is None:
            gains = self.raw.new_tensor(self.GAINS).reshape(3, 1, 1, 1, 1)
            raw = (self.raw * gains).expand(batch, *self.raw.shape).movedim(1, 0)
        else:
            if context is None:
                raise ValueError("a conditional prior needs its context")
            out = self.net(_unit(context))
            raw = out.reshape(out.shape[0], 3, self.num_mixtures, *self.shape).permute(1, 0, 3, 4, 5, 2)
        logits, loc, log_scale = raw.unbind(0)
        return logits, loc + self.base_loc, log_scale + self.base_log_scale


def sample_logistic_mixture(params: MixtureParams, generator: Optional[torch.Generator] = None) -> Tensor:
    """Integers drawn from the discretized logistic mixtures ``params`` (shape ``params[0].shape[:-1]``)."""
    logits, loc, log_scale = params
    flat = logits.reshape(-1, logits.shape[-1])
    component = torch.multinomial(torch.softmax(flat, -1), 1, generator=generator).reshape(logits.shape[:-1])
    pick = lambda t: t.gather(-1, component.unsqueeze(-1)).squeeze(-1)  # noqa: E731
    u = torch.rand(component.shape, dtype=loc.dtype, device=loc.device, generator=generator).clamp(1e-6, 1 - 1e-6)
    return torch.round(pick(loc) + torch.exp(pick(log_scale)) * (torch.log(u) - torch.log1p(-u)))


class _Level(nn.Module):
    """One scale: squeeze, the steps, and the prior of what leaves the flow here."""

    def __init__(self, steps: FlowSequence, prior: LogisticMixturePrior, split: Optional[int]) -> None:
        super().__init__()
        self.steps = steps
        self.prior = prior
        self.split = split  # channels factored out here; None at the last level


#: ``draw(level, params) -> latents``: the integer latents of one level from their prior's
#: parameters (sampling draws them, a decoder reads them from its stream).
Draw = Callable[[int, MixtureParams], Tensor]


class IntegerDiscreteFlow(nn.Module):
    """An integer discrete flow on 8-bit images with a discretized logistic mixture prior.

    Direction: noise to data (:meth:`decode`, :meth:`sample`); :meth:`encode` and
    :meth:`log_prob` go data to noise. ``log P(x) = sum_l log P(z_l | h_l)`` over the levels'
    latents ``z_l``, ``h_l`` the channels that go on to the next level (none at the last); no
    Jacobian term. See the module docstring for the layout.

    Shapes: ``x`` ``(..., C, H, W)`` with integer values (any float dtype) -> ``log_prob``
    ``(...)``; :meth:`encode` and :meth:`decode` take ``(B, C, H, W)``.

    Args:
        levels: the levels, data side first.
        event_shape: ``(C, H, W)``.
        name: the registry name.
    """

    _reference: Tensor

    def __init__(self, levels: Sequence[_Level], event_shape: Sequence[int], name: str = "idf") -> None:
        super().__init__()
        self.levels = nn.ModuleList(levels)
        self.event_shape = tuple(event_shape)
        self.context_dim = None
        self.name = name
        self.check_values = True  # integer checks in log_prob; trainers check the data once instead
        self.register_buffer("_reference", torch.zeros(()))

    def _levels(self) -> Sequence[_Level]:
        return cast(Sequence[_Level], self.levels)

    def _check(self, x: Tensor, leading: bool) -> None:
        n = len(self.event_shape)
        ok = torch.is_tensor(x) and x.is_floating_point() and x.dim() >= n + (0 if leading else 1)
        if not ok or tuple(x.shape[x.dim() - n :]) != self.event_shape or (not leading and x.dim() != n + 1):
            found = f"{tuple(x.shape)} {x.dtype}" if torch.is_tensor(x) else type(x).__name__
            want = "..." if leading else "B"
            raise ValueError(
                f"data of shape {found} for an {self.name} model of event shape {self.event_shape}: pass a "
                f"float tensor of shape ({want}, {', '.join(map(str, self.event_shape))}) holding integers"
            )
        if x.dtype != self._reference.dtype:
            raise ValueError(
                f"data of dtype {x.dtype} for a {self._reference.dtype} {self.name} model: pass "
                f"x.to({self._reference.dtype}), or convert the model (model.to(x.dtype))"
            )
        if self.check_values and not (torch.isfinite(x).all() and torch.equal(x, torch.round(x))):
            raise ValueError(
                f"an {self.name} model scores integers (8-bit pixels 0..255 as floats), got NaN, inf or "
                "fractional values: pass the 8-bit values, not pixels / 255 or dequantized data"
            )

    def encode(self, x: Tensor) -> Tuple[List[Tensor], List[MixtureParams]]:
        """Data to noise: the integer latents of each level (data side first) and their priors'
        parameters.

        Args:
            x: ``(B, C, H, W)`` integers.

        Returns:
            ``latents``: ``z_l`` of shape ``(B, C_l, H_l, W_l)``; ``params``: each prior's
            ``(logits, loc, log_scale)`` of shape ``(B, C_l, H_l, W_l, M)``.
        """
        self._check(x, leading=False)
        latents, params = [], []
        h = x
        for level in self._levels():
            h, _ = level.steps.inverse_and_ladj(squeeze(h))
            if level.split is None:
                latents.append(h)
                params.append(level.prior.params(batch=h.shape[0]))
            else:
                z, h = h[:, : level.split], h[:, level.split :]
                latents.append(z)
                params.append(level.prior.params(h))
        return latents, params

    def generate(self, draw: Draw, batch: int) -> Tensor:
        """Noise to data, the deepest level first: each level's latents come from ``draw(level,
        params)`` given their prior's parameters (which depend on the levels already drawn).

        Returns:
            ``(batch, C, H, W)``.
        """
        levels = self._levels()
        h: Optional[Tensor] = None
        for index in reversed(range(len(levels))):
            level = levels[index]
            if h is None:
                h = draw(index, level.prior.params(batch=batch))
            else:
                h = torch.cat([draw(index, level.prior.params(h)), h], 1)
            h = unsqueeze(level.steps.forward_and_ladj(h)[0])
        assert h is not None
        return h

    def decode(self, latents: Sequence[Tensor]) -> Tensor:
        """The exact inverse of :meth:`encode`: the images of the latents ``latents``."""
        batch = latents[0].shape[0]
        return self.generate(lambda index, params: latents[index], batch)

    def log_prob(self, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        """Exact ``log P(x)`` in nats, shape ``x.shape[:-3]``: the latents' log-pmf, no Jacobian.

        Raises:
            ValueError: ``x`` is not a float tensor of the model's dtype ending in
                ``event_shape``, holds non-integers, or a context is passed.
        """
        if context is not None:
            raise ValueError(f"this {self.name} model is unconditional: pass no context")
        self._check(x, leading=True)
        lead = x.shape[: x.dim() - 3]
        latents, params = self.encode(x.reshape(-1, *self.event_shape))
        total = sum(discretized_logistic_mixture_log_pmf(z, *p).flatten(1).sum(-1) for z, p in zip(latents, params))
        return cast(Tensor, total).reshape(lead)

    @torch.no_grad()
    def sample(self, n: int, context: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` images ``(n, C, H, W)`` of integers (8-bit scale; outside ``0..255`` where the
        model puts mass there)."""
        check_int("n", n, minimum=0)
        if context is not None:
            raise ValueError(f"this {self.name} model is unconditional: pass no context")
        return self.generate(lambda index, params: sample_logistic_mixture(params, generator), n)


def idf(
    event_shape: Sequence[int],
    num_steps: int = 4,
    hidden: int = 64,
    num_levels: Optional[int] = None,
    context_dim: Optional[int] = None,
    num_mixtures: int = 5,
) -> IntegerDiscreteFlow:
    """Integer discrete flow for 8-bit images (Hoogeboom et al. 2019); see the module docstring.

    Direction: noise to data. Data to noise at each level: squeeze, ``num_steps`` of (channel
    permutation, integer coupling), factor out half the channels under a prior conditioned on
    the other half (not at the last level, whose latents get free mixture parameters).

    Args:
        event_shape: ``(C, H, W)``; ``H`` and ``W`` divisible by ``2**num_levels``.
        num_steps: couplings per level.
        hidden: conv channels of the couplings' and the priors' networks.
        num_levels: scales (default 2).
        context_dim: must be ``None``: the model is unconditional.
        num_mixtures: logistic components per latent.

    Raises:
        ValueError: vectors rather than images, sizes that do not squeeze, a context.
    """
    check_int("num_steps (--num-steps)", num_steps)
    check_int("hidden (--hidden)", hidden)
    check_int("num_mixtures", num_mixtures)
    levels_count = 2 if num_levels is None else check_int("num_levels (--num-levels)", num_levels)
    shape = tuple(event_shape)
    if len(shape) != 3:
        raise ValueError(f"idf models images (C, H, W) of 8-bit pixels, got event shape {shape}")
    if context_dim is not None:
        raise ValueError("idf is unconditional: drop --conditional (context_dim)")
    c, h, w = shape
    factor = 2**levels_count
    if h % factor or w % factor:
        raise ValueError(
            f"an image of size {h}x{w} cannot be squeezed {levels_count} times (each level halves height "
            f"and width): use fewer levels (num_levels), or pad/crop the images to a multiple of {factor}"
        )
    levels = []
    seed = 0
    for index in range(levels_count):
        c, h, w = 4 * c, h // 2, w // 2
        layers: List[Bijection] = []
        for _ in range(num_steps):
            layers += [ChannelPermutation(c, seed), IntegerCoupling(c, hidden)]
            seed += 1
        last = index == levels_count - 1
        split = None if last else c // 2
        out = c if last else c // 2
        prior = LogisticMixturePrior((out, h, w), num_mixtures, None if last else c - out, hidden)
        # FlowSequence runs its layers noise to data in order; data to noise is the reverse.
        levels.append(_Level(FlowSequence(layers[::-1]), prior, split))
        c = c - out if not last else c
    return IntegerDiscreteFlow(levels, shape, "idf")


#: Integer flow name -> builder ``(event_shape, num_steps=, hidden=, num_levels=, context_dim=)``;
#: their models score 8-bit images exactly, without dequantization.
INTEGER_FLOWS: Dict[str, Callable[..., IntegerDiscreteFlow]] = {"idf": idf}
