"""Drawing a run's PNGs: the caller's matplotlib backend is left alone; the pictures show the whole test set."""

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


def test_reconstructions_show_images_from_across_the_test_set(tmp_path):
    """The binarized MNIST test file is sorted by digit: the picture must not show its first 16."""
    pytest.importorskip("matplotlib")
    from vaeflows.report import draw_run

    test = torch.arange(100.0).reshape(100, 1, 1, 1).expand(100, 1, 4, 4) / 100  # image i holds i/100
    shown = []

    class Recorder:  # the two methods draw_run uses, recording what it reconstructs
        def reconstruct(self, x):
            shown.append(x[:, 0, 0, 0] * 100)
            return x

        def sample_images(self, num, like):
            return like[:num]

    history = [{"epoch": 1, "train_loss": 1.0, "valid": 1.0, "beta": 1.0, "seconds": 1.0}]
    draw_run(tmp_path, Recorder(), test, history, log=lambda message: None)
    indices = torch.cat(shown).round().long().tolist()
    assert len(set(indices)) == 16 and indices[0] == 0 and indices[-1] == 99
