"""The resumable training loop: exact resume, checkpoints, mismatches, divergence, early stopping."""

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from vaeflows.data import load_dataset
from vaeflows.infer import (
    CheckpointMismatch,
    TrainConfig,
    TrainingDiverged,
    elbo_per_point,
    fit,
    train_vae,
    vae_loss,
)
from vaeflows.models import build_vae

MODEL = {"arch": "mlp", "latent_dim": 2, "flow": "planar", "num_flows": 2, "hidden_dims": [32]}
SIGNATURE = {"dataset": "digits", "model": MODEL}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def fit_vae(digits, run_dir, epochs, init_seed=0, loss_wrapper=None, signature=SIGNATURE, **config):
    """``fit`` a tiny planar-flow VAE on digits (a fresh module, as a new process would build)."""
    torch.manual_seed(init_seed)
    vae = build_vae(image_shape=digits.image_shape, likelihood=digits.likelihood, **MODEL)
    config = TrainConfig(**{"epochs": epochs, "warmup": 2, "patience": 0, "lr": 1e-3, **config})
    loss = vae_loss(vae, digits, config.warmup)
    if loss_wrapper is not None:
        loss = loss_wrapper(loss)
    logs = []
    history = fit(
        vae,
        loss,
        lambda: -elbo_per_point(vae.model, vae.guide, digits.valid).mean().item(),
        digits.train,
        config,
        run_dir,
        signature,
        progress=False,
        log=logs.append,
    )
    return vae, history, logs


def without_seconds(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def test_resumed_run_matches_uninterrupted_run(digits, tmp_path):
    vae_a, history_a, _ = fit_vae(digits, tmp_path / "a", epochs=4)

    _, history_b1, _ = fit_vae(digits, tmp_path / "b", epochs=2)
    # disturb every global RNG between the two calls: the checkpoint must restore them
    torch.rand(100)
    np.random.rand(10)
    random.random()
    vae_b, history_b, logs = fit_vae(digits, tmp_path / "b", epochs=4, init_seed=123)

    assert any("resumed" in line and "after epoch 2" in line for line in logs)
    assert len(history_a) == 4 and len(history_b) == 4
    assert without_seconds(history_b[:2]) == without_seconds(history_b1)
    assert [h["beta"] for h in history_a] == [0.5, 1.0, 1.0, 1.0]
    for a, b in zip(history_a, history_b):
        assert a["epoch"] == b["epoch"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=0, abs=1e-6)
        assert a["valid"] == pytest.approx(b["valid"], rel=0, abs=1e-6)
    # and the weights agree too
    for (name, a), b in zip(vae_a.state_dict().items(), vae_b.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    # the loss went down over the 4 epochs (beta = 1 from epoch 2)
    assert history_a[-1]["train_loss"] < history_a[1]["train_loss"]


def test_checkpoint_contents(digits, tmp_path):
    vae, history, _ = fit_vae(digits, tmp_path, epochs=2)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    for key in ("module", "optimizer", "param_store", "rng", "state", "signature"):
        assert key in last
    assert last["signature"] == SIGNATURE
    assert last["state"]["epoch"] == 2
    assert last["state"]["history"] == history
    assert set(last["rng"]) >= {"torch", "numpy", "python"}
    assert last["optimizer"]["state"]  # Adamax moments were saved
    for name, value in vae.state_dict().items():
        assert torch.equal(last["module"][name], value)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["epoch"] == last["state"]["best_epoch"]
    assert set(best["module"]) == set(vae.state_dict())
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporaries


def test_param_store_in_checkpoint_follows_the_module_after_resume(digits, tmp_path):
    fit_vae(digits, tmp_path, epochs=1)
    vae, _, _ = fit_vae(digits, tmp_path, epochs=2)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    stored = last["param_store"]["params"]["vae$$$loc.weight"]
    torch.testing.assert_close(stored, vae.loc.weight.detach())


def test_param_store_in_checkpoint_follows_the_module_without_resume(digits, tmp_path):
    vae, _, _ = fit_vae(digits, tmp_path, epochs=2)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    stored = last["param_store"]["params"]["vae$$$loc.weight"]
    torch.testing.assert_close(stored, vae.loc.weight.detach())


def test_resume_with_another_signature_is_refused(digits, tmp_path):
    fit_vae(digits, tmp_path, epochs=1)
    other = {"dataset": "digits", "model": {**MODEL, "flow": "radial"}}
    with pytest.raises(CheckpointMismatch, match="planar") as info:
        fit_vae(digits, tmp_path, epochs=2, signature=other)
    assert "radial" in str(info.value)


@pytest.mark.parametrize("corruption", ["garbage", "truncated"])
def test_corrupt_checkpoint_is_refused(digits, tmp_path, corruption):
    if corruption == "garbage":
        (tmp_path / "last.pt").write_bytes(b"this is not a checkpoint \x00\x01\x02" * 10)
    else:
        fit_vae(digits, tmp_path, epochs=1)
        raw = (tmp_path / "last.pt").read_bytes()
        (tmp_path / "last.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointMismatch, match="not a readable vaeflows checkpoint"):
        fit_vae(digits, tmp_path, epochs=2)


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_nan_loss_stops_training_and_keeps_last_good_epoch(digits, tmp_path):
    def nan_from_epoch_2(loss):
        def wrapped(batch, epoch):
            value = loss(batch, epoch)
            return value * float("nan") if epoch >= 2 else value

        return wrapped

    with pytest.raises(TrainingDiverged, match="epoch 2") as info:
        fit_vae(digits, tmp_path, epochs=4, loss_wrapper=nan_from_epoch_2)
    assert "last.pt" in str(info.value)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["state"]["epoch"] == 1
    assert len(last["state"]["history"]) == 1
    assert all(torch.isfinite(v).all() for v in last["module"].values() if v.is_floating_point())
    # resuming with a healthy loss carries on from epoch 1
    _, history, logs = fit_vae(digits, tmp_path, epochs=2)
    assert [h["epoch"] for h in history] == [1, 2]
    assert np.isfinite(history[-1]["train_loss"])


# --- early stopping on a toy problem ---------------------------------------------------------


def fit_toy(tmp_path, valid_values, **config):
    torch.manual_seed(0)
    module = nn.Linear(3, 1)
    x = torch.randn(20, 3)
    calls = iter(valid_values)
    return fit(
        module,
        lambda batch, epoch: module(batch).pow(2).mean(),
        lambda: next(calls),
        x,
        TrainConfig(**{"batch_size": 5, "optimizer": "adam", **config}),
        tmp_path,
        {"toy": 1},
        progress=False,
        log=lambda line: None,
    )


def test_early_stopping_after_patience(tmp_path):
    history = fit_toy(tmp_path, [1.0] + [2.0] * 20, epochs=10, warmup=0, patience=2)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["state"]["best_epoch"] == 1 and last["state"]["bad_epochs"] == 2


def test_early_stopping_counts_after_warmup_only(tmp_path):
    history = fit_toy(tmp_path, [1.0] + [2.0] * 20, epochs=10, warmup=3, patience=1)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]


def test_improvements_reset_patience_and_patience_zero_never_stops(tmp_path):
    history = fit_toy(tmp_path / "a", [5.0, 6.0, 4.0, 6.0, 3.0, 6.0, 6.0, 6.0], epochs=8, warmup=0, patience=2)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5, 6, 7]
    history = fit_toy(tmp_path / "b", [1.0] + [2.0] * 7, epochs=8, warmup=0, patience=0)
    assert len(history) == 8


@pytest.mark.parametrize(
    "options, message",
    [
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"warmup": -1}, "warmup must be an integer >= 0"),
        ({"lr": 0.0}, "lr must be a finite number > 0"),
        ({"optimizer": "sgd"}, "unknown optimizer 'sgd'.*adamax.*adam"),
    ],
)
def test_train_config_validation(options, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**options)


@pytest.mark.parametrize("clip_norm", [0.0, -1.0])
def test_train_config_refuses_non_positive_clip_norm(clip_norm):
    with pytest.raises(ValueError, match="clip_norm"):
        TrainConfig(clip_norm=clip_norm)


# --- the VAE experiment: train_vae ------------------------------------------------------------


def train_digits(run_dir, epochs, flow="planar", **kwargs):
    return train_vae(
        "digits",
        None,
        {**MODEL, "flow": flow},
        TrainConfig(epochs=epochs, warmup=1, patience=0),
        run_dir,
        device="cpu",
        nll_samples=10,
        progress=False,
        log=lambda line: None,
        **kwargs,
    )


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    train_digits(run_dir, epochs=1)
    metrics = train_digits(run_dir, epochs=2)  # resumes
    return run_dir, metrics


def test_train_vae_writes_metrics_and_pictures(trained_run):
    run_dir, returned = trained_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics == returned
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    for epoch in metrics["epochs"]:
        assert np.isfinite(epoch["train_loss"]) and np.isfinite(epoch["valid"]) and epoch["valid"] > 0
    assert metrics["device"] == "cpu"
    assert "seconds_per_epoch" in metrics  # recorded; speed itself is measured in benchmarks/
    assert metrics["nll_samples"] == 10
    assert 0 < metrics["test_nll"] < metrics["test_elbo"] + 1.0  # NLL <= -ELBO up to MC noise
    # the test -ELBO is that of best.pt, the model of the best validation -ELBO (another split)
    best = metrics["epochs"][metrics["best_epoch"] - 1]
    assert best["valid"] == min(e["valid"] for e in metrics["epochs"])
    # (after 2 epochs on 180-image splits the two splits' one-sample -ELBOs differ by a few nats)
    assert metrics["test_elbo"] == pytest.approx(best["valid"], rel=0.2)
    for name in ("reconstructions.png", "samples.png", "learning_curve.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["dataset"] == "digits" and config["model"]["flow"] == "planar"


def test_train_vae_resume_with_another_flow_is_refused(trained_run):
    run_dir, _ = trained_run
    with pytest.raises(CheckpointMismatch) as info:
        train_digits(run_dir, epochs=3, flow="radial")
    assert "'planar'" in str(info.value) and "'radial'" in str(info.value)
    last = torch.load(run_dir / "last.pt", weights_only=True)
    assert last["state"]["epoch"] == 2


def test_refused_resume_leaves_the_run_usable(tmp_path):
    from vaeflows.infer import load_run

    train_digits(tmp_path, epochs=1)
    with pytest.raises(CheckpointMismatch):
        train_digits(tmp_path, epochs=2, flow="radial")
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"]["flow"] == "planar"
    load_run(tmp_path, device="cpu")  # CheckpointMismatch: best.pt does not fit config.json
