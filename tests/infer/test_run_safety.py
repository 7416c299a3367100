"""Runs that cannot be corrupted (issue 14): resumes that never silently ignore a changed setting,
one writer per run directory, checkpoints that cannot run code, atomic JSON, an evaluation that
keeps what was recorded, and NaN validation values caught like NaN losses."""

import fcntl
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.infer.test_training import without_seconds
from tests.test_cli import assert_one_line_error, run
from vaeflows.infer.training import (
    CheckpointMismatch,
    RunLocked,
    TrainConfig,
    TrainingDiverged,
    UnsafeCheckpoint,
    atomic_write,
    fit,
    load_best,
    load_checkpoint,
    run_lock,
    write_json,
)

ROOT = Path(__file__).resolve().parents[2]
TRAIN = [
    "train", "--dataset", "digits", "--arch", "mlp", "--flow", "planar", "--latent-dim", "2",
    "--hidden-dims", "16", "--num-flows", "1", "--warmup", "1", "--nll-samples", "10", "--no-progress",
]  # fmt: skip


def fit_toy(run_dir, valid=None, loss_scale=1.0, allow_changes=False, **config):
    """``fit`` a linear map to noisy copies of 20 random points (4 steps an epoch, fresh noise at
    each step, so that a resume must restore the RNG); returns the module and history."""
    torch.manual_seed(0)
    module = nn.Linear(3, 1)
    x = torch.randn(20, 3)
    history = fit(
        module,
        lambda batch, epoch: module(batch + torch.randn_like(batch)).pow(2).mean() * loss_scale,
        valid or (lambda: module(x).pow(2).mean().item()),
        x,
        TrainConfig(**{"batch_size": 5, "optimizer": "adam", "lr": 1e-3, "warmup": 0, "patience": 0, **config}),
        run_dir,
        {"toy": 1},
        progress=False,
        log=lambda line: None,
        allow_changes=allow_changes,
    )
    return module, history


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """A one-epoch digits run trained by the command (test figures with 10 samples)."""
    out = tmp_path_factory.mktemp("safety") / "run"
    code, _, err = run([*TRAIN, "--epochs", "1", "--out", out])
    assert code == 0, err
    return out


def copy_of(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy


# --- 2. resume semantics ----------------------------------------------------------------------


def test_a_resume_with_changed_settings_is_refused_naming_each(tmp_path):
    fit_toy(tmp_path, epochs=1)
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(CheckpointMismatch) as info:
        fit_toy(tmp_path, epochs=2, lr=1e-4, optimizer="adamax", batch_size=4)
    message = str(info.value)
    for change in ("lr 0.001 -> 0.0001", "optimizer 'adam' -> 'adamax'", "batch_size 5 -> 4"):
        assert change in message
    assert "epochs" not in message  # raising epochs trains on: not a change
    assert "--allow-changes" in message and "another --out" in message
    assert (tmp_path / "last.pt").read_bytes() == before


def test_allow_changes_applies_the_new_lr_and_records_it(tmp_path):
    torch.manual_seed(0)
    start = nn.Linear(3, 1).weight.detach()  # the toy's initial weights
    module, _ = fit_toy(tmp_path, epochs=1)
    after_one = module.weight.detach().clone()
    module, _ = fit_toy(tmp_path, epochs=2, lr=1e-4, allow_changes=True)
    last = load_checkpoint(tmp_path / "last.pt")
    assert [group["lr"] for group in last["optimizer"]["param_groups"]] == [1e-4]
    assert last["config"]["lr"] == 1e-4
    assert last["state"]["changes"] == [{"from_epoch": 2, "changed": {"lr": [1e-3, 1e-4]}}]
    # Adam moves each weight by about lr a step: epoch 2 moved them about 10x less than epoch 1
    assert (module.weight.detach() - after_one).abs().max() < (after_one - start).abs().max() / 3
    # the change stays in the history; resuming with the new settings is no change
    fit_toy(tmp_path, epochs=3, lr=1e-4)
    assert load_checkpoint(tmp_path / "last.pt")["state"]["changes"] == last["state"]["changes"]


def test_allow_changes_to_another_optimizer_starts_it_afresh(tmp_path):
    fit_toy(tmp_path, epochs=1, optimizer="adamax")
    fit_toy(tmp_path, epochs=2, optimizer="adam", allow_changes=True)  # no KeyError: 'exp_avg_sq'
    last = load_checkpoint(tmp_path / "last.pt")
    moments = next(iter(last["optimizer"]["state"].values()))
    assert "exp_avg_sq" in moments and "exp_inf" not in moments
    assert int(moments["step"]) == 4  # one epoch of Adam, not Adamax's 4 + 4
    assert last["state"]["changes"] == [{"from_epoch": 2, "changed": {"optimizer": ["adamax", "adam"]}}]


def test_command_refuses_a_changed_lr_before_writing_and_applies_it_when_allowed(cli_run, tmp_path):
    copy = copy_of(cli_run, tmp_path)
    config_before = (copy / "config.json").read_bytes()
    code, _, err = run([*TRAIN, "--epochs", "2", "--lr", "1e-4", "--optimizer", "adam", "--out", copy])
    assert_one_line_error(
        code, err, str(copy), "lr 0.0005 -> 0.0001", "optimizer 'adamax' -> 'adam'", "--allow-changes"
    )
    assert (copy / "config.json").read_bytes() == config_before
    assert load_checkpoint(copy / "last.pt")["state"]["epoch"] == 1

    code, out, err = run([*TRAIN, "--epochs", "2", "--lr", "1e-4", "--allow-changes", "--out", copy])
    assert code == 0, err
    assert "applying changed settings from epoch 2: lr 0.0005 -> 0.0001" in out
    changes = [{"from_epoch": 2, "changed": {"lr": [5e-4, 1e-4]}}]
    config = json.loads((copy / "config.json").read_text())
    assert config["train"]["lr"] == 1e-4 and config["changes"] == changes
    metrics = json.loads((copy / "metrics.json").read_text())
    assert metrics["changes"] == changes and len(metrics["epochs"]) == 2


def test_density_resume_with_a_changed_lr_is_refused(tmp_path):
    from vaeflows.density import train_density

    def train(**config):
        return train_density(
            "moons",
            "realnvp",
            {"hidden": 8, "num_steps": 2},
            TrainConfig(**config),
            tmp_path,
            num_train=200,
            device="cpu",
            progress=False,
            log=lambda line: None,
        )

    train(epochs=1, batch_size=100)
    config_before = (tmp_path / "config.json").read_bytes()
    with pytest.raises(CheckpointMismatch, match="lr 0.0005 -> 0.002"):
        train(epochs=2, batch_size=100, lr=2e-3)
    assert (tmp_path / "config.json").read_bytes() == config_before
    train(epochs=2, batch_size=100, warmup=7)  # density runs have no warm-up: not a change


# --- 3. one writer per run directory, and a kill at the worst moment ---------------------------


def test_the_lock_is_held_reentrant_and_released(tmp_path):
    def taken_by_another_open():
        with open(tmp_path / "run.lock") as other:
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False

    with run_lock(tmp_path):
        with run_lock(tmp_path):
            assert f"pid {os.getpid()} on " in (tmp_path / "run.lock").read_text()
        assert taken_by_another_open()
    assert not taken_by_another_open()


def test_a_second_writer_is_refused_and_a_run_killed_mid_checkpoint_resumes_exactly(tmp_path):
    _, reference = fit_toy(tmp_path / "reference", epochs=3)
    run_dir = tmp_path / "killed"
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.infer.run_worker", str(run_dir), str(torch.get_num_threads())],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert worker.stdout.readline().strip() == "writing", worker.stderr.read()
        # the worker is half-way through writing epoch 2's last.pt, holding the lock
        with pytest.raises(RunLocked, match=f"in use by pid {worker.pid} on "):
            fit_toy(run_dir, epochs=3)
        code, _, err = run([*TRAIN, "--epochs", "3", "--out", run_dir])
        assert_one_line_error(code, err, str(run_dir), f"pid {worker.pid}", "--out")
        assert not (run_dir / "config.json").exists()  # the refused command wrote nothing
    finally:
        worker.kill()  # SIGKILL: no handler runs, the kernel drops the lock
        worker.communicate()
    assert (run_dir / "last.pt.tmp").exists()
    assert load_checkpoint(run_dir / "last.pt")["state"]["epoch"] == 1
    load_checkpoint(run_dir / "best.pt")
    module, resumed = fit_toy(run_dir, epochs=3)  # the dead run's lock does not block
    assert without_seconds(resumed) == without_seconds(reference)  # bitwise
    assert torch.equal(module.weight, load_checkpoint(tmp_path / "reference" / "last.pt")["module"]["weight"])
    assert not (run_dir / "last.pt.tmp").exists()


# --- 4. checkpoints that cannot run code, atomic JSON -----------------------------------------


class Payload:
    """Unpickling it calls ``open(marker, "w")``, which creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("name", ["last.pt", "best.pt"])
def test_a_checkpoint_that_pickles_a_callable_is_refused_and_never_runs(tmp_path, name):
    marker = tmp_path / "ran"
    module, _ = fit_toy(tmp_path, epochs=1)
    torch.save({"module": module.state_dict(), "state": Payload(marker)}, tmp_path / name)
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpoint, match=rf"{name} pickles \w*\.open, which vaeflows checkpoints do not hold"):
        if name == "last.pt":
            fit_toy(tmp_path, epochs=2)
        else:
            load_best(module, tmp_path)
    assert not marker.exists()


def test_command_refuses_a_best_checkpoint_that_pickles_a_callable(cli_run, tmp_path):
    copy = copy_of(cli_run, tmp_path)
    marker = tmp_path / "ran"
    best = load_checkpoint(copy / "best.pt")
    torch.save({**best, "epoch": Payload(marker)}, copy / "best.pt")
    for argv in (["evaluate", copy, "--samples", "2", "--no-progress"], ["sample", copy]):
        code, _, err = run(argv)
        assert_one_line_error(code, err, str(copy / "best.pt"), "could run code")
    assert not marker.exists()


def test_a_last_checkpoint_without_the_training_state_is_refused(tmp_path):
    module, _ = fit_toy(tmp_path, epochs=1)
    torch.save({"module": module.state_dict()}, tmp_path / "last.pt")
    with pytest.raises(
        CheckpointMismatch, match=r"last.pt lacks \['optimizer', 'state', 'config', 'signature', 'rng'\]"
    ):
        fit_toy(tmp_path, epochs=2)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "metrics.json"
    write_json({"test_nll": 80.0}, path)

    def fail_half_way(file):
        file.write(b'{"test_')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail_half_way)
    assert json.loads(path.read_text()) == {"test_nll": 80.0}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


# --- 5. evaluate ------------------------------------------------------------------------------


@pytest.mark.parametrize("samples", ["0", "-1"])
def test_evaluate_refuses_non_positive_samples_and_keeps_metrics(cli_run, samples):
    before = (cli_run / "metrics.json").read_bytes()
    code, _, err = run(["evaluate", cli_run, "--samples", samples, "--no-progress"])
    assert_one_line_error(code, err, "--samples", ">= 1")
    assert (cli_run / "metrics.json").read_bytes() == before


def test_evaluate_is_seeded_and_keeps_every_recorded_result(cli_run, tmp_path):
    copy = copy_of(cli_run, tmp_path)
    trained = json.loads((copy / "metrics.json").read_text())
    assert trained["eval_seed"] == 0 and trained["nll_samples"] == 10 and trained["evaluations"] == []
    for seed in ("0", "0", "5"):
        code, _, err = run(["evaluate", copy, "--samples", "10", "--seed", seed, "--no-progress"])
        assert code == 0, err
    metrics = json.loads((copy / "metrics.json").read_text())
    assert {k: v for k, v in metrics.items() if k != "evaluations"} == {
        k: v for k, v in trained.items() if k != "evaluations"
    }  # the training's figures are kept
    first, again, other = metrics["evaluations"]
    assert first == again and first["seed"] == 0 and other["seed"] == 5
    assert first["nll_samples"] == 10 and first["best_epoch"] == trained["best_epoch"]
    # seed 0 reproduces the training's own figures; another seed draws other samples
    assert (first["test_elbo"], first["test_nll"]) == (trained["test_elbo"], trained["test_nll"])
    assert other["test_elbo"] != first["test_elbo"]


def test_evaluate_refuses_a_run_being_written(cli_run):
    before = (cli_run / "metrics.json").read_bytes()
    with open(cli_run / "run.lock", "a+") as holder:  # another open file: another holder
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, _, err = run(["evaluate", cli_run, "--samples", "2", "--no-progress"])
    assert_one_line_error(code, err, f"{cli_run} is in use by", "run.lock")
    assert (cli_run / "metrics.json").read_bytes() == before


# --- 6. NaN validation values -----------------------------------------------------------------


def test_a_nan_validation_value_stops_training_and_keeps_the_last_good_epoch(tmp_path):
    values = iter([2.0, 1.0, math.nan])
    with pytest.raises(TrainingDiverged, match="validation value became nan in epoch 3") as info:
        fit_toy(tmp_path, valid=lambda: next(values), epochs=5)
    assert f"{tmp_path / 'last.pt'} holds epoch 2, the last good one" in str(info.value)
    assert load_checkpoint(tmp_path / "last.pt")["state"]["epoch"] == 2
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 2


@pytest.mark.parametrize("where", ["training loss", "validation value"])
def test_a_nan_in_the_first_epoch_says_there_is_no_checkpoint(tmp_path, where):
    options = {"loss_scale": math.nan} if where == "training loss" else {"valid": lambda: math.nan}
    with pytest.raises(TrainingDiverged, match=f"{where} became nan in epoch 1") as info:
        fit_toy(tmp_path, epochs=2, **options)
    assert "no epoch finished, so there is no checkpoint" in str(info.value)
    assert "last good" not in str(info.value)
    assert not (tmp_path / "last.pt").exists() and not (tmp_path / "best.pt").exists()
