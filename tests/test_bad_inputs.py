"""The catalog of bad inputs (issue 14): every one gets one clear message naming the problem.

Command-line cases run ``vaeflows.cli.main`` in-process and must exit with status 2 and one line
``vaeflows: error: ...`` on stderr (no traceback), holding every fragment listed, and must leave
the test's folder exactly as it was (nothing written to ``--out`` or anywhere else). Python cases
must raise the listed type with a message holding every fragment. Every new flag or option joins
this table with its bad values.

Placeholders in the command lines name prepared paths (see :func:`places`): ``{out}`` (a run
folder that does not exist yet), ``{file}`` (a file), ``{ro}`` (a read-only folder), ``{empty}``
(an empty folder), ``{vae_run}`` / ``{density_run}`` (run folders with a VAE's / a density fit's
``config.json``), ``{cut_run}`` (a truncated ``config.json``), ``{keyless_run}`` (one missing keys), ``{edited_run}``
(one whose ``model`` is not a mapping),
``{gz_cut}`` / ``{idx_cut}`` (MNIST folders with a truncated ``.gz`` / extracted IDX file).
"""

import contextlib
import io
import json
import stat

import numpy as np
import pytest
import torch

from vaeflows.cli import main
from vaeflows.data import VAEData, check_images, load_dataset
from vaeflows.data.files import read_idx
from vaeflows.density import DensityData, density_flow, fit_energy, load_density_data, load_density_run
from vaeflows.infer import TrainConfig, load_run, resolve_device, train_vae
from vaeflows.models import build_vae
from vaeflows.transforms import posterior_flow

NAN, INF = float("nan"), float("inf")
T = ["train", "--dataset", "digits", "--arch", "mlp", "--flow", "planar", "--latent-dim", "4", "--epochs", "1",
     "--nll-samples", "0", "--no-progress"]  # fmt: skip
D = ["density", "train", "--flow", "realnvp", "--dataset", "moons", "--epochs", "1", "--num-train", "100",
     "--no-progress"]  # fmt: skip
E = ["density", "energy", "--energy", "U1", "--epochs", "1", "--no-progress"]
VAE_CONFIG = {"dataset": "digits", "data_dir": None,
              "model": {"arch": "mlp", "latent_dim": 4, "flow": "planar", "num_flows": 2}}  # fmt: skip
DENSITY_CONFIG = {"dataset": "moons", "data_dir": None, "flow": "realnvp", "options": {}, "num_train": 100,
                  "dequantization": None, "conditional": False, "train": {"seed": 0}}  # fmt: skip


def _with(argv, **flags):
    """``argv`` with flags set (``lr=...``), replacing a value already there."""
    argv = list(argv)
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return argv


#: id -> (command line, fragments of the one error line).
CLI_CASES = {
    # --out and the run folder
    "train-out-is-a-file": (T + ["--out", "{file}"], ["--out", "not a folder"]),
    "train-out-under-a-file": (T + ["--out", "{file}/run"], ["--out", "is a file"]),
    "train-out-read-only": (T + ["--out", "{ro}/run"], ["--out", "read-only"]),
    "density-out-is-a-file": (D + ["--out", "{file}"], ["--out", "not a folder"]),
    "energy-out-read-only": (E + ["--out", "{ro}/run"], ["--out", "read-only"]),
    "sample-out-is-a-folder": (["sample", "{vae_run}", "--out", "{empty}"], ["--out", "is a folder", ".png"]),
    "sample-out-read-only": (["sample", "{vae_run}", "--out", "{ro}/grid.png"], ["--out", "read-only"]),
    # devices
    "train-device-tpu": (T + ["--device", "tpu", "--out", "{out}"], ["'tpu'", "--device", "cpu"]),
    "train-device-garbage": (T + ["--device", "cuda:x", "--out", "{out}"], ["'cuda:x'", "--device"]),
    "density-device-tpu": (D + ["--device", "tpu", "--out", "{out}"], ["'tpu'", "--device"]),
    "evaluate-device-tpu": (["evaluate", "{vae_run}", "--device", "tpu"], ["'tpu'", "--device"]),
    # sizes and counts of `train`
    "latent-dim-zero": (_with(T, latent_dim="0") + ["--out", "{out}"], ["--latent-dim", ">= 1", "0"]),
    "latent-dim-negative": (_with(T, latent_dim="-3") + ["--out", "{out}"], ["--latent-dim", ">= 1"]),
    "latent-dim-fraction": (_with(T, latent_dim="2.5") + ["--out", "{out}"], ["--latent-dim", "integer", "'2.5'"]),
    "num-flows-zero": (T + ["--num-flows", "0", "--out", "{out}"], ["--num-flows", ">= 1"]),
    "num-flows-without-flow": (
        _with(T, flow="none") + ["--num-flows", "3", "--out", "{out}"],
        ["--num-flows", "--flow"],
    ),
    "batch-size-zero": (T + ["--batch-size", "0", "--out", "{out}"], ["--batch-size", ">= 1"]),
    "epochs-zero": (_with(T, epochs="0") + ["--out", "{out}"], ["--epochs", ">= 1"]),
    "epochs-fraction": (_with(T, epochs="2.5") + ["--out", "{out}"], ["--epochs", "integer"]),
    "warmup-negative": (T + ["--warmup", "-1", "--out", "{out}"], ["--warmup", ">= 0"]),
    "patience-negative": (T + ["--patience", "-1", "--out", "{out}"], ["--patience", ">= 0"]),
    "seed-negative": (T + ["--seed", "-1", "--out", "{out}"], ["--seed", ">= 0"]),
    "nll-samples-negative": (_with(T, nll_samples="-5") + ["--out", "{out}"], ["--nll-samples", ">= 0"]),
    "iwae-samples-with-elbo": (T + ["--iwae-samples", "3", "--out", "{out}"], ["--iwae-samples", "--objective iwae"]),
    "iwae-samples-zero": (
        T + ["--objective", "iwae", "--iwae-samples", "0", "--out", "{out}"],
        ["--iwae-samples", ">= 1"],
    ),
    # numbers of `train`
    "lr-nan": (T + ["--lr", "nan", "--out", "{out}"], ["--lr", "finite", "nan"]),
    "lr-inf": (T + ["--lr", "inf", "--out", "{out}"], ["--lr", "finite", "inf"]),
    "lr-negative": (T + ["--lr", "-0.001", "--out", "{out}"], ["--lr", "> 0"]),
    "lr-negative-exponent": (T + ["--lr=-1e-3", "--out", "{out}"], ["--lr", "> 0"]),
    "lr-not-a-number": (T + ["--lr", "fast", "--out", "{out}"], ["--lr", "'fast'"]),
    "clip-norm-zero": (T + ["--clip-norm", "0", "--out", "{out}"], ["--clip-norm", "> 0"]),
    "clip-norm-nan": (T + ["--clip-norm", "nan", "--out", "{out}"], ["--clip-norm", "finite"]),
    # names of `train`
    "unknown-flow": (_with(T, flow="plnar") + ["--out", "{out}"], ["--flow", "invalid choice: 'plnar'", "planar"]),
    "unknown-dataset": (_with(T, dataset="mnist") + ["--out", "{out}"], ["--dataset", "'mnist'", "binarized-mnist"]),
    "unknown-arch": (_with(T, arch="resnet") + ["--out", "{out}"], ["--arch", "'resnet'", "gated-conv"]),
    "unknown-optimizer": (T + ["--optimizer", "sgd", "--out", "{out}"], ["--optimizer", "'sgd'", "adamax"]),
    "unknown-objective": (T + ["--objective", "kl", "--out", "{out}"], ["--objective", "'kl'", "iwae"]),
    "missing-out": (T, ["--out", "required"]),
    "empty-out": (T + ["--out", ""], ["--out", "empty"]),
    "sample-empty-out": (["sample", "{vae_run}", "--out", ""], ["--out", "empty"]),
    # architecture and flow options of `train`
    "hidden-dims-zero": (T + ["--hidden-dims", "0", "--out", "{out}"], ["--hidden-dims", "positive"]),
    "hidden-dims-words": (T + ["--hidden-dims", "a,b", "--out", "{out}"], ["--hidden-dims", "'a,b'"]),
    "hidden-dims-with-gated-conv": (
        _with(T, arch="gated-conv") + ["--hidden-dims", "32", "--out", "{out}"],
        ["--hidden-dims", "mlp"],
    ),
    "gated-conv-on-8x8": (_with(T, arch="gated-conv") + ["--out", "{out}"], ["8x8", "mlp"]),
    "iaf-hidden-narrower-than-z": (
        _with(T, flow="iaf") + ["--iaf-hidden", "2", "--out", "{out}"],
        ["hidden_dims", "latent_dim=4"],
    ),
    "iaf-hidden-with-planar": (T + ["--iaf-hidden", "8", "--out", "{out}"], ["--iaf-hidden", "iaf"]),
    "num-ortho-vecs-above-z": (
        _with(T, flow="sylvester-orthogonal") + ["--num-ortho-vecs", "9", "--out", "{out}"],
        ["num_ortho_vecs", "latent_dim=4"],
    ),
    "num-ortho-vecs-with-planar": (
        T + ["--num-ortho-vecs", "2", "--out", "{out}"],
        ["--num-ortho-vecs", "sylvester-orthogonal"],
    ),
    "num-householder-zero": (
        _with(T, flow="householder") + ["--num-householder", "0", "--out", "{out}"],
        ["--num-householder", ">= 1"],
    ),
    # data sets of `train`
    "no-data-dir": (_with(T, dataset="binarized-mnist") + ["--out", "{out}"], ["--data-dir"]),
    "empty-data-dir": (
        _with(T, dataset="binarized-mnist") + ["--data-dir", "{empty}", "--out", "{out}"],
        ["binarized_mnist_train.amat", "larocheh"],
    ),
    "data-dir-is-a-file": (
        _with(T, dataset="frey-faces") + ["--data-dir", "{file}", "--out", "{out}"],
        ["frey_rawface.mat"],
    ),
    "dynamic-mnist-missing": (
        _with(T, dataset="dynamic-mnist") + ["--data-dir", "{empty}", "--out", "{out}"],
        ["train-images-idx3-ubyte", "download=True"],
    ),
    "dynamic-mnist-truncated-gz": (
        _with(T, dataset="dynamic-mnist") + ["--data-dir", "{gz_cut}", "--out", "{out}"],
        ["train-images-idx3-ubyte.gz", "download it again"],
    ),
    "dynamic-mnist-truncated-idx": (
        _with(T, dataset="dynamic-mnist") + ["--data-dir", "{idx_cut}", "--out", "{out}"],
        ["train-images-idx3-ubyte", "truncated", "download it again"],
    ),
    # evaluate and sample
    "evaluate-not-a-run": (["evaluate", "{empty}"], ["not a vaeflows run directory", "config.json"]),
    "evaluate-truncated-config": (["evaluate", "{cut_run}"], ["config.json", "not readable JSON"]),
    "evaluate-config-missing-keys": (["evaluate", "{keyless_run}"], ["config.json", "lacks", "'model'"]),
    "evaluate-config-model-not-a-mapping": (["evaluate", "{edited_run}"], ["config.json", "'model' is not a mapping"]),
    "evaluate-a-density-run": (["evaluate", "{density_run}"], ["vaeflows density train", "load_density_run"]),
    "evaluate-samples-zero": (["evaluate", "{vae_run}", "--samples", "0"], ["--samples", ">= 1"]),
    "evaluate-samples-negative": (["evaluate", "{vae_run}", "--samples", "-1"], ["--samples", ">= 1"]),
    "evaluate-seed-negative": (["evaluate", "{vae_run}", "--seed", "-1"], ["--seed", ">= 0"]),
    "sample-num-zero": (["sample", "{vae_run}", "--num", "0"], ["--num", ">= 1"]),
    "sample-num-negative": (["sample", "{vae_run}", "--num", "-3"], ["--num", ">= 1"]),
    "sample-a-density-run": (["sample", "{density_run}"], ["vaeflows density train"]),
    "sample-not-a-run": (["sample", "{empty}/nowhere"], ["not a vaeflows run directory"]),
    "sample-truncated-config": (["sample", "{cut_run}"], ["not readable JSON"]),
    # density train
    "density-num-train-zero": (_with(D, num_train="0") + ["--out", "{out}"], ["--num-train", ">= 1"]),
    "density-hidden-negative": (D + ["--hidden", "-4", "--out", "{out}"], ["--hidden", ">= 1"]),
    "density-num-steps-zero": (D + ["--num-steps", "0", "--out", "{out}"], ["--num-steps", ">= 1"]),
    "density-num-levels-zero": (D + ["--num-levels", "0", "--out", "{out}"], ["--num-levels", ">= 1"]),
    "density-num-levels-on-vectors": (D + ["--num-levels", "2", "--out", "{out}"], ["num_levels", "image"]),
    "density-posterior-flow": (_with(D, flow="planar") + ["--out", "{out}"], ["'planar'", "no analytic inverse"]),
    "density-unknown-flow": (_with(D, flow="glo") + ["--out", "{out}"], ["--flow", "'glo'", "glow"]),
    "density-unknown-dataset": (_with(D, dataset="swirl") + ["--out", "{out}"], ["--dataset", "'swirl'", "moons"]),
    "density-conditional-toy": (D + ["--conditional", "--out", "{out}"], ["no class labels"]),
    "density-maf-too-narrow": (_with(D, flow="maf") + ["--hidden", "1", "--out", "{out}"], ["maf", "hidden"]),
    "density-mnist-no-data-dir": (_with(D, dataset="mnist") + ["--out", "{out}"], ["--data-dir"]),
    "density-mnist-truncated-gz": (
        _with(D, dataset="mnist") + ["--data-dir", "{gz_cut}", "--out", "{out}"],
        ["download it again"],
    ),
    "density-num-levels-on-nice": (
        _with(D, flow="nice") + ["--num-levels", "2", "--out", "{out}"],
        ["--num-levels", "realnvp, glow or nsf"],
    ),
    "density-dequantization-on-toy": (
        D + ["--dequantization", "variational", "--out", "{out}"],
        ["--dequantization", "8-bit", "moons"],
    ),
    "density-lr-nan": (D + ["--lr", "nan", "--out", "{out}"], ["--lr", "finite"]),
    "density-batch-size-zero": (D + ["--batch-size", "0", "--out", "{out}"], ["--batch-size", ">= 1"]),
    "density-unknown-dequantization": (
        D + ["--dequantization", "none", "--out", "{out}"],
        ["--dequantization", "uniform"],
    ),
    # density energy
    "energy-steps-per-epoch-zero": (E + ["--steps-per-epoch", "0", "--out", "{out}"], ["--steps-per-epoch", ">= 1"]),
    "energy-num-flows-zero": (E + ["--num-flows", "0", "--out", "{out}"], ["--num-flows", ">= 1"]),
    "energy-warmup-negative": (E + ["--warmup", "-1", "--out", "{out}"], ["--warmup", ">= 0"]),
    "energy-unknown-energy": (_with(E, energy="U9") + ["--out", "{out}"], ["--energy", "'U9'", "U1"]),
    "energy-density-flow": (E + ["--flow", "maf", "--out", "{out}"], ["--flow", "'maf'", "planar"]),
    "energy-lr-inf": (E + ["--lr", "inf", "--out", "{out}"], ["--lr", "finite"]),
    # the command itself
    "no-command": ([], ["required: command"]),
    "unknown-command": (["fit"], ["invalid choice: 'fit'", "train"]),
    "unknown-flag": (T + ["--learning-rate", "1", "--out", "{out}"], ["unrecognized arguments", "--learning-rate"]),
}


def _write_idx(path, images, cut):
    """An IDX file of ``images`` with its last ``cut`` bytes missing (``.gz``: the gzip stream cut)."""
    raw = bytes([0, 0, 8, images.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in images.shape) + images.tobytes()
    if path.suffix == ".gz":
        import gzip

        raw = gzip.compress(raw)
    path.write_bytes(raw[: len(raw) - cut])


@pytest.fixture
def places(tmp_path):
    """The paths the placeholders name, under ``tmp_path/places`` (read-only folder restored after)."""
    root = tmp_path / "places"
    root.mkdir()
    (root / "file").write_text("not a folder\n")
    (root / "empty").mkdir()
    (root / "ro").mkdir()
    for name, config in (("vae_run", VAE_CONFIG), ("density_run", DENSITY_CONFIG)):
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps(config))
    (root / "cut_run").mkdir()
    (root / "cut_run" / "config.json").write_text(json.dumps(VAE_CONFIG)[:25])
    (root / "edited_run").mkdir()
    (root / "edited_run" / "config.json").write_text(json.dumps({**VAE_CONFIG, "model": "planar"}))
    (root / "keyless_run").mkdir()
    (root / "keyless_run" / "config.json").write_text(json.dumps({"dataset": "digits", "data_dir": None}))
    images = np.zeros((3, 28, 28), np.uint8)
    labels = np.zeros((3,), np.uint8)
    for folder, suffix in (("gz_cut", ".gz"), ("idx_cut", "")):
        (root / folder).mkdir()
        for stem, array in (
            ("train-images-idx3-ubyte", images),
            ("t10k-images-idx3-ubyte", images),
            ("train-labels-idx1-ubyte", labels),
            ("t10k-labels-idx1-ubyte", labels),
        ):
            _write_idx(root / folder / f"{stem}{suffix}", array, cut=12 if stem.startswith("train-images") else 0)
    (root / "ro").chmod(0o555)
    yield {
        name: str(root / name)
        for name in (
            "file",
            "empty",
            "ro",
            "vae_run",
            "density_run",
            "cut_run",
            "edited_run",
            "keyless_run",
            "gz_cut",
            "idx_cut",
        )
    } | {"out": str(tmp_path / "out")}
    (root / "ro").chmod(stat.S_IRWXU)


def _tree(folder):
    return sorted((str(p.relative_to(folder)), p.is_dir() or p.stat().st_size) for p in folder.rglob("*"))


@pytest.mark.parametrize("argv, fragments", CLI_CASES.values(), ids=CLI_CASES.keys())
def test_cli(tmp_path, places, argv, fragments):
    before = _tree(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([a.format(**places) for a in argv])
        except SystemExit as stop:
            code = stop.code
    assert code == 2, err.getvalue()
    assert "Traceback" not in err.getvalue()
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vaeflows: error: "), err.getvalue()
    for fragment in fragments:
        assert fragment.format(**places) in lines[0], (fragment, lines[0])
    assert _tree(tmp_path) == before, "something was written"


def _glow():
    return density_flow("glow", (1, 4, 4), num_steps=1, hidden=4, num_levels=1)


def _vae():
    return build_vae("mlp", (1, 8, 8), "bernoulli", latent_dim=2, flow="planar", num_flows=1, hidden_dims=(8,))


def _run_dir(tmp_path, config):
    (tmp_path / "config.json").write_text(json.dumps(config) if isinstance(config, dict) else config)
    return tmp_path


X = torch.zeros(4, 1, 8, 8)

#: id -> (call(tmp_path), error type, fragments of its message).
API_CASES = {
    # build_vae
    "build_vae-typo-keyword": (
        lambda t: build_vae("mlp", (1, 8, 8), "bernoulli", latent_dims=2),
        TypeError,
        ["latent_dims"],
    ),
    "build_vae-typo-keyword-with-flow": (
        lambda t: build_vae("mlp", (1, 8, 8), "bernoulli", flow="planar", latent_dims=2),
        TypeError,
        ["latent_dims"],
    ),
    "build_vae-latent-dim-zero": (
        lambda t: build_vae("mlp", (1, 8, 8), "bernoulli", latent_dim=0),
        ValueError,
        ["latent_dim", ">= 1"],
    ),
    "build_vae-latent-dim-bool": (
        lambda t: build_vae("mlp", (1, 8, 8), "bernoulli", latent_dim=True),
        ValueError,
        ["latent_dim", "True"],
    ),
    "build_vae-latent-dim-float": (
        lambda t: build_vae("mlp", (1, 8, 8), "bernoulli", latent_dim=2.0),
        ValueError,
        ["latent_dim", "2.0"],
    ),
    "build_vae-unknown-arch": (lambda t: build_vae("resnet", (1, 8, 8), "bernoulli"), ValueError, ["'resnet'", "mlp"]),
    "build_vae-unknown-likelihood": (
        lambda t: build_vae("mlp", (1, 8, 8), "gauss"),
        ValueError,
        ["'gauss'", "bernoulli"],
    ),
    "build_vae-unknown-flow": (
        lambda t: build_vae("mlp", (1, 8, 8), "bernoulli", flow="plnar"),
        ValueError,
        ["'plnar'", "planar"],
    ),
    "build_vae-hidden-dims-zero": (
        lambda t: build_vae("mlp", (1, 8, 8), "bernoulli", hidden_dims=(0,)),
        ValueError,
        ["hidden_dims", "(0,)"],
    ),
    "build_vae-hidden-dims-int": (
        lambda t: build_vae("mlp", (1, 8, 8), "bernoulli", hidden_dims=300),
        ValueError,
        ["hidden_dims", "300"],
    ),
    "build_vae-iaf-hidden-empty": (
        lambda t: build_vae("mlp", (1, 8, 8), "bernoulli", latent_dim=2, flow="iaf", flow_hidden_dims=()),
        ValueError,
        ["hidden_dims", "at least one"],
    ),
    "build_vae-hidden-dims-on-gated-conv": (
        lambda t: build_vae("gated-conv", (1, 28, 28), "bernoulli", hidden_dims=(8,)),
        TypeError,
        ["hidden_dims"],
    ),
    "build_vae-image-shape-2d": (
        lambda t: build_vae("mlp", (8, 8), "bernoulli"),
        ValueError,
        ["image_shape", "(C, H, W)"],
    ),
    "build_vae-image-shape-negative": (
        lambda t: build_vae("mlp", (1, -8, 8), "bernoulli"),
        ValueError,
        ["image_shape", "-8"],
    ),
    "vae-sample-negative": (lambda t: _vae().sample_images(-1, torch.zeros(())), ValueError, ["num", ">= 0"]),
    "vae-uint8-images": (lambda t: _vae().model(X.to(torch.uint8)), ValueError, ["torch.uint8", "255"]),
    "vae-float64-images": (lambda t: _vae().guide(X.double()), ValueError, ["torch.float64", "torch.float32"]),
    "vae-wrong-image-shape": (
        lambda t: _vae().guide(torch.zeros(4, 1, 7, 7)),
        ValueError,
        ["(..., 1, 8, 8)", "(4, 1, 7, 7)"],
    ),
    # posterior_flow
    "iaf-hidden-empty": (
        lambda t: posterior_flow("iaf", 4, 2, 8, hidden_dims=()),
        ValueError,
        ["hidden_dims", "at least one"],
    ),
    "iaf-hidden-narrower-than-z": (
        lambda t: posterior_flow("iaf", 4, 2, 8, hidden_dims=(2,)),
        ValueError,
        ["hidden_dims", "latent_dim=4"],
    ),
    "iaf-sigmoid-bias-nan": (
        lambda t: posterior_flow("iaf", 4, 2, sigmoid_bias=NAN),
        ValueError,
        ["sigmoid_bias", "finite"],
    ),
    "spline-count-bins-one": (
        lambda t: posterior_flow("spline-coupling", 4, 2, 8, count_bins=1),
        ValueError,
        ["count_bins", ">= 2", "1"],
    ),
    "spline-bound-zero": (
        lambda t: posterior_flow("spline-autoregressive", 4, 2, bound=0.0),
        ValueError,
        ["bound", "> 0"],
    ),
    "spline-hidden-negative": (
        lambda t: posterior_flow("spline-coupling", 4, 2, hidden_dims=(8, -1)),
        ValueError,
        ["hidden_dims", "-1"],
    ),
    "spline-autoregressive-hidden-narrower-than-z": (
        lambda t: posterior_flow("spline-autoregressive", 4, 2, 8, hidden_dims=(3,)),
        ValueError,
        ["hidden_dims", "latent_dim=4"],
    ),
    "context-dim-bool": (
        lambda t: posterior_flow("planar", 4, 2, context_dim=True),
        ValueError,
        ["context_dim", "True"],
    ),
    "context-dim-zero": (lambda t: posterior_flow("planar", 4, 2, context_dim=0), ValueError, ["context_dim", ">= 1"]),
    "flow-latent-dim-zero": (lambda t: posterior_flow("radial", 0, 2), ValueError, ["latent_dim", ">= 1"]),
    "flow-num-flows-fraction": (lambda t: posterior_flow("planar", 4, 2.5), ValueError, ["num_flows", "2.5"]),
    "flow-hypernet-dims-zero": (
        lambda t: posterior_flow("planar", 4, 2, 8, hypernet_dims=(0,)),
        ValueError,
        ["hypernet_dims"],
    ),
    "flow-unknown-name": (lambda t: posterior_flow("maf", 4, 2), ValueError, ["'maf'", "planar"]),
    "flow-unknown-option": (
        lambda t: posterior_flow("residual", 2, 1, hiden_dims=(4,)),
        TypeError,
        ["hiden_dims", "hidden_dims"],
    ),
    "ffjord-rtol-negative": (lambda t: posterior_flow("ffjord", 2, 1, rtol=-1), ValueError, ["rtol", "> 0"]),
    "ffjord-atol-nan": (lambda t: posterior_flow("ffjord", 2, 1, atol=NAN), ValueError, ["atol", "finite"]),
    "ffjord-time-length-zero": (
        lambda t: posterior_flow("ffjord", 2, 1, time_length=0),
        ValueError,
        ["time_length", "> 0"],
    ),
    "flow-z-wrong-size": (
        lambda t: posterior_flow("iaf", 3, 2)(torch.randn(4, 5)),
        ValueError,
        ["z of shape (4, 5)", "latent_dim=3"],
    ),
    "flow-z-unbatched-scalar": (
        lambda t: posterior_flow("planar", 3, 2)(torch.tensor(1.0)),
        ValueError,
        ["z of shape ()"],
    ),
    "flow-z-batch-mismatch": (
        lambda t: posterior_flow("radial", 3, 2, 8).condition(torch.zeros(4, 8))(torch.randn(5, 3)),
        ValueError,
        ["(5, 3)", "(4,)", "context"],
    ),
    "flow-context-mismatch": (
        lambda t: posterior_flow("planar", 4, 2, 8).condition(torch.zeros(3, 5)),
        ValueError,
        ["context", "8"],
    ),
    # TrainConfig
    "config-epochs-fraction": (lambda t: TrainConfig(epochs=2.5), ValueError, ["epochs", "integer", "2.5"]),
    "config-epochs-bool": (lambda t: TrainConfig(epochs=True), ValueError, ["epochs", "True"]),
    "config-lr-nan": (lambda t: TrainConfig(lr=NAN), ValueError, ["lr", "finite", "nan"]),
    "config-lr-inf": (lambda t: TrainConfig(lr=INF), ValueError, ["lr", "finite", "inf"]),
    "config-lr-string": (lambda t: TrainConfig(lr="1e-3"), ValueError, ["lr", "'1e-3'"]),
    "config-batch-size-zero": (lambda t: TrainConfig(batch_size=0), ValueError, ["batch_size", ">= 1"]),
    "config-seed-negative": (lambda t: TrainConfig(seed=-1), ValueError, ["seed", ">= 0"]),
    "config-clip-norm-zero": (lambda t: TrainConfig(clip_norm=0.0), ValueError, ["clip_norm", "> 0"]),
    "config-unknown-optimizer": (lambda t: TrainConfig(optimizer="sgd"), ValueError, ["'sgd'", "adamax"]),
    "config-unknown-field": (lambda t: TrainConfig(learning_rate=1e-3), TypeError, ["learning_rate"]),
    # density flows and their data
    "density-num-steps-zero": (lambda t: density_flow("realnvp", (2,), num_steps=0), ValueError, ["num_steps", ">= 1"]),
    "density-num-steps-negative": (
        lambda t: density_flow("nice", (2,), num_steps=-2),
        ValueError,
        ["num_steps", ">= 1"],
    ),
    "density-hidden-zero": (lambda t: density_flow("maf", (2,), hidden=0), ValueError, ["hidden", ">= 1"]),
    "density-num-steps-fraction": (
        lambda t: density_flow("glow", (1, 4, 4), num_steps=2.5),
        ValueError,
        ["num_steps", "2.5"],
    ),
    "density-context-dim-bool": (
        lambda t: density_flow("realnvp", (2,), context_dim=True),
        ValueError,
        ["context_dim", "True"],
    ),
    "density-posterior-flow": (lambda t: density_flow("planar", (2,)), ValueError, ["'planar'", "no analytic inverse"]),
    "density-unknown-flow": (lambda t: density_flow("realnvb", (2,)), ValueError, ["'realnvb'", "realnvp"]),
    "density-bad-event-shape": (lambda t: density_flow("realnvp", (2, 2)), ValueError, ["event_shape", "(C, H, W)"]),
    "density-ffjord-rtol-negative": (lambda t: density_flow("ffjord", (2,), rtol=-1), ValueError, ["rtol", "> 0"]),
    "density-ffjord-unknown-option": (lambda t: density_flow("ffjord", (2,), rtoll=1e-3), TypeError, ["rtoll", "rtol"]),
    "glow-pixels-above-one": (
        lambda t: _glow().log_prob(torch.full((2, 1, 4, 4), 255.0)),
        ValueError,
        ["[0, 1]", "255"],
    ),
    "glow-pixels-below-zero": (
        lambda t: _glow().log_prob(torch.full((2, 1, 4, 4), -0.5)),
        ValueError,
        ["[0, 1]", "-0.5"],
    ),
    "density-float64-data": (
        lambda t: density_flow("realnvp", (2,)).log_prob(torch.zeros(3, 2, dtype=torch.float64)),
        ValueError,
        ["torch.float64", "torch.float32"],
    ),
    "density-uint8-data": (
        lambda t: _glow().log_prob(torch.zeros(2, 1, 4, 4, dtype=torch.uint8)),
        ValueError,
        ["torch.uint8", "float"],
    ),
    "density-sample-negative": (lambda t: density_flow("realnvp", (2,)).sample(-1), ValueError, ["n must be", ">= 0"]),
    "density-nan-data": (
        lambda t: density_flow("realnvp", (2,)).log_prob(torch.full((3, 2), NAN)),
        ValueError,
        ["NaN"],
    ),
    "density-data-float64": (
        lambda t: DensityData(*[torch.zeros(3, 2, dtype=torch.float64)] * 3, (2,), False, "toy"),
        ValueError,
        ["torch.float64", "float32"],
    ),
    "density-num-train-zero": (lambda t: load_density_data("moons", num_train=0), ValueError, ["num_train", ">= 1"]),
    "density-unknown-data": (lambda t: load_density_data("swirl"), ValueError, ["'swirl'", "moons"]),
    "energy-steps-per-epoch-zero": (
        lambda t: fit_energy("U1", "planar", 2, TrainConfig(epochs=1), t / "run", steps_per_epoch=0),
        ValueError,
        ["steps_per_epoch", ">= 1"],
    ),
    # VAE data
    "vaedata-uint8": (
        lambda t: VAEData(*[X.to(torch.uint8)] * 3, (1, 8, 8), "bernoulli", False, "toy"),
        ValueError,
        ["torch.uint8", "float32"],
    ),
    "vaedata-float64": (
        lambda t: VAEData(*[X.double()] * 3, (1, 8, 8), "bernoulli", False, "toy"),
        ValueError,
        ["torch.float64", "float32"],
    ),
    "vaedata-grey-pixels": (
        lambda t: VAEData(*[X + 0.5] * 3, (1, 8, 8), "bernoulli", False, "toy"),
        ValueError,
        ["outside {0, 1}", "binarize"],
    ),
    "images-nan": (
        lambda t: check_images(torch.tensor([NAN]), "bernoulli", "my batch"),
        ValueError,
        ["my batch", "NaN"],
    ),
    "unknown-dataset": (lambda t: load_dataset("mnist"), ValueError, ["'mnist'", "binarized-mnist"]),
    "idx-truncated": (
        lambda t: (_write_idx(t / "x-idx3-ubyte", np.zeros((2, 2, 2), np.uint8), 3), read_idx(t / "x-idx3-ubyte")),
        ValueError,
        ["x-idx3-ubyte", "truncated"],
    ),
    # runs
    "train_vae-nll-samples-negative": (
        lambda t: train_vae("digits", None, VAE_CONFIG["model"], TrainConfig(), t / "run", nll_samples=-5),
        ValueError,
        ["nll_samples", ">= 0"],
    ),
    "train_vae-iwae-samples-with-elbo": (
        lambda t: train_vae("digits", None, VAE_CONFIG["model"], TrainConfig(), t / "run", iwae_samples=3),
        ValueError,
        ["iwae_samples", "iwae"],
    ),
    "train_vae-unknown-objective": (
        lambda t: train_vae("digits", None, VAE_CONFIG["model"], TrainConfig(), t / "run", objective="kl"),
        ValueError,
        ["'kl'", "elbo"],
    ),
    "device-unknown": (lambda t: resolve_device("tpu"), ValueError, ["'tpu'", "cpu"]),
    "load_density_run-of-a-vae-run": (
        lambda t: load_density_run(_run_dir(t, VAE_CONFIG)),
        ValueError,
        ["vaeflows train", "vaeflows evaluate"],
    ),
    "load_run-of-a-density-run": (
        lambda t: load_run(_run_dir(t, DENSITY_CONFIG)),
        ValueError,
        ["vaeflows density train"],
    ),
    "load_run-truncated-config": (
        lambda t: load_run(_run_dir(t, '{"dataset": "dig')),
        ValueError,
        ["config.json", "not readable JSON"],
    ),
    "load_run-no-config": (lambda t: load_run(t), FileNotFoundError, ["config.json"]),
}


@pytest.mark.parametrize("call, error, fragments", API_CASES.values(), ids=API_CASES.keys())
def test_api(tmp_path, call, error, fragments):
    with pytest.raises(error) as info:
        call(tmp_path)
    assert type(info.value).__module__.split(".")[0] in ("builtins", "vaeflows")
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
    assert not (tmp_path / "run").exists()


def test_catalog_size():
    assert len(CLI_CASES) >= 60 and len(API_CASES) >= 60
