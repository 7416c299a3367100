"""The VAE's Pyro model/guide: Pyro's ELBO is the flow-modified ELBO, shapes, errors, and it trains."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

from vaeflows.data import load_dataset
from vaeflows.models import VAE, build_vae
from vaeflows.nn import build_encoder_decoder, build_likelihood
from vaeflows.transforms import POSTERIOR_FLOWS, posterior_flow

IMAGE_SHAPE = (1, 8, 8)
LATENT = 4
HIDDEN = (32,)
FLOWS = [None, "planar", "sylvester-orthogonal", "iaf"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(autouse=True)
def fresh_param_store():
    # pyro.module("vae", ...) shares names across VAEs: every test starts from an empty store.
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def tiny_vae(flow, seed=0, **options):
    torch.manual_seed(seed)
    return build_vae(
        "mlp",
        IMAGE_SHAPE,
        "bernoulli",
        latent_dim=LATENT,
        flow=flow,
        num_flows=2,
        hidden_dims=HIDDEN,
        **options,
    )


def perturb(module, seed=1, std=0.3):
    """Move every parameter away from its initialization, so the check is not at init only."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn(p.shape, generator=generator, dtype=p.dtype))


@pytest.mark.parametrize("flow", FLOWS)
@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_pyro_elbo_is_the_flow_modified_elbo(digits, flow, beta):
    vae = tiny_vae(flow).double()
    if flow is not None:
        perturb(vae.flow)
    x = digits.train[:16].double()

    pyro.set_rng_seed(7)
    loss = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x, beta)

    pyro.set_rng_seed(7)
    h = vae.encoder(x)
    q0 = dist.Normal(vae.loc(h), vae.scale(h))
    z0 = q0.rsample()  # the guide's only random draw
    if flow is None:
        zK, ladj = z0, torch.zeros(x.shape[0], dtype=x.dtype)
    else:
        transform = vae.flow.condition(h)
        zK = transform(z0)
        ladj = transform.log_abs_det_jacobian(z0, zK)
        assert ladj.shape == (x.shape[0],)
        assert not torch.allclose(ladj, torch.zeros_like(ladj))  # the flow does something
    log_px = dist.Bernoulli(logits=vae.decoder(zK)).to_event(3).log_prob(x)
    log_pz = dist.Normal(0.0, 1.0).log_prob(zK).sum(-1)
    log_q = q0.log_prob(z0).sum(-1) - ladj
    by_hand = -(log_px + beta * log_pz - beta * log_q).sum()

    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, by_hand, rtol=1e-10, atol=1e-9)
    # and the same gradient (vaeflows' Gaussian scores its own sample from the noise that made it)
    params = [p for p in vae.parameters() if p.requires_grad]
    for ours, theirs in zip(
        torch.autograd.grad(loss, params, allow_unused=True), torch.autograd.grad(by_hand, params, allow_unused=True)
    ):
        assert (ours is None) == (theirs is None)
        if ours is not None:
            torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)

    # the draws line up: another seed gives another value
    pyro.set_rng_seed(8)
    other = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x, beta)
    assert (other - by_hand).abs() > 1e-6


@pytest.mark.parametrize("flow", FLOWS)
def test_posterior_shapes(digits, flow):
    vae = tiny_vae(flow)
    x = digits.train[:5]
    q = vae.posterior(x)
    assert q.batch_shape == (5,)
    assert q.event_shape == (LATENT,)
    z = q.rsample()
    assert z.shape == (5, LATENT)
    assert q.log_prob(z).shape == (5,)
    z = q.rsample((3,))
    assert z.shape == (3, 5, LATENT)
    assert torch.isfinite(q.log_prob(z)).all() and q.log_prob(z).shape == (3, 5)


@pytest.mark.parametrize("flow", FLOWS)
def test_vectorized_particles_give_a_finite_differentiable_loss(digits, flow):
    vae = tiny_vae(flow)
    x = digits.train[:6]
    elbo = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    loss = elbo.differentiable_loss(vae.model, vae.guide, x, 0.5)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in vae.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("flow", [None, "planar"])
def test_reconstruct_and_sample_images(digits, flow):
    vae = tiny_vae(flow)
    x = digits.test[:7]
    rec = vae.reconstruct(x)
    assert rec.shape == x.shape
    assert ((rec >= 0) & (rec <= 1)).all()
    assert not rec.requires_grad
    images = vae.sample_images(9, x)
    assert images.shape == (9, *IMAGE_SHAPE)
    assert ((images >= 0) & (images <= 1)).all()
    assert images.dtype == x.dtype
    assert not torch.allclose(images[0], images[1])  # different prior draws


def test_build_vae_flow_none_and_names():
    assert tiny_vae(None).flow is None
    assert tiny_vae("none").flow is None
    for name in POSTERIOR_FLOWS:
        vae = tiny_vae(name)
        assert vae.flow is not None and vae.flow.context_dim == vae.encoder.feature_dim == HIDDEN[-1]


def test_unknown_flow_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown posterior flow 'plnar'") as info:
        tiny_vae("plnar")
    for name in POSTERIOR_FLOWS:
        assert name in str(info.value)


def test_flow_context_dim_must_match_encoder_features():
    encoder, decoder = build_encoder_decoder("mlp", IMAGE_SHAPE, LATENT, "bernoulli", hidden_dims=(32,))
    flow = posterior_flow("planar", LATENT, 2, context_dim=17)
    with pytest.raises(ValueError, match=r"context_dim=17.*feature_dim=32"):
        VAE(encoder, decoder, build_likelihood("bernoulli"), LATENT, flow)
    # the matching one is accepted
    VAE(encoder, decoder, build_likelihood("bernoulli"), LATENT, posterior_flow("planar", LATENT, 2, 32))


@pytest.mark.parametrize("flow", ["planar", "sylvester-orthogonal"])
def test_svi_with_pyro_optimizer_lowers_the_loss(digits, flow):
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    vae = build_vae("mlp", IMAGE_SHAPE, "bernoulli", latent_dim=LATENT, flow=flow, num_flows=2, hidden_dims=(64,))
    x = digits.train[:500]
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step(x, 1.0) / len(x) for _ in range(50)]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert all(torch.isfinite(torch.tensor(losses)))
    assert last < first - 5.0, (first, last)
    # SVI trained the module's own parameters (pyro.module registered them)
    store = pyro.get_param_store()
    name = "vae$$$loc.weight"
    assert store[name] is vae.loc.weight


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_latent_dim_zero_with_a_flow_is_refused():
    with pytest.raises(ValueError, match="latent_dim must be an integer >= 1, got 0"):
        build_vae("mlp", IMAGE_SHAPE, "bernoulli", latent_dim=0, flow="planar", hidden_dims=HIDDEN)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_latent_dim_zero_without_a_flow_is_refused():
    with pytest.raises(ValueError, match="latent_dim"):
        build_vae("mlp", IMAGE_SHAPE, "bernoulli", latent_dim=0, flow=None, hidden_dims=HIDDEN)
