"""Neural spline density layers: rational-quadratic spline couplings and spline MAF steps.

Direction (as every density layer): the layers map **noise to data**, but the spline itself runs
**data to noise**: each transformed element of the data goes through a monotonic
rational-quadratic spline of ``K`` bins on ``[-B, B]``, the identity outside it (linear tails of
slope 1), ``z = spline(x)``; sampling runs its exact inverse, ``x = spline^-1(z)``, the root of a
quadratic per element. The bins come from a network: :func:`~vaeflows.transforms.spline.rational_quadratic_spline`,
the maths the posterior flows ``spline-coupling`` and ``spline-autoregressive`` use, with the
same raw-parameter map (softmax bins of at least ``1e-3`` of ``2B``, raw derivatives of 0 a slope
of 1) except for the raw widths and heights ``w``, which are first multiplied by ``bin_scale``
(:func:`~.flows.nsf`'s vector couplings, nflows and the posterior flows: ``1 / sqrt`` of the
conditioner's last hidden width) and then softly bounded as zuko's ``MonotonicRQSTransform``
bounds them::

    w -> w / (1 + |w| / L),    L = ln(1000) / 2 = 3.45 (LOGIT_BOUND)

so that no bin is more than 1000 times wider (or taller) than another of the same spline.

Both the direction and the bound are zuko's (its ``NSF`` scores data with
``MonotonicRQSTransform`` applied forward on ``x``, its logits so bounded and not scaled) and
measured against it (``benchmarks/density_vs_peer.py --suite nsf`` protocol, 300 steps, see
``benchmarks/results/density_vs_peer_nsf.md``): without the bound, with the spline on either side,
``nsf`` was 0.01-0.05 nats behind zuko on the four 2-D sets; the bound closes most of that. The
``sqrt`` division is nflows' (zuko has none): on a flattened MNIST (784 dimensions, 4 couplings,
200 steps of batch 64) it is what makes a residual conditioner train as normflows' does (2.88
bits/dim with it, 4.90 without; an MLP conditioner 3.26 against 4.17), where on the 2-D sets it
cost 0.02-0.03 nats on moons at 300 steps; the vector couplings of ``nsf`` divide, the image
couplings (not measured) and the autoregressive steps do not. The log-dets are exact either way (the
forward and inverse log-derivatives of the spline come from the same bins).

* :class:`SplineCoupling`: a masked coupling, the masked part (and a context) conditioning the
  splines of the rest; both directions in one parallel pass. Vectors, checkerboards, channel halves.
* :class:`SplineMAFStep`: the masked autoregressive form (MAF, as zuko's ``NSF``),
  ``z_i = spline_i(x_i)`` with the bins of dimension ``i`` from a MADE of ``x_<i``: density in one
  MADE pass, sampling in ``D`` sequential passes of the spline's inverse, as :class:`~.layers.MAFStep`.

References:
    Durkan, Bekasov, Murray, Papamakarios. Neural Spline Flows. NeurIPS 2019.
    Papamakarios, Pavlakou, Murray. Masked autoregressive flow for density estimation. NeurIPS 2017.
"""

from __future__ import annotations

import math
import warnings
from typing import Optional, Sequence, Tuple, cast

import torch
from pyro.nn import AutoRegressiveNN, ConditionalAutoRegressiveNN
from torch import nn

from vaeflows.checks import check_int, check_real
from vaeflows.transforms.spline import _split_raw, rational_quadratic_spline

from .layers import Bijection, sum_event

__all__ = ["SplineCoupling", "SplineMAFStep", "spline_params_per_dim"]

Tensor = torch.Tensor
Pair = Tuple[Tensor, Tensor]


def spline_params_per_dim(bins: int) -> int:
    """Raw parameters of one element's spline: ``K`` widths, ``K`` heights, ``K - 1`` derivatives."""
    return 3 * bins - 1


def _check(bins: int, tail_bound: float) -> Tuple[int, float]:
    return check_int("bins (--bins)", bins, minimum=2), check_real("tail_bound (--tail-bound)", tail_bound, above=0)


#: The soft bound of the raw bin widths and heights (zuko's): bins within a factor 1000 of each other.
LOGIT_BOUND = math.log(1000.0) / 2


def _bounded(raw: Tensor, scale: float) -> Tensor:
    """``w / (1 + |w| / L)`` of ``w = scale * raw``: smooth, the identity near 0, inside ``(-L, L)``."""
    raw = raw * scale
    return raw / (1 + raw.abs() / LOGIT_BOUND)


def _spline(v: Tensor, raw: Sequence[Tensor], bound: float, bin_scale: float, data_side: bool) -> Pair:
    """Elementwise splines with raw ``(widths, heights, derivatives)`` of shapes ``(..., K)``,
    ``(..., K)``, ``(..., K - 1)``: ``z = spline(v)`` for data ``v`` (``data_side``), else
    ``x = spline^-1(v)`` for noise ``v``; ``(output, log|dx/dz|)`` per element."""
    widths, heights, derivatives = raw
    widths, heights = _bounded(widths, bin_scale), _bounded(heights, bin_scale)
    out, ladj = rational_quadratic_spline(v, widths, heights, derivatives, bound, inverse=not data_side)
    return out, -ladj if data_side else ladj


class SplineCoupling(Bijection):
    """Masked rational-quadratic spline coupling (NSF's coupling layer, RQ-NSF (C)).

    Direction: noise to data, the spline on the data side (see the module docstring). With ``m``
    the mask and ``theta = net(m * x, context)``::

        z = m * x + (1 - m) * spline(x; theta),    log|det dx/dz| = -sum((1 - m) * log spline'(x; theta))

    Sampling uses ``m * z = m * x`` and the spline's analytic inverse, in one parallel pass.

    Two layouts of the net, by the mask's shape:

    * **vectors** (a mask of shape ``(D,)`` with ``D_1`` ones): the net takes the ``D_1``
      conditioning entries alone and returns the raw parameters of the ``D - D_1`` others only,
      ``(..., D_1) -> (..., (D - D_1) * (3K - 1))`` (nflows' layout: half the first and last
      layers' work of a net on the whole masked vector);
    * **images** (a mask of shape ``(C, H, W)``): the net takes the masked image ``m * x`` and
      returns ``(..., C * (3K - 1), H, W)``, parameters for every element (those of the
      conditioning part unused), as a convolution must.

    Args:
        mask: 0/1 tensor of the event's shape (``(D,)`` or ``(C, H, W)``); 1 marks the
            conditioning part.
        net: ``net(conditioning, context) -> raw`` in the layout above; per transformed element
            the ``K`` widths, ``K`` heights, ``K - 1`` derivatives, consecutive. A zero output is
            the identity map.
        bins: ``K >= 2``.
        tail_bound: ``B > 0``: the splines act on ``[-B, B]``, the identity outside.
        bin_scale: the factor of the net's raw widths and heights (nflows': ``1 / sqrt`` of the
            net's last hidden width, what :func:`~.flows.nsf` passes for vectors); the
            unconditional splines' own parameters are not scaled (nflows' neither).
        rezero: ReZero (Bachlechner et al. 2020) for splines: a learned scalar ``alpha`` from 0 gates
            the raw parameters, ``theta = alpha * net(m * z, context)``, so the layer starts as the
            identity whatever the net's initialization (pair it with a net that is not
            zero-initialized; with both at zero no gradient reaches either).
        unconditional: also transform the conditioning part by splines of their own learned
            parameters, ``z = m * spline(x; phi) + (1 - m) * spline(x; theta(m * x))`` (nflows'
            ``apply_unconditional_transform``, as normflows' spline coupling; ``phi`` starts at 0,
            the identity); the net still sees the untransformed ``m * x``.

    Example:
        >>> from vaeflows.density.layers import alternating_mask
        >>> from vaeflows.density.nets import CouplingMLP
        >>> layer = SplineCoupling(alternating_mask(4, 0), CouplingMLP(2, 2 * 23, 16), bins=8)
        >>> x = torch.randn(5, 4); z, ladj = layer.inverse_and_ladj(x)
        >>> torch.allclose(layer.forward_and_ladj(z)[0], x), ladj.shape  # zero net: the identity
        (True, torch.Size([5]))
    """

    mask: Tensor
    conditioning: Tensor
    transformed: Tensor
    order: Tensor

    def __init__(
        self,
        mask: Tensor,
        net: nn.Module,
        bins: int = 8,
        tail_bound: float = 3.0,
        bin_scale: float = 1.0,
        rezero: bool = False,
        unconditional: bool = False,
    ):
        super().__init__(mask.dim())
        self.bins, self.tail_bound = _check(bins, tail_bound)
        self.register_buffer("mask", mask)
        self.vector = mask.dim() == 1
        if self.vector:  # the indices of the two parts, and the order that puts them back
            conditioning, transformed = mask.nonzero().squeeze(-1), (mask == 0).nonzero().squeeze(-1)
            self.register_buffer("conditioning", conditioning)
            self.register_buffer("transformed", transformed)
            self.register_buffer("order", torch.cat([conditioning, transformed]).argsort())
        self.net = net
        self.bin_scale = bin_scale
        self.rezero = rezero
        if rezero:
            self.alpha = nn.Parameter(torch.zeros(()))
        self.unconditional = unconditional
        if unconditional:  # the conditioning part's own raw spline parameters, per element
            shape = (len(self.conditioning),) if self.vector else tuple(mask.shape)
            self.phi = nn.Parameter(torch.zeros(*shape, spline_params_per_dim(self.bins)))

    def _conditioner(self, kept_data: Tensor, context: Optional[Tensor]) -> Tensor:
        """The net's raw parameters of the transformed part, from the data's conditioning part."""
        raw = self.net(kept_data, context)
        return self.alpha * raw if self.rezero else raw

    def _couple_vector(self, v: Tensor, context: Optional[Tensor], data_side: bool) -> Pair:
        kept, free = v[..., self.conditioning], v[..., self.transformed]
        kept_out, ladj = kept, None
        if self.unconditional:
            kept_out, ladj = _spline(kept, _split_raw(self.phi, self.bins), self.tail_bound, 1.0, data_side)
        # The net sees the data's conditioning part: v's itself on the data side, else its inverse spline.
        raw = self._conditioner(kept if data_side else kept_out, context)
        raw = raw.unflatten(-1, (len(self.transformed), spline_params_per_dim(self.bins)))
        out, free_ladj = _spline(free, _split_raw(raw, self.bins), self.tail_bound, self.bin_scale, data_side)
        total = free_ladj.sum(-1) if ladj is None else free_ladj.sum(-1) + ladj.sum(-1)
        return torch.cat([kept_out, out], dim=-1)[..., self.order], total

    def _couple(self, v: Tensor, context: Optional[Tensor], data_side: bool) -> Pair:
        if self.vector:
            return self._couple_vector(v, context, data_side)
        n = self.event_ndim
        kept, kept_ladj = v, None
        if self.unconditional:
            kept, kept_ladj = _spline(v, _split_raw(self.phi, self.bins), self.tail_bound, 1.0, data_side)
        raw = self._conditioner((v if data_side else kept) * self.mask, context)
        # (..., E0 * P, *rest) -> (..., E0, *rest, P): the parameters of each element last.
        raw = raw.unflatten(-n, (self.mask.shape[0], spline_params_per_dim(self.bins))).movedim(-n, -1)
        out, ladj = _spline(v, _split_raw(raw, self.bins), self.tail_bound, self.bin_scale, data_side)
        free = 1 - self.mask
        if kept_ladj is not None:
            ladj = ladj * free + kept_ladj * self.mask
            return kept * self.mask + out * free, sum_event(ladj, n)
        return v * self.mask + out * free, sum_event(ladj * free, n)

    def forward_and_ladj(self, z: Tensor, context: Optional[Tensor] = None) -> Pair:
        return self._couple(z, context, data_side=False)

    def inverse_and_ladj(self, x: Tensor, context: Optional[Tensor] = None) -> Pair:
        return self._couple(x, context, data_side=True)


class SplineMAFStep(Bijection):
    """One masked autoregressive spline step (NSF's autoregressive layer, RQ-NSF (AR)).

    Direction: noise to data, the spline on the data side (see the module docstring):
    ``z_i = spline_i(x_i)`` with the bins of dimension ``i`` from ``MADE(x_<i)`` (Pyro's
    :class:`~pyro.nn.AutoRegressiveNN`, ReLU, ``param_dims = [K, K, K - 1]``);
    ``log|det dx/dz| = -sum_i log spline_i'(x_i)``. Scoring data is one MADE pass and the splines;
    sampling is sequential, ``D`` MADE passes of the splines' exact inverse
    ``x_i = spline_i^-1(z_i)``, each fixing one more variable in the MADE's order (as
    :class:`~.layers.MAFStep`).

    Args:
        dim: ``D``.
        hidden_dims: MADE hidden widths, each ``>= D``.
        permutation: the MADE's variable order, shape ``(D,)``.
        context_dim: size of a context the MADE also sees (class-conditional), or ``None``.
        bins: ``K >= 2``.
        tail_bound: ``B > 0``.
        bin_scale: the factor of the raw widths and heights (nflows: ``1 / sqrt(hidden_dims[-1])``).

    Example:
        >>> step = SplineMAFStep(3, (8, 8), torch.arange(3))
        >>> x = torch.randn(4, 3); z, ladj = step.inverse_and_ladj(x)
        >>> torch.allclose(step.forward_and_ladj(z)[0], x, atol=1e-5), ladj.shape
        (True, torch.Size([4]))
    """

    def __init__(
        self,
        dim: int,
        hidden_dims: Sequence[int],
        permutation: Tensor,
        context_dim: Optional[int] = None,
        bins: int = 8,
        tail_bound: float = 3.0,
        bin_scale: float = 1.0,
    ) -> None:
        super().__init__(1)
        self.bins, self.tail_bound = _check(bins, tail_bound)
        hidden = list(hidden_dims)
        order = cast(torch.LongTensor, permutation)  # Pyro's annotation: the legacy LongTensor class
        params = [self.bins, self.bins, self.bins - 1]
        self.made: nn.Module
        with warnings.catch_warnings():  # Pyro warns for D = 1, a legitimate (conditional) spline
            warnings.filterwarnings("ignore", message=".*input_dim = 1.*")
            if context_dim is None:
                self.made = AutoRegressiveNN(dim, hidden, param_dims=params, permutation=order)
            else:
                self.made = ConditionalAutoRegressiveNN(dim, context_dim, hidden, param_dims=params, permutation=order)
        self.conditional = context_dim is not None
        self.bin_scale = bin_scale

    def _raw(self, x: Tensor, context: Optional[Tensor]) -> Tuple[Tensor, ...]:
        params = self.made(x, context) if self.conditional else self.made(x)
        return tuple(p.transpose(-1, -2) for p in params)  # (..., K or K - 1, D) -> (..., D, K or K - 1)

    def inverse_and_ladj(self, x: Tensor, context: Optional[Tensor] = None) -> Pair:
        z, ladj = _spline(x, self._raw(x, context), self.tail_bound, self.bin_scale, data_side=True)
        return z, ladj.sum(-1)

    def forward_and_ladj(self, z: Tensor, context: Optional[Tensor] = None) -> Pair:
        # Pass k fixes the k-th variable in the MADE's order; after D passes all are exact.
        x, ladj = torch.zeros_like(z), None
        for _ in range(z.shape[-1]):
            x, ladj = _spline(z, self._raw(x, context), self.tail_bound, self.bin_scale, data_side=False)
        assert ladj is not None, "z has at least one variable"
        return x, ladj.sum(-1)
