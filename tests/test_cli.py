"""The ``vaeflows`` command, in-process: train/evaluate/sample, and one clear line for bad input."""

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vaeflows.cli import main
from vaeflows.transforms import POSTERIOR_FLOWS

TRAIN = [
    "train", "--dataset", "digits", "--arch", "mlp", "--flow", "planar", "--latent-dim", "4",
    "--epochs", "2", "--warmup", "1", "--nll-samples", "20", "--no-progress",
]  # fmt: skip
PNGS = ("reconstructions.png", "samples.png", "learning_curve.png")


def run(argv):
    """``main(argv)`` with its stdout and stderr; SystemExit (argparse) gives its code."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as stop:
            code = stop.code
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vaeflows: error: ")
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    code, stdout, err = run([*TRAIN, "--out", out])
    assert code == 0, err
    assert "Traceback" not in err
    assert "epoch    2" in stdout and "test NLL" in stdout
    return out


def test_train_writes_metrics_and_pictures(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert metrics["nll_samples"] == 20
    assert metrics["model"] == {"arch": "mlp", "latent_dim": 4, "flow": "planar", "num_flows": 4}
    assert metrics["test_nll"] > 0 and metrics["test_elbo"] > 0
    for name in PNGS:
        assert (run_dir / name).stat().st_size > 0
    for name in ("last.pt", "best.pt", "config.json"):
        assert (run_dir / name).exists()


def test_evaluate(run_dir):
    code, stdout, err = run(["evaluate", run_dir, "--samples", "10", "--no-progress"])
    assert code == 0, err
    assert "test -ELBO" in stdout and "10 importance samples" in stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["nll_samples"] == 20  # the training's own figures are kept
    assert metrics["evaluations"][-1]["nll_samples"] == 10 and metrics["evaluations"][-1]["seed"] == 0


def test_sample(run_dir, tmp_path):
    target = tmp_path / "grid.png"
    code, stdout, err = run(["sample", run_dir, "--num", "16", "--out", target])
    assert code == 0, err
    assert target.read_bytes()[:4] == b"\x89PNG"
    assert str(target) in stdout
    before = (run_dir / "samples.png").stat().st_mtime_ns
    code, stdout, err = run(["sample", run_dir, "--num", "16"])
    assert code == 0, err
    assert (run_dir / "samples.png").stat().st_mtime_ns >= before
    assert "samples.png" in stdout


def test_installed_command_help():
    exe = Path(sys.executable).parent / "vaeflows"
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "vaeflows.cli"]
    done = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for word in ("train", "evaluate", "sample"):
        assert word in done.stdout


# --- bad input: exit code 2 and one line --------------------------------------------------------


def test_missing_dataset_files(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(
        ["train", "--dataset", "binarized-mnist", "--data-dir", empty, "--arch", "mlp", "--out", tmp_path / "r"]
    )
    assert_one_line_error(code, err, "binarized_mnist_train.amat", "binarized_mnist.npz", str(empty))
    assert not (tmp_path / "r").exists()


def test_missing_data_dir_option(tmp_path):
    code, _, err = run(["train", "--dataset", "binarized-mnist", "--out", tmp_path / "r"])
    assert_one_line_error(code, err, "--data-dir")


def test_hidden_dims_with_gated_conv(tmp_path):
    code, _, err = run([*TRAIN, "--arch", "gated-conv", "--hidden-dims", "32", "--out", tmp_path / "r"])
    assert_one_line_error(code, err, "--hidden-dims", "mlp")


def test_num_ortho_vecs_with_planar(tmp_path):
    code, _, err = run([*TRAIN, "--num-ortho-vecs", "2", "--out", tmp_path / "r"])
    assert_one_line_error(code, err, "--num-ortho-vecs", "sylvester-orthogonal")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda(tmp_path):
    code, _, err = run([*TRAIN, "--device", "cuda", "--out", tmp_path / "r"])
    assert_one_line_error(code, err, "cuda", "--device cpu")


def test_gated_conv_on_digits(tmp_path):
    code, _, err = run([*TRAIN, "--arch", "gated-conv", "--out", tmp_path / "r"])
    assert_one_line_error(code, err, "8x8", "mlp")


def test_evaluate_a_folder_that_is_not_a_run(tmp_path):
    code, _, err = run(["evaluate", tmp_path, "--samples", "10", "--no-progress"])
    assert_one_line_error(code, err, str(tmp_path), "config.json")
    code, _, err = run(["sample", tmp_path / "nowhere"])
    assert_one_line_error(code, err, "not a vaeflows run directory")


def test_resume_with_another_flow(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    argv = [*TRAIN, "--out", copy]
    argv[argv.index("planar")] = "radial"
    code, _, err = run(argv)
    assert_one_line_error(code, err, "'planar'", "'radial'", str(copy))


def test_evaluate_still_works_after_a_refused_resume(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    argv = [*TRAIN, "--out", copy]
    argv[argv.index("planar")] = "radial"
    assert run(argv)[0] == 2
    code, _, err = run(["evaluate", copy, "--samples", "2", "--no-progress"])
    assert code == 0, err


def test_corrupt_checkpoint(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "last.pt").write_bytes(b"garbage")
    code, _, err = run([*TRAIN, "--out", copy])
    assert_one_line_error(code, err, "last.pt", "not a readable vaeflows checkpoint")


def test_epochs_zero(tmp_path):
    code, _, err = run([*TRAIN, "--epochs", "0", "--out", tmp_path / "r"])
    assert_one_line_error(code, err, "argument --epochs: must be an integer >= 1, got 0")


def test_iwae_samples_zero(tmp_path):
    code, _, err = run([*TRAIN, "--objective", "iwae", "--iwae-samples", "0", "--out", tmp_path / "r"])
    assert_one_line_error(code, err, "--iwae-samples")


def test_non_positive_clip_norm(tmp_path):
    code, _, err = run([*TRAIN, "--clip-norm", "-1", "--epochs", "1", "--nll-samples", "0", "--out", tmp_path / "r"])
    assert_one_line_error(code, err, "clip")


def test_best_checkpoint_that_does_not_fit_config_is_one_line(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    config["model"]["flow"] = "radial"
    (copy / "config.json").write_text(json.dumps(config))
    code, _, err = run(["evaluate", copy, "--samples", "2", "--no-progress"])
    assert_one_line_error(code, err, "best.pt", "config.json")


@pytest.mark.parametrize(
    "flag, value, choices",
    [("--dataset", "mnist", ["binarized-mnist", "digits"]), ("--flow", "plnar", list(POSTERIOR_FLOWS))],
)
def test_unknown_names_are_argparse_errors(tmp_path, flag, value, choices):
    argv = [*TRAIN, "--out", tmp_path / "r"]
    argv[argv.index(flag) + 1] = value
    code, _, err = run(argv)
    assert code == 2
    assert "Traceback" not in err
    assert f"invalid choice: '{value}'" in err
    for choice in choices:
        assert choice in err
    assert not (tmp_path / "r").exists()


def test_no_command_is_an_argparse_error():
    code, _, err = run([])
    assert_one_line_error(code, err, "required: command", "vaeflows --help")


def test_a_spline_flow_trains_from_the_command_line(tmp_path):
    """A registry name reaches ``--flow`` (``vaeflows density energy --flow spline-coupling``
    works too; its end-of-fit 100000-sample estimate costs 7 s here, so it is not a test)."""
    argv = [*TRAIN[:6], "spline-autoregressive", *TRAIN[7:], "--num-flows", "2", "--hidden-dims", "32"]
    code, stdout, err = run([*argv, "--out", tmp_path / "run"])
    assert code == 0, err
    assert "Traceback" not in err and "test NLL" in stdout and (tmp_path / "run" / "best.pt").exists()


def test_a_learned_prior_trains_resumes_and_evaluates(tmp_path):
    """``--prior vamp``: config.json records it, a rerun resumes it, ``evaluate`` rebuilds the
    prior from the run and loads its pseudo-inputs (not a fresh N(0.05, 0.01^2) draw)."""
    from vaeflows.infer.experiment import load_run

    out = tmp_path / "run"
    argv = [*TRAIN, "--prior", "vamp", "--num-pseudo-inputs", "6", "--nll-samples", "0", "--out", out]
    argv[argv.index("--epochs") + 1] = "1"
    code, stdout, err = run(argv)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["prior"] == "vamp" and config["model"]["prior_options"] == {"num_components": 6}
    argv[argv.index("--epochs") + 1] = "2"
    code, stdout, err = run(argv)  # resumes the run (same model), one more epoch
    assert code == 0, err
    assert "resumed" in stdout and "after epoch 1" in stdout and "epoch    2" in stdout
    code, stdout, err = run(["evaluate", out, "--samples", "5", "--no-progress"])
    assert code == 0 and "Traceback" not in err, err
    vae, _, _ = load_run(out, "cpu")
    saved = torch.load(out / "best.pt", map_location="cpu", weights_only=False)
    torch.testing.assert_close(vae.latent_prior.weight, saved["module"]["latent_prior.weight"])
    assert (vae.latent_prior.weight - 0.05).abs().max() > 0.02  # trained, not the initialization


def test_a_prior_option_of_another_prior_is_a_one_line_error(tmp_path):
    code, _, err = run([*TRAIN, "--prior", "flow", "--num-pseudo-inputs", "5", "--out", tmp_path / "run"])
    assert_one_line_error(code, err, "--num-pseudo-inputs applies to --prior vamp only")
    code, _, err = run([*TRAIN, "--prior-flow", "nice", "--out", tmp_path / "run"])
    assert_one_line_error(code, err, "--prior-flow applies to --prior flow only")


def test_density_base_and_coupling_flags_of_other_flows_are_one_line_errors(tmp_path):
    density = ["density", "train", "--dataset", "moons", "--epochs", "1", "--out", tmp_path / "run"]
    code, _, err = run([*density, "--flow", "nice", "--rezero"])
    assert_one_line_error(code, err, "--rezero applies to --flow realnvp, glow or nsf only")
    code, _, err = run([*density, "--flow", "maf", "--learned-prior"])
    assert_one_line_error(code, err, "--learned-prior applies to --flow realnvp or glow only")
    code, _, err = run([*density, "--flow", "nice", "--base-components", "3"])
    assert_one_line_error(code, err, "--base-components applies to --base mixture only")


def test_flow_matching_flags_are_one_line_errors(tmp_path):
    density = ["density", "train", "--dataset", "moons", "--out", tmp_path / "run"]
    code, _, err = run([*density, "--flow", "ffjord", "--coupling", "ot"])
    assert_one_line_error(code, err, "--coupling and --sigma-min apply to --objective flow-matching only")
    code, _, err = run([*density, "--flow", "realnvp", "--objective", "flow-matching"])
    assert_one_line_error(code, err, "continuous flows only", "--flow ffjord")
    code, _, err = run([*density, "--flow", "ffjord", "--objective", "flow-matching", "--sigma-min", "1"])
    assert_one_line_error(code, err, "--sigma-min", "[0, 1)")
    code, _, err = run([*density, "--flow", "ffjord", "--objective", "flow-matching", "--kinetic", "0.1"])
    assert_one_line_error(code, err, "RNODE penalties", "--objective likelihood")
    assert not (tmp_path / "run").exists()
