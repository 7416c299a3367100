"""``--log tensorboard csv``: the epochs, final figures and PNGs read back as ``metrics.json`` holds them."""

import csv
import json
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from vaeflows.cli import main
from vaeflows.infer.run_log import RunLog

VAE = [
    "train", "--dataset", "digits", "--arch", "mlp", "--flow", "planar", "--latent-dim", "4",
    "--epochs", "2", "--warmup", "1", "--nll-samples", "10", "--no-progress",
]  # fmt: skip
DENSITY = [
    "density", "train", "--flow", "realnvp", "--dataset", "moons", "--num-train", "400", "--num-steps", "2",
    "--hidden", "8", "--batch-size", "100", "--no-progress", "--log", "tensorboard",
]  # fmt: skip


def events(run_dir):
    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def scalars(accumulator, tag):
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def test_vae_run_logs_its_epochs_figures_and_pictures(tmp_path):
    run_dir = tmp_path / "run"
    assert main([*VAE, "--out", str(run_dir), "--log", "tensorboard", "csv"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = metrics["epochs"]

    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [{key: float(value) for key, value in row.items()} for row in rows] == history  # exact: repr round trip

    accumulator = events(run_dir)
    for tag, field in [("loss/train", "train_loss"), ("loss/valid", "valid"), ("beta", "beta")]:
        logged = scalars(accumulator, tag)
        assert [step for step, _ in logged] == [1, 2]
        assert [value for _, value in logged] == pytest.approx([h[field] for h in history], rel=1e-6)  # float32
    ((step, nll),) = scalars(accumulator, "final/test_nll")
    assert step == 2 and nll == pytest.approx(metrics["test_nll"], rel=1e-6)
    assert set(accumulator.Tags()["images"]) == {"reconstructions", "samples", "learning_curve"}


def test_a_resume_hides_epochs_logged_after_the_last_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    assert main([*DENSITY, "--epochs", "1", "--out", str(run_dir)]) == 0
    # A process that logged epoch 2 and died before checkpointing it:
    with SummaryWriter(str(run_dir / "tensorboard")) as stale:
        stale.add_scalar("loss/train", 1e6, 2)
    assert main([*DENSITY, "--epochs", "2", "--out", str(run_dir)]) == 0
    history = json.loads((run_dir / "metrics.json").read_text())["epochs"]

    logged = scalars(events(run_dir), "loss/train")
    assert [step for step, _ in logged] == [1, 2]
    assert [value for _, value in logged] == pytest.approx([h["train_loss"] for h in history], rel=1e-6)


def test_bad_formats_and_a_missing_package_stop_before_training(tmp_path, monkeypatch, capsys):
    with pytest.raises(ValueError, match="unknown log format 'json'.*tensorboard, csv"):
        RunLog(tmp_path, ["json"])
    with pytest.raises(SystemExit):
        main(["density", "energy", "--energy", "U1", "--out", str(tmp_path / "r"), "--log", "json"])
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    assert main(["density", "energy", "--energy", "U1", "--out", str(tmp_path / "r"), "--log", "tensorboard"]) == 2
    assert "pip install 'vaeflows[logs]'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
