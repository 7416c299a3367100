"""The VAE experiment's pieces: the minibatch losses (ELBO, IWAE, warm-up, dynamic binarization)."""

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from vaeflows.data import VAEData, load_dataset
from vaeflows.infer import kl_beta, resolve_device, vae_loss
from vaeflows.models import build_vae


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def tiny_vae(flow="planar"):
    pyro.clear_param_store()
    torch.manual_seed(0)
    return build_vae("mlp", (1, 8, 8), "bernoulli", latent_dim=3, flow=flow, num_flows=2, hidden_dims=(16,))


@pytest.mark.parametrize("epoch", [1, 3, 10])
def test_elbo_loss_is_warmup_weighted_pyro_elbo_per_point(digits, epoch):
    vae = tiny_vae()
    x = digits.train[:20]
    loss = vae_loss(vae, digits, warmup=4)
    pyro.set_rng_seed(1)
    value = loss(x, epoch)
    pyro.set_rng_seed(1)
    expected = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x, kl_beta(epoch, 4)) / 20
    torch.testing.assert_close(value, expected)
    assert value.requires_grad


def test_warmup_weight_changes_the_loss(digits):
    vae = tiny_vae()
    x = digits.train[:20]
    loss = vae_loss(vae, digits, warmup=4)
    pyro.set_rng_seed(1)
    early = loss(x, 1)
    pyro.set_rng_seed(1)
    late = loss(x, 4)
    assert (early - late).abs() > 1e-3


@pytest.mark.parametrize("flow", [None, "planar", "sylvester-householder"])
def test_iwae_with_one_sample_is_the_elbo(digits, flow):
    vae = tiny_vae(flow)
    x = digits.train[:20]
    pyro.set_rng_seed(2)
    elbo = vae_loss(vae, digits, warmup=0)(x, 1)
    pyro.set_rng_seed(2)
    iwae = vae_loss(vae, digits, warmup=0, objective="iwae", iwae_samples=1)(x, 1)
    torch.testing.assert_close(iwae, elbo)


def test_iwae_bound_is_tighter_and_differentiable(digits):
    vae = tiny_vae()
    x = digits.train[:100]
    pyro.set_rng_seed(3)
    elbo = vae_loss(vae, digits, warmup=0)(x, 1)
    iwae_loss = vae_loss(vae, digits, warmup=0, objective="iwae", iwae_samples=20)
    iwae = iwae_loss(x, 1)
    assert iwae < elbo - 0.2  # -IWAE_20 <= -ELBO; an untrained posterior leaves a wide gap
    iwae.backward()
    assert all(torch.isfinite(p.grad).all() for p in vae.parameters())
    assert vae.flow.hypernet.net[0].weight.grad.abs().sum() > 0


def test_dynamic_binarization_happens_per_batch():
    grey = torch.full((10, 1, 8, 8), 0.5)
    data = VAEData(grey, grey.round(), grey.round(), (1, 8, 8), "bernoulli", True, "grey")
    vae = tiny_vae()
    loss = vae_loss(vae, data, warmup=0)
    pyro.set_rng_seed(4)
    value = loss(grey, 1)
    pyro.set_rng_seed(4)
    binary = torch.bernoulli(grey)
    assert 0 < binary.mean() < 1
    expected = Trace_ELBO().differentiable_loss(vae.model, vae.guide, binary, 1.0) / 10
    torch.testing.assert_close(value, expected)


def test_unknown_objective(digits):
    with pytest.raises(ValueError, match="unknown objective 'kl'.*elbo.*iwae"):
        vae_loss(tiny_vae(), digits, 0, objective="kl")


@pytest.mark.parametrize("samples", [0, -2])
def test_iwae_samples_must_be_positive(digits, samples):
    with pytest.raises(ValueError, match="iwae_samples"):
        vae_loss(tiny_vae(), digits, 0, objective="iwae", iwae_samples=samples)(digits.train[:4], 1)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda:0")
