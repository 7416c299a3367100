"""Density flows with free-form Jacobians: invertible residual blocks and FFJORD's continuous flows.

Both reuse the posterior flows' maths (:mod:`vaeflows.transforms.residual`,
:mod:`vaeflows.transforms.ffjord`) as :class:`~.layers.Bijection` layers on vectors ``(D,)``
(images are flattened by the builders: no multi-scale convolutional versions here).

* :class:`ResidualBlock`: as in i-ResNet and Residual Flows, the residual map runs **data to
  noise**, ``z = x + g(x)``, so that ``log p(x)`` needs no inverse; the noise-to-data direction
  (sampling) is the fixed-point iteration. The forward log-det is
  ``log|det dx/dz| = -log|det(I + J_g(x))|``, exact or estimated (``ladj``).
* :class:`CNFBlock`: noise to data integrates ``dz/dt = f(z, t)`` over ``[0, T]``, data to noise
  over ``[T, 0]``; the log-det is the integral of the trace (exact or Hutchinson's).

Estimators in training, exact values in evaluation: ``ladj`` / ``trace`` apply in ``train()``
mode, ``eval_ladj`` / ``eval_trace`` in ``eval()`` mode (:func:`~.training.evaluate_density` and
the validation pass of ``fit`` run in eval mode). Their default is ``"exact"`` for ``D <= 16``
(cheap there) and the training estimator otherwise.

References:
    Behrmann et al., "Invertible Residual Networks", ICML 2019. Chen et al., "Residual Flows for
    Invertible Generative Modeling", NeurIPS 2019. Grathwohl et al., "FFJORD", ICLR 2019.
"""

from __future__ import annotations

from typing import Optional

import torch

from vaeflows.transforms.base import with_defaults
from vaeflows.transforms.ffjord import (
    SOLVE_DEFAULTS,
    TRACE_MODES,
    ODENet,
    check_solver,
    cnf_integrate,
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
        time_length: ``T``.
        **solve_options: ``method``, ``rtol``, ``atol``, ``adjoint``, ``solver_options`` of
            :func:`~vaeflows.transforms.ffjord.cnf_integrate`.
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
        self.net = ODENet(dim, hidden_dims, context_dim, activation)
        self.time_length = time_length

    def _solve(self, v: Tensor, context: Optional[Tensor], t0: float, t1: float) -> Pair:
        trace = self.trace if self.training else self.eval_trace
        return cnf_integrate(self.net, v, context, t0, t1, trace, **self.solve_options)

    def forward_and_ladj(self, z: Tensor, context: Optional[Tensor] = None) -> Pair:
        return self._solve(z, context, 0.0, self.time_length)

    def inverse_and_ladj(self, x: Tensor, context: Optional[Tensor] = None) -> Pair:
        z, minus_ladj = self._solve(x, context, self.time_length, 0.0)
        return z, -minus_ladj
