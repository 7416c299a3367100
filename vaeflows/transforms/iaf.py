"""Inverse autoregressive flows (Kingma et al. 2016): the gated update, or the affine one.

One step: ``(m, s) = MADE(z[, h])``, then one of two updates (``update=``):

- ``"gated"`` (the default; Kingma et al.'s numerically stable form): ``gate = sigmoid(s +
  sigmoid_bias)``, ``z' = gate * z + (1 - gate) * m``, ``log|det| = sum_i log gate_i``
  (``sigmoid_bias = 1`` as in van den Berg et al. 2018's code, the "forget bias"). Each step
  contracts (``gate < 1``) and its shift is tied to ``1 - gate``.
- ``"affine"`` (the form of MAF, Papamakarios et al. 2017, Pyro's ``AffineAutoregressive`` and
  zuko's ``MAF``): ``a = s / (1 + |s| / A)``, ``z' = exp(a) * z + m``, ``log|det| = sum_i a_i``,
  with the soft clamp ``|a| < A = 7`` of zuko's ``MonotonicAffineTransform`` (a minimum slope
  ``exp(-7) ~ 1e-3``); a step may expand as well as contract, with a free shift.

Initialization (``zero_init=``): by default the affine update's MADEs start with a zero output
layer (weights and biases), so that every step starts as the identity and the flow as its base,
as Glow's last layers do (Kingma & Dhariwal 2018); the gated update keeps the MADEs' random
initialization (Kingma et al.'s; with a zero output layer a gated step starts as the contraction
``z' = sigmoid(sigmoid_bias) z``). With two steps of width ``3 D + 1`` on Pyro's banana, the random
output layer of Pyro's and zuko's MADEs leaves some seeds near -0.3 nats, the zero one none
(``benchmarks/results/pyro_guides_standard.md``).

The MADEs are Pyro's
(:class:`~pyro.nn.AutoRegressiveNN`, ELU activations as Kingma et al.'s, or ReLU as Pyro's
``AutoIAFNormal`` and zuko's ``MAF``: ``activation=``; the conditional one takes the encoder's
features as an extra input of its first layer). The step is :class:`IAFStep`, the same maths as
Pyro's ``AffineAutoregressive(stable=True)``, whose inverse builds its buffer in the default
dtype and so fails on float64 inputs in Pyro 1.9.2. The variable order is reversed every other
step (``reverse_order=True``). The inverse is exact but sequential over the ``D`` dimensions.

References:
    Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling, "Improving Variational Inference
    with Inverse Autoregressive Flow", NeurIPS 2016.
    Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018.
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple, cast

import torch
import torch.nn.functional as F
from pyro.nn import AutoRegressiveNN, ConditionalAutoRegressiveNN
from torch import nn
from torch.distributions import Transform

from vaeflows.checks import check_dims, check_real

from .base import AmortizedFlow, CachedLadjTransform, GlobalFlow

__all__ = ["IAF_UPDATES", "IAF_ACTIVATIONS", "IAFStep", "AmortizedIAF", "GlobalIAF"]

#: The IAF step's update rules (``update=``).
IAF_UPDATES = ("gated", "affine")

#: The MADEs' hidden activations (``activation=``): name -> module class.
IAF_ACTIVATIONS: Dict[str, Callable[[], nn.Module]] = {"elu": nn.ELU, "relu": nn.ReLU}

#: ``A``, the bound of the affine update's soft-clamped log-scale (zuko's ``-log(1e-3)``, rounded).
MAX_LOG_SCALE = 7.0


class IAFStep(CachedLadjTransform):
    """One IAF step: gated ``z' = gate * z + (1 - gate) * m``, ``gate = sigmoid(s + sigmoid_bias)``,
    or affine ``z' = exp(a) * z + m``, ``a = s / (1 + |s| / 7)`` (see :mod:`.iaf`).

    Args:
        made: ``made(z) -> (m, s)``, autoregressive in the order ``permutation``.
        permutation: the MADE's variable order (the inverse fills ``z`` in this order).
        sigmoid_bias: the gate's bias (gated update only).
        update: ``"gated"`` or ``"affine"``.
    """

    def __init__(
        self,
        made: Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor]],
        permutation: torch.Tensor,
        sigmoid_bias: float,
        update: str = "gated",
    ) -> None:
        super().__init__()
        self.made = made
        self.permutation = permutation
        self.sigmoid_bias = sigmoid_bias
        self.affine = update == "affine"

    def _scale(self, s: torch.Tensor, m: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log multiplier, multiplier, shift)`` of ``z' = multiplier * z + shift``."""
        if self.affine:
            log_scale = s / (1 + s.abs() / MAX_LOG_SCALE)
            return log_scale, log_scale.exp(), m
        logit = s + self.sigmoid_bias
        gate = torch.sigmoid(logit)
        return F.logsigmoid(logit), gate, (1 - gate) * m

    def _call(self, z: torch.Tensor) -> torch.Tensor:
        mean, s = self.made(z)
        log_scale, scale, shift = self._scale(s, mean)
        self._cached_ladj = log_scale.sum(-1)
        return scale * z + shift

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        # z_i = (y_i - shift_i) / multiplier_i, where both depend on z_<i (the MADE's order)
        columns = [y.new_zeros(y.shape[:-1])] * y.shape[-1]
        for i in self.permutation.tolist():
            mean, s = self.made(torch.stack(columns, dim=-1))
            _, scale, shift = self._scale(s[..., i], mean[..., i])
            columns[i] = (y[..., i] - shift) / scale
        self._cached_ladj = None
        return torch.stack(columns, dim=-1)


def _check_update(update: str, sigmoid_bias: Optional[float]) -> float:
    """The gate's bias for ``update`` (1 unless given); refuses a bias for the affine update."""
    if update not in IAF_UPDATES:
        raise ValueError(f"iaf: unknown update {update!r}; known: {', '.join(IAF_UPDATES)}")
    if update == "affine" and sigmoid_bias is not None:
        raise ValueError("iaf: sigmoid_bias applies to update='gated' only (the affine update has no gate)")
    return 1.0 if sigmoid_bias is None else check_real("sigmoid_bias", sigmoid_bias)


def _check_zero_init(update: str, zero_init: Optional[bool]) -> bool:
    """Whether to zero the MADEs' output layers: ``zero_init``, or by default for the affine update."""
    if zero_init is None:
        return update == "affine"
    if not isinstance(zero_init, bool):
        raise ValueError(f"iaf: zero_init must be True, False or None (the update's default), got {zero_init!r}")
    return zero_init


def _zero_outputs(mades: nn.ModuleList) -> None:
    """Zero the output layer (weights and biases) of each of Pyro's MADEs: ``(m, s) = (0, 0)``."""
    with torch.no_grad():
        for made in mades:
            output = cast(nn.Linear, cast(nn.ModuleList, made.layers)[-1])
            output.weight.zero_()
            output.bias.zero_()


def _order(latent_dim: int, step: int, reverse_order: bool) -> torch.Tensor:
    order = torch.arange(latent_dim)
    return order.flip(0) if reverse_order and step % 2 == 1 else order


def _permutation(made: nn.Module) -> torch.Tensor:
    """The autoregressive order of one of Pyro's MADEs (its ``permutation`` buffer)."""
    return cast(torch.Tensor, made.permutation)


def _mades(
    latent_dim: int,
    num_flows: int,
    context_dim: int,
    hidden_dims: Sequence[int],
    reverse_order: bool,
    activation: str = "elu",
) -> nn.ModuleList:
    """One MADE per step (``context_dim = 0``: unconditional), after checking their widths."""
    hidden_dims = check_dims("hidden_dims", hidden_dims)
    if activation not in IAF_ACTIVATIONS:
        raise ValueError(f"iaf: unknown activation {activation!r}; known: {', '.join(IAF_ACTIVATIONS)}")
    if min(hidden_dims) < latent_dim:
        raise ValueError(
            f"iaf: every MADE hidden size must be >= latent_dim={latent_dim} (each unit sees a "
            f"prefix of the order), got hidden_dims={hidden_dims}: widen them or lower latent_dim"
        )
    return nn.ModuleList(
        _made(latent_dim, context_dim, hidden_dims, _order(latent_dim, k, reverse_order), IAF_ACTIVATIONS[activation])
        for k in range(num_flows)
    )


def _made(
    latent_dim: int,
    context_dim: int,
    hidden_dims: Sequence[int],
    order: torch.Tensor,
    activation: Callable[[], nn.Module],
) -> nn.Module:
    # Pyro annotates the order with the legacy class torch.LongTensor; it means an int64 tensor.
    permutation = cast(torch.LongTensor, order)
    with warnings.catch_warnings():  # Pyro warns for D = 1, a legitimate (conditional) affine map
        warnings.filterwarnings("ignore", message=".*input_dim = 1.*")
        if context_dim:
            return ConditionalAutoRegressiveNN(
                latent_dim, context_dim, list(hidden_dims), permutation=permutation, nonlinearity=activation()
            )
        return AutoRegressiveNN(latent_dim, list(hidden_dims), permutation=permutation, nonlinearity=activation())


class AmortizedIAF(AmortizedFlow):
    """IAF whose MADEs take the context (encoder features) as an extra input of their first layer.

    Direction ``z_0 -> z_K``. ``.condition(context)`` gives the stack for contexts ``(..., C)``.

    Args:
        latent_dim: ``D``.
        num_flows: number of steps ``K``, each with its own MADE.
        context_dim: ``C``.
        hidden_dims: MADE hidden widths, at least one, each ``>= D`` (the paper: 320).
        reverse_order: reverse the autoregressive order every other step.
        sigmoid_bias: added to ``s`` before the gate's sigmoid (default 1; gated update only).
        update: ``"gated"`` (Kingma et al.) or ``"affine"`` (MAF's form, soft-clamped scale).
        activation: the MADEs' hidden activation, ``"elu"`` (Kingma et al.) or ``"relu"``.
        zero_init: zero the MADEs' output layers (an affine step then starts as the identity);
            ``None``: ``True`` for the affine update, ``False`` for the gated one.

    Example:
        >>> flow = AmortizedIAF(latent_dim=4, num_flows=2, context_dim=8, hidden_dims=(16,))
        >>> stack = flow.condition(torch.randn(3, 8))
        >>> z = stack(torch.randn(3, 4)); stack.log_abs_det_jacobian(None, z).shape  # doctest: +SKIP
    """

    def __init__(
        self,
        latent_dim: int,
        num_flows: int,
        context_dim: int,
        hidden_dims: Sequence[int] = (320, 320),
        reverse_order: bool = True,
        sigmoid_bias: Optional[float] = None,
        update: str = "gated",
        activation: str = "elu",
        zero_init: Optional[bool] = None,
    ) -> None:
        super().__init__("iaf", latent_dim, num_flows, context_dim, invertible=True)
        self.sigmoid_bias = _check_update(update, sigmoid_bias)
        self.update = update
        self.mades = _mades(latent_dim, num_flows, context_dim, hidden_dims, reverse_order, activation)
        if _check_zero_init(update, zero_init):
            _zero_outputs(self.mades)

    def steps(self, context: torch.Tensor) -> List[Transform]:
        return [
            IAFStep(partial(made, context=context), _permutation(made), self.sigmoid_bias, self.update)
            for made in self.mades
        ]


class GlobalIAF(GlobalFlow):
    """IAF with MADEs of ``z`` alone, shared by all data points. Direction ``z_0 -> z_K``.

    Args:
        latent_dim: ``D``.
        num_flows: number of steps ``K``.
        hidden_dims: MADE hidden widths, at least one, each ``>= D``.
        reverse_order: reverse the autoregressive order every other step.
        sigmoid_bias: added to ``s`` before the gate's sigmoid (default 1; gated update only).
        update: ``"gated"`` (Kingma et al.) or ``"affine"`` (MAF's form, soft-clamped scale).
        activation: the MADEs' hidden activation, ``"elu"`` (Kingma et al.) or ``"relu"``.
        zero_init: zero the MADEs' output layers (an affine step then starts as the identity);
            ``None``: ``True`` for the affine update, ``False`` for the gated one.

    Example:
        >>> flow = GlobalIAF(latent_dim=3, num_flows=2, hidden_dims=(8,), update="affine")
        >>> z0 = torch.randn(5, 3)
        >>> z = flow(z0)  # a Pyro TransformModule: TransformedDistribution(base, [flow])
        >>> torch.allclose(flow.inv(z), z0, atol=1e-5), flow.log_abs_det_jacobian(z0, z).shape
        (True, torch.Size([5]))
    """

    def __init__(
        self,
        latent_dim: int,
        num_flows: int,
        hidden_dims: Sequence[int] = (320, 320),
        reverse_order: bool = True,
        sigmoid_bias: Optional[float] = None,
        update: str = "gated",
        activation: str = "elu",
        zero_init: Optional[bool] = None,
    ) -> None:
        super().__init__("iaf", latent_dim, num_flows, invertible=True)
        self.sigmoid_bias = _check_update(update, sigmoid_bias)
        self.update = update
        self.mades = _mades(latent_dim, num_flows, 0, hidden_dims, reverse_order, activation)
        if _check_zero_init(update, zero_init):
            _zero_outputs(self.mades)

    def steps(self) -> List[Transform]:
        return [IAFStep(made, _permutation(made), self.sigmoid_bias, self.update) for made in self.mades]
