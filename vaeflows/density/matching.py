"""Flow matching: training the vector field of a continuous flow by regression, without an ODE solve.

A continuous density model (:func:`~.flows.ffjord`) maps noise to data by the ODE
``dz/dt = f(z, t)``. Flow matching (Lipman et al. 2023) trains ``f`` to match the velocity of a
chosen probability path from the noise ``x_0 ~ N(0, I)`` to the data ``x_1 ~ p_data``. On the
flow-matching clock ``s`` in ``[0, 1]`` (``s = 0`` noise, ``s = 1`` data) the conditional path and
its velocity are::

    x_s = (1 - (1 - sigma_min) s) x_0 + s x_1,        u = d x_s / ds = x_1 - (1 - sigma_min) x_0

(``sigma_min = 0``: rectified flow, Liu et al. 2023), and the conditional flow-matching loss is
the regression::

    L(v) = E_{s ~ U[0, 1], (x_0, x_1) ~ pi} || v(x_s, s) - u ||^2

summed over the data's dimensions, averaged over the batch. Its minimizer is the marginal field
``v*(x, s) = E[u | x_s = x]``, whose ODE carries ``N(0, I)`` to the data distribution (up to
``sigma_min``); ``L(v) - L(v*) = E || v - v* ||^2``, so ``L`` has the gradients of the
(intractable) marginal regression. The coupling ``pi`` of noise and data is
(:data:`COUPLINGS`): ``"independent"`` (``x_0`` drawn apart from ``x_1``) or ``"ot"``, the
minibatch optimal-transport coupling of Tong et al. (2024): the noise of a batch reordered by
the exact assignment minimizing ``sum_i ||x_0[i] - x_1[i]||^2`` (``scipy.optimize.linear_sum_assignment``),
whose straighter paths need fewer function evaluations to integrate.

Direction and clock of the model's ODE: a model of ``K`` CNF blocks, each integrating
``dz/dt = f_k(z, t)`` over ``[0, T]`` from noise to data, covers the clock ``s`` in ``K`` equal
segments, block ``k`` (the ``k``-th applied to the noise) on ``s`` in ``[k/K, (k+1)/K]`` at its
time ``t = (K s - k) T``; there ``dz/ds = K T f_k(z, t)``, so :func:`cnf_velocity` is
``v(x, s) = K T f_k(x, (K s - k) T)``, and the regression trains exactly the field that the model's
own ODE integrates: ``log_prob`` (the ODE with the exact trace for ``D <= 16``, Hutchinson's
estimate above, :class:`~.freeform.CNFBlock`) and ``sample`` work unchanged on a
flow-matching-trained model. Training needs data: energy fits (reverse KL to an unnormalized
density, :func:`~.energy.fit_energy`) have none and cannot use flow matching.

Example:
    >>> torch.manual_seed(0) and None
    >>> model = density_flow("ffjord", (2,), num_steps=1, hidden=8)
    >>> loss = FlowMatching(coupling="ot").loss(model, torch.randn(16, 2))
    >>> loss.shape, bool(loss > 0)
    (torch.Size([]), True)

References:
    Lipman, Chen, Ben-Hamu, Nickel, Le, "Flow Matching for Generative Modeling", ICLR 2023.
    Liu, Gong, Liu, "Flow Straight and Fast: Learning to Generate and Transfer Data with
    Rectified Flow", ICLR 2023.
    Tong, Fatras, Malkin, Huguet, Zhang, Rector-Brooks, Wolf, Bengio, "Improving and
    Generalizing Flow-Based Generative Models with Minibatch Optimal Transport", TMLR 2024.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, cast

import torch

from vaeflows.checks import check_real
from vaeflows.data.files import import_optional

from .flows import FlowDensity, density_flow  # noqa: F401  (density_flow: the doctest's)
from .freeform import CNFBlock
from .layers import Bijection, Flatten, FlowSequence

__all__ = [
    "COUPLINGS",
    "FlowMatching",
    "independent_coupling",
    "ot_coupling",
    "conditional_path",
    "flow_matching_loss",
    "check_sigma_min",
    "cnf_blocks",
    "cnf_velocity",
    "sample_nfe",
]

Tensor = torch.Tensor
#: A velocity field on the flow-matching clock: ``v(x, s)``, ``x`` ``(B, D)``, ``s`` ``(B,)``.
Velocity = Callable[[Tensor, Tensor], Tensor]


def independent_coupling(x0: Tensor, x1: Tensor) -> Tensor:
    """The independent coupling: the noise ``x0`` as drawn, ``(B, D)``."""
    return x0


def ot_coupling(x0: Tensor, x1: Tensor) -> Tensor:
    """The minibatch optimal-transport coupling: ``x0`` reordered so that ``x0[i]`` goes to ``x1[i]``.

    The permutation ``sigma`` minimizes ``sum_i ||x0[sigma(i)] - x1[i]||^2`` exactly (the linear
    assignment problem, solved by ``scipy.optimize.linear_sum_assignment`` on the host); for
    uniform weights on equal-size batches the optimal transport plan is such a permutation.

    Args:
        x0: noise ``(B, D)``.
        x1: data ``(B, D)``.

    Returns:
        ``x0[sigma]``, ``(B, D)``; no gradient flows through the assignment.

    Raises:
        ImportError: scipy is missing (``pip install 'vaeflows[data]'``), naming the extra.
    """
    optimize = import_optional(
        "scipy.optimize", "scipy", "the 'ot' coupling of flow matching (or coupling='independent')"
    )
    cost = torch.cdist(x1.detach().flatten(1).double(), x0.detach().flatten(1).double()).pow(2)
    _, columns = optimize.linear_sum_assignment(cost.cpu().numpy())
    return x0[torch.as_tensor(columns, device=x0.device)]


#: ``coupling`` name -> ``(x0, x1) -> x0`` reordered to pair with ``x1``.
COUPLINGS: Dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "independent": independent_coupling,
    "ot": ot_coupling,
}


def check_sigma_min(name: str, value: object) -> float:
    """``value`` as a ``float`` if it is a real number in ``[0, 1)``, else a ValueError naming ``name``."""
    try:
        return 0.0 if value == 0 and not isinstance(value, bool) else check_real(name, value, above=0, below=1)
    except ValueError:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}") from None


def conditional_path(x0: Tensor, x1: Tensor, s: Tensor, sigma_min: float = 0.0) -> Tuple[Tensor, Tensor]:
    """The point ``x_s`` of the conditional path from ``x0`` to ``x1`` and its velocity ``u``.

    ``x_s = (1 - (1 - sigma_min) s) x0 + s x1`` and ``u = x1 - (1 - sigma_min) x0`` (Lipman et
    al. 2023, eq. 20-23, with ``x0`` the noise; ``sigma_min = 0`` is rectified flow).

    Args:
        x0: noise ``(B, ...)``.
        x1: data, the shape of ``x0``.
        s: times in ``[0, 1]``, ``(B,)``.
        sigma_min: the path's width at the data, in ``[0, 1)``.

    Returns:
        ``x_s`` and ``u``, each the shape of ``x0``.

    Example:
        >>> x_s, u = conditional_path(torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([0.25]))
        >>> x_s.tolist(), u.tolist()
        ([[0.25, 0.25]], [[1.0, 1.0]])
    """
    sigma_min = check_sigma_min("sigma_min", sigma_min)
    s = s.reshape(-1, *([1] * (x0.dim() - 1)))
    return (1 - (1 - sigma_min) * s) * x0 + s * x1, x1 - (1 - sigma_min) * x0


def flow_matching_loss(
    velocity: Velocity,
    x1: Tensor,
    x0: Optional[Tensor] = None,
    s: Optional[Tensor] = None,
    sigma_min: float = 0.0,
    coupling: str = "independent",
) -> Tensor:
    """The conditional flow-matching loss ``E || v(x_s, s) - u ||^2`` of a batch of data.

    ``L = (1/B) sum_i || v(x_s[i], s[i]) - u[i] ||^2``, the squares summed over the data's
    dimensions, with ``x_s`` and ``u`` of :func:`conditional_path`, ``s ~ U[0, 1]`` and
    ``x0 ~ N(0, I)`` unless given, paired with ``x1`` by ``coupling``.

    Args:
        velocity: ``v(x, s)`` on the flow-matching clock (noise at ``s = 0``, data at 1), e.g.
            :func:`cnf_velocity` of a model; ``x`` ``(B, ...)``, ``s`` ``(B,)``.
        x1: the data ``(B, ...)``.
        x0: the noise (default: drawn, ``N(0, I)``), the shape of ``x1``.
        s: the times ``(B,)`` (default: drawn, uniform on ``[0, 1)``).
        sigma_min: of the path, in ``[0, 1)`` (0: rectified flow).
        coupling: a name of :data:`COUPLINGS` (applied to ``x0``, given or drawn).

    Returns:
        The scalar loss.

    Example:
        >>> x1 = torch.randn(8, 2)
        >>> loss = flow_matching_loss(lambda x, s: torch.zeros_like(x), x1, x0=torch.zeros(8, 2))
        >>> torch.allclose(loss, x1.pow(2).sum(-1).mean())
        True
    """
    if coupling not in COUPLINGS:
        raise ValueError(f"unknown coupling {coupling!r}; known: {', '.join(COUPLINGS)}")
    if x0 is None:
        x0 = torch.randn_like(x1)
    elif x0.shape != x1.shape:
        raise ValueError(f"x0 of shape {tuple(x0.shape)} for data of shape {tuple(x1.shape)}: pass noise like x1")
    if s is None:
        s = torch.rand(x1.shape[0], dtype=x1.dtype, device=x1.device)
    x0 = COUPLINGS[coupling](x0, x1)
    x_s, u = conditional_path(x0, x1, s, sigma_min)
    return (velocity(x_s, s) - u).pow(2).flatten(1).sum(-1).mean()


def cnf_blocks(model: torch.nn.Module) -> List[CNFBlock]:
    """The CNF blocks of a continuous density model, in the order they are applied to the noise.

    Raises:
        ValueError: the model's flow holds other layers (only :func:`~.flows.ffjord` models,
            their CNF blocks and the final reshape to an image, can be trained by flow matching).
    """
    if not isinstance(model, FlowDensity):
        raise ValueError(
            f"flow matching trains continuous density models (density_flow('ffjord', ...)), "
            f"not a {type(model).__name__}"
        )
    flow = model.flow
    layers: List[Bijection] = list(flow._bijections()) if isinstance(flow, FlowSequence) else [flow]
    if layers and isinstance(layers[-1], Flatten):
        layers = layers[:-1]
    if not layers or not all(isinstance(layer, CNFBlock) for layer in layers):
        raise ValueError(
            f"flow matching trains continuous flows only, and this {model.name or 'density'} model has "
            "other layers: use an ffjord model (density_flow('ffjord', ...), --flow ffjord), or train "
            "this one by maximum likelihood"
        )
    return [layer for layer in layers if isinstance(layer, CNFBlock)]


def cnf_velocity(model: torch.nn.Module, context: Optional[Tensor] = None) -> Velocity:
    """The velocity ``v(x, s) = K T f_k(x, (K s - k) T)`` that the model's ODE integrates, on the
    flow-matching clock, ``k = min(floor(K s), K - 1)`` (see the module's docstring).

    Args:
        model: a continuous density model (:func:`cnf_blocks`).
        context: the model's context, ``(B, C)`` matching the batch, or ``None``.

    Returns:
        ``v(x, s)``, ``x`` ``(B, D)`` flat (images flattened as the model does), ``s`` ``(B,)``.
    """
    blocks = cnf_blocks(model)
    count = len(blocks)

    def velocity(x: Tensor, s: Tensor) -> Tensor:
        clock = s * count
        index = clock.floor().clamp(0, count - 1)
        if count == 1:
            block = blocks[0]
            return block.time_length * block.net(s[:, None] * block.time_length, x, context)
        out = torch.empty_like(x)
        for k, block in enumerate(blocks):
            rows = index == k
            if rows.any():
                local = (clock[rows] - k)[:, None] * block.time_length
                h = None if context is None else context[rows]
                out[rows] = count * block.time_length * block.net(local, x[rows], h)
        return out

    return velocity


@dataclass
class FlowMatching:
    """Flow-matching training options (the objective ``"flow-matching"`` of ``train_density``).

    Attributes:
        coupling: ``"independent"`` (default) or ``"ot"`` (minibatch optimal transport, needs scipy).
        sigma_min: the conditional path's width at the data, in ``[0, 1)`` (default 0: rectified flow).

    Example:
        >>> FlowMatching(coupling="ot", sigma_min=1e-4)
        FlowMatching(coupling='ot', sigma_min=0.0001)
    """

    coupling: str = "independent"
    sigma_min: float = 0.0

    def __post_init__(self) -> None:
        if self.coupling not in COUPLINGS:
            raise ValueError(f"unknown coupling {self.coupling!r}; known: {', '.join(COUPLINGS)}")
        self.sigma_min = check_sigma_min("sigma_min (--sigma-min)", self.sigma_min)

    def loss(self, model: torch.nn.Module, x1: Tensor, context: Optional[Tensor] = None) -> Tensor:
        """:func:`flow_matching_loss` of ``model``'s own field on data ``x1`` ``(B, *event_shape)``."""
        flat = x1.reshape(x1.shape[0], -1)
        return flow_matching_loss(cnf_velocity(model, context), flat, sigma_min=self.sigma_min, coupling=self.coupling)


def sample_nfe(model: torch.nn.Module, n: int = 1000, context: Optional[Tensor] = None) -> int:
    """Function evaluations of the vector fields to draw ``n`` samples (one batched solve per block,
    summed over the blocks; each evaluation also computes the trace term of the log-det).

    Example:
        >>> sample_nfe(density_flow("ffjord", (2,), num_steps=1, hidden=8), n=4) > 0
        True
    """
    blocks = cnf_blocks(model)  # a FlowDensity of CNF blocks
    with torch.no_grad():
        cast(FlowDensity, model).sample(n, context)
    return sum(block.net.nfe for block in blocks)
