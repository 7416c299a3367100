"""Each script under examples/ runs through its main(args) with a one-epoch setting and produces
what it promises (finite numbers, its files, a rising ELBO)."""

import argparse
import importlib.util
import math
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def args_of(module, **changes):
    unknown = set(changes) - set(module.DEFAULTS)
    assert not unknown, f"not options of the example: {unknown}"
    return argparse.Namespace(**{**module.DEFAULTS, **changes})


def test_vae_flows_trains_each_flow_one_epoch(tmp_path):
    example = load("vae_flows")
    results = example.main(
        args_of(
            example,
            flows=["none", "sylvester-orthogonal"],
            epochs=1,
            warmup=1,
            nll_samples=10,
            out=str(tmp_path),
            device="cpu",
        )
    )
    assert set(results) == {"none", "sylvester-orthogonal"}
    for flow, metrics in results.items():
        assert math.isfinite(metrics["test_elbo"]) and math.isfinite(metrics["test_nll"])
        assert len(metrics["epochs"]) == 1
        for name in ("metrics.json", "best.pt", "samples.png", "reconstructions.png"):
            assert (tmp_path / flow / name).exists(), name


def test_density_estimation_on_data_one_epoch(tmp_path):
    example = load("density_estimation")
    metrics = example.main(
        args_of(
            example,
            dataset="moons",
            flow="realnvp",
            num_train=500,
            num_steps=2,
            hidden=16,
            epochs=1,
            out=str(tmp_path),
            device="cpu",
        )
    )
    assert math.isfinite(metrics["test_nll"]) and len(metrics["epochs"]) == 1
    assert (tmp_path / "metrics.json").exists()


def test_density_estimation_on_an_energy_one_epoch(tmp_path):
    example = load("density_estimation")
    metrics = example.main(
        args_of(
            example,
            energy="U1",
            flow="planar",
            num_flows=4,
            epochs=1,
            steps_per_epoch=20,
            batch_size=64,
            out=str(tmp_path),
        )
    )
    assert math.isfinite(metrics["kl_box"]) and metrics["kl_box"] > -0.05  # a KL, up to Monte Carlo error
    assert (tmp_path / "metrics.json").exists()


def test_custom_pyro_model_elbo_rises():
    example, flow = load("custom_pyro_model"), "planar"
    results = example.main(args_of(example, num_points=200, steps=80, flow=flow, num_flows=2, particles=4, lr=1e-2))
    assert set(results) == {"mean field", flow}
    for result in results.values():
        history = result["elbo_history"]
        assert all(math.isfinite(v) for v in history) and math.isfinite(result["final_elbo"])
        assert sum(history[-10:]) / 10 > sum(history[:10]) / 10


def test_flow_guides_side_by_side(tmp_path):
    example = load("flow_guides")
    results = example.main(
        args_of(
            example,
            models=["banana", "eight_schools"],
            flows=["iaf:full"],
            steps=60,
            elbo_samples=200,
            plot_samples=500,
            nuts_warmup=10,
            nuts_samples=20,
            out=str(tmp_path),
            progress=False,
        )
    )
    assert set(results) == {"banana", "eight_schools"}
    for name, result in results.items():
        assert list(result["guides"]) == ["mean field", "full rank", "iaf, full base"]
        for guide in result["guides"].values():
            assert guide["diverged_at"] is None and math.isfinite(guide["elbo"]) and guide["elbo_se"] > 0
        history = result["guides"]["iaf, full base"]["elbo_history"]
        assert len(history) == 60 and sum(history[-10:]) / 10 > sum(history[:10]) / 10
        assert result["nuts"].shape == (20, 2)
        assert result["figure"] == tmp_path / f"{name}.png" and result["figure"].stat().st_size > 10_000


def test_flow_guides_draws_a_pair_outside_a_plate():
    """The logistic regression's weights, a (10,) event beside the data plate.

    That is the shape Predictive(parallel=True) gets wrong.
    """
    example = load("flow_guides")
    spec = example.MODELS["logistic"]
    guide = example.AutoFlow(spec.model, "iaf", base="full")
    assert example.draw_pair(spec, guide, 7).shape == (7, 2)
    with pytest.raises(ValueError, match="unknown flow 'iaff'.*iaf"):
        example.guide_options(["iaff:full"])
    with pytest.raises(ValueError, match="unknown base 'ful'.*full"):
        example.guide_options(["iaf:ful"])


def test_make_svi_drops_the_rate_for_the_last_steps():
    """make_svi(steps=10, anneal=0.2): every parameter at lr for 8 steps, at lr / 10 for the last 2."""
    import pyro

    example = load("flow_guides")  # imports pyro_models as the example does
    spec = example.MODELS["banana"]
    pyro.clear_param_store()
    guide = example.AutoFlow(spec.model, None)
    svi = example.make_svi(spec, guide, 0.01, 2, steps=10, anneal=0.2)
    rates = []
    for _ in range(10):
        svi.step()
        rates.append({group["lr"] for opt in svi.optim.optim_objs.values() for group in opt.optimizer.param_groups})
    assert rates[:7] == [{0.01}] * 7 and rates[7:] == [{0.001}] * 3  # the rate after each step
    assert len(svi.optim.optim_objs) == len(list(guide.parameters()))
    with pytest.raises(ValueError, match="anneal"):
        example.make_svi(spec, guide, 0.01, 2, steps=10, anneal=1.0)


def test_folded_model_log_z_matches_quadrature_of_its_own_density():
    """folded_log_z, the closed form, against a Riemann sum of the Pyro model's joint density on a
    grid (the model traced, not the formula), and the sign symmetry that makes its four modes."""
    import pyro
    import torch
    from pyro import poutine

    load("flow_guides")  # puts examples/ on sys.path, as the example does
    import pyro_models

    spec = pyro_models.MODELS["folded"]
    assert spec.latent_dim == 2 and spec.log_z == pyro_models.folded_log_z()
    axis = torch.linspace(-7.0, 7.0, 561, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)

    def log_joint(z):
        with pyro.plate("points", len(z), dim=-2):
            trace = poutine.trace(poutine.condition(spec.model, data={"z": z})).get_trace()
        trace.compute_log_prob()
        return sum(site["log_prob"] for site in trace.nodes.values() if site["type"] == "sample").sum(-1)

    with torch.autograd.set_grad_enabled(False):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            log_p = log_joint(grid)
            modes = torch.tensor([[1.882, 1.412], [-1.882, 1.412], [1.882, -1.412], [-1.882, -1.412], [0.0, 0.0]])
            at_modes = log_joint(modes.double())
        finally:
            torch.set_default_dtype(previous)
    cell = (axis[1] - axis[0]).item() ** 2
    assert abs(torch.logsumexp(log_p, 0).item() + math.log(cell) - spec.log_z) < 1e-4
    assert torch.allclose(at_modes[:4], at_modes[0].expand(4))  # the signs are not identified
    assert (at_modes[0] - at_modes[4]).item() > 5  # and zero, between the modes, is far less likely


def test_folded_posterior_draws_have_the_exact_marginals():
    """Both signs of every coordinate equally often, and |z_d| with its truncated normal's mean."""
    import torch

    load("flow_guides")  # puts examples/ on sys.path, as the example does
    import pyro_models

    torch.manual_seed(0)
    z = pyro_models.folded_posterior(40000)["z"]
    assert z.shape == (40000, 2) and z.dtype == torch.get_default_dtype()
    assert torch.allclose((z > 0).float().mean(0), torch.tensor(0.5), atol=0.01)
    mean, sd = pyro_models._folded_halves()
    alpha = mean / sd
    truncated_mean = mean + sd * torch.exp(-0.5 * alpha**2) / (2 * math.pi) ** 0.5 / torch.special.ndtr(alpha)
    assert torch.allclose(z.abs().mean(0).double(), truncated_mean, atol=0.01)


def test_flow_guides_adds_the_spline_guide_on_the_folded_model(tmp_path):
    """On the folded model the example adds its spline guide (MODEL_FLOWS) and draws the exact
    posterior as reference, which holds all four modes (a NUTS chain does not)."""
    example = load("flow_guides")
    results = example.main(
        args_of(
            example,
            models=["folded"],
            flows=[],
            steps=20,
            elbo_samples=200,
            plot_samples=500,
            nuts_samples=400,
            out=str(tmp_path),
            progress=False,
        )
    )
    guides = results["folded"]["guides"]
    assert list(guides) == ["mean field", "full rank", "spline-autoregressive, standard base"]
    spline = guides["spline-autoregressive, standard base"]["guide"]
    assert spline._base == "standard" and spline._flow_options == {"zero_init": True}
    assert math.isfinite(guides["spline-autoregressive, standard base"]["elbo"])
    reference = results["folded"]["nuts"]
    assert reference.shape == (400, 2) and ((reference > 0).float().mean(0) - 0.5).abs().max() < 0.1
    assert results["folded"]["figure"].stat().st_size > 10_000
