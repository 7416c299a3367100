"""Per-point ELBO, importance-sampled log-likelihood and KL warm-up."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from vaeflows.data import load_dataset
from vaeflows.infer import (
    elbo_per_point,
    importance_sampled_log_likelihood,
    kl_beta,
    log_importance_weights,
)
from vaeflows.models import build_vae

# --- a conjugate toy model: z ~ N(0, 1), x | z ~ N(z, 1); p(z | x) = N(x / 2, 1 / 2) ------------


def toy_model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def exact_guide(x):
    """The true posterior: every log weight equals log p(x)."""
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x / 2, math.sqrt(0.5)))


def wide_guide(x):
    """Not the posterior: the log weights vary, their mean is below log p(x)."""
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x / 2, 1.0))


def exact_log_px(x):
    return dist.Normal(x.new_zeros(()), x.new_tensor(2.0).sqrt()).log_prob(x)


@pytest.fixture
def toy_x():
    return torch.linspace(-3.0, 3.0, 13, dtype=torch.float64)


def test_log_importance_weights_shape_and_value(toy_x):
    pyro.set_rng_seed(0)
    log_w = log_importance_weights(toy_model, exact_guide, toy_x, 5)
    assert log_w.shape == (5, 13)
    torch.testing.assert_close(log_w, exact_log_px(toy_x).expand(5, 13))
    log_w = log_importance_weights(toy_model, wide_guide, toy_x, 5)
    assert log_w.shape == (5, 13)
    assert (log_w.std(0) > 1e-3).all()  # one independent sample per row


@pytest.mark.parametrize("num_samples", [1, 3, 50])
@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
@pytest.mark.parametrize("batch_size", [1, 5, 100])
def test_exact_guide_gives_exact_log_likelihood(toy_x, num_samples, chunk_size, batch_size):
    estimate = importance_sampled_log_likelihood(
        toy_model, exact_guide, toy_x, num_samples, chunk_size=chunk_size, batch_size=batch_size
    )
    assert estimate.shape == toy_x.shape
    torch.testing.assert_close(estimate, exact_log_px(toy_x), rtol=0, atol=1e-10)
    elbo = elbo_per_point(toy_model, exact_guide, toy_x, batch_size=batch_size)
    torch.testing.assert_close(elbo, exact_log_px(toy_x), rtol=0, atol=1e-10)


@pytest.mark.parametrize("chunk_size", [30, 1000])
def test_chunked_estimate_converges_to_log_likelihood(toy_x, chunk_size):
    """A wrong running log-sum-exp or normalization across chunks would be off by ~log(#chunks).

    The weights' relative variance is 2 / sqrt(3) - 1, so with 3000 samples the estimate's std
    is about 0.007 nats.
    """
    pyro.set_rng_seed(1)
    estimate = importance_sampled_log_likelihood(
        toy_model, wide_guide, toy_x, 3000, chunk_size=chunk_size, batch_size=13
    )
    torch.testing.assert_close(estimate, exact_log_px(toy_x), rtol=0, atol=0.03)
    pyro.set_rng_seed(1)
    elbo = elbo_per_point(toy_model, wide_guide, toy_x.repeat(400)).reshape(400, 13).mean(0)
    # the ELBO gap of the wide guide: KL(N(x/2, 1) || N(x/2, 1/2)) = (1 - log 2) / 2 = 0.153
    # (log w = log p(x) + (log 2 - u^2) / 2, u ~ N(0, 1): the mean gap over 5200 draws has std 0.01)
    gap = (exact_log_px(toy_x) - elbo).mean().item()
    assert gap == pytest.approx((1 - math.log(2)) / 2, abs=0.04)


def test_progress_and_bad_num_samples(toy_x):
    done = []
    importance_sampled_log_likelihood(toy_model, exact_guide, toy_x, 2, batch_size=5, progress=done.append)
    assert done == [5, 5, 3]
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        importance_sampled_log_likelihood(toy_model, exact_guide, toy_x, 0)


# --- on a VAE ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vae_and_x():
    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = build_vae("mlp", (1, 8, 8), "bernoulli", latent_dim=4, flow="planar", num_flows=2, hidden_dims=(32,))
    return vae, load_dataset("digits").test


def test_vae_is_ll_above_elbo_and_grows_with_samples(vae_and_x):
    vae, x = vae_and_x
    pyro.set_rng_seed(0)
    elbo = elbo_per_point(vae.model, vae.guide, x)
    assert elbo.shape == (len(x),) and torch.isfinite(elbo).all()
    means = {}
    for s in (1, 10, 100):
        pyro.set_rng_seed(0)
        ll = importance_sampled_log_likelihood(vae.model, vae.guide, x, s)
        assert ll.shape == (len(x),) and torch.isfinite(ll).all()
        means[s] = ll.mean().item()
    assert means[100] > elbo.mean().item() + 0.3
    assert means[1] < means[10] - 0.1
    assert means[10] < means[100] - 0.1
    assert means[100] < 0  # a log-probability of binary images


def test_vae_is_ll_with_one_sample_is_the_elbo(vae_and_x):
    vae, x = vae_and_x
    pyro.set_rng_seed(3)
    elbo = elbo_per_point(vae.model, vae.guide, x, batch_size=10)
    pyro.set_rng_seed(3)
    ll = importance_sampled_log_likelihood(vae.model, vae.guide, x, 1, batch_size=10)
    assert torch.equal(elbo, ll)


def test_vae_chunking_agrees_in_distribution(vae_and_x):
    vae, x = vae_and_x
    pyro.set_rng_seed(0)
    a = importance_sampled_log_likelihood(vae.model, vae.guide, x, 40, chunk_size=7).mean()
    pyro.set_rng_seed(0)
    b = importance_sampled_log_likelihood(vae.model, vae.guide, x, 40, chunk_size=1000).mean()
    # the mean over 180 points of two estimates with different draws; log(6 chunks) = 1.8 if wrong
    assert (a - b).abs() < 0.3


# --- KL warm-up ------------------------------------------------------------------------------


def test_kl_beta():
    assert kl_beta(1, 100) == pytest.approx(0.01)
    assert kl_beta(50, 100) == pytest.approx(0.5)
    assert kl_beta(100, 100) == 1.0
    assert kl_beta(250, 100) == 1.0
    assert kl_beta(1, 0) == 1.0
    assert kl_beta(7, 0) == 1.0


@pytest.mark.parametrize("flow", [None, "planar", "sylvester-orthogonal", "iaf"])
@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_reparameterized_elbo_is_trace_elbo(flow, beta):
    """The trainer's loss is Trace_ELBO's value, gradient included, at the same random draws."""
    from pyro.infer import Trace_ELBO

    from vaeflows.infer import reparameterized_elbo

    torch.manual_seed(0)
    vae = build_vae("mlp", (1, 8, 8), "bernoulli", latent_dim=3, flow=flow, hidden_dims=[16]).double()
    x = torch.randint(0, 2, (12, 1, 8, 8)).double()
    pyro.set_rng_seed(5)
    expected = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x, beta)
    expected_grads = torch.autograd.grad(expected, list(vae.parameters()), allow_unused=True)
    pyro.set_rng_seed(5)
    ours = -reparameterized_elbo(vae.model, vae.guide, x, beta)
    grads = torch.autograd.grad(ours, list(vae.parameters()), allow_unused=True)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-10)
    for g, e in zip(grads, expected_grads):
        assert (g is None) == (e is None)
        if g is not None:
            torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


def test_reparameterized_elbo_refuses_discrete_guide_sites():
    from vaeflows.infer import reparameterized_elbo

    def model():
        pyro.sample("k", dist.Bernoulli(0.5))

    def guide():
        pyro.sample("k", dist.Bernoulli(0.3))

    with pytest.raises(ValueError, match="not reparameterized"):
        reparameterized_elbo(model, guide)


@pytest.mark.filterwarnings("ignore:Found vars in model but not guide")
def test_reparameterized_elbo_is_trace_elbo_with_subsampling_masks_and_model_only_sites():
    """Subsampled plates (scaled and replayed into the model), poutine.mask, poutine.scale, a
    latent site the guide does not have, two plates: the same value and gradient as Trace_ELBO."""
    from pyro.infer import Trace_ELBO

    from vaeflows.infer import reparameterized_elbo

    torch.manual_seed(0)
    x = torch.randn(10, 3, dtype=torch.float64)
    loc = torch.randn(10, dtype=torch.float64, requires_grad=True)
    weight = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)

    def model(x):
        g = pyro.sample("g", dist.Normal(x.new_zeros(()), 1.0))  # not in the guide
        with pyro.plate("data", 10, subsample_size=4) as idx:
            z = pyro.sample("z", dist.Normal(weight * g, 1.0))
            with pyro.plate("dims", 3, dim=-2), poutine.mask(mask=torch.tensor([True, False, True]).unsqueeze(-1)):
                pyro.sample("x", dist.Normal(z, 1.0), obs=x[idx].T)

    def guide(x):
        with pyro.plate("data", 10, subsample_size=4) as idx, poutine.scale(scale=0.7):
            pyro.sample("z", dist.Normal(loc[idx], 0.5))

    pyro.set_rng_seed(3)
    expected = Trace_ELBO().differentiable_loss(model, guide, x)
    expected_grads = torch.autograd.grad(expected, [loc, weight])
    pyro.set_rng_seed(3)
    ours = -reparameterized_elbo(model, guide, x)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)
    for g, e in zip(torch.autograd.grad(ours, [loc, weight]), expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


# --- the row-blocked model replay of the NLL: the reference computation, bit for bit --------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("flow", ["none", "planar", "sylvester-orthogonal", "iaf"])
def test_blocked_nll_equals_the_whole_chunk_computation_bitwise(flow, dtype):
    """The blocked path (the model replayed on blocks of rows of each chunk, the default on a CPU
    for chunks of more than 512 rows per thread) gives the numbers of scoring each chunk at once
    (``model_rows=0``, :func:`log_importance_weights`) bit for bit, also with a last block longer
    than the others and a ragged number of rows (100 samples x 3 points: 300 rows)."""
    from vaeflows.infer.evaluation import _sample_blocks

    assert _sample_blocks(100, 3, 64) == [(0, 32), (32, 32), (64, 36)]  # blocks compared here
    assert _sample_blocks(100, 3, 1) == _sample_blocks(100, 3, 64)  # none shorter than 64 rows
    torch.manual_seed(0)
    data = load_dataset("digits")
    vae = build_vae("mlp", data.image_shape, data.likelihood, 4, None if flow == "none" else flow, 2, [16])
    vae = vae.to(dtype).eval()
    x = data.test[:7].to(dtype)
    results = {}
    for rows in (0, None, 64, 100, 200):
        torch.manual_seed(1)
        results[rows] = importance_sampled_log_likelihood(
            vae.model, vae.guide, x, 250, chunk_size=100, batch_size=3, model_rows=rows
        )
    reference = results.pop(0)
    assert torch.isfinite(reference).all()
    for rows, value in results.items():
        assert torch.equal(value, reference), (rows, (value - reference).abs().max())
    torch.manual_seed(2)  # other draws give other numbers: the comparison could fail
    other = importance_sampled_log_likelihood(vae.model, vae.guide, x, 250, chunk_size=100, batch_size=3)
    assert not torch.equal(other, reference)


def test_blocked_nll_refuses_negative_rows(toy_x):
    with pytest.raises(ValueError, match="model_rows"):
        importance_sampled_log_likelihood(toy_model, wide_guide, toy_x, 4, model_rows=-1)


def test_blocked_nll_on_a_generic_model_equals_the_reference(toy_x):
    """A plain Pyro model (Normal sites, no vaeflows distributions) takes the blocked path too."""
    results = []
    for rows in (0, 64):  # 13 points: blocks of 16 samples (208 rows), the last 20
        pyro.set_rng_seed(3)
        results.append(
            importance_sampled_log_likelihood(toy_model, wide_guide, toy_x, 30, chunk_size=12, model_rows=rows)
        )
    assert torch.equal(results[0], results[1])
