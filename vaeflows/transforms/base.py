"""The machinery every posterior flow shares: a stack of flow steps, its amortized and global forms.

A posterior flow maps base noise ``z_0 ~ q0`` to ``z_K`` (the generative direction, as in Pyro).
Each family (planar, radial, ...) says two things: the shapes of one step's raw parameters, and how
to build its ``K`` step transforms from raw parameters with leading batch dims. The forms differ only
in where raw parameters come from:

* :class:`AmortizedFlow`, a Pyro ``ConditionalTransformModule``: a :class:`Hypernet` maps the
  context (the encoder's features) to the raw parameters of **all K steps in one pass**, as in
  van den Berg et al. (2018);
* :class:`GlobalFlow`, a Pyro ``TransformModule``: the raw parameters are ``nn.Parameter`` s.

Both hand the steps to :class:`FlowStack`, which runs them in order and returns ``z_K`` and
``sum_k log|det dz_k/dz_(k-1)|`` from one computation.
"""

from __future__ import annotations

import abc
import math
import weakref
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from pyro.distributions import ConditionalTransformModule, TransformModule
from torch import nn
from torch.distributions import Transform, constraints
from torch.utils.weak import WeakIdKeyDictionary

from vaeflows.checks import check_dims, check_int

__all__ = [
    "CachedLadjTransform",
    "FlowFamily",
    "FlowStack",
    "FunctionStep",
    "Hypernet",
    "AmortizedFlow",
    "GlobalFlow",
    "AmortizedFamilyFlow",
    "GlobalFamilyFlow",
    "NoInverseError",
    "check_sizes",
    "check_traceable",
    "with_defaults",
    "Params",
]

Params = Dict[str, torch.Tensor]


class NoInverseError(NotImplementedError):
    """Raised when a flow without an analytic inverse is asked to invert a value it did not produce."""


class FlowFamily:
    """What one flow family contributes: raw parameter shapes per step and a step builder.

    Args:
        name: the registry name, e.g. ``"planar"``.
        param_shapes: shapes of one step's raw parameters, name -> shape (no step or batch dims).
        build_steps: ``build_steps(params) -> list of K transforms``; each tensor of ``params``
            has shape ``(..., K, *param_shapes[name])`` where ``...`` are batch dims.
        invertible: whether the steps have an analytic inverse.
    """

    def __init__(
        self,
        name: str,
        param_shapes: Dict[str, Tuple[int, ...]],
        build_steps: Callable[[Params], List[Transform]],
        invertible: bool,
    ) -> None:
        self.name = name
        self.param_shapes = param_shapes
        self.build_steps = build_steps
        self.invertible = invertible


class CachedLadjTransform(Transform):
    """A vector transform whose ``_call`` also leaves ``log|det dz'/dz|`` in ``_cached_ladj``.

    ``log_abs_det_jacobian(x, y)`` returns it for a pair the transform produced and runs the
    forward pass again for any other input. An ``_inverse`` sets ``_cached_ladj = None``: the
    log-det at the recovered input then comes from a forward pass, on demand.

    **It remembers every output it produced while that output is alive.** torch's cache holds one
    ``(x, y)`` pair; when a second input replaces it (the same transform used at two sample
    sites, or a global flow drawing again before the first draw is scored), the pair it held and
    its log-det move to a dictionary keyed weakly by the identity of ``y``. Flows without an
    analytic inverse (planar, radial, Sylvester) can then score each of their own samples, and an
    entry goes with its sample: nothing outlives the tensors it describes. A transform called
    once, as every flow step is, never builds the dictionary.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cache_size=1, **kwargs)
        self._cached_ladj: Optional[torch.Tensor] = None
        self._inv_ref: Optional[weakref.ref] = None
        self._produced: Optional[WeakIdKeyDictionary] = None  # y -> (x, ladj), built when needed

    @property
    def inv(self) -> Transform:
        """The inverse transform, held by a weak reference (``t.inv.inv is t`` still holds).

        torch (since pytorch/pytorch#182769, 2026) keeps ``t.inv`` by a strong reference, so
        ``t <-> t.inv`` is a reference cycle. ``TransformedDistribution.log_prob`` calls ``.inv``,
        and these transforms are built anew at every sample site and cache their input, output and
        log-det: the cycle kept those tensors, and the autograd graph behind them, alive until
        Python's cyclic garbage collector ran (more memory held, and the collector's time, every
        step). A weak reference, as torch kept before, lets them go with the distribution.
        """
        inv = self._inv_ref() if self._inv_ref is not None else None
        if inv is None:
            # mypy reads a property on a class as its getter function, which has no fget.
            inv = Transform.inv.fget(self)  # type: ignore[attr-defined]  # torch builds it, keeps it in _inv ...
            self._inv = None  # ... by a strong reference: drop that one, keep a weak one
            self._inv_ref = weakref.ref(inv)
        return inv

    def __getstate__(self) -> dict:
        # Neither weak references nor the tensors of the last pass (with their autograd graph)
        # belong in a pickled transform: torch.save(module) and copy.deepcopy save parameters.
        state = super().__getstate__()
        state.update(_inv_ref=None, _produced=None, _cached_ladj=None)
        if "_cached_x_y" in state:
            state["_cached_x_y"] = None, None
        return state

    def _remember(self, x: Optional[torch.Tensor], y: Optional[torch.Tensor]) -> None:
        """Keep the pair torch's one-entry cache holds before ``x`` or ``y`` replaces it."""
        x_old, y_old = self._cached_x_y
        if y_old is not None and x is not x_old and y is not y_old:
            if self._produced is None:
                self._produced = WeakIdKeyDictionary()
            self._produced[y_old] = (x_old, self._cached_ladj)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self._remember(x, None)
        return super().__call__(x)

    def _inv_call(self, y: torch.Tensor) -> torch.Tensor:
        self._remember(None, y)
        if self._produced is not None and y is not self._cached_x_y[1]:
            seen = self._produced.get(y)
            if seen is not None:  # an earlier output: its input and log-det back into the cache
                # torch's stubs infer _cached_x_y as tuple[None, None] (from its __init__).
                self._cached_x_y, self._cached_ladj = (seen[0], y), seen[1]  # type: ignore[assignment]
                return seen[0]
        return super()._inv_call(y)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_old, y_old = self._cached_x_y
        if x is not x_old or y is not y_old:
            seen = self._produced.get(y) if self._produced is not None else None
            if seen is not None and seen[0] is x and seen[1] is not None:
                return seen[1]
            self(x)  # recompute (and re-cache) the pass from this input
        elif self._cached_ladj is None:
            self._call(x)
        assert self._cached_ladj is not None, "_call sets _cached_ladj"
        return self._cached_ladj


class FunctionStep(CachedLadjTransform):
    """One flow step ``fn(z, *params) -> (z', log|det dz'/dz|)`` with given (batched) parameters.

    Direction: ``z -> z'``. No analytic inverse: scores only values it produced (cache of one).
    Subclasses with an inverse set ``_cached_ladj = None`` in ``_inverse`` (see
    :class:`CachedLadjTransform`).
    """

    def __init__(
        self,
        fn: Callable[..., Tuple[torch.Tensor, torch.Tensor]],
        *params: torch.Tensor,
    ) -> None:
        super().__init__()
        self.fn = fn
        self.params = params

    def _call(self, z: torch.Tensor) -> torch.Tensor:
        z_out, self._cached_ladj = self.fn(z, *self.params)
        return z_out


class FlowStack(CachedLadjTransform):
    """``K`` flow steps applied in order: ``z_K = f_K(...f_1(z_0))``.

    Direction: base noise ``z_0`` to posterior sample ``z_K``. ``log_abs_det_jacobian(z_0, z_K)``
    returns ``sum_k log|det dz_k/dz_(k-1)|`` of shape ``z.shape[:-1]``, computed in the same pass
    as ``z_K`` and cached with it (keyed by tensor identity, as Pyro's flows).

    For families without an analytic inverse (planar, radial, Sylvester) a ``FlowStack`` can only
    score values it produced itself (each of them while it is alive: see
    :class:`CachedLadjTransform`).

    ``batch_shape`` is the parameters' batch shape (an amortized flow's context's leading dims):
    the leading dims of ``z`` (particles, sample shapes, none) are broadcast against it, both ways,
    and ``forward_shape``/``inverse_shape`` say so::

        forward_shape((*lead, D)) = inverse_shape((*lead, D)) = (*broadcast(lead, batch_shape), D)

    so that an unbatched ``z`` of shape ``(D,)`` and a context ``(B, C)`` give ``(B, D)``, and a
    ``TransformedDistribution`` over an unbatched base has batch shape ``(B,)``. The event is a
    vector both ways (``domain`` and ``codomain`` are ``real_vector``). A ``z`` whose last dim is
    not ``latent_dim``, or whose leading dims do not broadcast against ``batch_shape``, is a
    ValueError saying so.
    """

    def __init__(
        self,
        steps: Sequence[Transform],
        name: str,
        invertible: bool,
        latent_dim: int,
        batch_shape: Tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        self.steps = list(steps)
        self.name = name
        self.invertible = invertible
        self.latent_dim = latent_dim
        self.batch_shape = tuple(batch_shape)

    def forward_shape(self, shape: Sequence[int]) -> torch.Size:
        shape = tuple(shape)
        if shape[-1:] != (self.latent_dim,):
            raise ValueError(
                f"{self.name} flow: z of shape {shape} for a flow of latent_dim={self.latent_dim}: "
                f"pass z of shape (..., {self.latent_dim})"
            )
        lead = shape[:-1]
        if lead[len(lead) - len(self.batch_shape) :] == self.batch_shape:  # the usual case, in every
            return torch.Size(shape)  # step: z's batch dims end in the context's (or it has none)
        try:
            lead = torch.broadcast_shapes(lead, self.batch_shape)
        except RuntimeError:
            raise ValueError(
                f"{self.name} flow: z of shape {shape} does not broadcast against the batch shape "
                f"{self.batch_shape} of the context it was conditioned on: pass one context row per "
                "data point (z's batch dims must end in the context's)"
            ) from None
        return lead + torch.Size(shape[-1:])

    def inverse_shape(self, shape: Sequence[int]) -> torch.Size:
        return self.forward_shape(shape)

    def _broadcast(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` expanded to ``forward_shape(z.shape)`` (a view): every step sees the full batch."""
        shape = self.forward_shape(z.shape)
        return z if z.shape == shape else z.expand(shape)

    def _call(self, z: torch.Tensor) -> torch.Tensor:
        z = self._broadcast(z)
        ladj = None
        for step in self.steps:
            z_next = step(z)
            step_ladj = step.log_abs_det_jacobian(z, z_next)
            ladj = step_ladj if ladj is None else ladj + step_ladj
            z = z_next
        self._cached_ladj = ladj
        return z

    def _inverse(self, z: torch.Tensor) -> torch.Tensor:
        if not self.invertible:
            raise NoInverseError(
                f"The {self.name} flow has no analytic inverse, so it can only score values it "
                "produced itself (the same tensor object). Score samples drawn from this very "
                "transform, build a fresh one with .condition(context) for every sample site, "
                "or use a flow with an inverse (iaf, householder; residual and ffjord "
                "numerically) to score arbitrary values."
            )
        z = self._broadcast(z)
        for step in reversed(self.steps):
            z = step.inv(z)
        self._cached_ladj = None  # the forward pass at the recovered input computes it on demand
        return z


class Hypernet(nn.Module):
    """Maps a context ``(..., C)`` to named raw parameters ``(..., *shape)`` in one pass.

    By default one linear map (``hidden_dims=()``), the amortization of van den Berg et al.
    (2018); with ``hidden_dims`` an MLP with ELU activations before the last linear map.

    Args:
        context_dim: ``C``, the size of the context's last dim.
        param_shapes: name -> shape of the parameters to produce (without batch dims).
        hidden_dims: hidden layer widths.
    """

    def __init__(
        self,
        context_dim: int,
        param_shapes: Dict[str, Tuple[int, ...]],
        hidden_dims: Sequence[int] = (),
    ) -> None:
        super().__init__()
        self.param_shapes = dict(param_shapes)
        sizes = [context_dim, *check_dims("hypernet_dims", hidden_dims, allow_empty=True)]
        layers: List[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(n_in, n_out), nn.ELU()]
        total = sum(math.prod(shape) for shape in self.param_shapes.values())
        layers.append(nn.Linear(sizes[-1], total))
        self.net = nn.Sequential(*layers)

    def forward(self, context: torch.Tensor) -> Params:
        flat = self.net(context)
        sizes = [math.prod(shape) for shape in self.param_shapes.values()]
        return {
            name: chunk.reshape(*context.shape[:-1], *shape)
            for (name, shape), chunk in zip(self.param_shapes.items(), flat.split(sizes, dim=-1))
        }


def with_defaults(options: dict, defaults: dict) -> dict:
    """``defaults`` updated by ``options``; a TypeError naming unknown options and the known ones."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(defaults)}")
    return {**defaults, **options}


def check_traceable(flow: nn.Module) -> None:
    """Refuse, by name and reason, a flow that a JIT trace (``JitTrace_ELBO``) cannot record.

    A flow sets ``untraceable`` to the reason (e.g. it calls ``torch.autograd.grad`` inside its
    log-det, or chooses its steps on the host): a trace would record one draw of its control flow
    and replay it as if it were the computation, or fail deep inside torch.
    """
    reason = getattr(flow, "untraceable", None)
    if reason and torch.jit.is_tracing():
        raise NotImplementedError(
            f"the {flow.name} flow cannot run under a JIT trace (JitTrace_ELBO, torch.jit.trace): "
            f"{reason}. Use Trace_ELBO (or another non-JIT objective) with this flow, or a flow "
            "whose log-det has a closed form"
        )


def check_sizes(latent_dim: int, num_flows: int) -> None:
    check_int("latent_dim", latent_dim)
    check_int("num_flows", num_flows)


def _stacked_shapes(family: FlowFamily, num_flows: int) -> Dict[str, Tuple[int, ...]]:
    return {name: (num_flows, *shape) for name, shape in family.param_shapes.items()}


class AmortizedFlow(ConditionalTransformModule, abc.ABC):
    """Base of the posterior flows whose parameters come from a context (the encoder's features).

    ``log_det_kind`` says how the log-determinant is computed: ``"exact"`` (closed form or full
    Jacobian), ``"ode"`` (exact trace integrated by an ODE solver: exact up to its tolerance) or
    ``"stochastic"`` (an estimate, e.g. Hutchinson's; the residual and FFJORD flows' defaults).

    ``flow.condition(context)`` checks the context and returns a :class:`FlowStack` for a batch of
    contexts of shape ``(..., context_dim)``; the context broadcasts against the latent's leading
    dims (particles, batch). Direction: ``z_0 -> z_K``. Subclasses say how to build the steps.
    """

    def __init__(self, name: str, latent_dim: int, num_flows: int, context_dim: int, invertible: bool) -> None:
        super().__init__()
        check_sizes(latent_dim, num_flows)
        check_int("context_dim", context_dim)
        self.name = name
        self.latent_dim = latent_dim
        self.num_flows = num_flows
        self.context_dim = context_dim
        self.invertible = invertible

    @property
    def log_det_kind(self) -> str:
        """``"exact"``, ``"ode"`` or ``"stochastic"`` (see the class docstring)."""
        return "exact"

    @abc.abstractmethod
    def steps(self, context: torch.Tensor) -> List[Transform]:
        """The ``K`` step transforms for this context."""

    def check_context(self, context: torch.Tensor) -> None:
        """Raise a ValueError unless ``context`` is a tensor of shape ``(..., context_dim)``."""
        if not torch.is_tensor(context) or context.dim() < 1:
            raise ValueError(f"{self.name} flow: context must be a tensor of shape (..., {self.context_dim})")
        if context.shape[-1] != self.context_dim:
            raise ValueError(
                f"{self.name} flow: the context's last dim has size {context.shape[-1]} "
                f"but the flow was built with context_dim={self.context_dim}"
            )

    def condition(self, context: torch.Tensor) -> FlowStack:
        self.check_context(context)
        check_traceable(self)
        return FlowStack(self.steps(context), self.name, self.invertible, self.latent_dim, context.shape[:-1])


class GlobalFlow(CachedLadjTransform, TransformModule, abc.ABC):
    """Base of the posterior flows with learned parameters shared by all data points.

    Used like any Pyro ``TransformModule``: ``dist.TransformedDistribution(base, [flow])``.
    Direction: ``z_0 -> z_K``; ``log_abs_det_jacobian(z_0, z_K)`` sums over the ``K`` steps.
    Subclasses say how to build the steps from the current parameters. ``log_det_kind`` as in
    :class:`AmortizedFlow`.

    Every call builds the steps from the parameters as they are then (an optimizer may have
    changed them since the last call), and the flow remembers each output while it is alive
    (:class:`CachedLadjTransform`): one global flow can serve any number of sample sites, or
    draws, and score each of its samples, with or without an analytic inverse.
    """

    @property
    def log_det_kind(self) -> str:
        """``"exact"``, ``"ode"`` or ``"stochastic"`` (see :class:`AmortizedFlow`)."""
        return "exact"

    def __init__(self, name: str, latent_dim: int, num_flows: int, invertible: bool) -> None:
        super().__init__()
        check_sizes(latent_dim, num_flows)
        self.name = name
        self.latent_dim = latent_dim
        self.num_flows = num_flows
        self.invertible = invertible

    @abc.abstractmethod
    def steps(self) -> List[Transform]:
        """The ``K`` step transforms with the current parameters."""

    def _new_stack(self) -> FlowStack:
        check_traceable(self)
        return FlowStack(self.steps(), self.name, self.invertible, self.latent_dim)

    def _call(self, z: torch.Tensor) -> torch.Tensor:
        stack = self._new_stack()
        y = stack(z)
        self._cached_ladj = stack._cached_ladj
        return y

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        x = self._new_stack().inv(y)
        self._cached_ladj = None  # the forward pass at the recovered input computes it on demand
        return x


class AmortizedFamilyFlow(AmortizedFlow):
    """An amortized flow whose raw parameters come from one :class:`Hypernet` pass.

    Args:
        family: the flow family (see :mod:`vaeflows.transforms`).
        latent_dim: size of ``z``.
        num_flows: number of steps ``K``.
        context_dim: size of the context's last dim.
        hidden_dims: hidden widths of the hypernetwork; ``()`` is one linear map for all steps.
    """

    def __init__(
        self,
        family: FlowFamily,
        latent_dim: int,
        num_flows: int,
        context_dim: int,
        hidden_dims: Sequence[int] = (),
    ) -> None:
        super().__init__(family.name, latent_dim, num_flows, context_dim, family.invertible)
        self.family = family
        self.hypernet = Hypernet(context_dim, _stacked_shapes(family, num_flows), hidden_dims)

    def steps(self, context: torch.Tensor) -> List[Transform]:
        return self.family.build_steps(self.hypernet(context))


class GlobalFamilyFlow(GlobalFlow):
    """A global flow whose raw parameters are ``nn.Parameter`` s of shape ``(K, *shape)``.

    Raw parameters start from ``U(-1/sqrt(D), 1/sqrt(D))``, as Pyro's global flows.

    Args:
        family: the flow family (see :mod:`vaeflows.transforms`).
        latent_dim: size of ``z``.
        num_flows: number of steps ``K``.
    """

    def __init__(self, family: FlowFamily, latent_dim: int, num_flows: int) -> None:
        super().__init__(family.name, latent_dim, num_flows, family.invertible)
        self.family = family
        bound = 1.0 / math.sqrt(latent_dim)
        self.params = nn.ParameterDict(
            {
                name: nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
                for name, shape in _stacked_shapes(family, num_flows).items()
            }
        )

    def steps(self) -> List[Transform]:
        return self.family.build_steps(dict(self.params.items()))
