"""Neural spline flows (Durkan et al. 2019): monotonic rational-quadratic splines as flow steps.

Each dimension ``x`` inside ``[-B, B]`` goes through a monotonic rational-quadratic spline of
``K`` bins (``count_bins``) whose knots ``(x_k, y_k)`` and knot derivatives ``d_k`` come from a
network; outside ``[-B, B]`` (``bound``) the map is the identity (linear tails, slope 1, which the
boundary derivatives ``d_0 = d_K = 1`` make continuous). In bin ``k``, with
``s_k = (y_(k+1) - y_k) / (x_(k+1) - x_k)`` and ``t = (x - x_k) / (x_(k+1) - x_k)``::

    y = y_k + (y_(k+1) - y_k) (s_k t^2 + d_k t (1 - t)) / (s_k + (d_(k+1) + d_k - 2 s_k) t (1 - t))
    dy/dx = s_k^2 (d_(k+1) t^2 + 2 s_k t (1 - t) + d_k (1 - t)^2) / (s_k + (d_(k+1) + d_k - 2 s_k) t (1 - t))^2

and the inverse is the root in ``[0, 1]`` of a quadratic in ``t`` (Durkan et al., eq. 6-8).
:func:`rational_quadratic_spline` is that maths on batched parameters; two posterior flows use it:

* ``spline-autoregressive`` (:class:`AmortizedSplineAutoregressive`,
  :class:`GlobalSplineAutoregressive`): the inverse-autoregressive form. A MADE of ``z_<i`` (and
  the context) gives dimension ``i``'s spline, so ``z_0 -> z_K`` and its log-det take one MADE
  pass per step (sampling and scoring one's own samples in parallel); the inverse is exact but
  sequential over the ``D`` dimensions, as IAF's.
* ``spline-coupling`` (:class:`AmortizedSplineCoupling`, :class:`GlobalSplineCoupling`): half
  of the dimensions (and the context) condition the splines of the other half, the halves
  alternating between steps; the inverse is analytic and parallel, so it scores any value.

Direction: base noise ``z_0`` to ``z_K`` (Pyro's generative direction); the splines are applied
forward when sampling.

**Why vaeflows' own and not Pyro's ``Spline*`` transforms** (Pyro 1.9.2, measured in
``tests/transforms/test_spline.py``, whose ``pyro`` cases are strict xfails): Pyro's default
``order="linear"`` is a rational-*linear* spline, not Durkan's; its quadratic-order autoregressive
forms crash (``too many values to unpack``); its inverse adds ``eps = 1e-6`` to every knot in the
bin search, which misplaces values in narrow bins (``SplineCoupling``'s inverse off by up to
``2.5e-4`` at ``N(0, 1)`` weight kicks, float64); its boundary derivatives are ``1 - 1e-3``, not
1, so the slope jumps at ``+-B``; and its identity tails use boolean-mask indexing
(``outputs[mask] = ...``), a host read that stalls a GPU every step, and its inverse asserts on the
host. Here the splines are one function with no host reads, an exact bin search and
``torch.where`` tails; the MADEs are Pyro's :class:`~pyro.nn.AutoRegressiveNN` (with
``param_dims = [K, K, K - 1]``), which follow the module's dtype and device.

Raw network outputs map to bins as in Durkan et al.'s code (nflows): widths and heights by a
softmax (each bin at least ``1e-3`` of ``2B``) of the outputs divided by ``sqrt`` of the
network's last hidden width, derivatives by ``1e-3 + softplus``, shifted so that raw outputs of
zero give ``d_k = 1``: all-zero raw parameters are the identity. (Without the division, weights
kicked by ``N(0, 0.5^2)`` made some bins ``e^8`` times narrower than others and slopes of
``1e-10`` through three steps: the inverse was then exact to the last bit in ``y`` but ``1e-6``
off in ``z``, as any inverse of so ill-conditioned a map must be.)

References:
    Durkan, Bekasov, Murray & Papamakarios, "Neural Spline Flows", NeurIPS 2019.
    Gregory & Delbourgo, "Piecewise rational quadratic interpolation to monotonic data", IMA
    Journal of Numerical Analysis 1982.
    Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling, "Improving Variational Inference
    with Inverse Autoregressive Flow", NeurIPS 2016 (the autoregressive form).
    Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017 (coupling).
"""

from __future__ import annotations

import math
import warnings
from functools import partial
from typing import Callable, List, Optional, Sequence, Tuple, cast

import torch
import torch.nn.functional as F
from pyro.nn import AutoRegressiveNN, ConditionalAutoRegressiveNN
from torch import nn
from torch.distributions import Transform

from vaeflows.checks import check_dims, check_int, check_real
from vaeflows.nn.mlp import MLP

from .base import AmortizedFlow, CachedLadjTransform, GlobalFlow
from .iaf import _zero_outputs

__all__ = [
    "rational_quadratic_spline",
    "SplineAutoregressiveStep",
    "SplineCouplingStep",
    "AmortizedSplineAutoregressive",
    "GlobalSplineAutoregressive",
    "AmortizedSplineCoupling",
    "GlobalSplineCoupling",
]

#: Each bin's smallest width and height (fractions of ``2B``) and the smallest knot derivative.
MIN_BIN = 1e-3
MIN_DERIVATIVE = 1e-3
#: ``softplus(_DERIVATIVE_SHIFT) + MIN_DERIVATIVE == 1``: a raw derivative of 0 is a slope of 1.
_DERIVATIVE_SHIFT = math.log(math.expm1(1.0 - MIN_DERIVATIVE))


def _knots(raw: torch.Tensor, bound: float) -> torch.Tensor:
    """``K + 1`` increasing knots from ``-bound`` to ``bound`` exactly, bins from a softmax of ``raw``."""
    count_bins = raw.shape[-1]
    fractions = MIN_BIN + (1.0 - MIN_BIN * count_bins) * torch.softmax(raw, dim=-1)
    inner = -bound + 2.0 * bound * torch.cumsum(fractions, dim=-1)[..., :-1]
    return F.pad(F.pad(inner, (1, 0), value=-bound), (0, 1), value=bound)


def _bin(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[..., index]`` per dimension: ``(..., D, n)`` and ``(..., D, 1)`` -> ``(..., D)``."""
    return values.gather(-1, index).squeeze(-1)


def rational_quadratic_spline(
    x: torch.Tensor,
    widths: torch.Tensor,
    heights: torch.Tensor,
    derivatives: torch.Tensor,
    bound: float = 3.0,
    inverse: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """An elementwise monotonic rational-quadratic spline on ``[-B, B]``, identity outside.

    ``y = spline(x)`` (or ``x = spline^-1(y)`` with ``inverse=True``) with the equations of the
    module docstring, and ``log|d output / d input|`` per element from the same computation.

    Args:
        x: inputs ``(..., D)`` (outputs of the forward map when ``inverse``).
        widths: raw bin widths ``(..., D, K)``; a softmax makes them fractions of ``2B``.
        heights: raw bin heights ``(..., D, K)``.
        derivatives: raw derivatives at the ``K - 1`` inner knots ``(..., D, K - 1)``; those at
            ``+-B`` are 1.
        bound: ``B > 0``.
        inverse: apply the inverse map.

    Returns:
        ``(output, ladj)``, both of the broadcast shape of ``x`` and the parameters' ``(..., D)``;
        ``ladj`` is the log-derivative of the map applied (negative of the forward one when
        ``inverse``).

    Example:
        >>> x = torch.linspace(-4, 4, 9).unsqueeze(-1)
        >>> w, h, d = torch.randn(1, 5), torch.randn(1, 5), torch.randn(1, 4)
        >>> y, ladj = rational_quadratic_spline(x, w, h, d)
        >>> bool((y[1:] > y[:-1]).all()), y[0].item(), y[-1].item()  # monotonic, identity tails
        (True, -4.0, 4.0)
        >>> x_back, _ = rational_quadratic_spline(y, w, h, d, inverse=True)
        >>> torch.allclose(x_back, x, atol=1e-5)
        True
    """
    shape = torch.broadcast_shapes(x.shape, widths.shape[:-1], heights.shape[:-1], derivatives.shape[:-1])
    x = x.expand(shape)
    count_bins = widths.shape[-1]
    knot_x = _knots(widths, bound).expand(*shape, count_bins + 1)
    knot_y = _knots(heights, bound).expand(*shape, count_bins + 1)
    slopes = MIN_DERIVATIVE + F.softplus(derivatives + _DERIVATIVE_SHIFT)
    slopes = F.pad(slopes, (1, 1), value=1.0).expand(*shape, count_bins + 1)

    inside = (x >= -bound) & (x <= bound)
    clamped = x.clamp(-bound, bound)  # finite values (and gradients) in the branch not taken
    knots_in = knot_y if inverse else knot_x
    index = (clamped.unsqueeze(-1) >= knots_in[..., 1:-1]).sum(-1, keepdim=True)
    x_k, y_k = _bin(knot_x, index), _bin(knot_y, index)
    width = _bin(knot_x[..., 1:], index) - x_k
    height = _bin(knot_y[..., 1:], index) - y_k
    d_k, d_k1 = _bin(slopes, index), _bin(slopes[..., 1:], index)
    s_k = height / width
    curvature = d_k1 + d_k - 2.0 * s_k

    if inverse:
        offset = clamped - y_k
        a = height * (s_k - d_k) + offset * curvature
        b = height * d_k - offset * curvature
        c = -s_k * offset
        discriminant = (b.square() - 4.0 * a * c).clamp(min=0.0)
        t = (2.0 * c) / (-b - discriminant.sqrt())  # the root in [0, 1], stable for a -> 0
        output = x_k + t * width
    else:
        t = (clamped - x_k) / width
        output = None
    t_1mt = t * (1.0 - t)
    denominator = s_k + curvature * t_1mt
    if output is None:
        output = y_k + height * (s_k * t.square() + d_k * t_1mt) / denominator
    ladj = (
        2.0 * s_k.log() + (d_k1 * t.square() + 2.0 * s_k * t_1mt + d_k * (1.0 - t).square()).log()
    ) - 2.0 * denominator.log()
    if inverse:
        ladj = -ladj
    return torch.where(inside, output, x), torch.where(inside, ladj, torch.zeros_like(ladj))


def _split_raw(raw: torch.Tensor, count_bins: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(..., D, 3K - 1)`` raw parameters -> widths ``(..., D, K)``, heights, derivatives ``(..., D, K - 1)``."""
    widths, heights, derivatives = raw.split([count_bins, count_bins, count_bins - 1], dim=-1)
    return widths, heights, derivatives


def _bin_scale(hidden_dims: Sequence[int]) -> float:
    """``1 / sqrt(last hidden width)`` (1 for a conditioner without hidden layers), as nflows."""
    return 1.0 / math.sqrt(hidden_dims[-1]) if len(hidden_dims) else 1.0


def _check_spline_options(count_bins: int, bound: float) -> Tuple[int, float]:
    return check_int("count_bins", count_bins, minimum=2), check_real("bound", bound, above=0)


# --- the autoregressive form ---------------------------------------------------------------------


class SplineAutoregressiveStep(CachedLadjTransform):
    """One inverse-autoregressive spline step: ``z'_i = spline_i(z_i)``, its bins from ``MADE(z_<i)``.

    Direction ``z -> z'``; one MADE pass gives every dimension's spline and the log-det
    ``sum_i log spline_i'(z_i)``. The inverse fills ``z`` in the MADE's order, one pass a dimension.

    Args:
        made: ``made(z) -> (widths, heights, derivatives)``, each ``(..., K or K - 1, D)``
            (Pyro's :class:`~pyro.nn.AutoRegressiveNN` with ``param_dims=[K, K, K - 1]``),
            autoregressive in the order ``permutation``.
        permutation: the MADE's variable order.
        bound: the spline's tail bound ``B``.
        bin_scale: the factor of the raw widths and heights (``1 / sqrt(last hidden width)``).
    """

    def __init__(
        self,
        made: Callable[[torch.Tensor], Sequence[torch.Tensor]],
        permutation: torch.Tensor,
        bound: float,
        bin_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.made = made
        self.permutation = permutation
        self.bound = bound
        self.bin_scale = bin_scale

    def _spline(self, z: torch.Tensor, values: torch.Tensor, inverse: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        widths, heights, derivatives = (p.transpose(-1, -2) for p in self.made(z))
        widths, heights = widths * self.bin_scale, heights * self.bin_scale
        return rational_quadratic_spline(values, widths, heights, derivatives, self.bound, inverse)

    def _call(self, z: torch.Tensor) -> torch.Tensor:
        y, ladj = self._spline(z, z, inverse=False)
        self._cached_ladj = ladj.sum(-1)
        return y

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        columns = [y.new_zeros(y.shape[:-1])] * y.shape[-1]
        for i in self.permutation.tolist():  # z_i from the splines the MADE gives for z_<i
            z, _ = self._spline(torch.stack(columns, dim=-1), y, inverse=True)
            columns[i] = z[..., i]
        self._cached_ladj = None
        return torch.stack(columns, dim=-1)


def _spline_mades(
    latent_dim: int,
    num_flows: int,
    context_dim: int,
    hidden_dims: Sequence[int],
    count_bins: int,
    reverse_order: bool,
) -> nn.ModuleList:
    """One MADE per step with ``3K - 1`` outputs per dimension (``context_dim = 0``: unconditional)."""
    hidden_dims = check_dims("hidden_dims", hidden_dims)
    if min(hidden_dims) < latent_dim:
        raise ValueError(
            f"spline-autoregressive: every MADE hidden size must be >= latent_dim={latent_dim} (each "
            f"unit sees a prefix of the order), got hidden_dims={hidden_dims}: widen them or lower latent_dim"
        )
    param_dims = [count_bins, count_bins, count_bins - 1]
    mades = []
    for step in range(num_flows):
        order = torch.arange(latent_dim)
        order = order.flip(0) if reverse_order and step % 2 == 1 else order
        permutation = cast(torch.LongTensor, order)  # Pyro annotates the legacy class; an int64 tensor
        with warnings.catch_warnings():  # Pyro warns for D = 1, a legitimate (conditional) spline
            warnings.filterwarnings("ignore", message=".*input_dim = 1.*")
            if context_dim:
                made: nn.Module = ConditionalAutoRegressiveNN(
                    latent_dim,
                    context_dim,
                    list(hidden_dims),
                    param_dims=param_dims,
                    permutation=permutation,
                    nonlinearity=nn.ELU(),
                )
            else:
                made = AutoRegressiveNN(
                    latent_dim, list(hidden_dims), param_dims=param_dims, permutation=permutation, nonlinearity=nn.ELU()
                )
        mades.append(made)
    return nn.ModuleList(mades)


class AmortizedSplineAutoregressive(AmortizedFlow):
    """Inverse-autoregressive spline flow whose MADEs also take the context (encoder features).

    Direction ``z_0 -> z_K``. Step ``k``: ``z_k,i = spline_k,i(z_(k-1),i)`` with the bins of
    dimension ``i`` from ``MADE_k(z_(k-1),<i, h)``; ``log|det| = sum_i log spline_k,i'``. The order
    is reversed every other step. ``.condition(h)`` gives the stack for contexts ``(..., C)``.

    Args:
        latent_dim: ``D``.
        num_flows: number of steps ``K``, each with its own MADE.
        context_dim: ``C``.
        hidden_dims: MADE hidden widths, at least one, each ``>= D`` (default IAF's 320, 320).
        count_bins: spline bins ``K >= 2`` (Pyro's and zuko's 8).
        bound: tail bound ``B > 0``; identity outside ``[-B, B]`` (Pyro's 3).
        reverse_order: reverse the autoregressive order every other step.

    Example:
        >>> flow = AmortizedSplineAutoregressive(4, 2, context_dim=8, hidden_dims=(16,))
        >>> stack = flow.condition(torch.randn(3, 8))
        >>> z = torch.randn(3, 4); y = stack(z)
        >>> stack.log_abs_det_jacobian(z, y).shape
        torch.Size([3])

    References:
        Durkan, Bekasov, Murray & Papamakarios, "Neural Spline Flows", NeurIPS 2019.
    """

    def __init__(
        self,
        latent_dim: int,
        num_flows: int,
        context_dim: int,
        hidden_dims: Sequence[int] = (320, 320),
        count_bins: int = 8,
        bound: float = 3.0,
        reverse_order: bool = True,
    ) -> None:
        super().__init__("spline-autoregressive", latent_dim, num_flows, context_dim, invertible=True)
        self.count_bins, self.bound = _check_spline_options(count_bins, bound)
        self.mades = _spline_mades(latent_dim, num_flows, context_dim, hidden_dims, self.count_bins, reverse_order)
        self.bin_scale = _bin_scale(hidden_dims)

    def steps(self, context: torch.Tensor) -> List[Transform]:
        return [
            SplineAutoregressiveStep(
                partial(made, context=context), cast(torch.Tensor, made.permutation), self.bound, self.bin_scale
            )
            for made in self.mades
        ]


class GlobalSplineAutoregressive(GlobalFlow):
    """Inverse-autoregressive spline flow with MADEs of ``z`` alone. Direction ``z_0 -> z_K``.

    Args:
        latent_dim: ``D``.
        num_flows: number of steps ``K``.
        hidden_dims: MADE hidden widths, at least one, each ``>= D``.
        count_bins: spline bins ``K >= 2``.
        bound: tail bound ``B > 0``.
        reverse_order: reverse the autoregressive order every other step.
        zero_init: zero the MADEs' output layers, so that every step starts as the identity
            (all-zero raw parameters are the identity spline).

    Example:
        >>> flow = GlobalSplineAutoregressive(3, 2, hidden_dims=(8,))
        >>> z = torch.randn(5, 3); y = flow(z)
        >>> torch.allclose(flow.inv(y.clone()), z, atol=1e-5)
        True
    """

    def __init__(
        self,
        latent_dim: int,
        num_flows: int,
        hidden_dims: Sequence[int] = (320, 320),
        count_bins: int = 8,
        bound: float = 3.0,
        reverse_order: bool = True,
        zero_init: bool = False,
    ) -> None:
        super().__init__("spline-autoregressive", latent_dim, num_flows, invertible=True)
        self.count_bins, self.bound = _check_spline_options(count_bins, bound)
        self.mades = _spline_mades(latent_dim, num_flows, 0, hidden_dims, self.count_bins, reverse_order)
        self.bin_scale = _bin_scale(hidden_dims)
        if _check_zero_init(zero_init):
            _zero_outputs(self.mades)

    def steps(self) -> List[Transform]:
        return [
            SplineAutoregressiveStep(made, cast(torch.Tensor, made.permutation), self.bound, self.bin_scale)
            for made in self.mades
        ]


# --- the coupling form ---------------------------------------------------------------------------


class _CouplingNet(nn.Module):
    """The conditioner of one coupling step: ``(z_a[, h]) -> raw spline parameters (..., n, 3K - 1)``.

    An MLP with ELU activations of ``cat(z_a, h)``; with nothing to condition on (``D = 1``, a
    global flow) the raw parameters are themselves learned.
    """

    def __init__(self, in_dim: int, context_dim: int, hidden_dims: Sequence[int], n_out: int, count_bins: int) -> None:
        super().__init__()
        self.n_out, self.per_dim = n_out, 3 * count_bins - 1
        self.net: Optional[nn.Module] = None
        self.raw: Optional[nn.Parameter] = None
        if in_dim + context_dim:
            self.net = MLP(in_dim + context_dim, hidden_dims, n_out * self.per_dim, activation=nn.ELU)
        else:
            self.raw = nn.Parameter(torch.zeros(n_out, self.per_dim))

    def forward(self, z_a: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.net is None:
            assert self.raw is not None
            return self.raw.expand(*z_a.shape[:-1], self.n_out, self.per_dim)
        if context is not None:
            z_a = torch.cat([z_a, context.expand(*z_a.shape[:-1], context.shape[-1])], dim=-1)
        return self.net(z_a).unflatten(-1, (self.n_out, self.per_dim))


def _coupling_split(latent_dim: int, step: int) -> Tuple[int, bool]:
    """``(h, flip)``: even steps condition on ``z[:h]`` and transform ``z[h:]``, odd steps
    (``flip``) the other way round, ``h = D // 2``; with ``D = 1`` every step transforms ``z``."""
    return latent_dim // 2, latent_dim > 1 and step % 2 == 1


class SplineCouplingStep(CachedLadjTransform):
    """One spline coupling step: ``z'_b = spline(z_b; net(z_a))``, ``z'_a = z_a``.

    Even steps (``flip=False``): ``a = z[:h]``, ``b = z[h:]``; odd steps the halves swap roles.
    Direction ``z -> z'``; the inverse is analytic and parallel (``z_a`` passes through unchanged,
    so the splines of the inverse are those of the forward map).

    Args:
        net: ``net(z_a) -> raw (..., |b|, 3K - 1)``.
        split: ``h``.
        flip: whether ``z[h:]`` conditions ``z[:h]``.
        count_bins: ``K``.
        bound: the tail bound ``B``.
        bin_scale: the factor of the raw widths and heights (``1 / sqrt(last hidden width)``).
    """

    def __init__(
        self,
        net: Callable[[torch.Tensor], torch.Tensor],
        split: int,
        flip: bool,
        count_bins: int,
        bound: float,
        bin_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.net, self.split, self.flip = net, split, flip
        self.count_bins, self.bound, self.bin_scale = count_bins, bound, bin_scale

    def _halves(self, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        first, second = z[..., : self.split], z[..., self.split :]
        return (second, first) if self.flip else (first, second)  # (conditioning, transformed)

    def _join(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([b, a] if self.flip else [a, b], dim=-1)

    def _apply(self, z: torch.Tensor, inverse: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        a, b = self._halves(z)
        widths, heights, derivatives = _split_raw(self.net(a), self.count_bins)
        widths, heights = widths * self.bin_scale, heights * self.bin_scale
        b, ladj = rational_quadratic_spline(b, widths, heights, derivatives, self.bound, inverse)
        return self._join(a, b), ladj.sum(-1)

    def _call(self, z: torch.Tensor) -> torch.Tensor:
        y, self._cached_ladj = self._apply(z, inverse=False)
        return y

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        z, _ = self._apply(y, inverse=True)
        self._cached_ladj = None
        return z


def _coupling_nets(
    latent_dim: int, num_flows: int, context_dim: int, hidden_dims: Sequence[int], count_bins: int
) -> nn.ModuleList:
    hidden_dims = check_dims("hidden_dims", hidden_dims, allow_empty=True)
    nets = []
    for step in range(num_flows):
        split, flip = _coupling_split(latent_dim, step)
        n_in = latent_dim - split if flip else split
        nets.append(_CouplingNet(n_in, context_dim, hidden_dims, latent_dim - n_in, count_bins))
    return nn.ModuleList(nets)


def _zero_coupling_outputs(nets: nn.ModuleList) -> None:
    """Zero each conditioner's output layer (or its learned raw parameters): every spline the identity."""
    with torch.no_grad():
        for net in nets:
            linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
            for param in linears[-1].parameters() if linears else net.parameters():
                param.zero_()


def _check_zero_init(zero_init: bool) -> bool:
    if not isinstance(zero_init, bool):
        raise ValueError(f"spline: zero_init must be True or False, got {zero_init!r}")
    return zero_init


class AmortizedSplineCoupling(AmortizedFlow):
    """Spline coupling flow whose conditioners also take the context (encoder features).

    Direction ``z_0 -> z_K``. Step ``k`` transforms one half of ``z`` by splines whose bins come
    from an MLP of the other half and ``h``; the halves alternate between steps, so two steps
    transform every dimension. ``log|det| = sum over the transformed half of log spline'``.

    Args:
        latent_dim: ``D``.
        num_flows: number of steps ``K``, each with its own MLP.
        context_dim: ``C``.
        hidden_dims: the MLPs' hidden widths, ELU activations (``()``: one linear map).
        count_bins: spline bins ``K >= 2`` (Pyro's and zuko's 8).
        bound: tail bound ``B > 0``; identity outside ``[-B, B]`` (Pyro's 3).

    Example:
        >>> flow = AmortizedSplineCoupling(4, 2, context_dim=8, hidden_dims=(16,))
        >>> stack = flow.condition(torch.randn(3, 8))
        >>> y = torch.randn(3, 4)  # any value: the inverse is analytic
        >>> z = stack.inv(y); torch.allclose(stack(z), y, atol=1e-5)
        True

    References:
        Durkan, Bekasov, Murray & Papamakarios, "Neural Spline Flows", NeurIPS 2019.
    """

    def __init__(
        self,
        latent_dim: int,
        num_flows: int,
        context_dim: int,
        hidden_dims: Sequence[int] = (320, 320),
        count_bins: int = 8,
        bound: float = 3.0,
    ) -> None:
        super().__init__("spline-coupling", latent_dim, num_flows, context_dim, invertible=True)
        self.count_bins, self.bound = _check_spline_options(count_bins, bound)
        self.nets = _coupling_nets(latent_dim, num_flows, context_dim, hidden_dims, self.count_bins)
        self.bin_scale = _bin_scale(hidden_dims)

    def steps(self, context: torch.Tensor) -> List[Transform]:
        return [
            SplineCouplingStep(
                partial(net, context=context),
                *_coupling_split(self.latent_dim, k),
                self.count_bins,
                self.bound,
                self.bin_scale,
            )
            for k, net in enumerate(self.nets)
        ]


class GlobalSplineCoupling(GlobalFlow):
    """Spline coupling flow with conditioners of ``z`` alone. Direction ``z_0 -> z_K``.

    Args:
        latent_dim: ``D``.
        num_flows: number of steps ``K``.
        hidden_dims: the MLPs' hidden widths (``()``: one linear map).
        count_bins: spline bins ``K >= 2``.
        bound: tail bound ``B > 0``.
        zero_init: zero the conditioners' output layers, so that every step starts as the identity.

    Example:
        >>> flow = GlobalSplineCoupling(2, 4, hidden_dims=(8,))
        >>> z = torch.randn(5, 2); y = flow(z)
        >>> flow.log_abs_det_jacobian(z, y).shape
        torch.Size([5])
    """

    def __init__(
        self,
        latent_dim: int,
        num_flows: int,
        hidden_dims: Sequence[int] = (320, 320),
        count_bins: int = 8,
        bound: float = 3.0,
        zero_init: bool = False,
    ) -> None:
        super().__init__("spline-coupling", latent_dim, num_flows, invertible=True)
        self.count_bins, self.bound = _check_spline_options(count_bins, bound)
        self.nets = _coupling_nets(latent_dim, num_flows, 0, hidden_dims, self.count_bins)
        self.bin_scale = _bin_scale(hidden_dims)
        if _check_zero_init(zero_init):
            _zero_coupling_outputs(self.nets)

    def steps(self) -> List[Transform]:
        return [
            SplineCouplingStep(net, *_coupling_split(self.latent_dim, k), self.count_bins, self.bound, self.bin_scale)
            for k, net in enumerate(self.nets)
        ]
