"""PNGs of density estimation: 2-D densities on a grid beside data or a target, and samples.

matplotlib is optional; every function returns False without it (see :mod:`vaeflows.report`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Tuple

import torch

from vaeflows.report import _pyplot

__all__ = ["grid_points", "density_on_grid", "save_panels"]

#: A panel: (title, ``"grid"`` with a ``(size, size)`` density or ``"points"`` with ``(N, 2)``).
Panel = Tuple[str, str, torch.Tensor]


def grid_points(bound: float, size: int) -> torch.Tensor:
    """``(size * size, 2)`` points of a regular grid on ``[-bound, bound]^2``, row-major in y."""
    axis = torch.linspace(-bound, bound, size)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)


@torch.no_grad()
def density_on_grid(
    log_density: Callable[[torch.Tensor], torch.Tensor], bound: float, size: int, like: torch.Tensor
) -> torch.Tensor:
    """``exp(log_density)`` on :func:`grid_points`, shape ``(size, size)``, computed in chunks on
    the device and dtype of ``like``."""
    points = grid_points(bound, size).to(like)
    values = torch.cat([log_density(chunk).exp() for chunk in points.split(65536)])
    return values.reshape(size, size).cpu()


def save_panels(panels: List[Panel], path: Path, bound: float, title: str = "") -> bool:
    """Side-by-side square panels on ``[-bound, bound]^2``; False if matplotlib is missing."""
    plt = _pyplot()
    if plt is None:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    for ax, (name, kind, values) in zip(axes, panels):
        extent = (-bound, bound, -bound, bound)
        if kind == "grid":
            ax.imshow(values.float().numpy(), origin="lower", extent=extent, cmap="viridis")
        else:
            points = values.detach().float().cpu().numpy()
            ax.hist2d(points[:, 0], points[:, 1], bins=120, range=[extent[:2], extent[2:]], cmap="viridis")
        ax.set_title(name)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return True
