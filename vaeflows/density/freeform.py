"""Density flows with free-form Jacobians: invertible residual blocks and FFJORD's continuous flows.

Both reuse the posterior flows' maths (:mod:`vaeflows.transforms.residual`,
:mod:`vaeflows.transforms.ffjord`) as :class:`~.layers.Bijection` layers on vectors ``(D,)``
(images are flattened by the builders: no multi-scale versions here; FFJORD's field can be
convolutional on the flattened image, ``image_shape``).

* :class:`ResidualBlock`: as in i-ResNet and Residual Flows, the residual map runs **data to
  noise**, ``z = x + g(x)``, so that ``log p(x)`` needs no inverse; the noise-to-data direction
  (sampling) is the fixed-point iteration. The forward log-det is
  ``log|det dx/dz| = -log|det(I + J_g(x))|``, exact or estimated (``ladj``).
* :class:`CNFBlock`: noise to data integrates ``dz/dt = f(z, t)`` over ``[0, T]``, data to noise
  over ``[T, 0]``; the log-det is the integral of the trace (exact or Hutchinson's). RNODE's
  kinetic and Jacobian-Frobenius regularizers (``kinetic_weight``, ``jacobian_weight``), fixed-grid
  solvers (``method="rk4"``, ``solver_steps``) and a learned ``T`` (``learn_time``) are those of
  :mod:`vaeflows.transforms.ffjord`; the maximum-likelihood loss of
  :func:`~.training.train_density` adds :func:`~vaeflows.transforms.ffjord.rnode_penalty`.

Estimators in training, exact values in evaluation: ``ladj`` / ``trace`` apply in ``train()``
mode, ``eval_ladj`` / ``eval_trace`` in ``eval()`` mode (:func:`~.training.evaluate_density` and
the validation pass of ``fit`` run in eval mode). Their default is ``"exact"`` for ``D <= 16``
(cheap there) and the training estimator otherwise.

References:
    Behrmann et al., "Invertible Residual Networks", ICML 2019. Chen et al., "Residual Flows for
    Invertible Generative Modeling", NeurIPS 2019. Grathwohl et al., "FFJORD", ICLR 2019.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch

from vaeflows.transforms.base import with_defaults
from vaeflows.transforms.ffjord import (
    SOLVE_DEFAULTS,
    TRACE_MODES,
    ConvODENet,
    IntegrationTime,
    ODENet,
    VectorField,
    check_grid,
    check_rnode,
    check_solver,
    regularized_solve,
    require_torchdiffeq,
)
from vaeflows.transforms.residual import LADJ_MODES, ResidualNet, fixed_point_inverse, residual_step

from .layers import Bijection, Pair

__all__ = ["ResidualBlock", "CNFBlock", "EXACT_UP_TO_DIM"]

Tensor = torch.Tensor

#: Below this dimension the default evaluation log-det is exact.
EXACT_UP_TO_DIM = 16


def _eval_mode(mode: Optional[str], training_mode: str, dim: int) -> str:
    if mode is not None:
        return mode
    return "exact" if dim <= EXACT_UP_TO_DIM else training_mode


class ResidualBlock(Bijection):
    """An invertible residual block, data to noise ``z = x + g(x[, h])``, ``Lip(g) < 1``.

    Direction: noise to data is the fixed-point inverse ``x <- z - g(x)``; ``log|det dx/dz| =
    -log|det(I + J_g(x))|``.

    Args:
        dim: ``D``.
        hidden_dims: hidden widths of ``g``.
        context_dim: context size, or ``None``.
        ladj: log-det mode in training (``"exact"``, ``"hutchinson"``, ``"roulette"``).
        eval_ladj: log-det mode in eval mode (default: exact for ``D <= 16``, else ``ladj``).
        ladj_options: ``n_terms``, ``n_exact_terms``, ``geometric_p``.
        inverse_options: ``tol``, ``max_iter``, ``grad`` (``"implicit"``: exact gradients of
            the sampling direction, ``D`` backward passes; ``"one-step"``: cheap, approximate).
        **net_options: ``coeff``, ``activation``, ``spectral``, ``n_power_iterations`` of
            :class:`~vaeflows.transforms.residual.ResidualNet`.
    """

    def __init__(
        self,
        dim: int,
        hidden_dims=(64, 64),
        context_dim: Optional[int] = None,
        ladj: str = "roulette",
        eval_ladj: Optional[str] = None,
        ladj_options: Optional[dict] = None,
        inverse_options: Optional[dict] = None,
        **net_options,
    ) -> None:
        super().__init__(1)
        self.ladj = ladj
        self.eval_ladj = _eval_mode(eval_ladj, ladj, dim)
        for mode in (self.ladj, self.eval_ladj):
            if mode not in LADJ_MODES:
                raise ValueError(f"unknown ladj {mode!r}; known: {', '.join(LADJ_MODES)}")
        self.net = ResidualNet(dim, hidden_dims, context_dim, **net_options)
        self.ladj_options = ladj_options or {}
        self.inverse_options = inverse_options or {}

    def _mode(self) -> str:
        return self.ladj if self.training else self.eval_ladj

    def inverse_and_ladj(self, x: Tensor, context: Optional[Tensor] = None) -> Pair:
        z, ladj = residual_step(self.net.frozen(context), x, self._mode(), **self.ladj_options)
        return z, -ladj

    def forward_and_ladj(self, z: Tensor, context: Optional[Tensor] = None) -> Pair:
        g = self.net.frozen(context)
        x = fixed_point_inverse(g, z, **self.inverse_options)
        _, ladj = residual_step(g, x, self._mode(), **self.ladj_options)
        return x, -ladj


class CNFBlock(Bijection):
    """A continuous normalizing flow block: noise to data integrates ``dz/dt = f(z, t[, h])``
    over ``[0, T]``; data to noise over ``[T, 0]``.

    Args:
        dim: ``D``.
        hidden_dims: hidden widths of ``f``.
        context_dim: context size, or ``None``.
        trace: ``"exact"`` or ``"hutchinson"`` in training.
        eval_trace: the trace in eval mode (default: exact for ``D <= 16``, else ``trace``).
        activation: of ``f``.
        time_length: ``T`` (its initial value with ``learn_time``).
        kinetic_weight: RNODE's weight of ``integral ||f||^2 dt`` (0: off).
        jacobian_weight: RNODE's weight of ``integral ||df/dz||_F^2 dt`` (0: off).
        learn_time: learn ``T = softplus(raw)``.
        image_shape: ``(C, H, W)`` with ``D = C H W``: the field is
            :class:`~vaeflows.transforms.ffjord.ConvODENet` (3x3 convolutions of ``hidden_dims``
            channels) on the state seen as an image; ``None`` (default): the MLP
            :class:`~vaeflows.transforms.ffjord.ODENet`.
        **solve_options: ``method``, ``rtol``, ``atol``, ``adjoint``, ``solver_options``,
            ``solver_steps`` (equal steps of a fixed-grid ``method``: ``"euler"``, ``"midpoint"``,
            ``"rk4"``; the adaptive default is exact up to its tolerance) of
            :func:`~vaeflows.transforms.ffjord.cnf_solve`.

    Example:
        >>> block = CNFBlock(2, (8,), kinetic_weight=0.01, method="rk4", solver_steps=4, learn_time=True)
        >>> z, ladj = block.inverse_and_ladj(torch.randn(3, 2)); z.shape, ladj.shape, block.net.nfe
        (torch.Size([3, 2]), torch.Size([3]), 16)
    """

    def __init__(
        self,
        dim: int,
        hidden_dims=(64, 64),
        context_dim: Optional[int] = None,
        trace: str = "hutchinson",
        eval_trace: Optional[str] = None,
        activation: str = "tanh",
        time_length: float = 0.5,
        kinetic_weight: float = 0.0,
        jacobian_weight: float = 0.0,
        learn_time: bool = False,
        image_shape: Optional[Sequence[int]] = None,
        **solve_options,
    ) -> None:
        super().__init__(1)
        require_torchdiffeq()
        self.trace = trace
        self.eval_trace = _eval_mode(eval_trace, trace, dim)
        for mode in (self.trace, self.eval_trace):
            if mode not in TRACE_MODES:
                raise ValueError(f"unknown trace {mode!r}; known: {', '.join(TRACE_MODES)}")
        self.solve_options = with_defaults(solve_options, SOLVE_DEFAULTS)
        check_solver(time_length, self.solve_options["rtol"], self.solve_options["atol"])
        check_grid(
            self.solve_options["method"], self.solve_options["solver_steps"], self.solve_options["solver_options"]
        )
        check_rnode(kinetic_weight, jacobian_weight)
        self.net: VectorField
        if image_shape is None:
            self.net = ODENet(dim, hidden_dims, context_dim, activation)
        elif math.prod(image_shape) != dim:
            raise ValueError(f"image_shape {tuple(image_shape)} has {math.prod(image_shape)} elements, not D = {dim}")
        else:
            self.net = ConvODENet(image_shape, hidden_dims, context_dim, activation)
        self.time = IntegrationTime(time_length, learn_time)
        self.weights = dict(kinetic_weight=kinetic_weight, jacobian_weight=jacobian_weight)

    @property
    def time_length(self) -> Union[float, Tensor]:
        """``T``: a float, or a scalar tensor when learned."""
        return self.time()

    def _solve(self, v: Tensor, context: Optional[Tensor], forward: bool) -> Pair:
        trace = self.trace if self.training else self.eval_trace
        time = self.time()
        t0, t1 = (0.0, time) if forward else (time, 0.0)
        return regularized_solve(self.net, v, context, t0, t1, trace, **self.weights, **self.solve_options)

    def forward_and_ladj(self, z: Tensor, context: Optional[Tensor] = None) -> Pair:
        return self._solve(z, context, True)

    def inverse_and_ladj(self, x: Tensor, context: Optional[Tensor] = None) -> Pair:
        z, minus_ladj = self._solve(x, context, False)
        return z, -minus_ladj
