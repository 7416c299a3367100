"""The pictures of a run: reconstructions, samples and the learning curve, as PNGs.

matplotlib is an optional dependency (``pip install vaeflows[data]``); without it the PNGs are
skipped with one line saying so.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Callable, List, Optional

import torch

__all__ = ["image_grid", "save_images", "save_learning_curve", "draw_run"]


def image_grid(images: torch.Tensor, columns: int, pad: int = 1) -> torch.Tensor:
    """Tile ``(N, C, H, W)`` images (first channel) into one grey image, ``pad`` pixels of grey
    0.5 between them: shape ``(rows * (H + pad) - pad, columns * (W + pad) - pad)``."""
    n, _, h, w = images.shape
    rows = math.ceil(n / columns)
    cells = images.new_full((rows * columns, h + pad, w + pad), 0.5)
    cells[:n, :h, :w] = images[:, 0]
    grid = cells.reshape(rows, columns, h + pad, w + pad).permute(0, 2, 1, 3)
    return grid.reshape(rows * (h + pad), columns * (w + pad))[: rows * (h + pad) - pad, : columns * (w + pad) - pad]


def _pyplot():
    """pyplot, or None without matplotlib. Agg (no windows) unless pyplot is already in use: switching
    the backend of a caller that imported pyplot (a notebook's inline backend) would hide its figures."""
    try:
        import matplotlib

        if "matplotlib.pyplot" not in sys.modules:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_images(images: torch.Tensor, path: Path, title: str, columns: int = 8) -> bool:
    """Save a titled grid of images in [0, 1]; False if matplotlib is missing."""
    plt = _pyplot()
    if plt is None:
        return False
    grid = image_grid(images.detach().float().cpu().clamp(0, 1), columns)
    fig, ax = plt.subplots(figsize=(columns, grid.shape[0] / grid.shape[1] * columns + 0.5))
    ax.imshow(grid.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return True


def save_learning_curve(history: List[dict], path: Path, title: str) -> bool:
    """Plot train and validation -ELBO per epoch; False if matplotlib is missing."""
    plt = _pyplot()
    if plt is None or not history:
        return False
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["train_loss"] for h in history], label="train (warm-up weighted)")
    ax.plot(epochs, [h["valid"] for h in history], label="validation (beta = 1)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("-ELBO (nats per data point)")
    ax.set_title(title)
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return True


def draw_run(
    run_dir: Path,
    vae,
    test: torch.Tensor,
    history: List[dict],
    log: Callable[[str], None] = print,
    num_samples: int = 64,
    seed: Optional[int] = 0,
) -> None:
    """``reconstructions.png`` (test images above their reconstructions), ``samples.png``,
    ``learning_curve.png`` in ``run_dir``."""
    run_dir = Path(run_dir)
    with torch.random.fork_rng(devices=[test.device] if test.is_cuda else []):
        if seed is not None:
            torch.manual_seed(seed)
        _draw_pictures(run_dir, vae, test, history, log, num_samples)


def _draw_pictures(run_dir: Path, vae, test: torch.Tensor, history: List[dict], log, num_samples: int) -> None:
    # 16 images spread over the test set: the binarized MNIST test file is sorted by digit, so its
    # first 16 are all zeros.
    originals = test[torch.linspace(0, len(test) - 1, min(16, len(test)), device=test.device).long()]
    pairs = torch.cat([originals[:8], vae.reconstruct(originals[:8]), originals[8:], vae.reconstruct(originals[8:])])
    drawn = [
        save_images(pairs, run_dir / "reconstructions.png", "test images (rows 1, 3) and reconstructions (rows 2, 4)"),
        save_images(
            vae.sample_images(num_samples, test), run_dir / "samples.png", "samples: mean of p(x | z), z ~ p(z)"
        ),
        save_learning_curve(history, run_dir / "learning_curve.png", "learning curve"),
    ]
    if not all(drawn):
        log("matplotlib is not installed: no PNGs (pip install 'vaeflows[data]')")
    else:
        log(f"wrote reconstructions.png, samples.png, learning_curve.png in {run_dir}")
