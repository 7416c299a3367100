"""Drawing a run's PNGs leaves the caller's matplotlib backend alone (a notebook's inline backend)."""

import pytest
import torch

from vaeflows.report import save_images


def test_save_images_keeps_the_backend_of_a_caller_using_pyplot(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    plt = pytest.importorskip("matplotlib.pyplot")
    before = matplotlib.get_backend()
    plt.switch_backend("pdf")  # any backend other than Agg stands for the caller's
    try:
        assert save_images(torch.rand(4, 1, 8, 8), tmp_path / "grid.png", "grid")
        assert matplotlib.get_backend() == "pdf"
        assert (tmp_path / "grid.png").stat().st_size > 0
    finally:
        plt.switch_backend(before)
