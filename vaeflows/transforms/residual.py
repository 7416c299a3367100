"""Invertible residual flows (i-ResNet, Residual Flows): ``z' = z + g(z)`` with ``Lip(g) < 1``.

One step maps ``z`` to ``z' = z + g(z)``, where ``g`` is an MLP whose linear layers are
spectrally normalized to ``||W||_2 <= coeff < 1`` and whose activations are 1-Lipschitz
(LipSwish ``x sigmoid(x) / 1.1`` or ELU), so ``Lip(g) <= coeff`` and the step is invertible
(Behrmann et al. 2019). Direction: ``z -> z'`` (base noise to posterior sample, as everywhere in
vaeflows' posteriors).

* **Inverse**: the fixed-point iteration ``x <- z' - g(x)`` (Banach: it converges geometrically
  at rate ``Lip(g)``), run without gradient tracking until successive iterates differ by less than
  ``tol`` (default ``1e-13`` in float64, ``1e-6`` in float32); with gradients enabled, one Newton
  step at the solution gives it the exact (implicit) gradients (``inverse_grad="implicit"``,
  ``D`` backward passes) or one more iteration cheap approximate ones (``"one-step"``).
* **Log-determinant** ``log|det(I + J_g)| = sum_{k>=1} (-1)^(k+1) tr(J_g^k) / k`` (the series
  converges since ``||J_g||_2 < 1``), one of (``ladj=``):

  - ``"exact"``: ``slogdet(I + J_g)`` of the full Jacobian (``D`` backward passes); the test
    oracle, and the choice for small ``D``;
  - ``"hutchinson"``: the series truncated after ``n_terms`` terms, each trace by Hutchinson's
    estimator ``tr(A) = E[v^T A v]``, ``v ~ N(0, I)``, with vector-Jacobian products
    ``v^T J_g^k`` (Behrmann et al. 2019). Biased by the truncation: ``|bias| <= D sum_{k >
    n_terms} Lip^k / k``;
  - ``"roulette"``: the unbiased Russian-roulette estimator of Residual Flows (Chen et al. 2019):
    ``n_exact_terms`` terms always, then ``N ~ Geometric(p)`` more (``P(N >= m) = (1-p)^m``,
    one draw per call, shared by the batch), term ``k > n_exact_terms`` weighted by
    ``1 / P(N >= k - n_exact_terms)``, so that ``E[estimate] = log|det(I + J_g)|``.

  Training gradients come from plain backpropagation through the estimator (``create_graph``),
  not from Residual Flows' Neumann gradient series: simpler, exact for the estimate, memory
  growing with the number of terms. ``eval_ladj`` (default: ``ladj``) is the mode used while the
  flow's modules are in ``eval()`` mode.

The context (encoder features ``h``) enters the first layer as an unconstrained bias,
``W_1 z + V h + b``, so the Lipschitz constant in ``z`` is unaffected.

Which log-dets are exact is visible as ``flow.log_det_kind``: ``"exact"`` with ``ladj="exact"``,
``"stochastic"`` otherwise (the generic registry test uses the exact mode; the estimators have
their own statistical tests).

References:
    Behrmann, Grathwohl, Chen, Duvenaud, Jacobsen, "Invertible Residual Networks", ICML 2019.
    Chen, Behrmann, Duvenaud, Jacobsen, "Residual Flows for Invertible Generative Modeling",
    NeurIPS 2019.
    Miyato, Kataoka, Koyama, Yoshida, "Spectral Normalization for Generative Adversarial
    Networks", ICLR 2018.
"""

from __future__ import annotations

import math
import warnings
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Transform

from vaeflows.checks import check_dims

from .base import AmortizedFlow, FunctionStep, GlobalFlow, with_defaults

__all__ = [
    "LADJ_MODES",
    "LipschitzLinear",
    "LipSwish",
    "ResidualNet",
    "ResidualStep",
    "AmortizedResidual",
    "GlobalResidual",
    "residual_step",
    "residual_ladj",
    "fixed_point_inverse",
    "exact_jacobian",
]

Tensor = torch.Tensor

#: The log-det modes of a residual step.
LADJ_MODES = ("exact", "hutchinson", "roulette")


class LipSwish(nn.Module):
    """``x sigmoid(x) / 1.1``: Swish's Lipschitz constant is about 1.0998, so this is 1-Lipschitz
    (Chen et al. 2019, with beta = 1 fixed)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(x) / 1.1


ACTIVATIONS: Dict[str, Callable[[], nn.Module]] = {"lipswish": LipSwish, "elu": nn.ELU}


class LipschitzLinear(nn.Module):
    """A linear layer whose weight is rescaled to spectral norm at most ``coeff``.

    ``W_sn = W / max(1, sigma(W) / coeff)`` (Behrmann et al. 2019), with ``sigma(W)``:

    * ``spectral="power"``: power iteration on registered buffers ``u``, ``v`` (Miyato et al.
      2018), warm-started, run in training mode until the estimate changes by less than ``tol``
      (relative) or ``n_power_iterations`` times (``init_iterations`` on the first call), once
      per change of the weight's values (an optimizer step, a load): between two changes, and in
      eval mode, the map is deterministic, so a step's forward pass and its inverse agree. The
      change is detected by comparing the values with a copy of those last iterated on, not by
      the tensor's version counter, which updates through ``p.data`` (Pyro's ``ClippedAdam``,
      hand-written SGD) do not bump: keyed on the version, such a run never refreshed ``sigma``
      and its Lipschitz bound grew past 1 unnoticed. The estimate
      ``u^T W v`` is a lower bound of ``sigma``: at convergence it equals it.
    * ``spectral="exact"``: ``torch.linalg.matrix_norm(W, 2)`` (an SVD per call): an exact bound
      and a deterministic map, for small layers and tests.

    Args:
        in_features: input size.
        out_features: output size.
        coeff: the bound on the spectral norm, in ``(0, 1)`` for a residual flow.
        spectral: ``"power"`` or ``"exact"``.
        n_power_iterations: most power iterations per training call.
        tol: relative tolerance of the power iteration.
        init_iterations: power iterations on the first call.
    """

    u: Tensor
    v: Tensor
    initialized: Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        coeff: float = 0.9,
        spectral: str = "power",
        n_power_iterations: int = 5,
        tol: float = 1e-6,
        init_iterations: int = 200,
    ) -> None:
        super().__init__()
        if spectral not in ("power", "exact"):
            raise ValueError(f"spectral must be 'power' or 'exact', got {spectral!r}")
        if not 0 < coeff:
            raise ValueError(f"coeff must be positive, got {coeff!r}")
        self.coeff = coeff
        self.spectral = spectral
        self.n_power_iterations = n_power_iterations
        self.tol = tol
        self.init_iterations = init_iterations
        linear = nn.Linear(in_features, out_features)
        self.weight = linear.weight
        self.bias = linear.bias
        self.register_buffer("u", F.normalize(torch.randn(out_features), dim=0))
        self.register_buffer("v", F.normalize(torch.randn(in_features), dim=0))
        self.register_buffer("initialized", torch.tensor(False))
        self._seen: Optional[Tensor] = None  # a copy of the weight values last iterated on

    @torch.no_grad()
    def _power_iterate(self, weight: Tensor, iterations: int, done: Optional[Tensor] = None) -> None:
        """Up to ``iterations`` power iterations, stopping at the first whose estimate moved by at
        most ``tol`` (relative), or before the first where ``done`` (a boolean tensor) is true.
        The stop is decided on the device: later iterates are computed and discarded
        (``torch.where``), so that no host read waits for a GPU."""
        u, v = self.u.to(weight), self.v.to(weight)
        sigma = None
        for _ in range(iterations):
            v_next = F.normalize(weight.mT @ u, dim=0, eps=1e-30)
            u_next = F.normalize(weight @ v_next, dim=0, eps=1e-30)
            new = torch.dot(u_next, weight @ v_next)
            if done is None:
                u, v = u_next, v_next
            else:
                u, v = torch.where(done, u, u_next), torch.where(done, v, v_next)
            if sigma is not None:
                converged = (new - sigma).abs() <= self.tol * new.abs()
                done = converged if done is None else done | converged
            sigma = new
        self.u.copy_(u)
        self.v.copy_(v)

    def sigma(self) -> Tensor:
        """The spectral norm of the raw weight, as this layer estimates it (differentiable)."""
        weight = self.weight
        if self.spectral == "exact":
            return torch.linalg.matrix_norm(weight, ord=2)
        values = weight.detach()
        if self._seen is None and not bool(self.initialized):  # the first call (or after a load)
            self._power_iterate(values, self.init_iterations)
            self.initialized.fill_(True)
        elif self.training:
            self._power_iterate(values, self.n_power_iterations, done=self._unchanged(values))
        self._seen = values.clone()
        u, v = self.u.clone().to(weight), self.v.clone().to(weight)
        return torch.dot(u, weight @ v)

    def _unchanged(self, values: Tensor) -> Optional[Tensor]:
        """Whether ``values`` equal those last iterated on, as a boolean tensor on their device
        (no host read), or ``None`` where there is nothing comparable to compare with."""
        seen = self._seen
        if seen is None or (seen.shape, seen.device, seen.dtype) != (values.shape, values.device, values.dtype):
            return None
        return torch.eq(seen, values).all()

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._seen = None  # ask the loaded "initialized" flag again at the next call
        super()._load_from_state_dict(*args, **kwargs)

    def normalized_weight(self) -> Tensor:
        """``W / max(1, sigma / coeff)``."""
        return self.weight / torch.clamp(self.sigma() / self.coeff, min=1.0)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.normalized_weight(), self.bias)


class ResidualNet(nn.Module):
    """The contractive residual branch ``g(z[, h])``, ``(..., D) -> (..., D)``.

    ``g(z, h) = L_n(a(... a(L_1 z + V h) ...))`` with :class:`LipschitzLinear` layers ``L_i``
    (spectral norm ``<= coeff``), 1-Lipschitz activations ``a``, and an unconstrained linear map
    ``V`` of the context (a bias: it does not change ``Lip_z(g) <= coeff^n``).

    Args:
        dim: ``D``.
        hidden_dims: hidden widths (at least one).
        context_dim: size of the context, or ``None``.
        coeff: spectral-norm bound per layer (``< 1``).
        activation: ``"lipswish"`` or ``"elu"``.
        spectral: ``"power"`` or ``"exact"`` (see :class:`LipschitzLinear`).
        n_power_iterations: most power iterations per training call.
    """

    def __init__(
        self,
        dim: int,
        hidden_dims: Sequence[int] = (64, 64),
        context_dim: Optional[int] = None,
        coeff: float = 0.9,
        activation: str = "lipswish",
        spectral: str = "power",
        n_power_iterations: int = 5,
    ) -> None:
        super().__init__()
        if not 0 < coeff < 1:
            raise ValueError(f"coeff must be in (0, 1) for an invertible residual step, got {coeff!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")
        hidden_dims = check_dims("hidden_dims", hidden_dims)
        sizes = [dim, *hidden_dims, dim]
        self.layers = nn.ModuleList(
            LipschitzLinear(n_in, n_out, coeff, spectral, n_power_iterations)
            for n_in, n_out in zip(sizes[:-1], sizes[1:])
        )
        self.activations = nn.ModuleList(ACTIVATIONS[activation]() for _ in hidden_dims)
        self.context = None if context_dim is None else nn.Linear(context_dim, hidden_dims[0], bias=False)

    def weights(self) -> List[Tensor]:
        """The normalized weights (in training mode, one power-iteration update per layer)."""
        return [layer.normalized_weight() for layer in self._linear_layers()]

    def _linear_layers(self) -> Sequence[LipschitzLinear]:
        return cast(Sequence[LipschitzLinear], self.layers)  # what __init__ put in the ModuleList

    def apply_weights(self, weights: Sequence[Tensor], z: Tensor, context: Optional[Tensor] = None) -> Tensor:
        """``g(z, h)`` with the given normalized weights.

        Not named ``apply``: ``nn.Module.apply(fn)`` visits every submodule with ``fn``, and a
        flow's ``flow.apply(init)`` would call this method with ``fn``.
        """
        layers = self._linear_layers()
        x = F.linear(z, weights[0], layers[0].bias)
        if self.context is not None:
            x = x + self.context(context)
        for activation, weight, layer in zip(self.activations, weights[1:], layers[1:]):
            x = F.linear(activation(x), weight, layer.bias)
        return x

    def forward(self, z: Tensor, context: Optional[Tensor] = None) -> Tensor:
        return self.apply_weights(self.weights(), z, context)

    def frozen(self, context: Optional[Tensor] = None) -> Callable[[Tensor], Tensor]:
        """``z -> g(z, context)`` with the normalized weights taken once, now: the map a flow step
        uses for its forward pass, log-det and fixed-point inverse alike (the power iteration
        runs once per step, not once per fixed-point iteration, and cannot change the map
        between its forward pass and its inverse)."""
        return partial(self.apply_weights, self.weights(), context=context)

    def lipschitz_bound(self) -> float:
        """``prod_i ||W_sn,i||_2`` computed exactly (SVD): an upper bound of ``Lip_z(g)``."""
        with torch.no_grad():
            norms = [torch.linalg.matrix_norm(layer.normalized_weight(), ord=2) for layer in self._linear_layers()]
        return float(torch.stack(norms).prod())


def exact_jacobian(gz: Tensor, z: Tensor, create_graph: bool) -> Tensor:
    """``J[..., i, j] = d gz_i / d z_j`` of a map applied row-wise, ``(..., D, D)`` (``D``
    backward passes through the graph of ``gz``)."""
    rows = []
    for i in range(gz.shape[-1]):
        seed = torch.zeros_like(gz)
        seed[..., i] = 1
        rows.append(torch.autograd.grad(gz, z, seed, retain_graph=True, create_graph=create_graph)[0])
    return torch.stack(rows, dim=-2)


def residual_ladj(
    gz: Tensor,
    z: Tensor,
    mode: str = "roulette",
    n_terms: int = 8,
    n_exact_terms: int = 2,
    geometric_p: float = 0.5,
    create_graph: bool = True,
) -> Tensor:
    """``log|det(I + dg/dz)|`` at ``z``, from the graph of ``gz = g(z)``; shape ``z.shape[:-1]``.

    Args:
        gz: ``g(z)``, computed from ``z`` with gradients enabled.
        z: ``(..., D)``, requiring grad.
        mode: ``"exact"``, ``"hutchinson"`` (``n_terms`` terms) or ``"roulette"`` (``n_exact_terms``
            terms plus ``N ~ Geometric(geometric_p)`` reweighted ones, unbiased).
        create_graph: keep the graph, for gradients of the result.
    """
    if mode == "exact":
        jac = exact_jacobian(gz, z, create_graph)
        eye = torch.eye(z.shape[-1], dtype=z.dtype, device=z.device)
        return torch.linalg.slogdet(eye + jac).logabsdet
    if mode == "hutchinson":
        count, weights = n_terms, [1.0] * n_terms
    elif mode == "roulette":
        extra = int(math.floor(math.log(1.0 - float(torch.rand(()))) / math.log(1.0 - geometric_p)))
        count = n_exact_terms + extra
        weights = [1.0] * n_exact_terms + [(1.0 - geometric_p) ** -m for m in range(1, extra + 1)]
    else:
        raise ValueError(f"unknown log-det mode {mode!r}; known: {', '.join(LADJ_MODES)}")
    v = torch.randn_like(z)
    w = v
    total = z.new_zeros(z.shape[:-1])
    for k in range(1, count + 1):
        w = torch.autograd.grad(gz, z, w, retain_graph=True, create_graph=create_graph)[0]  # v^T J^k
        total = total + ((-1) ** (k + 1) / k) * weights[k - 1] * (w * v).sum(-1)
    return total


def residual_step(
    g: Callable[[Tensor], Tensor], z: Tensor, mode: str = "roulette", **ladj_options
) -> Tuple[Tensor, Tensor]:
    """``z' = z + g(z)`` and ``log|det dz'/dz|`` from one pass of ``g`` (see :func:`residual_ladj`).

    Works under ``torch.no_grad()`` too (the Jacobian products need a graph: it is built locally
    and the results are detached).
    """
    grad_on = torch.is_grad_enabled()
    with torch.enable_grad():
        z_in = z if (grad_on and z.requires_grad) else z.detach().requires_grad_(True)
        gz = g(z_in)
        ladj = residual_ladj(gz, z_in, mode, create_graph=grad_on, **ladj_options)
    out = z + gz
    if not grad_on:
        out, ladj = out.detach(), ladj.detach()
    return out, ladj


def fixed_point_inverse(
    g: Callable[[Tensor], Tensor],
    y: Tensor,
    tol: Optional[float] = None,
    max_iter: int = 1000,
    grad: str = "implicit",
) -> Tensor:
    """Solve ``x + g(x) = y`` by ``x <- y - g(x)`` (from ``x = y``) until ``max|dx| <= tol``.

    The iterations run without gradients. With gradients enabled, ``grad`` says which ones the
    result carries:

    * ``"implicit"`` (default): those of the true inverse, ``dx/dy = (I + J_g(x))^-1`` and
      ``dx/dtheta = -(I + J_g)^-1 dg/dtheta``, from one Newton step
      ``x - (I + J_g(x))^-1 (x + g(x) - y)`` at the solution ``x`` (its value is ``x``): ``D``
      backward passes and a ``D x D`` solve per point;
    * ``"one-step"``: those of one more iteration ``y - g(x)`` (``dx/dy = I``): cheap, not exact.

    Default ``tol``: ``1e-13`` in float64, ``1e-6`` otherwise. Warns if ``max_iter`` steps do not
    reach ``tol`` (``Lip(g)`` close to 1).
    """
    if grad not in ("implicit", "one-step"):
        raise ValueError(f"grad must be 'implicit' or 'one-step', got {grad!r}")
    if tol is None:
        tol = 1e-13 if y.dtype == torch.float64 else 1e-6
    with torch.no_grad():
        x = y.clone()
        change = float("inf")
        for _ in range(max_iter):
            x_next = y - g(x)
            change = float((x_next - x).abs().max()) if x.numel() else 0.0
            x = x_next
            if change <= tol:
                break
        else:
            warnings.warn(
                f"the residual flow's fixed-point inverse did not reach tol={tol:g} in {max_iter} "
                f"iterations (last change {change:.3g}); is Lip(g) close to 1?"
            )
    if not torch.is_grad_enabled():
        return x
    if grad == "one-step":
        return y - g(x)
    x_star = x.detach().requires_grad_(True)
    gx = g(x_star)
    jac = exact_jacobian(gx, x_star, create_graph=True)
    eye = torch.eye(y.shape[-1], dtype=y.dtype, device=y.device)
    newton = torch.linalg.solve(eye + jac, (x_star + gx - y).unsqueeze(-1)).squeeze(-1)
    return x - newton


class ResidualStep(FunctionStep):
    """One residual step ``z' = z + g(z)`` as a Pyro/torch transform with an iterative inverse.

    Direction ``z -> z'``. The log-det (mode ``mode``) comes from the forward pass and is cached
    with it; after an inverse it is recomputed by a forward pass at the recovered input.

    Args:
        g: the contractive map, ``(..., D) -> (..., D)``.
        mode: a log-det mode of :data:`LADJ_MODES`.
        ladj_options: ``n_terms``, ``n_exact_terms``, ``geometric_p``.
        inverse_options: ``tol``, ``max_iter``, ``grad`` of :func:`fixed_point_inverse`.
    """

    def __init__(
        self,
        g: Callable[[Tensor], Tensor],
        mode: str,
        ladj_options: Optional[dict] = None,
        inverse_options: Optional[dict] = None,
    ) -> None:
        super().__init__(partial(residual_step, g, mode=mode, **(ladj_options or {})))
        self.g = g
        self.inverse_options = inverse_options or {}

    def _inverse(self, y: Tensor) -> Tensor:
        self._cached_ladj = None
        return fixed_point_inverse(self.g, y, **self.inverse_options)


class _ResidualFlow:
    """What the amortized and global residual flows share: nets, options, steps."""

    training: bool  # the nn.Module's flag (the flows that use this mixin are modules)

    #: Why a JIT trace cannot record this flow (see :func:`~vaeflows.transforms.base.check_traceable`).
    untraceable = (
        "its log-det calls torch.autograd.grad (vector-Jacobian products), its Russian-roulette "
        "estimator draws a random number of terms on the host, and its inverse iterates to a tolerance"
    )

    def _setup(
        self,
        latent_dim: int,
        num_flows: int,
        context_dim: Optional[int],
        hidden_dims: Sequence[int],
        coeff: float,
        activation: str,
        spectral: str,
        n_power_iterations: int,
        ladj: str,
        eval_ladj: Optional[str],
        n_terms: int,
        n_exact_terms: int,
        geometric_p: float,
        inverse_tol: Optional[float],
        inverse_max_iter: int,
        inverse_grad: str,
    ) -> None:
        for label, mode in (("ladj", ladj), ("eval_ladj", eval_ladj or ladj)):
            if mode not in LADJ_MODES:
                raise ValueError(f"unknown {label} {mode!r}; known: {', '.join(LADJ_MODES)}")
        if not 0 < geometric_p < 1:
            raise ValueError(f"geometric_p must be in (0, 1), got {geometric_p!r}")
        self.nets = nn.ModuleList(
            ResidualNet(latent_dim, hidden_dims, context_dim, coeff, activation, spectral, n_power_iterations)
            for _ in range(num_flows)
        )
        self.ladj = ladj
        self.eval_ladj = eval_ladj or ladj
        self.ladj_options = {"n_terms": n_terms, "n_exact_terms": n_exact_terms, "geometric_p": geometric_p}
        self.inverse_options = {"tol": inverse_tol, "max_iter": inverse_max_iter, "grad": inverse_grad}

    @property
    def log_det_kind(self) -> str:
        """``"exact"`` if the current mode's log-det is exact, else ``"stochastic"``."""
        mode = self.ladj if self.training else self.eval_ladj
        return "exact" if mode == "exact" else "stochastic"

    def _steps(self, context: Optional[Tensor]) -> List[Transform]:
        mode = self.ladj if self.training else self.eval_ladj
        nets = cast(Sequence[ResidualNet], self.nets)
        return [ResidualStep(net.frozen(context), mode, self.ladj_options, self.inverse_options) for net in nets]


_RESIDUAL_ARGS = """
    Args:
        latent_dim: ``D``.
        num_flows: number of residual steps ``K``, each with its own net.
        hidden_dims: hidden widths of each ``g`` (default ``(64, 64)``).
        coeff: spectral-norm bound per layer, in ``(0, 1)`` (default 0.9).
        activation: ``"lipswish"`` or ``"elu"``.
        spectral: ``"power"`` (power iteration, default) or ``"exact"`` (SVD).
        n_power_iterations: most power iterations per training call.
        ladj: log-det mode in training, ``"exact"``, ``"hutchinson"`` or ``"roulette"`` (default).
        eval_ladj: log-det mode in ``eval()`` mode (default: ``ladj``).
        n_terms: series terms of ``"hutchinson"``.
        n_exact_terms: terms always computed by ``"roulette"``.
        geometric_p: ``p`` of roulette's geometric number of extra terms.
        inverse_tol: fixed-point tolerance (default by dtype).
        inverse_max_iter: most fixed-point iterations.
        inverse_grad: gradients of the inverse, ``"implicit"`` (exact, default) or ``"one-step"``
            (see :func:`fixed_point_inverse`).
"""

_DEFAULTS = dict(
    hidden_dims=(64, 64),
    coeff=0.9,
    activation="lipswish",
    spectral="power",
    n_power_iterations=5,
    ladj="roulette",
    eval_ladj=None,
    n_terms=8,
    n_exact_terms=2,
    geometric_p=0.5,
    inverse_tol=None,
    inverse_max_iter=1000,
    inverse_grad="implicit",
)


class AmortizedResidual(_ResidualFlow, AmortizedFlow):
    __doc__ = (
        """Residual flow whose ``g`` takes the context as a bias of its first layer.

    Direction ``z_0 -> z_K``; ``.condition(context)`` gives the stack for contexts ``(..., C)``.
    """
        + _RESIDUAL_ARGS
        + """        context_dim: ``C``.

    Example:
        >>> flow = AmortizedResidual(latent_dim=3, num_flows=2, context_dim=5, hidden_dims=(16,))
        >>> stack = flow.condition(torch.randn(4, 5))
        >>> z0 = torch.randn(4, 3); z = stack(z0); stack.log_abs_det_jacobian(z0, z).shape
        torch.Size([4])
    """
    )

    def __init__(self, latent_dim: int, num_flows: int, context_dim: int, **options) -> None:
        super().__init__("residual", latent_dim, num_flows, context_dim, invertible=True)
        self._setup(latent_dim, num_flows, context_dim, **with_defaults(options, _DEFAULTS))

    def steps(self, context: Tensor) -> List[Transform]:
        return self._steps(context)


class GlobalResidual(_ResidualFlow, GlobalFlow):
    __doc__ = (
        """Residual flow with ``g`` of ``z`` alone, shared by all data points. Direction ``z_0 -> z_K``.
    """
        + _RESIDUAL_ARGS
    )

    def __init__(self, latent_dim: int, num_flows: int, **options) -> None:
        super().__init__("residual", latent_dim, num_flows, invertible=True)
        self._setup(latent_dim, num_flows, None, **with_defaults(options, _DEFAULTS))

    def steps(self) -> List[Transform]:
        return self._steps(None)
