"""AutoFlow: its log-density proven against the autograd Jacobian, every flow and base, and the
Pyro tools an autoguide is used with (SVI objectives, Predictive, median/quantiles, NeuTra + NUTS,
saving and loading), on a model with constrained sites."""

import io

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import (
    MCMC,
    NUTS,
    SVI,
    JitTrace_ELBO,
    Predictive,
    RenyiELBO,
    Trace_ELBO,
    TraceMeanField_ELBO,
)
from pyro.infer.autoguide import AutoDiagonalNormal, AutoMultivariateNormal
from pyro.infer.reparam import NeuTraReparam
from pyro.optim import Adam

from tests.transforms.test_posterior_flows import small_options
from vaeflows.guides import BASES, AutoFlow, LowRankAffine
from vaeflows.transforms import POSTERIOR_FLOWS

NAMES = list(POSTERIOR_FLOWS)
OBS = torch.tensor([0.3, -1.2, 0.8, 2.0])


def model(obs=OBS):
    """Three latent sites with three supports: 5 unconstrained dims."""
    loc = pyro.sample("loc", dist.Normal(0.0, 2.0))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 0.5))
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(3, dtype=obs.dtype)))
    with pyro.plate("data", len(obs)):
        pyro.sample("obs", dist.Normal(loc + weights[..., 0], scale), obs=obs)


def set_up(guide, dtype=torch.float32):
    guide(OBS.to(dtype))
    return guide


def perturbed_guide(name, base, seed=0):
    torch.manual_seed(seed)
    guide = AutoFlow(model, name, num_flows=2, base=base, **small_options(name))
    set_up(guide.double(), torch.float64)
    guide = guide.double()
    with torch.no_grad():
        for p in guide.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return guide


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("name", NAMES + [None])
def test_log_density_matches_the_autograd_jacobian(name, base):
    """``log q(x) = log N(z0; 0, I) - log|det dx/dz0|`` for the whole map ``z0 -> x``."""
    if name is None and base == "standard":
        pytest.skip("no guide: the standard base needs a flow (test_standard_base_is_the_flow_alone)")
    guide = perturbed_guide(name, base)
    transform = guide.get_transform()
    torch.manual_seed(1)
    z0 = guide.get_base_dist().rsample()
    x = transform(z0)
    jacobian = torch.autograd.functional.jacobian(guide.get_transform(), z0)
    expected = guide.get_base_dist().log_prob(z0) - torch.linalg.slogdet(jacobian).logabsdet
    atol = 1e-6 if name == "ffjord" else 1e-8
    torch.testing.assert_close(transform.log_abs_det_jacobian(z0, x), jacobian.slogdet().logabsdet, rtol=0, atol=atol)
    # the posterior draws the same x from the same noise (its base and transforms may be split
    # differently) and scores it as the push-forward of the base (any flow, invertible or not)
    posterior = guide.get_posterior()
    torch.manual_seed(1)
    y = posterior.rsample()
    torch.testing.assert_close(y, x, rtol=0, atol=atol)
    torch.testing.assert_close(posterior.log_prob(y), expected, rtol=0, atol=atol)


def test_standard_base_is_the_flow_alone_on_a_standard_normal():
    """``base="standard"``: ``x = f(z0)``, no ``loc`` or ``scale`` parameter; without a flow, refused."""
    torch.manual_seed(0)
    guide = set_up(AutoFlow(model, "iaf", num_flows=2, base="standard", hidden_dims=(8,)))
    assert {name for name, _ in guide.named_parameters()} == {n for n, _ in guide.flow.named_parameters(prefix="flow")}
    z0 = torch.randn(4, guide.latent_dim)
    torch.testing.assert_close(guide.get_transform()(z0), guide.flow(z0))
    torch.testing.assert_close(guide.loc, torch.zeros(guide.latent_dim))
    with pytest.raises(ValueError, match="base='standard' without a flow"):
        AutoFlow(model, None, base="standard")


@pytest.mark.parametrize("rank", [1, 3])
def test_low_rank_affine_log_det_and_inverse(rank):
    torch.manual_seed(0)
    loc, scale = torch.randn(5, dtype=torch.float64), torch.rand(5, dtype=torch.float64) + 0.2
    factor = torch.randn(5, rank, dtype=torch.float64)
    t = LowRankAffine(loc, scale, factor)
    x = torch.randn(2, 5, dtype=torch.float64)
    y = t(x)
    matrix = torch.diag(scale) + factor @ factor.T
    torch.testing.assert_close(y, loc + x @ matrix.T)
    torch.testing.assert_close(t.log_abs_det_jacobian(x, y), torch.linalg.slogdet(matrix).logabsdet.expand(2))
    fresh = LowRankAffine(loc, scale, factor)
    torch.testing.assert_close(fresh.inv(y.clone()), x, rtol=0, atol=1e-10)


def test_without_a_flow_it_is_pyros_gaussian_autoguide():
    """``flow=None``: the same posterior, median and quantiles as AutoDiagonalNormal /
    AutoMultivariateNormal with the same parameters."""
    for base, pyro_guide in (("diagonal", AutoDiagonalNormal), ("full", AutoMultivariateNormal)):
        pyro.clear_param_store()
        ours, theirs = set_up(AutoFlow(model, None, base=base)), set_up(pyro_guide(model))
        with torch.no_grad():
            for name, p in theirs.named_parameters():
                p.copy_(dict(ours.named_parameters())[name] + 0.1 * torch.randn_like(p))
                dict(ours.named_parameters())[name].copy_(p)
        x = torch.randn(3, ours.latent_dim)
        torch.testing.assert_close(ours.get_posterior().log_prob(x), theirs.get_posterior().log_prob(x))
        for a, b in ((ours.median(), theirs.median()), (ours.quantiles([0.2, 0.7]), theirs.quantiles([0.2, 0.7]))):
            for site in a:
                torch.testing.assert_close(a[site], b[site])


def test_median_and_quantiles_of_a_flow_posterior_are_its_marginals():
    """A 1-D Householder step is a reflection, so with it the posterior is still
    ``N(loc, scale^2)`` on the unconstrained line: the Monte Carlo median and quantiles, mapped
    to the LogNormal's support, must match ``exp(loc + scale * Phi^-1(q))`` within MC error."""

    def one_site():
        pyro.sample("s", dist.LogNormal(0.0, 1.0))

    pyro.set_rng_seed(0)
    guide = AutoFlow(one_site, "householder", num_flows=1)
    guide()
    with torch.no_grad():
        guide.loc.fill_(0.5)
    scale = guide.scale.detach()
    levels = torch.tensor([0.1, 0.5, 0.9])
    expected = torch.exp(0.5 + scale * dist.Normal(0.0, 1.0).icdf(levels))
    found = guide.quantiles(levels.tolist(), num_samples=20000)["s"]
    torch.testing.assert_close(found, expected, rtol=0.01, atol=0)
    torch.testing.assert_close(guide.median(num_samples=20000)["s"], expected[1], rtol=0.01, atol=0)
    with pytest.raises(ValueError, match="levels in"):
        guide.quantiles([1.5])


def test_monte_carlo_quantiles_unpack_plated_and_simplex_sites_as_the_guide_does():
    """On a model with a latent inside a plate and a simplex site, the flow posterior's quantiles
    have each site's shape and agree, within Monte Carlo error, with the quantiles of the values
    the guide itself puts at each site (Pyro's ``Predictive``, an independent route)."""

    def plated():
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        weights = pyro.sample("weights", dist.Dirichlet(torch.ones(3)))
        with pyro.plate("groups", 4):
            pyro.sample("eta", dist.Normal(mu + weights[..., :1], 1.0))

    pyro.set_rng_seed(0)
    guide = AutoFlow(plated, "iaf", num_flows=2, base="full")
    guide()
    with torch.no_grad():
        for p in guide.parameters():
            p.add_(0.3 * torch.randn_like(p))
    levels = [0.25, 0.5, 0.75]
    found = guide.quantiles(levels, num_samples=8000)
    drawn = Predictive(plated, guide=guide, num_samples=8000, parallel=True, return_sites=list(found))()
    for site, shape in (("mu", ()), ("weights", (3,)), ("eta", (4,))):
        assert found[site].shape == (3, *shape)
        values = drawn[site].reshape(8000, *shape)
        expected = torch.quantile(values, torch.tensor(levels), dim=0)
        torch.testing.assert_close(found[site], expected, rtol=0, atol=0.08)  # ~3 Monte Carlo sd
    assert guide.median(num_samples=100)["eta"].shape == (4,)


OBJECTIVES = {
    "Trace_ELBO": lambda: Trace_ELBO(),
    "TraceMeanField_ELBO": lambda: TraceMeanField_ELBO(),
    "RenyiELBO-IWAE": lambda: RenyiELBO(alpha=0.0, num_particles=3, vectorize_particles=True, max_plate_nesting=1),
    "JitTrace_ELBO": lambda: JitTrace_ELBO(),
}


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("name", NAMES)
def test_trains_with_pyros_objectives_and_predicts(name, objective):
    pyro.set_rng_seed(0)
    guide = AutoFlow(
        model, name, num_flows=2, base="lowrank" if name == "planar" else "diagonal", **small_options(name, fast=True)
    )
    svi = SVI(model, guide, Adam({"lr": 1e-2}), OBJECTIVES[objective]())
    if objective == "JitTrace_ELBO" and name in ("residual", "ffjord"):
        with pytest.raises(NotImplementedError, match=f"the {name} flow cannot run under a JIT trace"):
            svi.step()
        return
    losses = [svi.step() for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(p.grad is not None for p in guide.flow.parameters())
    samples = Predictive(model, guide=guide, num_samples=4)()
    assert samples["weights"].shape == (4, 1, 3) and samples["obs"].shape == (4, len(OBS))
    torch.testing.assert_close(samples["weights"].sum(-1), torch.ones(4, 1))  # on the simplex


@pytest.mark.parametrize("name", ["iaf", "sylvester-triangular"])
def test_neutra_reparam_with_nuts(name):
    pyro.set_rng_seed(0)
    guide = AutoFlow(model, name, num_flows=2, **small_options(name, fast=True))
    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    for _ in range(20):
        svi.step()
    neutra = NeuTraReparam(guide.requires_grad_(False))
    mcmc = MCMC(
        NUTS(pyro.poutine.reparam(model, config=lambda _: neutra)),
        num_samples=10,
        warmup_steps=10,
        disable_progbar=True,
    )
    mcmc.run()
    latent = mcmc.get_samples()["loc_shared_latent"]
    assert latent.shape == (10, guide.latent_dim)
    samples = neutra.transform_sample(latent)
    assert samples["scale"].shape == (10,) and (samples["scale"] > 0).all()
    torch.testing.assert_close(samples["weights"].sum(-1), torch.ones(10))


@pytest.mark.parametrize("name", ["planar", "iaf", "sylvester-orthogonal"])
def test_save_and_load(name):
    pyro.set_rng_seed(0)
    guide = AutoFlow(model, name, num_flows=2, base="full", **small_options(name))
    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    for _ in range(3):
        svi.step()
    x = torch.randn(4, guide.latent_dim)

    def log_q(g):
        """The guide's point and log-density for the fixed base draws ``x``."""
        with torch.no_grad():
            posterior, y = g.get_posterior(), x
            for step in posterior.transforms:
                y = step(y)
            return y, posterior.log_prob(y)

    # state_dict: build the guide, run it once (it learns the model's sites), load
    buffer = io.BytesIO()
    torch.save(guide.state_dict(), buffer)
    buffer.seek(0)
    other = AutoFlow(model, name, num_flows=2, base="full", **small_options(name))
    other()
    other.load_state_dict(torch.load(buffer))
    torch.testing.assert_close(log_q(other), log_q(guide), rtol=0, atol=0)
    # the whole guide
    buffer = io.BytesIO()
    torch.save(guide, buffer)
    buffer.seek(0)
    torch.testing.assert_close(log_q(torch.load(buffer, weights_only=False)), log_q(guide), rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"flow": "planr"}, "unknown flow 'planr'.*planar"),
        ({"base": "cholesky"}, "unknown base 'cholesky'.*diagonal, full, lowrank"),
        ({"num_flows": 0}, "num_flows must be an integer >= 1"),
        ({"rank": 2}, "rank is an integer >= 1 of the lowrank base"),
        ({"base": "lowrank", "rank": 0}, "rank is an integer >= 1"),
        ({"init_scale": -1.0}, "init_scale must be a number > 0"),
        ({"flow": None, "hidden_dims": (4,)}, "flow options.*without a flow"),
    ],
)
def test_bad_arguments_get_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AutoFlow(model, **kwargs)


@pytest.mark.parametrize("name", ["spline-autoregressive", "spline-coupling"])
def test_global_spline_conditioners_are_autoiafnormal_wide_the_amortized_keep_theirs(name):
    guide = AutoFlow(model, name, num_flows=2)
    guide()
    dim = guide.latent_dim
    widths = {m.out_features for m in guide.flow.modules() if isinstance(m, torch.nn.Linear)}
    assert 3 * dim + 1 in widths and 320 not in widths
    amortized = POSTERIOR_FLOWS[name](dim, 2, context_dim=4)
    assert 320 in {m.out_features for m in amortized.modules() if isinstance(m, torch.nn.Linear)}
