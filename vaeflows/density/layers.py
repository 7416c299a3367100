"""The invertible layers of the density flows, each a Pyro ``TransformModule`` with an exact inverse.

Direction (as everywhere in vaeflows): **noise to data**. ``forward_and_ladj(z)`` returns
``x = f(z)`` and ``log|det df/dz|``; ``inverse_and_ladj(x)`` returns ``z = f^{-1}(x)`` and the same
forward log-determinant ``log|det df/dz|`` at that ``z``, from one computation. A density is scored
through ``inverse_and_ladj``: ``log p(x) = log p_0(z) - log|det df/dz|``. The layers keep no cache
(``cache_size=0``), so a value is never scored through a stale or foreign cache entry; as Pyro
transforms, ``layer(z)``, ``layer.inv(x)`` and ``layer.log_abs_det_jacobian(z, x)`` also work, and
each layer's ``domain``/``codomain`` event dims and ``forward_shape``/``inverse_shape`` say what it
does to shapes (a layer that reshapes, :class:`Squeeze`, :class:`Flatten`, says so), so a whole
flow drops into ``TransformedDistribution`` (see :class:`~.flows.FlowDensity`).

The maths are functions on batched parameters (:func:`affine`, :func:`affine_inverse`,
:func:`squeeze`, :func:`unsqueeze`); the modules hold parameters. Shapes: an event of ``event_ndim``
trailing dims, ``(D,)`` for vectors or ``(C, H, W)`` for images, after any leading batch dims; the
"channel" of a layer is the first event dim (``D`` for vectors, ``C`` for images).

Which Pyro transforms are reused and which are not:

* MADE is Pyro's :class:`~pyro.nn.AutoRegressiveNN`. The MAF step is written here rather than taken
  as ``AffineAutoregressive(...).inv``, whose sequential pass (our sampling direction) builds its
  buffer with ``torch.zeros`` in the default dtype (fails in float64, Pyro 1.9.2) and whose
  one-entry cache returns stale values when the same tensor is scored after an optimizer step.
* Pyro's ``AffineCoupling`` splits along one dim only, so it cannot express RealNVP's checkerboard
  masks; :class:`Coupling` is one masked coupling for vectors, checkerboards and channel halves.
* Pyro's ``GeneralizedChannelPermute`` (the 1x1 convolution) has no vector form and caches; the
  LU-parameterized :class:`InvertibleLinear` serves vectors and images alike.

References:
    Dinh, Krueger, Bengio. NICE: non-linear independent components estimation. ICLR 2015 workshop.
    Dinh, Sohl-Dickstein, Bengio. Density estimation using Real NVP. ICLR 2017.
    Papamakarios, Pavlakou, Murray. Masked autoregressive flow for density estimation. NeurIPS 2017.
    Kingma, Dhariwal. Glow: generative flow with invertible 1x1 convolutions. NeurIPS 2018.
"""

from __future__ import annotations

import abc
import math
from typing import Callable, Dict, Optional, Sequence, Tuple, cast

import torch
import torch.nn.functional as F
from pyro.distributions import TransformModule
from pyro.nn import AutoRegressiveNN, ConditionalAutoRegressiveNN
from torch import nn
from torch.distributions import ComposeTransform, ReshapeTransform, constraints

__all__ = [
    "Bijection",
    "FlowSequence",
    "Coupling",
    "MAFStep",
    "ActNorm",
    "InvertibleLinear",
    "Squeeze",
    "Unsqueeze",
    "FactorOut",
    "Flatten",
    "Logit",
    "SCALE_MAPS",
    "affine",
    "affine_inverse",
    "squeeze",
    "unsqueeze",
    "sum_event",
    "checkerboard_mask",
    "channel_mask",
    "alternating_mask",
]

Tensor = torch.Tensor
Pair = Tuple[Tensor, Tensor]
Shape = Tuple[int, ...]


def sum_event(t: Tensor, event_ndim: int) -> Tensor:
    """Sum the last ``event_ndim`` dims of ``t``."""
    return t.flatten(-event_ndim).sum(-1) if event_ndim else t


def affine(z: Tensor, shift: Tensor, log_scale: Tensor, event_ndim: int) -> Pair:
    """``x = z * exp(log_scale) + shift`` and ``log|det dx/dz| = sum_event(log_scale)``.

    ``shift`` and ``log_scale`` broadcast against ``z`` of shape ``(..., *event)``; the log-det has
    shape ``z.shape[:-event_ndim]``.
    """
    x = z * torch.exp(log_scale) + shift
    return x, sum_event(log_scale.expand_as(x), event_ndim)


def affine_inverse(x: Tensor, shift: Tensor, log_scale: Tensor, event_ndim: int) -> Pair:
    """The inverse of :func:`affine`: ``z = (x - shift) * exp(-log_scale)``, and the forward
    ``log|det dx/dz| = sum_event(log_scale)``."""
    z = (x - shift) * torch.exp(-log_scale)
    return z, sum_event(log_scale.expand_as(z), event_ndim)


def squeeze(x: Tensor) -> Tensor:
    """``(..., C, H, W) -> (..., 4C, H/2, W/2)``: each 2x2 spatial block becomes 4 channels."""
    *lead, c, h, w = x.shape
    y = x.reshape(*lead, c, h // 2, 2, w // 2, 2)
    n = y.dim()
    y = y.permute(*range(n - 5), n - 5, n - 3, n - 1, n - 4, n - 2)
    return y.reshape(*lead, 4 * c, h // 2, w // 2)


def unsqueeze(y: Tensor) -> Tensor:
    """The inverse of :func:`squeeze`: ``(..., 4C, H, W) -> (..., C, 2H, 2W)``."""
    *lead, c4, h, w = y.shape
    x = y.reshape(*lead, c4 // 4, 2, 2, h, w)
    n = x.dim()
    x = x.permute(*range(n - 5), n - 5, n - 2, n - 4, n - 1, n - 3)
    return x.reshape(*lead, c4 // 4, 2 * h, 2 * w)


def checkerboard_mask(shape: Sequence[int], parity: int) -> Tensor:
    """A ``(C, H, W)`` mask of 1s where ``(h + w) % 2 == parity`` (all channels alike)."""
    c, h, w = shape
    board = (torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2 == parity
    return board.expand(c, h, w).to(torch.get_default_dtype())


def channel_mask(shape: Sequence[int], parity: int) -> Tensor:
    """A mask of 1s on the first half (``parity=0``) or the second half of the first event dim
    (``D`` of a vector, ``C`` of an image); with ``shape=(D,)`` and odd ``D`` the first half has
    ``D // 2`` entries."""
    first = torch.arange(shape[0]) < shape[0] // 2
    mask = first if parity == 0 else ~first
    return mask.reshape(-1, *[1] * (len(shape) - 1)).expand(*shape).to(torch.get_default_dtype())


def alternating_mask(dim: int, parity: int) -> Tensor:
    """A vector mask of 1s on the even (``parity=0``) or the odd entries (nflows'
    ``create_alternating_binary_mask``). On a flattened image neighbouring pixels condition each
    other, where :func:`channel_mask`'s halves condition the bottom of the image on its top; for
    ``D = 2`` the two masks are the same.

    Example:
        >>> alternating_mask(5, 0)
        tensor([1., 0., 1., 0., 1.])
    """
    return (torch.arange(dim) % 2 == parity).to(torch.get_default_dtype())


def _tanh_log_scale(raw: Tensor) -> Tensor:
    return 3.0 * torch.tanh(raw / 3.0)


def _sigmoid_log_scale(raw: Tensor) -> Tensor:
    # Glow scales data -> noise by sigmoid(raw + 2); the noise -> data log-scale is its negative.
    return F.softplus(-(raw + 2.0))


#: Coupling scale map name -> raw network output -> log-scale of the noise -> data map
#: (``None``: additive, NICE).
SCALE_MAPS: Dict[str, Optional[Callable[[Tensor], Tensor]]] = {
    "additive": None,
    "tanh": _tanh_log_scale,
    "sigmoid": _sigmoid_log_scale,
}


class Bijection(TransformModule, abc.ABC):
    """Base of the density layers: an invertible map with its log-determinant both ways.

    Direction: noise ``z`` to data ``x``. Subclasses implement :meth:`forward_and_ladj` and
    :meth:`inverse_and_ladj`; both return the forward ``log|det dx/dz|`` of shape
    ``batch_shape``. ``context`` (shape ``(..., context_dim)``) is ignored by unconditional layers.

    As a Pyro transform: ``domain`` has ``event_ndim`` event dims and ``codomain``
    ``codomain_ndim``; a layer keeps the shape of its input unless it overrides ``forward_shape``
    and ``inverse_shape`` (as torch's ``Transform``), so that for ``z`` of shape
    ``(*batch, *event)``: ``layer(z).shape == layer.forward_shape(z.shape)`` and the log-det has
    shape ``batch``. ``log_abs_det_jacobian(z, x)`` is computed from the data side,
    ``inverse_and_ladj(x)``: the very computation :meth:`~.flows.FlowDensity.log_prob` scores
    with, so ``TransformedDistribution``, which inverts ``x`` first, gives the same ``log p(x)``.

    Args:
        event_ndim: number of event dims of the noise side (1 for vectors, 3 for images).
        codomain_ndim: number of event dims of the data side (default ``event_ndim``).
    """

    bijective = True

    def __init__(self, event_ndim: int, codomain_ndim: Optional[int] = None) -> None:
        super().__init__(cache_size=0)
        self.event_ndim = event_ndim
        self.domain = constraints.independent(constraints.real, event_ndim)
        self.codomain = constraints.independent(
            constraints.real, event_ndim if codomain_ndim is None else codomain_ndim
        )

    @abc.abstractmethod
    def forward_and_ladj(self, z: Tensor, context: Optional[Tensor] = None) -> Pair:
        """``(x, log|det dx/dz|)``."""

    @abc.abstractmethod
    def inverse_and_ladj(self, x: Tensor, context: Optional[Tensor] = None) -> Pair:
        """``(z, log|det dx/dz|)`` with ``z = f^{-1}(x)``."""

    def _call(self, z: Tensor) -> Tensor:
        return self.forward_and_ladj(z)[0]

    def _inverse(self, x: Tensor) -> Tensor:
        return self.inverse_and_ladj(x)[0]

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        """``log|det dy/dx|`` from the data side; torch's names: ``x`` is the noise, ``y`` the data."""
        return self.inverse_and_ladj(y)[1]


class FlowSequence(Bijection):
    """Layers applied in order, noise to data: ``x = f_n(...(f_1(z)))``; log-dets add up.

    The event dims and shapes compose as in torch's ``ComposeTransform``: e.g. vector layers
    followed by a :class:`Flatten` to ``(C, H, W)`` take events of 1 dim to events of 3.

    Args:
        layers: the layers, first applied to the noise (at least one).
    """

    def __init__(self, layers: Sequence[Bijection]) -> None:
        if not layers:
            raise ValueError("a FlowSequence needs at least one layer")
        composed = ComposeTransform(list(layers))
        super().__init__(composed.domain.event_dim, composed.codomain.event_dim)
        self.layers = nn.ModuleList(layers)

    def _bijections(self) -> Sequence[Bijection]:
        return cast(Sequence[Bijection], self.layers)  # what __init__ put in the ModuleList

    def forward_shape(self, shape: Shape) -> torch.Size:
        for layer in self._bijections():
            shape = layer.forward_shape(shape)
        return torch.Size(shape)

    def inverse_shape(self, shape: Shape) -> torch.Size:
        for layer in reversed(self._bijections()):
            shape = layer.inverse_shape(shape)
        return torch.Size(shape)

    def forward_and_ladj(self, z: Tensor, context: Optional[Tensor] = None) -> Pair:
        first, *rest = self._bijections()
        z, total = first.forward_and_ladj(z, context)
        for layer in rest:
            z, ladj = layer.forward_and_ladj(z, context)
            total = total + ladj
        return z, total

    def inverse_and_ladj(self, x: Tensor, context: Optional[Tensor] = None) -> Pair:
        last, *rest = reversed(self._bijections())
        x, total = last.inverse_and_ladj(x, context)
        for layer in rest:
            x, ladj = layer.inverse_and_ladj(x, context)
            total = total + ladj
        return x, total


class Coupling(Bijection):
    """Masked coupling (NICE, RealNVP, Glow): the masked part conditions an affine map of the rest.

    Direction: noise to data. With ``m`` the mask and ``(t, s) = net(m * z, context)``::

        x = m * z + (1 - m) * (z * exp(S(s)) + t),    log|det dx/dz| = sum((1 - m) * S(s))

    where ``S`` is the scale map (:data:`SCALE_MAPS`: ``"additive"`` is NICE's ``S = 0``, ``"tanh"``
    bounds ``|S| < 3``, ``"sigmoid"`` is Glow's). The inverse uses ``m * x = m * z``.

    ReZero (``rezero=True``, Bachlechner et al. 2020): two learned scalars gate the map,
    ``x = m * z + (1 - m) * (z * exp(alpha * S(s)) + beta * t)``, both starting at 0, so that the
    coupling starts as the identity whatever the net's initialization (pair it with a net that
    is *not* zero-initialized, e.g. ``CouplingMLP(..., zero_init=False)``: with both at zero no
    gradient reaches either).

    Args:
        mask: 0/1 tensor of the event's shape; 1 marks the conditioning part.
        net: ``net(masked, context) -> raw`` with ``raw`` of shape ``(..., k * E0, *event[1:])``,
            ``k = 1`` (additive) or 2 (shift then raw scale), ``E0`` the first event dim.
        scale: a key of :data:`SCALE_MAPS`.
        rezero: gate the shift and log-scale by learned scalars ``beta`` and ``alpha`` from 0.

    References:
        Bachlechner, Majumder, Mao, Cottrell, McAuley. ReZero is all you need: fast convergence
        at large depth. UAI 2021 (arXiv 2020).
    """

    mask: Tensor

    def __init__(self, mask: Tensor, net: nn.Module, scale: str = "tanh", rezero: bool = False) -> None:
        super().__init__(mask.dim())
        if scale not in SCALE_MAPS:
            raise ValueError(f"unknown coupling scale {scale!r}; known: {', '.join(SCALE_MAPS)}")
        self.register_buffer("mask", mask)
        self.net = net
        self.scale = scale
        self.rezero = rezero
        if rezero:
            self.alpha = nn.Parameter(torch.zeros(()))
            self.beta = nn.Parameter(torch.zeros(()))

    def _params(self, conditioner: Tensor, context: Optional[Tensor]) -> Pair:
        raw = self.net(conditioner * self.mask, context)
        free = 1 - self.mask
        scale_map = SCALE_MAPS[self.scale]
        if scale_map is None:
            shift, log_scale = raw * free, torch.zeros_like(raw)
        else:
            shift, raw_scale = raw.chunk(2, dim=-self.event_ndim)
            shift, log_scale = shift * free, scale_map(raw_scale) * free
        if self.rezero:
            return self.beta * shift, self.alpha * log_scale
        return shift, log_scale

    def forward_and_ladj(self, z: Tensor, context: Optional[Tensor] = None) -> Pair:
        return affine(z, *self._params(z, context), self.event_ndim)

    def inverse_and_ladj(self, x: Tensor, context: Optional[Tensor] = None) -> Pair:
        return affine_inverse(x, *self._params(x, context), self.event_ndim)


class MAFStep(Bijection):
    """One masked autoregressive flow step (MAF): density in one parallel MADE pass.

    Direction: noise to data, ``x_i = z_i * exp(S(s_i)) + m_i`` with ``(m, s) = MADE(x_{<i})``
    (``S`` the ``"tanh"`` scale map). Scoring data is one MADE pass,
    ``z = (x - m(x)) * exp(-S(s(x)))``; sampling is sequential, ``D`` MADE passes, each fixing one
    more variable in the MADE's order. This is Pyro's ``AffineAutoregressive(...).inv`` (see the
    module docstring for why it is not used directly).

    Args:
        dim: ``D``.
        hidden_dims: MADE hidden widths.
        permutation: the MADE's variable order, shape ``(D,)``.
        context_dim: size of a context the MADE also sees (class-conditional), or ``None``.
    """

    def __init__(
        self,
        dim: int,
        hidden_dims: Sequence[int],
        permutation: Tensor,
        context_dim: Optional[int] = None,
    ) -> None:
        super().__init__(1)
        hidden = list(hidden_dims)
        order = cast(torch.LongTensor, permutation)  # Pyro's annotation: the legacy LongTensor class
        self.made: nn.Module
        if context_dim is None:
            self.made = AutoRegressiveNN(dim, hidden, param_dims=[1, 1], permutation=order)
        else:
            self.made = ConditionalAutoRegressiveNN(dim, context_dim, hidden, param_dims=[1, 1], permutation=order)
        self.conditional = context_dim is not None

    def _params(self, x: Tensor, context: Optional[Tensor]) -> Pair:
        mean, raw = self.made(x, context) if self.conditional else self.made(x)
        return mean, _tanh_log_scale(raw)

    def inverse_and_ladj(self, x: Tensor, context: Optional[Tensor] = None) -> Pair:
        return affine_inverse(x, *self._params(x, context), 1)

    def forward_and_ladj(self, z: Tensor, context: Optional[Tensor] = None) -> Pair:
        # Pass k fixes the k-th variable in the MADE's order; after D passes all are exact.
        x, ladj = torch.zeros_like(z), None
        for _ in range(z.shape[-1]):
            x, ladj = affine(z, *self._params(x, context), 1)
        assert ladj is not None, "z has at least one variable"
        return x, ladj


class ActNorm(Bijection):
    """Per-channel affine map with data-dependent initialization (Glow's ActNorm).

    Direction: noise to data, ``x = z * exp(log_scale) + shift`` per channel (first event dim).
    The first time data are scored (:meth:`inverse_and_ladj`) while the buffer ``initialized`` is
    0, ``shift`` and ``log_scale`` are set from that batch so that its ``z`` has zero mean and unit
    variance per channel; the flag is saved with the state dict.

    Args:
        shape: the event shape, ``(D,)`` or ``(C, H, W)``.
        data_init: whether to initialize from the first batch (else from the identity).
    """

    initialized: Tensor

    def __init__(self, shape: Sequence[int], data_init: bool = True) -> None:
        super().__init__(len(shape))
        param_shape = (shape[0],) + (1,) * (len(shape) - 1)
        self.shift = nn.Parameter(torch.zeros(param_shape))
        self.log_scale = nn.Parameter(torch.zeros(param_shape))
        self.register_buffer("initialized", torch.tensor(not data_init))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set ``shift`` and ``log_scale`` to the per-channel mean and log std of ``x``."""
        channels = x.movedim(-self.event_ndim, 0).reshape(x.shape[-self.event_ndim], -1)
        shape = self.shift.shape
        self.shift.copy_(channels.mean(1).reshape(shape))
        self.log_scale.copy_(channels.std(1, unbiased=False).add(1e-6).log().reshape(shape))
        self.initialized.fill_(True)

    def forward_and_ladj(self, z: Tensor, context: Optional[Tensor] = None) -> Pair:
        return affine(z, self.shift, self.log_scale, self.event_ndim)

    def inverse_and_ladj(self, x: Tensor, context: Optional[Tensor] = None) -> Pair:
        if not self.initialized:
            self.initialize(x)
        return affine_inverse(x, self.shift, self.log_scale, self.event_ndim)


class InvertibleLinear(Bijection):
    """Invertible linear map of the channels with an LU parameterization (Glow's 1x1 convolution).

    Direction: noise to data, ``x = W z`` on the first event dim (for images, at every pixel),
    with ``W = P L (U + diag(sign * exp(log_s)))``: ``P`` a fixed permutation, ``L`` unit lower
    triangular, ``U`` strictly upper triangular. ``log|det dx/dz| = (H * W) * sum(log_s)``
    (``H * W = 1`` for vectors). Initialized from a random rotation, as in Glow.

    Args:
        shape: the event shape, ``(D,)`` or ``(C, H, W)``.
    """

    permutation: Tensor
    diag_sign: Tensor
    lower_mask: Tensor

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__(len(shape))
        c = shape[0]
        self.positions = math.prod(shape[1:])
        q = torch.linalg.qr(torch.randn(c, c))[0]
        p, lower, upper = torch.linalg.lu(q)
        diag = torch.diagonal(upper)
        self.register_buffer("permutation", p)
        self.register_buffer("diag_sign", torch.sign(diag))
        self.register_buffer("lower_mask", torch.tril(torch.ones(c, c), -1))
        self.lower = nn.Parameter(lower * self.lower_mask)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(diag.abs().log())

    def weight(self) -> Tensor:
        """``W``, shape ``(C, C)``."""
        eye = torch.eye(len(self.log_s), dtype=self.log_s.dtype, device=self.log_s.device)
        lower = self.lower * self.lower_mask + eye
        upper = torch.triu(self.upper, 1) + torch.diag(self.diag_sign * torch.exp(self.log_s))
        return self.permutation @ lower @ upper

    def _matmul(self, v: Tensor, matrix: Tensor) -> Tensor:
        return (v.movedim(-self.event_ndim, -1) @ matrix.T).movedim(-1, -self.event_ndim)

    def _ladj(self, v: Tensor) -> Tensor:
        return (self.positions * self.log_s.sum()).expand(v.shape[: v.dim() - self.event_ndim])

    def forward_and_ladj(self, z: Tensor, context: Optional[Tensor] = None) -> Pair:
        return self._matmul(z, self.weight()), self._ladj(z)

    def inverse_and_ladj(self, x: Tensor, context: Optional[Tensor] = None) -> Pair:
        return self._matmul(x, torch.linalg.inv(self.weight())), self._ladj(x)


def _squeezed_shape(shape: Shape) -> torch.Size:
    *lead, c, h, w = shape
    return torch.Size((*lead, 4 * c, h // 2, w // 2))


def _unsqueezed_shape(shape: Shape) -> torch.Size:
    *lead, c4, h, w = shape
    return torch.Size((*lead, c4 // 4, 2 * h, 2 * w))


class Squeeze(Bijection):
    """:func:`squeeze` as a layer: ``(C, H, W) -> (4C, H/2, W/2)``, volume preserving.

    Direction: noise to data as written; :class:`Unsqueeze` is the other way.
    """

    def __init__(self) -> None:
        super().__init__(3)

    def forward_shape(self, shape: Shape) -> torch.Size:
        return _squeezed_shape(shape)

    def inverse_shape(self, shape: Shape) -> torch.Size:
        return _unsqueezed_shape(shape)

    def forward_and_ladj(self, z: Tensor, context: Optional[Tensor] = None) -> Pair:
        return squeeze(z), z.new_zeros(z.shape[:-3])

    def inverse_and_ladj(self, x: Tensor, context: Optional[Tensor] = None) -> Pair:
        return unsqueeze(x), x.new_zeros(x.shape[:-3])


class Unsqueeze(Squeeze):
    """:func:`unsqueeze` as a layer: ``(4C, H, W) -> (C, 2H, 2W)``; direction noise to data."""

    def forward_shape(self, shape: Shape) -> torch.Size:
        return _unsqueezed_shape(shape)

    def inverse_shape(self, shape: Shape) -> torch.Size:
        return _squeezed_shape(shape)

    def forward_and_ladj(self, z: Tensor, context: Optional[Tensor] = None) -> Pair:
        return super().inverse_and_ladj(z)

    def inverse_and_ladj(self, x: Tensor, context: Optional[Tensor] = None) -> Pair:
        return super().forward_and_ladj(x)


class FactorOut(Bijection):
    """Multi-scale factor-out: the channels from ``split`` on go through ``flow``; the first
    ``split`` channels are base noise that leaves the flow at this scale (RealNVP, Glow).

    Direction: noise to data, ``x = (z[:split], flow(z[split:]))`` on the channel dim.

    Learned conditional prior (``prior`` given; Glow's split prior): the factored channels are
    ``N(mu(k), sigma(k)^2)`` given the kept ones ``k = flow(z[split:])``, with
    ``(mu, S) = prior(k, context)`` and ``sigma = exp(S)`` (``S`` the bounded ``"tanh"`` scale
    map). Written as a bijection of standard normal noise it is an affine coupling of the factored
    channels on the kept ones, exact both ways::

        x = (mu(k) + sigma(k) * z[:split], k),    log|det dx/dz| = ladj(flow) + sum(S(k))

    so the flow's base stays ``N(0, I)`` and ``log p`` is that of the Gaussian prior. A prior net
    with a zero last layer (:class:`~.nets.ZeroConv`) starts the prior at ``N(0, I)``.

    Args:
        flow: the flow of the remaining channels (all later scales).
        split: number of channels factored out.
        prior: ``prior(kept, context) -> (..., 2 * split, H, W)`` (mean, then raw log-scale), or
            ``None`` for a standard normal.
    """

    def __init__(self, flow: Bijection, split: int, prior: Optional[nn.Module] = None) -> None:
        super().__init__(3)
        self.flow = flow
        self.split = split
        self.prior = prior

    def _prior(self, kept: Tensor, context: Optional[Tensor]) -> Pair:
        assert self.prior is not None
        mean, raw = self.prior(kept, context).chunk(2, dim=-3)
        return mean, _tanh_log_scale(raw)

    def _shape(self, shape: Shape, method: str) -> torch.Size:
        *lead, c, h, w = shape
        *lead, c, h, w = getattr(self.flow, method)((*lead, c - self.split, h, w))
        return torch.Size((*lead, c + self.split, h, w))

    def forward_shape(self, shape: Shape) -> torch.Size:
        return self._shape(shape, "forward_shape")

    def inverse_shape(self, shape: Shape) -> torch.Size:
        return self._shape(shape, "inverse_shape")

    def _run(self, v: Tensor, context: Optional[Tensor], method: str) -> Pair:
        out, rest = v[..., : self.split, :, :], v[..., self.split :, :, :]
        rest, ladj = getattr(self.flow, method)(rest, context)
        return torch.cat([out, rest], dim=-3), ladj

    def forward_and_ladj(self, z: Tensor, context: Optional[Tensor] = None) -> Pair:
        if self.prior is None:
            return self._run(z, context, "forward_and_ladj")
        out, rest = z[..., : self.split, :, :], z[..., self.split :, :, :]
        kept, ladj = self.flow.forward_and_ladj(rest, context)
        out, prior_ladj = affine(out, *self._prior(kept, context), 3)
        return torch.cat([out, kept], dim=-3), ladj + prior_ladj

    def inverse_and_ladj(self, x: Tensor, context: Optional[Tensor] = None) -> Pair:
        if self.prior is None:
            return self._run(x, context, "inverse_and_ladj")
        out, kept = x[..., : self.split, :, :], x[..., self.split :, :, :]
        out, prior_ladj = affine_inverse(out, *self._prior(kept, context), 3)
        rest, ladj = self.flow.inverse_and_ladj(kept, context)
        return torch.cat([out, rest], dim=-3), ladj + prior_ladj


class Flatten(Bijection):
    """Reshape a ``(D,)`` vector to an event of ``shape`` (e.g. ``(C, H, W)``): vector flows
    (NICE, MAF) on images. Direction: noise (flat) to data (shaped); volume preserving. Its
    domain has 1 event dim, its codomain ``len(shape)``; the shapes are those of torch's
    ``ReshapeTransform((D,), shape)``.

    Args:
        shape: the data's event shape.
    """

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__(1, len(shape))
        self.shape = tuple(shape)
        self.reshape = ReshapeTransform(torch.Size([math.prod(self.shape)]), torch.Size(self.shape))

    def forward_shape(self, shape: Shape) -> torch.Size:
        return torch.Size(self.reshape.forward_shape(shape))

    def inverse_shape(self, shape: Shape) -> torch.Size:
        return torch.Size(self.reshape.inverse_shape(shape))

    def forward_and_ladj(self, z: Tensor, context: Optional[Tensor] = None) -> Pair:
        return z.reshape(*z.shape[:-1], *self.shape), z.new_zeros(z.shape[:-1])

    def inverse_and_ladj(self, x: Tensor, context: Optional[Tensor] = None) -> Pair:
        lead = x.shape[: x.dim() - len(self.shape)]
        return x.reshape(*lead, -1), x.new_zeros(lead)


class Logit(Bijection):
    """RealNVP's logit preprocessing, as the last layer: real ``y`` to data in ``(0, 1)``.

    Direction: noise to data, ``x = (sigmoid(y) - alpha) / (1 - 2 alpha)``, so that the data side
    is ``[0, 1]`` and the flow models ``logit(alpha + (1 - 2 alpha) x)``; its Jacobian
    ``log|det dx/dy| = sum(log sigmoid(y) + log sigmoid(-y) - log(1 - 2 alpha))`` is part of
    ``log p(x)``, so bits/dim computed from ``log p(x)`` include it.

    Args:
        event_ndim: event dims.
        alpha: the margin (RealNVP: 0.05 for CIFAR-10; 1e-6 is common for MNIST).
    """

    def __init__(self, event_ndim: int, alpha: float = 0.05) -> None:
        super().__init__(event_ndim)
        if not 0 <= alpha < 0.5:
            raise ValueError(f"alpha must be in [0, 0.5), got {alpha}")
        self.alpha = alpha

    def _ladj(self, y: Tensor) -> Tensor:
        log_deriv = F.logsigmoid(y) + F.logsigmoid(-y) - math.log1p(-2 * self.alpha)
        return sum_event(log_deriv, self.event_ndim)

    def forward_and_ladj(self, z: Tensor, context: Optional[Tensor] = None) -> Pair:
        return (torch.sigmoid(z) - self.alpha) / (1 - 2 * self.alpha), self._ladj(z)

    def inverse_and_ladj(self, x: Tensor, context: Optional[Tensor] = None) -> Pair:
        p = self.alpha + (1 - 2 * self.alpha) * x
        y = torch.log(p) - torch.log1p(-p)
        return y, self._ladj(y)
