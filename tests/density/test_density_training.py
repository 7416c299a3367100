"""Training through ``fit``, the CLI, energy fits, dequantization and bits/dim, on tiny problems."""

import json
import math

import pytest
import torch

from vaeflows.cli import main
from vaeflows.density import (
    DENSITY_DATASETS,
    ENERGIES,
    TOY_DATASETS,
    DensityData,
    EnergyFit,
    FlowDensity,
    FlowSequence,
    Logit,
    UniformDequantizer,
    VariationalDequantizer,
    bits_per_dim,
    dequantized_log_likelihood,
    fit_energy,
    toy_data,
)
from vaeflows.infer.training import TrainConfig


@pytest.mark.parametrize("name", list(TOY_DATASETS))
def test_toy_data_are_generated_reproducibly(name):
    x = toy_data(name, 500, seed=3)
    assert x.shape == (500, 2) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert torch.equal(x, toy_data(name, 500, seed=3)) and not torch.equal(x, toy_data(name, 500, seed=4))
    assert x.abs().max() < 6


def test_cli_density_train_writes_metrics_and_png(tmp_path):
    out = tmp_path / "run"
    args = [
        "density",
        "train",
        "--flow",
        "glow",
        "--dataset",
        "8gaussians",
        "--num-train",
        "1000",
        "--epochs",
        "4",
        "--num-steps",
        "2",
        "--hidden",
        "16",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    history = metrics["epochs"]
    assert len(history) == 4 and history[-1]["valid"] < history[0]["valid"]
    assert metrics["test_nll"] < history[0]["valid"]
    assert "seconds_per_step" in metrics  # the report records timing; speed is measured in benchmarks/
    assert (out / "density.png").exists() or pytest.importorskip("matplotlib") is None
    assert main(args) == 0  # resumes: nothing left to do
    assert len(json.loads((out / "metrics.json").read_text())["epochs"]) == 4


def test_a_trained_run_loads_back_with_its_test_nll(tmp_path):
    from vaeflows.density import load_density_run
    from vaeflows.density.training import mean_nll
    from vaeflows.infer.training import CheckpointMismatch

    out = tmp_path / "run"
    args = [
        "density",
        "train",
        "--flow",
        "realnvp",
        "--dataset",
        "moons",
        "--num-train",
        "500",
        "--epochs",
        "2",
        "--num-steps",
        "2",
        "--hidden",
        "16",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 0
    model, config, data = load_density_run(out, device="cpu")
    assert not model.training and config["flow"] == "realnvp"
    assert mean_nll(model, data.test) == pytest.approx(json.loads((out / "metrics.json").read_text())["test_nll"])
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_density_run(tmp_path, device="cpu")
    config["options"]["hidden"] = 32  # best.pt holds a model with 16 hidden units
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointMismatch, match="does not fit the model"):
        load_density_run(out, device="cpu")


def test_cli_density_errors(tmp_path, capsys):
    assert main(["density", "train", "--flow", "radial", "--dataset", "moons", "--out", str(tmp_path)]) == 2
    assert "no analytic inverse" in capsys.readouterr().err
    args = ["density", "train", "--flow", "realnvp", "--dataset", "moons", "--conditional", "--out", str(tmp_path)]
    assert main(args) == 2
    assert "no class labels" in capsys.readouterr().err


def fake_mnist(data_dir=None, num_train=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    split = lambda n: torch.randint(0, 256, (n, 1, 4, 4), generator=generator).float()  # noqa: E731
    labels = {s: torch.arange(n) % 10 for s, n in (("train", num_train), ("valid", 32), ("test", 32))}
    return DensityData(split(num_train), split(32), split(32), (1, 4, 4), True, "mnist", labels, 10)


@pytest.mark.parametrize(
    "flags",
    [
        ["--flow", "realnvp", "--num-levels", "2"],
        ["--flow", "glow", "--num-levels", "1", "--conditional", "--dequantization", "variational"],
        ["--flow", "nsf", "--num-levels", "2", "--conditional", "--bins", "4", "--tail-bound", "2"],
    ],
    ids=["realnvp-uniform", "glow-conditional-variational", "nsf-conditional"],
)
def test_cli_density_on_8bit_images_reports_bits_per_dim(tmp_path, monkeypatch, flags):
    monkeypatch.setitem(DENSITY_DATASETS, "mnist", fake_mnist)
    out = tmp_path / "run"
    args = [
        "density",
        "train",
        "--dataset",
        "mnist",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--num-steps",
        "1",
        "--hidden",
        "8",
        "--out",
        str(out),
        "--no-progress",
        *flags,
    ]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_bpd"] == pytest.approx(metrics["test_nll"] / (16 * math.log(2)))
    assert 0 < metrics["test_bpd"] < 20


def test_bits_per_dim_bound_matches_exact_discrete_probability():
    """x = sigmoid(z), z ~ N(0, 1): P(k) = Phi(logit((k+1)/256)) - Phi(logit(k/256)) exactly; the
    uniform-dequantization bound (8-bit scaling and logit Jacobian included) lies just below it."""
    model = FlowDensity(FlowSequence([Logit(1, alpha=0.0)]), (1,)).double()
    k = torch.tensor([3.0, 60.0, 128.0, 200.0], dtype=torch.float64)
    normal = torch.distributions.Normal(0.0, 1.0)
    logit = lambda p: torch.log(p) - torch.log1p(-p)  # noqa: E731
    exact = torch.log(normal.cdf(logit((k + 1) / 256)) - normal.cdf(logit(k / 256)))
    torch.manual_seed(0)
    x = k[:, None].expand(4, 20000).reshape(-1, 1)
    bound = dequantized_log_likelihood(model, x, UniformDequantizer()).reshape(4, -1).mean(1)
    assert (bound <= exact + 1e-4).all()
    # the Jensen gap is small where the density is nearly flat within a bin (not in the far tail, k=3)
    torch.testing.assert_close(bound[1:], exact[1:], rtol=0, atol=2e-3)
    torch.testing.assert_close(bits_per_dim(exact, 1), -exact / math.log(2))


def test_variational_dequantizer_noise_and_log_density():
    torch.manual_seed(0)
    deq = VariationalDequantizer((1, 4, 4), num_steps=2, hidden=8).double()
    with torch.no_grad():
        for p in deq.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randint(0, 256, (3, 1, 4, 4)).double()
    y, log_q = deq(x)
    u = y * 256 - x
    assert ((u > 0) & (u < 1)).all() and log_q.shape == (3,)
    # log q is a density of u: log N(e) - log|det du/de|, checked against autograd
    context = x / 255 - 0.5
    e = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    _, ladj = deq.flow.forward_and_ladj(e, context)
    jac = torch.autograd.functional.jacobian(lambda v: deq.flow.forward_and_ladj(v, context)[0].reshape(3, -1), e)
    jac = jac.reshape(3, 16, 3, 16)[torch.arange(3), :, torch.arange(3), :]
    torch.testing.assert_close(ladj, torch.linalg.slogdet(jac).logabsdet, rtol=0, atol=1e-9)


def test_mnist_without_files_says_where_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        DENSITY_DATASETS["mnist"](str(tmp_path))


@pytest.mark.parametrize("energy", list(ENERGIES))
def test_energies_are_finite(energy):
    z = 3 * torch.randn(100, 2)
    assert ENERGIES[energy](z).shape == (100,) and torch.isfinite(ENERGIES[energy](z)).all()


@pytest.mark.parametrize("flow", ["planar", "radial", "sylvester-orthogonal"])
def test_energy_fit_lowers_reverse_kl(flow, tmp_path):
    torch.manual_seed(0)
    before = float(EnergyFit(flow, 4).free_energy(ENERGIES["U1"], 20000).detach())
    config = TrainConfig(epochs=4, batch_size=128, lr=1e-2, optimizer="adam", warmup=1, patience=0)
    metrics = fit_energy("U1", flow, 4, config, tmp_path, steps_per_epoch=40, progress=False, log=lambda s: None)
    assert metrics["free_energy"] < before - 0.5
    assert metrics["kl_box"] > -0.05  # a KL divergence (up to Monte Carlo error)


def test_energy_fit_with_a_spline_flow_records_its_options(tmp_path):
    """The path of ``vaeflows density energy --flow spline-* --bins --tail-bound`` (the flags
    themselves: tests/test_cli_flags.py), with small conditioners."""
    flow = "spline-coupling"
    options = {"count_bins": 4, "bound": 4.0, "hidden_dims": (16,)}
    torch.manual_seed(0)
    before = float(EnergyFit(flow, 2, options).free_energy(ENERGIES["U1"], 20000).detach())
    config = TrainConfig(epochs=2, batch_size=128, lr=1e-2, optimizer="adam", warmup=1, patience=0)
    metrics = fit_energy("U1", flow, 2, config, tmp_path, 30, progress=False, log=lambda s: None, flow_options=options)
    assert metrics["flow_options"] == options and metrics["free_energy"] < before - 0.5
    fitted = EnergyFit(flow, 2, metrics["flow_options"])
    fitted.load_state_dict(torch.load(tmp_path / "best.pt")["module"])  # the options rebuild the very model
    assert fitted.flow.count_bins == 4 and fitted.flow.bound == 4.0
    with pytest.raises(ValueError, match="do not apply to the planar flow"):
        EnergyFit("planar", 2, {"count_bins": 4})


def test_8bit_data_out_of_range_are_refused():
    x = torch.full((4, 1, 2, 2), 0.5)  # grey values in [0, 1], not 8-bit levels
    with pytest.raises(ValueError, match=r"pixels \* 255"):
        DensityData(x, x, x, (1, 2, 2), True, "grey")
