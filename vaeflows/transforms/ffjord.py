"""Continuous normalizing flows (FFJORD): ``dz/dt = f(z, t[, h])`` solved by torchdiffeq.

A CNF step maps ``z(0)`` to ``z(T)``, the solution of ``dz/dt = f(z(t), t, h)`` over ``[0, T]``
(direction: base noise to posterior sample; the inverse integrates from ``T`` back to ``0``).
By the instantaneous change of variables (Chen et al. 2018),

    log|det dz(T)/dz(0)| = integral_0^T tr(df/dz(z(t), t)) dt,

integrated together with ``z`` as one augmented ODE ``d(z, a)/dt = (f, tr(df/dz))``, ``a(0) = 0``.
The trace is (``trace=``):

* ``"exact"``: ``sum_i df_i/dz_i`` by ``D`` vector-Jacobian products per function evaluation,
  for small ``D``; with tight ``rtol``/``atol`` the log-det is exact up to the solver's tolerance
  (``log_det_kind == "ode"``);
* ``"hutchinson"``: ``e^T (df/dz) e`` with one ``e ~ N(0, I)`` drawn per solve and held fixed
  over it (Grathwohl et al. 2019): an unbiased estimate of the log-det (``"stochastic"``).

``eval_trace`` (default: ``trace``) is used while the module is in ``eval()`` mode. The solver is
``torchdiffeq.odeint`` (``method="dopri5"``, ``rtol``, ``atol``; ``adjoint=True`` uses
``odeint_adjoint``, whose memory does not grow with the number of solver steps); ``net.nfe``
counts the function evaluations of the last solve.

Conditioning on a context (the encoder's features in a VAE): the FFJORD paper's VAE produces the
ODE net's parameters from the encoder; vaeflows makes the simpler, documented choice of feeding
the context ``h`` and the time ``t`` as extra inputs of **every** layer of ``f``
(``ConcatLinear``: ``W [x, t, h] + b``, FFJORD's "concat" layer), so one net serves all data
points.

torchdiffeq is an optional dependency: ``pip install 'vaeflows[cnf]'``.

References:
    Chen, Rubanova, Bettencourt, Duvenaud, "Neural Ordinary Differential Equations", NeurIPS 2018.
    Grathwohl, Chen, Bettencourt, Sutskever, Duvenaud, "FFJORD: Free-form Continuous Dynamics for
    Scalable Reversible Generative Models", ICLR 2019.
    Hutchinson, "A stochastic estimator of the trace of the influence matrix for Laplacian
    smoothing splines", 1989.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple, cast

import torch
from torch import nn
from torch.distributions import Transform

from vaeflows.checks import check_dims, check_real

from .base import AmortizedFlow, FunctionStep, GlobalFlow, with_defaults
from .residual import exact_jacobian

__all__ = [
    "TRACE_MODES",
    "ODENet",
    "CNFStep",
    "AmortizedFFJORD",
    "GlobalFFJORD",
    "SOLVE_DEFAULTS",
    "check_solver",
    "cnf_integrate",
    "require_torchdiffeq",
]

Tensor = torch.Tensor

#: The trace modes of a CNF step.
TRACE_MODES = ("exact", "hutchinson")

ACTIVATIONS: Dict[str, Callable[[], nn.Module]] = {"tanh": nn.Tanh, "softplus": nn.Softplus, "elu": nn.ELU}


def require_torchdiffeq():
    """The ``torchdiffeq`` module, or an ImportError naming the extra that installs it."""
    try:
        import torchdiffeq
    except ImportError:
        raise ImportError(
            "the ffjord flow (continuous normalizing flow) needs torchdiffeq, an optional dependency: "
            "pip install 'vaeflows[cnf]' (or pip install torchdiffeq)"
        ) from None
    return torchdiffeq


#: :func:`cnf_integrate`'s solver options and their defaults (FFJORD's).
SOLVE_DEFAULTS = dict(method="dopri5", rtol=1e-5, atol=1e-5, adjoint=False, solver_options=None)


def check_solver(time_length: float, rtol: float, atol: float) -> None:
    """Raise a ValueError naming ``time_length``, ``rtol`` or ``atol`` unless each is finite and > 0."""
    for name, value in (("time_length", time_length), ("rtol", rtol), ("atol", atol)):
        check_real(name, value, above=0)


class ODENet(nn.Module):
    """The vector field ``f(z, t[, h])``, ``(..., D) -> (..., D)``: an MLP whose every layer takes
    ``[x, t, h]`` (FFJORD's concat layers).

    Args:
        dim: ``D``.
        hidden_dims: hidden widths.
        context_dim: size of the context, or ``None``.
        activation: ``"tanh"`` (default), ``"softplus"`` or ``"elu"``.
    """

    def __init__(
        self,
        dim: int,
        hidden_dims: Sequence[int] = (64, 64),
        context_dim: Optional[int] = None,
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")
        extra = 1 + (context_dim or 0)
        sizes = [dim, *check_dims("hidden_dims", hidden_dims, allow_empty=True), dim]
        self.layers = nn.ModuleList(nn.Linear(n_in + extra, n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:]))
        self.activations = nn.ModuleList(ACTIVATIONS[activation]() for _ in hidden_dims)
        self.context_dim = context_dim
        self.nfe = 0

    def forward(self, t: Tensor, z: Tensor, context: Optional[Tensor] = None) -> Tensor:
        lead = z.shape[:-1]
        inputs = [t.to(z).expand(*lead, 1)]
        if context is not None:
            inputs.append(context.expand(*lead, context.shape[-1]))
        extra = torch.cat(inputs, dim=-1)
        x = z
        for k, layer in enumerate(self.layers):
            x = layer(torch.cat([x, extra], dim=-1))
            if k < len(self.activations):
                x = self.activations[k](x)
        return x


class _Augmented(nn.Module):
    """``(t, (z, a)) -> (f(z, t, h), tr(df/dz))`` for the solver (an ``nn.Module`` for the adjoint)."""

    def __init__(self, net: ODENet, context: Optional[Tensor], trace: str, noise: Optional[Tensor]) -> None:
        super().__init__()
        self.net = net
        self.context = context
        self.trace = trace
        self.noise = noise

    def forward(self, t: Tensor, state: Tuple[Tensor, Tensor]) -> Tuple[Tensor, Tensor]:
        self.net.nfe += 1
        z = state[0]
        grad_on = torch.is_grad_enabled()
        with torch.enable_grad():
            if not (grad_on and z.requires_grad):  # no graph to keep (e.g. the adjoint's forward)
                z = z.detach().requires_grad_(True)
            dz = self.net(t, z, self.context)
            if self.trace == "exact":
                trace = torch.diagonal(exact_jacobian(dz, z, create_graph=grad_on), dim1=-2, dim2=-1).sum(-1)
            else:
                noise = self.noise
                assert noise is not None, "cnf_integrate draws the noise of the hutchinson trace"
                vjp = torch.autograd.grad(dz, z, noise, retain_graph=True, create_graph=grad_on)[0]
                trace = (vjp * noise).sum(-1)
        if not grad_on:
            dz = dz.detach()
        return dz, trace


def cnf_integrate(
    net: ODENet,
    z: Tensor,
    context: Optional[Tensor] = None,
    t0: float = 0.0,
    t1: float = 0.5,
    trace: str = "exact",
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    adjoint: bool = False,
    solver_options: Optional[dict] = None,
) -> Tuple[Tensor, Tensor]:
    """Integrate ``dz/dt = net(t, z, context)`` from ``t0`` to ``t1``.

    Returns ``z(t1)`` and ``integral_{t0}^{t1} tr(df/dz) dt`` (``= log|det dz(t1)/dz(t0)|``; for
    ``t1 < t0`` it is ``-log|det dz(t0)/dz(t1)|``), shapes ``z.shape`` and ``z.shape[:-1]``.
    ``context`` broadcasts against ``z``'s leading dims.
    """
    if trace not in TRACE_MODES:
        raise ValueError(f"unknown trace {trace!r}; known: {', '.join(TRACE_MODES)}")
    torchdiffeq = require_torchdiffeq()
    noise = torch.randn_like(z) if trace == "hutchinson" else None
    func = _Augmented(net, context, trace, noise)
    times = torch.tensor([t0, t1], dtype=z.dtype, device=z.device)
    state = (z, z.new_zeros(z.shape[:-1]))
    net.nfe = 0
    kwargs = dict(rtol=rtol, atol=atol, method=method, options=solver_options)
    if adjoint:
        params: Tuple[Tensor, ...] = tuple(net.parameters())
        if context is not None and context.requires_grad:
            params = params + (context,)
        z_t, a_t = torchdiffeq.odeint_adjoint(func, state, times, adjoint_params=params, **kwargs)
    else:
        z_t, a_t = torchdiffeq.odeint(func, state, times, **kwargs)
    return z_t[-1], a_t[-1]


class CNFStep(FunctionStep):
    """One CNF step ``z(0) -> z(T)`` as a Pyro/torch transform; the inverse integrates ``T -> 0``.

    The log-det comes from the same solve and is cached with it; after an inverse it is
    recomputed by a forward solve at the recovered input.

    Args:
        net: the vector field.
        context: the context ``(..., C)`` or ``None``.
        options: ``time_length``, ``trace``, ``method``, ``rtol``, ``atol``, ``adjoint``,
            ``solver_options`` (see :func:`cnf_integrate`).
    """

    def __init__(self, net: ODENet, context: Optional[Tensor], options: dict) -> None:
        options = dict(options)
        self.time_length = options.pop("time_length")
        super().__init__(partial(cnf_integrate, net, context=context, t0=0.0, t1=self.time_length, **options))
        self.net = net
        self.context = context
        self.options = options

    def _inverse(self, y: Tensor) -> Tensor:
        self._cached_ladj = None
        return cnf_integrate(self.net, y, self.context, self.time_length, 0.0, **self.options)[0]


class _FFJORDFlow:
    """What the amortized and global FFJORD flows share."""

    training: bool  # the nn.Module's flag (the flows that use this mixin are modules)

    #: Why a JIT trace cannot record this flow (see :func:`~vaeflows.transforms.base.check_traceable`).
    untraceable = "its ODE solver chooses its steps on the host and its trace calls torch.autograd.grad"

    def _setup(
        self,
        latent_dim: int,
        num_flows: int,
        context_dim: Optional[int],
        hidden_dims: Sequence[int],
        activation: str,
        time_length: float,
        trace: str,
        eval_trace: Optional[str],
        method: str,
        rtol: float,
        atol: float,
        adjoint: bool,
        solver_options: Optional[dict],
    ) -> None:
        require_torchdiffeq()
        for label, mode in (("trace", trace), ("eval_trace", eval_trace or trace)):
            if mode not in TRACE_MODES:
                raise ValueError(f"unknown {label} {mode!r}; known: {', '.join(TRACE_MODES)}")
        check_solver(time_length, rtol, atol)
        self.nets = nn.ModuleList(ODENet(latent_dim, hidden_dims, context_dim, activation) for _ in range(num_flows))
        self.trace = trace
        self.eval_trace = eval_trace or trace
        self.solve_options = dict(
            time_length=time_length,
            method=method,
            rtol=rtol,
            atol=atol,
            adjoint=adjoint,
            solver_options=solver_options,
        )

    @property
    def log_det_kind(self) -> str:
        """``"ode"`` with the exact trace (exact up to the solver's tolerance), else ``"stochastic"``."""
        return "ode" if (self.trace if self.training else self.eval_trace) == "exact" else "stochastic"

    @property
    def nfe(self) -> int:
        """Function evaluations of the last solve of each step, summed over the steps."""
        return sum(net.nfe for net in self._nets())

    def _nets(self) -> Sequence[ODENet]:
        return cast(Sequence[ODENet], self.nets)  # what _setup put in the ModuleList

    def _steps(self, context: Optional[Tensor]) -> List[Transform]:
        trace = self.trace if self.training else self.eval_trace
        return [CNFStep(net, context, {**self.solve_options, "trace": trace}) for net in self._nets()]


_FFJORD_ARGS = """
    Args:
        latent_dim: ``D``.
        num_flows: number of CNF steps ``K`` (FFJORD's blocks), each with its own ``f``.
        hidden_dims: hidden widths of each ``f`` (default ``(64, 64)``).
        activation: ``"tanh"`` (default), ``"softplus"`` or ``"elu"``.
        time_length: ``T`` (default 0.5, FFJORD's).
        trace: ``"hutchinson"`` (default) or ``"exact"``, in training.
        eval_trace: the trace in ``eval()`` mode (default: ``trace``).
        method: torchdiffeq solver (default ``"dopri5"``).
        rtol: relative tolerance (default 1e-5, FFJORD's).
        atol: absolute tolerance (default 1e-5).
        adjoint: use ``odeint_adjoint``.
        solver_options: torchdiffeq's ``options`` (e.g. ``{"step_size": 0.1}`` for fixed-step methods).
"""

_DEFAULTS = dict(
    hidden_dims=(64, 64), activation="tanh", time_length=0.5, trace="hutchinson", eval_trace=None, **SOLVE_DEFAULTS
)


class AmortizedFFJORD(_FFJORDFlow, AmortizedFlow):
    __doc__ = (
        """FFJORD posterior whose vector field takes the context (encoder features) at every layer.

    Direction ``z_0 -> z_K``; ``.condition(context)`` gives the stack for contexts ``(..., C)``.
    """
        + _FFJORD_ARGS
        + """        context_dim: ``C``.

    Example:
        >>> flow = AmortizedFFJORD(latent_dim=2, num_flows=1, context_dim=3, hidden_dims=(8,))
        >>> stack = flow.condition(torch.randn(4, 3))
        >>> z0 = torch.randn(4, 2); z = stack(z0); stack.log_abs_det_jacobian(z0, z).shape
        torch.Size([4])
    """
    )

    def __init__(self, latent_dim: int, num_flows: int, context_dim: int, **options) -> None:
        super().__init__("ffjord", latent_dim, num_flows, context_dim, invertible=True)
        self._setup(latent_dim, num_flows, context_dim, **with_defaults(options, _DEFAULTS))

    def steps(self, context: Tensor) -> List[Transform]:
        return self._steps(context)


class GlobalFFJORD(_FFJORDFlow, GlobalFlow):
    __doc__ = (
        """FFJORD flow with a vector field of ``(z, t)`` alone. Direction ``z_0 -> z_K``.
    """
        + _FFJORD_ARGS
    )

    def __init__(self, latent_dim: int, num_flows: int, **options) -> None:
        super().__init__("ffjord", latent_dim, num_flows, invertible=True)
        self._setup(latent_dim, num_flows, None, **with_defaults(options, _DEFAULTS))

    def steps(self) -> List[Transform]:
        return self._steps(None)
