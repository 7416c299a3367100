"""Flow density models, their builders (NICE, RealNVP, MAF, Glow) and the registry over them.

A :class:`FlowDensity` is a standard normal base ``p_0`` and a :class:`~.layers.Bijection` ``f``
mapping noise to data (the generative direction, as Pyro's ``TransformedDistribution``)::

    x = f(z),  z ~ N(0, I),        log p(x) = log p_0(f^{-1}(x)) - log|det df/dz|

``log_prob`` is exact on any data: it runs the inverse, never a sample cache. Every builder takes
vectors ``(D,)`` and images ``(C, H, W)``; NICE and MAF flatten images, RealNVP and Glow are
multi-scale on images. Image models live on ``[0, 1]`` (see :mod:`.dequantization` for 8-bit
data); RealNVP's and Glow's refuse pixels outside it (``unit_interval``).

Example:
    >>> model = density_flow("realnvp", (2,), num_steps=4, hidden=16)
    >>> x = model.sample(5); model.log_prob(x).shape
    torch.Size([5])

References:
    Dinh, Krueger, Bengio. NICE. ICLR 2015 workshop. Dinh, Sohl-Dickstein, Bengio. Real NVP. ICLR
    2017. Papamakarios, Pavlakou, Murray. MAF. NeurIPS 2017. Kingma, Dhariwal. Glow. NeurIPS 2018.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from vaeflows.checks import check_dims, check_int

from .bases import Base, StandardNormalBase, build_base, standard_normal_log_prob
from .freeform import CNFBlock, ResidualBlock
from .layers import (
    ActNorm,
    Bijection,
    Coupling,
    FactorOut,
    Flatten,
    FlowSequence,
    InvertibleLinear,
    Logit,
    MAFStep,
    Squeeze,
    Unsqueeze,
    alternating_mask,
    channel_mask,
    checkerboard_mask,
)
from .nets import CouplingCNN, CouplingMLP, CouplingResNet, ZeroConv
from .splines import SplineCoupling, SplineMAFStep, spline_params_per_dim

__all__ = [
    "DENSITY_FLOWS",
    "FlowDensity",
    "density_flow",
    "nice",
    "realnvp",
    "maf",
    "glow",
    "residual",
    "ffjord",
    "nsf",
    "NSF_TRANSFORMS",
    "NSF_CONDITIONERS",
    "FFJORD_FIELDS",
    "standard_normal_log_prob",
]

Shape = Tuple[int, ...]
LOG_2PI = math.log(2 * math.pi)


class FlowDensity(nn.Module):
    """A normalizing-flow density: ``x = flow(z)``, ``z ~ p_0`` of shape ``noise_shape``.

    ``p_0`` is ``N(0, I)`` unless a learnable ``base`` of :data:`~.bases.BASES` is given
    (``density_flow(..., base="mixture")``); :meth:`base_distribution` is it as a Pyro
    distribution.

    Direction: noise to data; :meth:`log_prob` goes through the inverse.

    Args:
        flow: the bijection from noise to data.
        event_shape: the data's event shape, ``(D,)`` or ``(C, H, W)``.
        noise_shape: the base's event shape (default ``event_shape``; ``(C*H*W,)`` for flows that
            flatten images).
        context_dim: size of the context (e.g. a class one-hot) every call then needs; ``None``
            for an unconditional model.
        name: the flow's registry name.
        unit_interval: the model is of pixels in ``[0, 1]`` (RealNVP's and Glow's image models):
            :meth:`log_prob` refuses values outside it.
        base: the base distribution on ``noise_shape`` (default :class:`~.bases.StandardNormalBase`).

    Shapes:
        ``log_prob``: ``x`` ``(..., *event_shape)`` -> ``(...)``; ``sample(n)`` -> ``(n, *event_shape)``.

    As a Pyro distribution: ``flow`` is a Pyro transform from noise to data (domain event dims
    ``len(noise_shape)``, codomain ``len(event_shape)``), so it goes into
    ``TransformedDistribution`` as it is, **not** ``.inv``, on :meth:`base_distribution` (the
    standard normal of ``noise_shape`` by default); its ``log_prob`` is this model's (unconditional
    models only: a transform takes no context). :meth:`log_prob` is the cheaper route, one inverse
    pass where ``TransformedDistribution`` runs two (the inverse, then the log-det from the data
    side).

    Example:
        >>> import pyro.distributions as dist
        >>> model = density_flow("nice", (1, 4, 4), num_steps=2, hidden=8)
        >>> base = dist.Normal(torch.zeros(model.noise_shape), 1.0).to_event(len(model.noise_shape))
        >>> p = dist.TransformedDistribution(base, [model.flow])
        >>> x = p.sample((3,)); p.event_shape, x.shape
        (torch.Size([1, 4, 4]), torch.Size([3, 1, 4, 4]))
        >>> torch.allclose(p.log_prob(x), model.log_prob(x))
        True
    """

    _reference: torch.Tensor  # a buffer: samples take its dtype and device

    def __init__(
        self,
        flow: Bijection,
        event_shape: Sequence[int],
        noise_shape: Optional[Sequence[int]] = None,
        context_dim: Optional[int] = None,
        name: str = "",
        unit_interval: bool = False,
        base: Optional[Base] = None,
    ) -> None:
        super().__init__()
        self.flow = flow
        self.event_shape = tuple(event_shape)
        self.noise_shape = tuple(noise_shape or event_shape)
        self.context_dim = None if context_dim is None else check_int("context_dim", context_dim)
        self.name = name
        self.unit_interval = unit_interval
        self.check_values = True  # NaN/inf checks in log_prob; trainers check the data once instead
        self.register_buffer("_reference", torch.zeros(()))
        self.base: Base = StandardNormalBase(self.noise_shape) if base is None else base
        if self.base.shape != self.noise_shape:
            raise ValueError(f"a base on events {self.base.shape} for noise of shape {self.noise_shape}")

    def base_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log p_0(z)`` summed over the noise event (``log N(z; 0, I)`` by default)."""
        return self.base.log_prob(z)

    def base_distribution(self) -> torch.distributions.Distribution:
        """The base ``p_0`` as a Pyro distribution of event shape ``noise_shape`` (the model's
        dtype and device): ``TransformedDistribution(model.base_distribution(), [model.flow])``
        is the model (unconditional models)."""
        return self.base.distribution(self._reference)

    def _check_context(self, context: Optional[torch.Tensor]) -> None:
        if self.context_dim is None:
            if context is not None:
                raise ValueError(f"this {self.name} model is unconditional: pass no context")
            return
        if context is None or not torch.is_tensor(context) or context.shape[-1:] != (self.context_dim,):
            found = tuple(context.shape) if torch.is_tensor(context) else context
            raise ValueError(
                f"this {self.name} model is conditional: pass a context of shape (..., "
                f"{self.context_dim}) (e.g. one-hot class labels), got {found}"
            )

    def log_prob(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Exact ``log p(x)`` (nats), shape ``x.shape[:-len(event_shape)]``.

        Raises:
            ValueError: ``x`` is not a tensor of the model's dtype ending in ``event_shape``,
                holds NaN or inf, holds pixels outside ``[0, 1]`` (``unit_interval``), or the
                context is missing or of the wrong size.
        """
        n = len(self.event_shape)
        fits = torch.is_tensor(x) and x.is_floating_point() and x.dim() >= n
        if not fits or tuple(x.shape[x.dim() - n :]) != self.event_shape:
            found = f"{tuple(x.shape)} {x.dtype}" if torch.is_tensor(x) else type(x).__name__
            raise ValueError(
                f"data of shape {found} for a {self.name} model of event shape {self.event_shape}: "
                f"pass a float tensor of shape (..., {', '.join(map(str, self.event_shape))})"
            )
        dtype = self._reference.dtype
        if x.dtype != dtype:
            raise ValueError(
                f"data of dtype {x.dtype} for a {dtype} {self.name} model: pass x.to({dtype}), or "
                "convert the model (model.to(x.dtype))"
            )
        if self.check_values and not torch.isfinite(x).all():
            raise ValueError("the data hold NaN or inf values: clean or drop those rows first")
        if self.check_values and self.unit_interval and not ((x >= 0) & (x <= 1)).all():
            raise ValueError(
                f"a {self.name} image model scores pixels in [0, 1], got values in "
                f"[{x.min().item():g}, {x.max().item():g}]: divide 8-bit pixels by 255, or "
                "dequantize them (vaeflows.density.dequantized_log_likelihood)"
            )
        self._check_context(context)
        z, ladj = self.flow.inverse_and_ladj(x, context)
        return self.base_log_prob(z) - ladj

    def sample(self, n: int, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``n`` samples, shape ``(n, *event_shape)``; a context broadcasts against ``(n,)``."""
        check_int("n", n, minimum=0)
        self._check_context(context)
        z = self.base.sample(n, self._reference)
        return self.flow.forward_and_ladj(z, context)[0]


def _sizes(event_shape: Sequence[int]) -> Shape:
    shape = tuple(event_shape)
    if len(shape) not in (1, 3) or not all(isinstance(s, int) and s >= 1 for s in shape):
        raise ValueError(
            f"event_shape must be (D,) for vectors or (C, H, W) for images, positive integers; got {event_shape!r}"
        )
    return shape


def _check_sizes(num_steps: int, hidden: int) -> None:
    check_int("num_steps (--num-steps)", num_steps)
    check_int("hidden (--hidden)", hidden)


def _vector_model(
    name: str,
    event_shape: Sequence[int],
    build_layers: Callable[[int], List[Bijection]],
    context_dim: Optional[int],
) -> FlowDensity:
    """A vector flow on ``(D,)``; on images it runs on the flattened pixels."""
    shape = _sizes(event_shape)
    dim = math.prod(shape)
    layers = build_layers(dim)
    if len(shape) == 3:
        layers.append(Flatten(shape))
    return FlowDensity(FlowSequence(layers), shape, (dim,), context_dim, name)


def _check_levels(shape: Shape, num_levels: int, squeezes: int) -> None:
    if not isinstance(num_levels, int) or num_levels < 1:
        raise ValueError(f"num_levels must be an integer >= 1, got {num_levels!r}")
    c, h, w = shape
    factor = 2**squeezes
    if h % factor or w % factor:
        raise ValueError(
            f"an image of size {h}x{w} cannot be squeezed {squeezes} times (each squeeze halves "
            f"height and width): use num_levels={num_levels - 1 if num_levels > 1 else 1} or "
            f"fewer, or pad/crop the images to a multiple of {factor}"
        )


def _only_for_images(shape: Shape, num_levels: Optional[int]) -> int:
    if len(shape) == 1 and num_levels is not None:
        raise ValueError("num_levels applies to image models (C, H, W) only")
    return 2 if num_levels is None else num_levels


def _learned_top(learned: bool) -> Callable[[Shape], List[Bijection]]:
    """The learned top-level prior, as the first layer on the noise side: a per-channel affine map
    from the identity (``N(0, I)`` noise becomes ``N(mu, sigma^2)``), or nothing."""
    return lambda shape: [ActNorm(shape, data_init=False)] if learned else []


def _split_prior(learned: bool, channels: int, context_dim: Optional[int]) -> Optional[nn.Module]:
    """The conditional prior net of a :class:`~.layers.FactorOut` factoring out ``channels`` of
    ``2 * channels``, zero-initialized (starts at ``N(0, I)``), or ``None``."""
    return ZeroConv(channels, 2 * channels, context_dim) if learned else None


def nice(
    event_shape: Sequence[int],
    num_steps: int = 4,
    hidden: int = 64,
    context_dim: Optional[int] = None,
) -> FlowDensity:
    """NICE: additive couplings on alternating halves, then a learned diagonal scaling.

    Direction: noise to data, ``x = couplings(exp(s) * z + b)``; images are flattened.

    Args:
        event_shape: ``(D,)`` or ``(C, H, W)``.
        num_steps: additive coupling layers.
        hidden: width of each coupling's two-hidden-layer MLP.
        context_dim: context size for a conditional model.
    """
    _check_sizes(num_steps, hidden)

    def layers(dim: int) -> List[Bijection]:
        couplings = [
            Coupling(channel_mask((dim,), k % 2), CouplingMLP(dim, dim, hidden, context_dim), "additive")
            for k in range(num_steps)
        ]
        return [ActNorm((dim,), data_init=False), *couplings]

    return _vector_model("nice", event_shape, layers, context_dim)


def maf(
    event_shape: Sequence[int],
    num_steps: int = 5,
    hidden: int = 64,
    context_dim: Optional[int] = None,
) -> FlowDensity:
    """MAF: MADE-parameterized affine autoregressive steps, the order reversed every other step.

    Direction: noise to data; density in one MADE pass per step, sampling sequential.

    Args:
        event_shape: ``(D,)`` or ``(C, H, W)`` (flattened).
        num_steps: MAF steps.
        hidden: width of each MADE's two hidden layers.
        context_dim: context size for a conditional model (fed to the MADEs).
    """
    _check_sizes(num_steps, hidden)

    def layers(dim: int) -> List[Bijection]:
        if hidden < dim:
            raise ValueError(f"maf needs hidden >= the data's dimension {dim} (MADE), got hidden={hidden}")
        order = torch.arange(dim)
        return [
            MAFStep(dim, (hidden, hidden), order if k % 2 == 0 else order.flip(0), context_dim)
            for k in range(num_steps)
        ]

    return _vector_model("maf", event_shape, layers, context_dim)


def realnvp(
    event_shape: Sequence[int],
    num_steps: int = 4,
    hidden: int = 64,
    num_levels: Optional[int] = None,
    context_dim: Optional[int] = None,
    alpha: float = 0.05,
    learned_prior: bool = False,
    rezero: bool = False,
) -> FlowDensity:
    """RealNVP: affine couplings; on images multi-scale with checkerboard and channel masks.

    Direction: noise to data. Vectors: ``num_steps`` couplings on alternating halves. Images, data
    to noise at each level: ``num_steps`` checkerboard couplings, squeeze, ``num_steps`` channel
    couplings, factor out half the channels; the last level has ``num_steps + 1`` checkerboard
    couplings; the data side ends in :class:`~.layers.Logit` (margin ``alpha``), so images are
    modelled on ``[0, 1]``. Each image coupling is followed (data to noise: preceded) by an
    ActNorm, in place of the paper's batch normalization; the conditioners are plain conv nets of
    ``hidden`` channels rather than ResNets.

    Args:
        event_shape: ``(D,)`` or ``(C, H, W)``; ``H`` and ``W`` divisible by ``2**(num_levels-1)``.
        num_steps: couplings per group.
        hidden: MLP width (vectors) or conv channels (images).
        num_levels: scales (images only; default 2).
        context_dim: context size for a conditional model.
        alpha: the logit margin (images only).
        learned_prior: Glow's learned priors in place of ``N(0, I)``: at each factor-out,
            ``N(mu, sigma^2)`` of the factored channels from a zero-initialized conv of the kept
            ones (:class:`~.layers.FactorOut`), and a learned per-channel ``N(mu, sigma^2)`` of
            the last level's noise (an :class:`~.layers.ActNorm` from the identity); both start
            at ``N(0, I)``. On vectors: the latter only.
        rezero: ReZero couplings (:class:`~.layers.Coupling`): learned gates from 0, the
            conditioners at PyTorch's default initialization.
    """
    _check_sizes(num_steps, hidden)
    shape = _sizes(event_shape)
    levels = _only_for_images(shape, num_levels)
    top = _learned_top(learned_prior)
    if len(shape) == 1:
        dim = shape[0]
        return _vector_model(
            "realnvp",
            shape,
            lambda _: [
                *top(shape),
                *(
                    Coupling(
                        channel_mask(shape, k % 2),
                        CouplingMLP(dim, 2 * dim, hidden, context_dim, zero_init=not rezero),
                        rezero=rezero,
                    )
                    for k in range(num_steps)
                ),
            ],
            context_dim,
        )
    _check_levels(shape, levels, levels - 1)

    def couplings(level_shape: Shape, mask: Callable, count: int) -> List[Bijection]:
        c = level_shape[0]
        return [
            layer
            for k in range(count)
            for layer in (
                Coupling(
                    mask(level_shape, k % 2),
                    CouplingCNN(c, 2 * c, hidden, context_dim, zero_init=not rezero),
                    rezero=rezero,
                ),
                ActNorm(level_shape),
            )
        ]

    def level(level_shape: Shape, left: int) -> FlowSequence:
        c, h, w = level_shape
        if left == 1:
            return FlowSequence([*top(level_shape), *couplings(level_shape, checkerboard_mask, num_steps + 1)])
        squeezed = (4 * c, h // 2, w // 2)
        return FlowSequence(
            [
                Squeeze(),
                FactorOut(
                    level((2 * c, h // 2, w // 2), left - 1), 2 * c, _split_prior(learned_prior, 2 * c, context_dim)
                ),
                *couplings(squeezed, channel_mask, num_steps),
                Unsqueeze(),
                *couplings(level_shape, checkerboard_mask, num_steps),
            ]
        )

    flow = FlowSequence([level(shape, levels), Logit(3, alpha)])
    return FlowDensity(flow, shape, context_dim=context_dim, name="realnvp", unit_interval=True)


def glow(
    event_shape: Sequence[int],
    num_steps: int = 4,
    hidden: int = 64,
    num_levels: Optional[int] = None,
    context_dim: Optional[int] = None,
    learned_prior: bool = False,
    rezero: bool = False,
) -> FlowDensity:
    """Glow: steps of ActNorm, invertible 1x1 convolution (LU) and affine coupling; multi-scale.

    Direction: noise to data; data to noise, a step is ActNorm (data-dependent init), the LU
    linear map, then a coupling of one channel half on the other (Glow's sigmoid scale). Vectors:
    ``num_steps`` steps. Images, data to noise at each level: squeeze, ``num_steps`` steps, factor
    out half the channels (not on the last level). Images are modelled on ``[0, 1]``.

    Args:
        event_shape: ``(D,)`` or ``(C, H, W)``; ``H`` and ``W`` divisible by ``2**num_levels``.
        num_steps: steps per level.
        hidden: MLP width (vectors) or conv channels (images).
        num_levels: scales (images only; default 2).
        context_dim: context size for a conditional model.
        learned_prior: Glow's learned priors in place of ``N(0, I)`` (the paper's split prior
            and learned top prior): at each factor-out, ``N(mu, sigma^2)`` of the factored
            channels from a zero-initialized 3x3 conv of the kept ones
            (:class:`~.layers.FactorOut`), and a learned per-channel ``N(mu, sigma^2)`` of the
            last level's noise (an :class:`~.layers.ActNorm` from the identity); both start at
            ``N(0, I)``. On vectors: the latter only.
        rezero: ReZero couplings (:class:`~.layers.Coupling`): learned gates from 0, the
            conditioners at PyTorch's default initialization.

    Example:
        >>> model = glow((1, 8, 8), num_steps=1, hidden=8, learned_prior=True, rezero=True)
        >>> model.log_prob(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2])
    """
    _check_sizes(num_steps, hidden)
    shape = _sizes(event_shape)
    levels = _only_for_images(shape, num_levels)
    top = _learned_top(learned_prior)

    def steps(step_shape: Shape) -> List[Bijection]:
        c = step_shape[0]
        net = CouplingMLP if len(step_shape) == 1 else CouplingCNN
        return [
            layer
            for _ in range(num_steps)
            for layer in (
                Coupling(
                    channel_mask(step_shape, 0),
                    net(c, 2 * c, hidden, context_dim, zero_init=not rezero),
                    "sigmoid",
                    rezero=rezero,
                ),
                InvertibleLinear(step_shape),
                ActNorm(step_shape),
            )
        ]

    if len(shape) == 1:
        return _vector_model("glow", shape, lambda _: [*top(shape), *steps(shape)], context_dim)
    _check_levels(shape, levels, levels)

    def level(level_shape: Shape, left: int) -> FlowSequence:
        c, h, w = level_shape
        squeezed = (4 * c, h // 2, w // 2)
        if left == 1:
            inner = top(squeezed)
        else:
            prior = _split_prior(learned_prior, 2 * c, context_dim)
            inner = [FactorOut(level((2 * c, h // 2, w // 2), left - 1), 2 * c, prior)]
        return FlowSequence([Squeeze(), *inner, *steps(squeezed), Unsqueeze()])

    return FlowDensity(level(shape, levels), shape, context_dim=context_dim, name="glow", unit_interval=True)


def residual(
    event_shape: Sequence[int],
    num_steps: int = 4,
    hidden: int = 64,
    context_dim: Optional[int] = None,
    ladj: str = "roulette",
    eval_ladj: Optional[str] = None,
    **options,
) -> FlowDensity:
    """Invertible residual flow (i-ResNet / Residual Flows): ``num_steps`` blocks ``z = x + g(x)``.

    Direction: noise to data (the fixed-point inverse of the residual maps); ``log_prob`` is
    explicit. Each ``g`` has two hidden layers of ``hidden`` LipSwish units, spectral norm
    ``<= 0.9`` per layer; images are flattened. See :class:`~.freeform.ResidualBlock`.

    Args:
        event_shape: ``(D,)`` or ``(C, H, W)`` (flattened).
        num_steps: residual blocks.
        hidden: width of each ``g``.
        context_dim: context size for a conditional model (a first-layer bias of ``g``).
        ladj: log-det in training: ``"roulette"`` (unbiased, default), ``"hutchinson"``, ``"exact"``.
        eval_ladj: log-det in eval mode (default exact for ``D <= 16``).
        **options: ``coeff``, ``activation``, ``spectral``, ``n_power_iterations``,
            ``ladj_options``, ``inverse_options`` of the blocks.
    """
    _check_sizes(num_steps, hidden)

    def layers(dim: int) -> List[Bijection]:
        return [ResidualBlock(dim, (hidden, hidden), context_dim, ladj, eval_ladj, **options) for _ in range(num_steps)]

    return _vector_model("residual", event_shape, layers, context_dim)


#: The vector fields of :func:`ffjord`: dense layers on the flattened state, or 3x3 convolutions on images.
FFJORD_FIELDS = ("mlp", "conv")


def ffjord(
    event_shape: Sequence[int],
    num_steps: int = 1,
    hidden: int = 64,
    context_dim: Optional[int] = None,
    trace: str = "hutchinson",
    eval_trace: Optional[str] = None,
    field: str = "mlp",
    **options,
) -> FlowDensity:
    """FFJORD: ``num_steps`` continuous normalizing flow blocks, each ``dz/dt = f(z, t)`` on ``[0, T]``.

    Direction: noise to data. Each ``f`` has two hidden layers of ``hidden`` tanh units taking
    ``[z, t]`` (and the context) at every layer: dense layers (``field="mlp"``, images flattened)
    or, on images, 3x3 convolutions of ``hidden`` channels with ``t`` and the context as constant
    channels (``field="conv"``, FFJORD's image field,
    :class:`~vaeflows.transforms.ffjord.ConvODENet`); dopri5, ``rtol = atol = 1e-5`` by default.
    Needs torchdiffeq (``pip install 'vaeflows[cnf]'``). See :class:`~.freeform.CNFBlock`.

    Args:
        event_shape: ``(D,)`` or ``(C, H, W)`` (the state is flattened either way).
        num_steps: CNF blocks (FFJORD's 2-D experiments: 1).
        hidden: width (``mlp``) or channels (``conv``) of each ``f``.
        context_dim: context size for a conditional model.
        trace: ``"hutchinson"`` (default) or ``"exact"`` in training.
        eval_trace: the trace in eval mode (default exact for ``D <= 16``).
        field: a key of :data:`FFJORD_FIELDS`: ``"mlp"`` (default) or ``"conv"`` (images only).
        **options: ``activation``, ``time_length``, ``method``, ``rtol``, ``atol``, ``adjoint``,
            ``solver_options``, ``solver_steps`` (fixed-grid ``method="rk4"``, ``"euler"`` or
            ``"midpoint"``), RNODE's ``kinetic_weight`` and ``jacobian_weight`` (added to the
            training loss by :func:`~.training.train_density`), ``learn_time`` of the blocks
            (:class:`~.freeform.CNFBlock`).
    """
    _check_sizes(num_steps, hidden)
    if field not in FFJORD_FIELDS:
        raise ValueError(f"unknown field {field!r}; known: {', '.join(FFJORD_FIELDS)}")
    image_shape = None
    if field == "conv":
        if len(event_shape) != 3:
            raise ValueError(
                f"field='conv' needs images (C, H, W), got event_shape {tuple(event_shape)}: use field='mlp' on vectors"
            )
        image_shape = tuple(event_shape)

    def layers(dim: int) -> List[Bijection]:
        return [
            CNFBlock(dim, (hidden, hidden), context_dim, trace, eval_trace, image_shape=image_shape, **options)
            for _ in range(num_steps)
        ]

    return _vector_model("ffjord", event_shape, layers, context_dim)


def _multiscale(
    shape: Shape, levels: int, num_steps: int, coupling: Callable[[torch.Tensor], Bijection]
) -> FlowSequence:
    """RealNVP's multi-scale stack on ``(C, H, W)`` (see :func:`realnvp`), every coupling built
    by ``coupling(mask)`` from its 0/1 mask (whose shape is the level's) and followed by an ActNorm."""

    def couplings(level_shape: Shape, mask: Callable, count: int) -> List[Bijection]:
        return [layer for k in range(count) for layer in (coupling(mask(level_shape, k % 2)), ActNorm(level_shape))]

    def level(level_shape: Shape, left: int) -> FlowSequence:
        c, h, w = level_shape
        if left == 1:
            return FlowSequence(couplings(level_shape, checkerboard_mask, num_steps + 1))
        return FlowSequence(
            [
                Squeeze(),
                FactorOut(level((2 * c, h // 2, w // 2), left - 1), 2 * c),
                *couplings((4 * c, h // 2, w // 2), channel_mask, num_steps),
                Unsqueeze(),
                *couplings(level_shape, checkerboard_mask, num_steps),
            ]
        )

    return level(shape, levels)


#: The forms of :func:`nsf`'s steps.
NSF_TRANSFORMS = ("coupling", "autoregressive")

#: The vector conditioners of :func:`nsf`'s couplings: name -> builder
#: ``(dim, out_dim, hidden, context_dim, hidden_dims, num_blocks, zero_init) -> net``.
NSF_CONDITIONERS: Dict[str, Callable[..., nn.Module]] = {
    "mlp": lambda d, o, h, c, widths, blocks, zero: CouplingMLP(d, o, h, c, widths, zero_init=zero),
    "resnet": lambda d, o, h, c, widths, blocks, zero: CouplingResNet(d, o, h, c, blocks, zero_init=zero),
}


def nsf(
    event_shape: Sequence[int],
    num_steps: int = 4,
    hidden: int = 64,
    num_levels: Optional[int] = None,
    context_dim: Optional[int] = None,
    transform: str = "coupling",
    bins: int = 8,
    tail_bound: float = 3.0,
    hidden_dims: Optional[Sequence[int]] = None,
    alpha: float = 0.05,
    rezero: bool = False,
    conditioner: str = "mlp",
    num_blocks: int = 2,
    unconditional: bool = False,
) -> FlowDensity:
    """Neural spline flow: monotonic rational-quadratic spline steps, coupling or autoregressive.

    Direction: noise to data, with the splines on the data side as zuko's (``log_prob`` runs the
    splines, sampling their exact analytic inverse; see :mod:`~vaeflows.density.splines` for why,
    and for the soft bound of the bin logits). Every transformed element goes through a spline of
    ``bins`` bins on ``[-tail_bound, tail_bound]``, the identity outside it
    (:func:`~vaeflows.transforms.spline.rational_quadratic_spline`).

    * ``transform="coupling"`` (RQ-NSF (C)): vectors, ``num_steps``
      :class:`~.splines.SplineCoupling` layers on the even and odd entries in turn
      (:func:`~.layers.alternating_mask`: on a flattened MNIST, 300 steps, 3.21 bits/dim against
      4.56 with halves), each conditioner an MLP of
      ``hidden_dims`` (default ``(hidden, hidden)``) ReLU units with a zero last layer (every step
      starts as the identity) that takes the conditioning entries alone and returns the other
      half's parameters (nflows' layout), the raw bin widths and heights divided by ``sqrt`` of its
      last hidden width (nflows'; on MNIST 3.26 bits/dim with it against 4.17 without, see
      :mod:`~vaeflows.density.splines`). Images: RealNVP's multi-scale stack (see :func:`realnvp`:
      checkerboard and channel masks, squeeze, factor-out, ActNorm after each coupling, a
      :class:`~.layers.Logit` on the data side, so images are modelled on ``[0, 1]``) with spline
      couplings whose conditioners are conv nets of ``hidden`` channels.
    * ``transform="autoregressive"`` (RQ-NSF (AR)): ``num_steps`` :class:`~.splines.SplineMAFStep`
      layers, MADEs of ``hidden_dims`` (each ``>= D``), the order reversed every other step;
      density in one MADE pass per step, sampling in ``D``. Images are flattened.

    Args:
        event_shape: ``(D,)`` or ``(C, H, W)``; multi-scale: ``H``, ``W`` divisible by ``2**(num_levels-1)``.
        num_steps: spline steps (per group on images).
        hidden: MLP width, MADE width or conv channels.
        num_levels: scales (images, coupling only; default 2).
        context_dim: context size for a conditional model (fed to every conditioner).
        transform: ``"coupling"`` or ``"autoregressive"``.
        bins: spline bins ``K >= 2`` (zuko's and normflows' 8).
        tail_bound: ``B > 0`` (normflows' 3; zuko's 5).
        hidden_dims: vector conditioners' hidden widths, in place of ``(hidden, hidden)``.
        alpha: the logit margin (images, coupling only).
        rezero: ReZero spline couplings (coupling only): a learned gate from 0 scales each
            conditioner's output (:class:`~.splines.SplineCoupling`), the conditioners keep
            PyTorch's default initialization.
        conditioner: the couplings' conditioner (coupling only, a key of ``NSF_CONDITIONERS``):
            ``"mlp"`` (vectors: :class:`~.nets.CouplingMLP`; images: conv nets) or ``"resnet"``
            (:class:`~.nets.CouplingResNet` of ``num_blocks`` residual blocks of width ``hidden``,
            nflows' ``ResidualNet`` as normflows' ``CoupledRationalQuadraticSpline`` uses it;
            images are flattened, as in the autoregressive form).
        num_blocks: residual blocks of ``conditioner="resnet"``.
        unconditional: couplings also spline their conditioning part with learned unconditional
            bins (:class:`~.splines.SplineCoupling`; nflows' and normflows' layout), so every
            element is transformed in every step.

    Example:
        >>> model = nsf((2,), num_steps=2, hidden=16, transform="autoregressive", bins=4)
        >>> x = model.sample(3); model.log_prob(x).shape
        torch.Size([3])

    References:
        Durkan, Bekasov, Murray, Papamakarios. Neural Spline Flows. NeurIPS 2019.
    """
    _check_sizes(num_steps, hidden)
    if transform not in NSF_TRANSFORMS:
        raise ValueError(f"unknown nsf transform {transform!r} (--transform); known: {', '.join(NSF_TRANSFORMS)}")
    shape = _sizes(event_shape)
    params = spline_params_per_dim(check_int("bins (--bins)", bins, minimum=2))
    if conditioner not in NSF_CONDITIONERS:
        known = ", ".join(NSF_CONDITIONERS)
        raise ValueError(f"unknown nsf conditioner {conditioner!r} (--conditioner); known: {known}")
    if conditioner != "mlp" and transform != "coupling":
        raise ValueError(f"conditioner={conditioner!r} applies to nsf's couplings (transform='coupling') only")
    if conditioner == "resnet" and hidden_dims is not None:
        raise ValueError("hidden_dims applies to conditioner='mlp'; the resnet's blocks are `hidden` wide (num_blocks)")
    if unconditional and transform != "coupling":
        raise ValueError("unconditional applies to nsf's couplings (transform='coupling') only")
    build_net = NSF_CONDITIONERS[conditioner]
    image = len(shape) == 3 and transform == "coupling" and conditioner == "mlp"
    if hidden_dims is not None and image:
        raise ValueError("hidden_dims applies to vector conditioners; image couplings have `hidden` conv channels")
    widths = (hidden, hidden) if hidden_dims is None else check_dims("hidden_dims", hidden_dims)
    if rezero and transform != "coupling":
        raise ValueError("rezero (--rezero) applies to nsf's spline couplings (transform='coupling') only")
    if not image:
        if num_levels is not None:
            raise ValueError("num_levels applies to nsf's multi-scale image models (transform='coupling') only")

        def layers(dim: int) -> List[Bijection]:
            if transform == "coupling":
                masks = [alternating_mask(dim, k % 2) for k in range(num_steps)]
                last_width = hidden if conditioner == "resnet" else widths[-1]
                return [
                    SplineCoupling(
                        mask,
                        build_net(
                            int(mask.sum()),
                            int((1 - mask).sum()) * params,
                            hidden,
                            context_dim,
                            widths,
                            num_blocks,
                            not rezero,
                        ),
                        bins,
                        tail_bound,
                        bin_scale=1 / math.sqrt(last_width),
                        rezero=rezero,
                        unconditional=unconditional,
                    )
                    for mask in masks
                ]
            if min(widths) < dim:
                raise ValueError(
                    f"nsf (transform='autoregressive') needs MADE widths >= the data's dimension {dim}, "
                    f"got {widths}: raise hidden (--hidden) or hidden_dims"
                )
            order = torch.arange(dim)
            return [
                SplineMAFStep(dim, widths, order if k % 2 == 0 else order.flip(0), context_dim, bins, tail_bound)
                for k in range(num_steps)
            ]

        return _vector_model("nsf", shape, layers, context_dim)
    levels = 2 if num_levels is None else num_levels
    _check_levels(shape, levels, levels - 1)

    def coupling(mask: torch.Tensor) -> Bijection:
        c = mask.shape[0]
        net = CouplingCNN(c, c * params, hidden, context_dim, zero_init=not rezero)
        return SplineCoupling(mask, net, bins, tail_bound, rezero=rezero, unconditional=unconditional)

    flow = FlowSequence([_multiscale(shape, levels, num_steps, coupling), Logit(3, alpha)])
    return FlowDensity(flow, shape, context_dim=context_dim, name="nsf", unit_interval=True)


#: Flow name -> builder ``(event_shape, num_steps=, hidden=, [num_levels=,] context_dim=)``.
DENSITY_FLOWS: Dict[str, Callable[..., FlowDensity]] = {
    "nice": nice,
    "realnvp": realnvp,
    "maf": maf,
    "glow": glow,
    "residual": residual,
    "ffjord": ffjord,
    "nsf": nsf,
}


def density_flow(
    name: str,
    event_shape: Sequence[int],
    base: str = "normal",
    base_options: Optional[Mapping[str, Any]] = None,
    **options,
) -> FlowDensity:
    """Build the density model ``name`` of :data:`DENSITY_FLOWS` for data of ``event_shape``.

    Args:
        name: a key of :data:`DENSITY_FLOWS`.
        event_shape: ``(D,)`` or ``(C, H, W)``.
        base: the base distribution, a key of :data:`~.bases.BASES` (``"normal"``, ``"mixture"``,
            ``"made"``), for every flow.
        base_options: the base's options (``mixture``: ``num_components``; ``made``: ``hidden``).
        **options: the builder's options.

    Raises:
        ValueError: an unknown name; a posterior flow without an analytic inverse (planar,
            radial, Sylvester), with the reason and what to use instead; bad shapes or options.

    Example:
        >>> model = density_flow("maf", (2,), hidden=8, base="mixture", base_options={"num_components": 4})
        >>> type(model.base).__name__, model.log_prob(torch.zeros(3, 2)).shape
        ('MixtureBase', torch.Size([3]))
    """
    if name in DENSITY_FLOWS:
        model = DENSITY_FLOWS[name](event_shape, **options)
        if base == "normal" and not base_options:
            return model
        if not isinstance(model, FlowDensity):
            raise ValueError(f"the {name} flow has its own prior: it takes no base (--base)")
        model.base = build_base(base, model.noise_shape, **(base_options or {}))
        return model
    from vaeflows.transforms import POSTERIOR_FLOWS

    known = ", ".join(DENSITY_FLOWS)
    if name in POSTERIOR_FLOWS:
        if name in ("iaf", "householder"):
            reason = (
                f"the {name} stack is built for sampling z_0 -> z_K in VAE posteriors (IAF inverts "
                "one dimension at a time); MAF is IAF's twin with the one-pass direction on the data side"
            )
        else:
            reason = (
                "planar, radial and Sylvester flows have no analytic inverse: they can only score "
                "their own samples. Use them for VAE posteriors or reverse-KL fits of an energy "
                "(vaeflows density energy)"
            )
        raise ValueError(
            f"{name!r} is a posterior flow and cannot estimate densities: log p(x) needs the inverse "
            f"x -> z of every step, and {reason}. Density flows: {known}."
        )
    raise ValueError(f"unknown density flow {name!r}; known: {known}")
