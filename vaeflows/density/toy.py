"""Two-dimensional test problems, generated (no files): toy data sets and unnormalized energies.

Data sets (as in the FFJORD paper's ``toy_data``, with random angles and positions so that every
split is i.i.d.): ``moons``, ``8gaussians``, ``checkerboard``, ``rings``. Energies: the four
``U(z)`` of Rezende & Mohamed (2015), Table 1, with target density ``p(z) ∝ exp(-U(z))``.

Example:
    >>> toy_data("moons", 5, seed=0).shape
    torch.Size([5, 2])
    >>> ENERGIES["U1"](torch.zeros(3, 2)).shape
    torch.Size([3])

References:
    Grathwohl, Chen, Bettencourt, Sutskever, Duvenaud. FFJORD. ICLR 2019.
    Rezende, Mohamed. Variational inference with normalizing flows. ICML 2015.
"""

from __future__ import annotations

import math
from typing import Callable, Dict

import torch

__all__ = ["TOY_DATASETS", "ENERGIES", "toy_data", "moons", "eight_gaussians", "checkerboard", "rings"]

Tensor = torch.Tensor
Sampler = Callable[[int, torch.Generator], Tensor]


def moons(n: int, generator: torch.Generator) -> Tensor:
    """Two interleaved half circles, noise 0.1, scaled by 2 and shifted by (-1, -0.2)."""
    t = math.pi * torch.rand(n, generator=generator)
    upper = torch.rand(n, generator=generator) < 0.5
    x = torch.where(upper, torch.cos(t), 1 - torch.cos(t))
    y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
    points = torch.stack([x, y], -1) + 0.1 * torch.randn(n, 2, generator=generator)
    return 2 * points + torch.tensor([-1.0, -0.2])


def eight_gaussians(n: int, generator: torch.Generator) -> Tensor:
    """Eight Gaussians (std 0.5) on a circle of radius 4, all divided by 1.414."""
    angle = 2 * math.pi / 8 * torch.randint(8, (n,), generator=generator)
    centers = 4 * torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    return (centers + 0.5 * torch.randn(n, 2, generator=generator)) / 1.414


def checkerboard(n: int, generator: torch.Generator) -> Tensor:
    """Uniform on the 8 dark squares of a 4x4 board spanning [-4, 4]^2."""
    x1 = 4 * torch.rand(n, generator=generator) - 2
    x2 = torch.rand(n, generator=generator) - 2 * torch.randint(2, (n,), generator=generator)
    x2 = x2 + torch.floor(x1) % 2
    return 2 * torch.stack([x1, x2], -1)


def rings(n: int, generator: torch.Generator) -> Tensor:
    """Four concentric circles of radii 0.75, 1.5, 2.25, 3 (equally likely), noise 0.08."""
    radius = 0.75 * (1 + torch.randint(4, (n,), generator=generator))
    angle = 2 * math.pi * torch.rand(n, generator=generator)
    points = radius[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    return points + 0.08 * torch.randn(n, 2, generator=generator)


#: Name -> sampler ``(n, generator) -> (n, 2)``.
TOY_DATASETS: Dict[str, Sampler] = {
    "moons": moons,
    "8gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "rings": rings,
}


def toy_data(name: str, n: int, seed: int = 0) -> Tensor:
    """``n`` points of the toy set ``name``, float32 ``(n, 2)``, reproducible from ``seed``."""
    if name not in TOY_DATASETS:
        raise ValueError(f"unknown toy data set {name!r}; known: {', '.join(TOY_DATASETS)}")
    return TOY_DATASETS[name](n, torch.Generator().manual_seed(seed))


def _w1(z: Tensor) -> Tensor:
    return torch.sin(2 * math.pi * z[..., 0] / 4)


def _w2(z: Tensor) -> Tensor:
    return 3 * torch.exp(-0.5 * ((z[..., 0] - 1) / 0.6) ** 2)


def _w3(z: Tensor) -> Tensor:
    return 3 * torch.sigmoid((z[..., 0] - 1) / 0.3)


def _two_modes(a: Tensor, b: Tensor, scale_a: float, scale_b: float) -> Tensor:
    """``-log(exp(-(a/scale_a)^2/2) + exp(-(b/scale_b)^2/2))``, computed stably."""
    return -torch.logsumexp(torch.stack([-0.5 * (a / scale_a) ** 2, -0.5 * (b / scale_b) ** 2]), 0)


def u1(z: Tensor) -> Tensor:
    """``U1 = ((|z| - 2) / 0.4)^2 / 2 - log(exp(-((z1-2)/0.6)^2/2) + exp(-((z1+2)/0.6)^2/2))``."""
    ring = 0.5 * ((z.norm(dim=-1) - 2) / 0.4) ** 2
    return ring + _two_modes(z[..., 0] - 2, z[..., 0] + 2, 0.6, 0.6)


def u2(z: Tensor) -> Tensor:
    """``U2 = ((z2 - w1(z)) / 0.4)^2 / 2``, ``w1 = sin(2 pi z1 / 4)``."""
    return 0.5 * ((z[..., 1] - _w1(z)) / 0.4) ** 2


def u3(z: Tensor) -> Tensor:
    """``U3 = -log(exp(-((z2-w1)/0.35)^2/2) + exp(-((z2-w1+w2)/0.35)^2/2))``,
    ``w2 = 3 exp(-((z1 - 1)/0.6)^2/2)``."""
    a = z[..., 1] - _w1(z)
    return _two_modes(a, a + _w2(z), 0.35, 0.35)


def u4(z: Tensor) -> Tensor:
    """``U4 = -log(exp(-((z2-w1)/0.4)^2/2) + exp(-((z2-w1+w3)/0.35)^2/2))``,
    ``w3 = 3 sigmoid((z1 - 1)/0.3)``."""
    a = z[..., 1] - _w1(z)
    return _two_modes(a, a + _w3(z), 0.4, 0.35)


#: Name -> energy ``U(z)``, ``(..., 2) -> (...)``; the target density is ``exp(-U)`` up to a constant.
ENERGIES: Dict[str, Callable[[Tensor], Tensor]] = {"U1": u1, "U2": u2, "U3": u3, "U4": u4}
