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
counts the function evaluations of the last solve. The adaptive methods (``dopri5``, ...) are
exact up to their tolerance; the fixed-grid ones (:data:`FIXED_GRID_SOLVERS`: ``euler``,
``midpoint``, ``rk4``) take ``solver_steps`` equal steps and are exact only as the step count
grows (their error is ``O(h)``, ``O(h^2)``, ``O(h^4)`` in the step ``h = T / solver_steps``),
with a cost known in advance (``solver_steps`` times 1, 2 or 4 evaluations).

RNODE (Finlay et al. 2020) regularizes the dynamics by two more integrals along the same solve,
carried as extra ODE states beside ``z`` and the log-det:

    kinetic energy     K = integral_0^T ||f(z(t), t)||^2 dt,
    Jacobian Frobenius J = integral_0^T ||df/dz(z(t), t)||_F^2 dt,

``||df/dz||_F^2`` exactly (from the full Jacobian) with ``trace="exact"``, else by Hutchinson's
``||e^T df/dz||^2`` with the trace's own ``e`` (unbiased: ``E[e e^T] = I``). With
``kinetic_weight`` or ``jacobian_weight`` set, every training solve (module in ``train()`` mode,
gradients on) records ``mean(kinetic_weight * K + jacobian_weight * J)`` over the batch on its
net, and :func:`rnode_penalty` collects (and clears) it for the loss: ``NLL + penalty`` for
density models, ``-ELBO + penalty`` for VAE posteriors.

The integration time ``T`` may be learned (``learn_time=True``: ``T = softplus(raw)``,
:class:`IntegrationTime`); the solve then runs on ``s in [0, 1]`` with ``dz/ds = T f(z, sT)``
(the same solution), so that ``T`` gets its exact gradient, through the adjoint as well.

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
    Finlay, Jacobsen, Nurbekyan, Oberman, "How to train your neural ODE: the world of Jacobian
    and kinetic regularization", ICML 2020.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union, cast

import torch
from torch import nn
from torch.distributions import Transform

from vaeflows.checks import check_dims, check_int, check_real

from .base import AmortizedFlow, FunctionStep, GlobalFlow, with_defaults
from .residual import exact_jacobian

__all__ = [
    "TRACE_MODES",
    "VectorField",
    "ODENet",
    "ConvODENet",
    "CNFStep",
    "AmortizedFFJORD",
    "GlobalFFJORD",
    "SOLVE_DEFAULTS",
    "RNODE_DEFAULTS",
    "FIXED_GRID_SOLVERS",
    "CNFSolution",
    "IntegrationTime",
    "check_solver",
    "check_grid",
    "check_rnode",
    "cnf_integrate",
    "cnf_solve",
    "rnode_penalty",
    "regularized_solve",
    "require_torchdiffeq",
]

Tensor = torch.Tensor
Time = Union[float, Tensor]

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
SOLVE_DEFAULTS = dict(method="dopri5", rtol=1e-5, atol=1e-5, adjoint=False, solver_options=None, solver_steps=None)

#: The RNODE options of the FFJORD flows and blocks (0: off) and ``learn_time``.
RNODE_DEFAULTS = dict(kinetic_weight=0.0, jacobian_weight=0.0, learn_time=False)

#: torchdiffeq's fixed-grid methods that ``solver_steps`` applies to (and that need it).
FIXED_GRID_SOLVERS = ("euler", "midpoint", "rk4")


def check_solver(time_length: float, rtol: float, atol: float) -> None:
    """Raise a ValueError naming ``time_length``, ``rtol`` or ``atol`` unless each is finite and > 0."""
    for name, value in (("time_length", time_length), ("rtol", rtol), ("atol", atol)):
        check_real(name, value, above=0)


def check_grid(method: str, solver_steps: Optional[int], solver_options: Optional[dict]) -> None:
    """Refuse ``solver_steps`` with an adaptive method, and a fixed-grid method given no grid.

    A fixed-grid method with neither ``solver_steps`` nor a ``step_size``/``grid_constructor`` in
    ``solver_options`` would take one single step over ``[0, T]``.
    """
    if solver_steps is not None:
        check_int("solver_steps (--solver-steps)", solver_steps, minimum=1)
        if method not in FIXED_GRID_SOLVERS:
            raise ValueError(
                f"solver_steps (--solver-steps) applies to the fixed-grid methods "
                f"{', '.join(FIXED_GRID_SOLVERS)}, not to the adaptive {method!r}: pass method='rk4' (--solver rk4)"
            )
        if solver_options and {"step_size", "grid_constructor"} & set(solver_options):
            raise ValueError("pass solver_steps or a step_size/grid_constructor in solver_options, not both")
    elif method in FIXED_GRID_SOLVERS and not (
        solver_options and {"step_size", "grid_constructor"} & set(solver_options)
    ):
        raise ValueError(
            f"the fixed-grid method {method!r} needs a number of steps: pass solver_steps=N (--solver-steps N)"
        )


def check_rnode(kinetic_weight: float, jacobian_weight: float) -> None:
    """Raise a ValueError naming the RNODE weight that is not finite and >= 0."""
    for name, value in (("kinetic_weight (--kinetic)", kinetic_weight), ("jacobian_weight", jacobian_weight)):
        if check_real(name, value) < 0:
            raise ValueError(f"{name} must be >= 0 (0: off), got {value!r}")


def _uniform_grid(steps: int) -> Callable[..., Tensor]:
    """torchdiffeq's ``grid_constructor`` of ``steps`` equal steps over the solve's interval."""

    def grid(func, y0: Tensor, t: Tensor) -> Tensor:
        out = torch.linspace(float(t[0]), float(t[-1]), steps + 1, dtype=t.dtype, device=t.device)
        out[0], out[-1] = t[0], t[-1]
        return out

    return grid


class IntegrationTime(nn.Module):
    """The integration time ``T`` of a CNF step: fixed, or learned as ``T = softplus(raw)``.

    Calling it gives ``T``: a float when fixed, a scalar tensor when learned (which the solve then
    differentiates, see :func:`cnf_solve`). A fixed time has no parameter, so models without
    ``learn_time`` keep their state dicts.

    Args:
        time_length: ``T``, or its initial value when learned (> 0).
        learn: learn ``T``.

    Example:
        >>> time = IntegrationTime(0.5, learn=True)
        >>> round(float(time().detach()), 6), [name for name, _ in time.named_parameters()]
        (0.5, ['raw'])
    """

    def __init__(self, time_length: float, learn: bool = False) -> None:
        super().__init__()
        check_real("time_length", time_length, above=0)
        self.time_length = float(time_length)
        self.learn = bool(learn)
        if self.learn:  # softplus^-1(T) = log(expm1(T))
            self.raw = nn.Parameter(torch.tensor(self.time_length).expm1().log())

    def forward(self) -> Time:
        if not self.learn:
            return self.time_length
        return nn.functional.softplus(self.raw)

    def extra_repr(self) -> str:
        return f"time_length={self.time_length}, learn={self.learn}"


def _time_and_context(t: Tensor, z: Tensor, context: Optional[Tensor]) -> Tensor:
    """``[t, h]`` of a field's every layer, ``z.shape[:-1] + (1 + K,)``."""
    lead = z.shape[:-1]
    inputs = [t.to(z).expand(*lead, 1)]
    if context is not None:
        inputs.append(context.expand(*lead, context.shape[-1]))
    return torch.cat(inputs, dim=-1)


class VectorField(nn.Module):
    """What every CNF vector field shares: layers ``L_1 .. L_L`` that each take ``[x, t, h]``
    (FFJORD's concat layers), the activation between them, the count of evaluations ``nfe`` and
    the last training solve's RNODE ``penalty`` (:func:`rnode_penalty` collects it from every
    field of a module). Subclasses give the layers and how ``[x, t, h]`` is joined.

    Args:
        sizes: ``[in, *hidden, out]`` features or channels.
        layer: ``layer(n_in, n_out)``, one layer (``n_in`` includes the ``1 + K`` of ``[t, h]``).
        context_dim: size of the context ``h``, or ``None``.
        activation: ``"tanh"``, ``"softplus"`` or ``"elu"``.
    """

    def __init__(
        self, sizes: Sequence[int], layer: Callable[[int, int], nn.Module], context_dim: Optional[int], activation: str
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")
        extra = 1 + (context_dim or 0)
        self.layers = nn.ModuleList(layer(n_in + extra, n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:]))
        self.activations = nn.ModuleList(ACTIVATIONS[activation]() for _ in sizes[2:])
        self.context_dim = context_dim
        self.nfe = 0
        self.penalty: Optional[Tensor] = None  # the last training solve's RNODE penalty

    def _stack(self, x: Tensor, extra: Tensor, dim: int) -> Tensor:
        """``L_L([... act(L_1([x, extra])) ..., extra])``, joining along ``dim``."""
        for k, layer in enumerate(self.layers):
            x = layer(torch.cat([x, extra], dim=dim))
            if k < len(self.activations):
                x = self.activations[k](x)
        return x


class ODENet(VectorField):
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
        sizes = [dim, *check_dims("hidden_dims", hidden_dims, allow_empty=True), dim]
        super().__init__(sizes, nn.Linear, context_dim, activation)

    def forward(self, t: Tensor, z: Tensor, context: Optional[Tensor] = None) -> Tensor:
        return self._stack(z, _time_and_context(t, z, context), -1)


class ConvODENet(VectorField):
    """The vector field ``f(z, t[, h])`` on images, ``(..., C H W) -> (..., C H W)``: 3x3
    convolutions whose every layer takes the image, a constant channel ``t`` and one constant
    channel per context entry (FFJORD's ``ConcatConv2d`` field of its image models)::

        x_0 = z as (C, H, W),   x_l = act(conv_l([x_{l-1}, t, h])),   f = conv_L([x_{L-1}, t, h])

    It takes and returns the flattened state, as :class:`ODENet`, so the solver, both traces, the
    RNODE regularizers and flow matching use it unchanged; the padded 3x3 convolutions keep
    ``H x W`` and make ``f`` local (each output pixel sees a ``(2L+1)^2`` neighbourhood).

    Args:
        shape: ``(C, H, W)``.
        hidden_channels: channels of the hidden convolutions.
        context_dim: size of the context, or ``None``.
        activation: ``"tanh"`` (default), ``"softplus"`` (FFJORD's on MNIST) or ``"elu"``.

    Example:
        >>> net = ConvODENet((1, 4, 4), (8, 8))
        >>> net(torch.tensor(0.5), torch.randn(3, 16)).shape
        torch.Size([3, 16])
    """

    def __init__(
        self,
        shape: Sequence[int],
        hidden_channels: Sequence[int] = (64, 64),
        context_dim: Optional[int] = None,
        activation: str = "tanh",
    ) -> None:
        if len(shape) != 3:
            raise ValueError(f"ConvODENet needs an image shape (C, H, W), got {tuple(shape)}")
        shape = tuple(check_dims("shape", shape))
        sizes = [shape[0], *check_dims("hidden_channels", hidden_channels, allow_empty=True), shape[0]]
        super().__init__(sizes, partial(nn.Conv2d, kernel_size=3, padding=1), context_dim, activation)
        self.shape = shape

    def forward(self, t: Tensor, z: Tensor, context: Optional[Tensor] = None) -> Tensor:
        x = z.reshape(-1, *self.shape)
        _, h, w = self.shape
        extra = _time_and_context(t, z, context).reshape(x.shape[0], -1, 1, 1).expand(-1, -1, h, w)
        return self._stack(x, extra, 1).reshape(*z.shape[:-1], -1)


class _Augmented(nn.Module):
    """``(t, (z, a[, k, j])) -> (f, tr(df/dz)[, ||f||^2, ||df/dz||_F^2])`` for the solver (an
    ``nn.Module`` for the adjoint).

    With ``span`` (a learned time) the variable is ``s in [0, 1]``, ``t = t0 + s span``, and every
    derivative is multiplied by ``span`` (the regularizers' by ``|span|``); else it is ``t``, and
    the regularizers' derivatives are multiplied by ``sign`` (+1 forward, -1 backward) so that
    they integrate to the positive integrals over the interval.
    """

    def __init__(
        self,
        net: VectorField,
        context: Optional[Tensor],
        trace: str,
        noise: Optional[Tensor],
        regularize: bool = False,
        t0: Optional[Tensor] = None,
        span: Optional[Tensor] = None,
        sign: float = 1.0,
    ) -> None:
        super().__init__()
        self.net = net
        self.context = context
        self.trace = trace
        self.noise = noise
        self.regularize = regularize
        self.t0 = t0
        self.span = span
        self.sign = sign

    def forward(self, t: Tensor, state: Tuple[Tensor, ...]) -> Tuple[Tensor, ...]:
        self.net.nfe += 1
        z = state[0]
        if self.span is not None:
            assert self.t0 is not None, "cnf_solve sets t0 with span"
            t = self.t0 + t * self.span
        grad_on = torch.is_grad_enabled()
        with torch.enable_grad():
            if not (grad_on and z.requires_grad):  # no graph to keep (e.g. the adjoint's forward)
                z = z.detach().requires_grad_(True)
            dz = self.net(t, z, self.context)
            if self.trace == "exact":
                jacobian = exact_jacobian(dz, z, create_graph=grad_on)
                trace = torch.diagonal(jacobian, dim1=-2, dim2=-1).sum(-1)
                frobenius = jacobian.pow(2).sum((-2, -1)) if self.regularize else None
            else:
                noise = self.noise
                assert noise is not None, "cnf_integrate draws the noise of the hutchinson trace"
                vjp = torch.autograd.grad(dz, z, noise, retain_graph=True, create_graph=grad_on)[0]
                trace = (vjp * noise).sum(-1)
                frobenius = vjp.pow(2).sum(-1) if self.regularize else None
        if not grad_on:
            dz = dz.detach()
        out: Tuple[Tensor, ...] = (dz, trace)
        if frobenius is not None:
            regs: Tuple[Tensor, ...] = (dz.pow(2).sum(-1), frobenius)
            if self.span is not None:
                regs = tuple(r * self.span.abs() for r in regs)
            elif self.sign != 1.0:
                regs = tuple(r * self.sign for r in regs)
            out = out + regs
        if self.span is not None:
            out = (dz * self.span, trace * self.span) + out[2:]
        return out


class CNFSolution(NamedTuple):
    """What :func:`cnf_solve` returns: ``z(t1)``, the log-det and, when regularized, the RNODE
    integrals (each of shape ``z.shape[:-1]``; ``None`` otherwise)."""

    z: Tensor
    log_det: Tensor
    kinetic: Optional[Tensor] = None
    jacobian: Optional[Tensor] = None


def cnf_solve(
    net: VectorField,
    z: Tensor,
    context: Optional[Tensor] = None,
    t0: Time = 0.0,
    t1: Time = 0.5,
    trace: str = "exact",
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    adjoint: bool = False,
    solver_options: Optional[dict] = None,
    solver_steps: Optional[int] = None,
    regularize: bool = False,
) -> CNFSolution:
    """Integrate ``dz/dt = net(t, z, context)`` from ``t0`` to ``t1`` with the log-det and,
    if ``regularize``, RNODE's kinetic and Jacobian-Frobenius integrals as extra states.

    ``log_det = integral_{t0}^{t1} tr(df/dz) dt`` (``= log|det dz(t1)/dz(t0)|``; negative
    direction for ``t1 < t0``); ``kinetic = integral ||f||^2 dt`` and ``jacobian = integral
    ||df/dz||_F^2 dt`` over the interval, positive whichever the direction; the Frobenius norm is
    exact with ``trace="exact"``, Hutchinson's ``||e^T df/dz||^2`` (the trace's ``e``) otherwise.

    A tensor ``t0`` or ``t1`` (a learned time) is differentiated: the solve runs on ``s in [0,
    1]``, ``t = t0 + s (t1 - t0)``. ``solver_steps`` gives the fixed-grid methods (``euler``,
    ``midpoint``, ``rk4``) that many equal steps; adaptive methods are exact up to ``rtol``/``atol``,
    fixed-grid ones only as ``solver_steps`` grows.

    Shapes: ``z`` ``(..., D)`` -> ``z`` ``(..., D)``, the others ``(...)``; ``context`` broadcasts.

    Example:
        >>> net = ODENet(2, (8,))
        >>> out = cnf_solve(net, torch.randn(3, 2), method="rk4", solver_steps=4, regularize=True)
        >>> out.z.shape, out.kinetic.shape, net.nfe
        (torch.Size([3, 2]), torch.Size([3]), 16)
    """
    if trace not in TRACE_MODES:
        raise ValueError(f"unknown trace {trace!r}; known: {', '.join(TRACE_MODES)}")
    check_grid(method, solver_steps, solver_options)
    torchdiffeq = require_torchdiffeq()
    noise = torch.randn_like(z) if trace == "hutchinson" else None
    learned = torch.is_tensor(t0) or torch.is_tensor(t1)
    if learned:
        start, end = (torch.as_tensor(t, dtype=z.dtype, device=z.device) for t in (t0, t1))
        func = _Augmented(net, context, trace, noise, regularize, start, end - start)
        times = torch.tensor([0.0, 1.0], dtype=z.dtype, device=z.device)
    else:
        sign = 1.0 if float(t1) >= float(t0) else -1.0
        func = _Augmented(net, context, trace, noise, regularize, sign=sign)
        times = torch.tensor([float(t0), float(t1)], dtype=z.dtype, device=z.device)
    zeros = z.new_zeros(z.shape[:-1])
    state: Tuple[Tensor, ...] = (z, zeros, zeros, zeros) if regularize else (z, zeros)
    net.nfe = 0
    options = dict(solver_options or {})
    if solver_steps is not None:
        options["grid_constructor"] = _uniform_grid(solver_steps)
    kwargs = dict(rtol=rtol, atol=atol, method=method, options=options or None)
    if adjoint:
        params: Tuple[Tensor, ...] = tuple(net.parameters())
        if context is not None and context.requires_grad:
            params = params + (context,)
        if learned:
            params = params + tuple(t for t in (func.t0, func.span) if t is not None and t.requires_grad)
        solution = torchdiffeq.odeint_adjoint(func, state, times, adjoint_params=params, **kwargs)
    else:
        solution = torchdiffeq.odeint(func, state, times, **kwargs)
    return CNFSolution(*(x[-1] for x in solution))


def cnf_integrate(
    net: VectorField,
    z: Tensor,
    context: Optional[Tensor] = None,
    t0: Time = 0.0,
    t1: Time = 0.5,
    trace: str = "exact",
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    adjoint: bool = False,
    solver_options: Optional[dict] = None,
    solver_steps: Optional[int] = None,
) -> Tuple[Tensor, Tensor]:
    """Integrate ``dz/dt = net(t, z, context)`` from ``t0`` to ``t1``.

    Returns ``z(t1)`` and ``integral_{t0}^{t1} tr(df/dz) dt`` (``= log|det dz(t1)/dz(t0)|``; for
    ``t1 < t0`` it is ``-log|det dz(t0)/dz(t1)|``), shapes ``z.shape`` and ``z.shape[:-1]``.
    ``context`` broadcasts against ``z``'s leading dims. See :func:`cnf_solve` (which also gives
    the RNODE integrals) for the options.
    """
    solution = cnf_solve(net, z, context, t0, t1, trace, method, rtol, atol, adjoint, solver_options, solver_steps)
    return solution.z, solution.log_det


def regularized_solve(
    net: VectorField,
    z: Tensor,
    context: Optional[Tensor],
    t0: Time,
    t1: Time,
    trace: str,
    kinetic_weight: float = 0.0,
    jacobian_weight: float = 0.0,
    **solve_options,
) -> Tuple[Tensor, Tensor]:
    """:func:`cnf_solve`, recording the weighted RNODE penalty of a training solve on ``net``.

    The penalty, ``mean(kinetic_weight * K + jacobian_weight * J)`` over the leading dims, is
    recorded (replacing the last one) when a weight is nonzero, ``net`` is in ``train()`` mode
    and gradients are on; :func:`rnode_penalty` collects it.
    """
    regularize = bool(kinetic_weight or jacobian_weight) and net.training and torch.is_grad_enabled()
    solution = cnf_solve(net, z, context, t0, t1, trace, regularize=regularize, **solve_options)
    if regularize:
        assert solution.kinetic is not None and solution.jacobian is not None
        net.penalty = (kinetic_weight * solution.kinetic + jacobian_weight * solution.jacobian).mean()
    return solution.z, solution.log_det


def rnode_penalty(module: nn.Module) -> Tensor:
    """The RNODE penalties recorded by the training solves of every CNF in ``module`` since the
    last call, summed (a scalar; 0 when none was recorded), and cleared.

    Add it to the loss: ``loss = nll + rnode_penalty(model)``. The training loops of vaeflows
    (:func:`~vaeflows.density.train_density`, :func:`~vaeflows.infer.train_vae`) do.

    Example:
        >>> flow = GlobalFFJORD(2, 1, hidden_dims=(8,), kinetic_weight=0.1, method="rk4", solver_steps=2)
        >>> z = flow(torch.randn(5, 2)); float(rnode_penalty(flow)) > 0, float(rnode_penalty(flow))
        (True, 0.0)
    """
    total: Optional[Tensor] = None
    for net in module.modules():
        if isinstance(net, VectorField) and net.penalty is not None:
            total = net.penalty if total is None else total + net.penalty
            net.penalty = None
    if total is None:
        reference = next(module.parameters(), None)
        if reference is None:
            return torch.zeros(())
        return reference.new_zeros(())
    return total


class CNFStep(FunctionStep):
    """One CNF step ``z(0) -> z(T)`` as a Pyro/torch transform; the inverse integrates ``T -> 0``.

    The log-det comes from the same solve and is cached with it; after an inverse it is
    recomputed by a forward solve at the recovered input. A forward solve in training records
    the RNODE penalty on ``net`` (see :func:`regularized_solve`).

    Args:
        net: the vector field.
        context: the context ``(..., C)`` or ``None``.
        options: ``time_length`` (a float, or a scalar tensor when learned), ``trace``,
            ``method``, ``rtol``, ``atol``, ``adjoint``, ``solver_options``, ``solver_steps``
            (see :func:`cnf_solve`), ``kinetic_weight``, ``jacobian_weight``.
    """

    def __init__(self, net: ODENet, context: Optional[Tensor], options: dict) -> None:
        options = dict(options)
        self.time_length = options.pop("time_length")
        super().__init__(partial(regularized_solve, net, context=context, t0=0.0, t1=self.time_length, **options))
        self.net = net
        self.context = context
        self.options = {k: v for k, v in options.items() if k not in ("kinetic_weight", "jacobian_weight")}

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
        solver_steps: Optional[int],
        kinetic_weight: float,
        jacobian_weight: float,
        learn_time: bool,
    ) -> None:
        require_torchdiffeq()
        for label, mode in (("trace", trace), ("eval_trace", eval_trace or trace)):
            if mode not in TRACE_MODES:
                raise ValueError(f"unknown {label} {mode!r}; known: {', '.join(TRACE_MODES)}")
        check_solver(time_length, rtol, atol)
        check_grid(method, solver_steps, solver_options)
        check_rnode(kinetic_weight, jacobian_weight)
        self.nets = nn.ModuleList(ODENet(latent_dim, hidden_dims, context_dim, activation) for _ in range(num_flows))
        self.times = nn.ModuleList(IntegrationTime(time_length, learn_time) for _ in range(num_flows))
        self.trace = trace
        self.eval_trace = eval_trace or trace
        self.solve_options = dict(
            method=method,
            rtol=rtol,
            atol=atol,
            adjoint=adjoint,
            solver_options=solver_options,
            solver_steps=solver_steps,
            kinetic_weight=kinetic_weight,
            jacobian_weight=jacobian_weight,
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
        return [
            CNFStep(net, context, {**self.solve_options, "trace": trace, "time_length": time()})
            for net, time in zip(self._nets(), self.times)
        ]


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
        solver_steps: equal steps of a fixed-grid ``method`` (``"euler"``, ``"midpoint"``,
            ``"rk4"``; exact only as the steps grow, where the adaptive default is exact up to
            its tolerance), in training and evaluation.
        kinetic_weight: RNODE's weight of ``integral ||f||^2 dt`` (default 0: off).
        jacobian_weight: RNODE's weight of ``integral ||df/dz||_F^2 dt`` (default 0: off);
            the penalty of a training solve is collected by :func:`rnode_penalty`.
        learn_time: learn each step's ``T`` (``softplus`` of a parameter, from ``time_length``).
"""

_DEFAULTS = dict(
    hidden_dims=(64, 64),
    activation="tanh",
    time_length=0.5,
    trace="hutchinson",
    eval_trace=None,
    **SOLVE_DEFAULTS,
    **RNODE_DEFAULTS,
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
