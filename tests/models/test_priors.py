"""The learnable priors (issue 19, item 1): their densities against the formula, the ELBO and the
importance-sampled NLL against ``log p(x | z) + log p(z) - log q(z | x)`` computed by hand, shapes
at the Pyro site, gradients, and save/load through a run directory."""

import io
import math

import pyro
import pytest
import torch
from pyro import poutine
from torch.distributions import Bernoulli, Normal

import vaeflows.models.priors as priors
from vaeflows.infer.evaluation import importance_sampled_log_likelihood, log_importance_weights, reparameterized_elbo
from vaeflows.models import FlowPrior, VampPrior, VampPriorDistribution, build_prior, build_vae

SHAPE, D = (1, 4, 4), 3
PRIOR_CASES = {
    "standard": ("standard", None),
    "vamp": ("vamp", {"num_components": 5}),
    "flow": ("flow", {"flow": "realnvp", "num_steps": 2, "hidden": 8}),
}


def tiny_vae(prior, seed=0):
    torch.manual_seed(seed)
    name, options = PRIOR_CASES[prior]
    vae = build_vae("mlp", SHAPE, "bernoulli", latent_dim=D, hidden_dims=(8,), prior=name, prior_options=options)
    vae = vae.double()
    with torch.no_grad():  # away from the initialization (pseudo-inputs inside (0, 1), not all at 0.05)
        for p in vae.parameters():
            p.add_(0.3 * torch.randn_like(p))
        if prior == "vamp":
            vae.latent_prior.weight.uniform_(0.1, 0.9)
    vae.register_params = False
    return vae


def data(n=4):
    return torch.randint(0, 2, (n, *SHAPE), generator=torch.Generator().manual_seed(1)).double()


def explicit_vamp_log_prob(loc, scale, z):
    """``log (1/K) sum_k prod_d N(z_d; loc_kd, scale_kd)``, one component at a time."""
    terms = [Normal(loc[k], scale[k]).log_prob(z).sum(-1) for k in range(loc.shape[0])]
    return torch.logsumexp(torch.stack(terms, -1), -1) - math.log(loc.shape[0])


def hand_log_prior(vae, z):
    if vae.latent_prior is None:
        return Normal(0.0, 1.0).log_prob(z).sum(-1)
    if isinstance(vae.latent_prior, VampPrior):
        h = vae.encoder(vae.latent_prior.pseudo_inputs())
        return explicit_vamp_log_prob(vae.loc(h), vae.scale(h), z)
    # the flow prior: log N(f^{-1}(z)) + log|det d f^{-1}/dz| with the Jacobian from autograd
    density = vae.latent_prior.density
    flat = z.reshape(-1, D)
    eps = density.flow.inverse_and_ladj(flat)[0]
    jac = torch.stack(
        [
            torch.autograd.functional.jacobian(lambda v: density.flow.inverse_and_ladj(v[None])[0][0], row)
            for row in flat
        ]
    )
    log_p = Normal(0.0, 1.0).log_prob(eps).sum(-1) + torch.linalg.slogdet(jac).logabsdet
    return log_p.reshape(z.shape[:-1])


def hand_log_weights(vae, x, z):
    """``log p(x | z) + log p(z) - log q(z | x)`` with torch's own distributions."""
    loc, scale = vae.gaussian_params(x)
    log_q = Normal(loc, scale).log_prob(z).sum(-1)
    logits = vae.decoder(z)
    log_lik = Bernoulli(logits=logits).log_prob(x.expand_as(logits)).flatten(-3).sum(-1)
    return log_lik + hand_log_prior(vae, z) - log_q


@pytest.mark.parametrize("chunk", [10**9, 2 * 4 * D], ids=["one-pass", "chunked"])
def test_vamp_log_prob_is_the_mixture_logsumexp(monkeypatch, chunk):
    monkeypatch.setattr(priors, "_CHUNK_ELEMENTS", chunk)  # chunked: one component at a time, then two...
    torch.manual_seed(0)
    loc, scale = torch.randn(7, D, dtype=torch.float64), torch.rand(7, D, dtype=torch.float64) + 0.2
    p = VampPriorDistribution(loc, scale).expand((4,))
    assert p.batch_shape == (4,) and p.event_shape == (D,)
    z = 2 * torch.randn(2, 4, D, dtype=torch.float64)
    torch.testing.assert_close(p.log_prob(z), explicit_vamp_log_prob(loc, scale, z), rtol=0, atol=1e-12)
    assert p.log_prob(z[0, 0]).shape == (4,)  # an unbatched value broadcasts to the batch shape
    assert p.sample((6,)).shape == (6, 4, D) and not p.has_rsample


def test_vamp_samples_follow_the_mixture():
    torch.manual_seed(0)
    loc = torch.tensor([[-3.0], [2.0]])
    p = VampPriorDistribution(loc, torch.full((2, 1), 0.5))
    s = p.sample((20000,))
    assert abs((s < 0).double().mean().item() - 0.5) < 0.02  # half from each component
    assert abs(s.mean().item() - (-0.5)) < 0.05


def test_flow_prior_distribution_shapes_and_rsample():
    torch.manual_seed(0)
    prior = FlowPrior(D, "realnvp", num_steps=2, hidden=8).double()
    p = prior.distribution().expand((3,))
    z = p.rsample((2,))
    assert z.shape == (2, 3, D) and p.log_prob(z).shape == (2, 3) and p.has_rsample
    z.sum().backward()  # reparameterized: the flow's parameters get gradients through the sample
    assert any(q.grad is not None and q.grad.abs().sum() > 0 for q in prior.parameters())
    torch.testing.assert_close(p.log_prob(z.detach()), prior.density.log_prob(z.detach()))


@pytest.mark.parametrize("prior", PRIOR_CASES)
def test_importance_weights_elbo_and_nll_match_the_formula(prior):
    vae, x, s = tiny_vae(prior), data(), 3
    pyro.set_rng_seed(5)
    with pyro.plate("_importance_samples", s, dim=-2):
        z = poutine.trace(vae.guide).get_trace(x).nodes["z"]["value"]
    expected = hand_log_weights(vae, x, z).detach()
    assert z.shape == (s, 4, D)
    pyro.set_rng_seed(5)  # the same draws: log_importance_weights traces the guide the same way
    torch.testing.assert_close(log_importance_weights(vae.model, vae.guide, x, s), expected, rtol=0, atol=1e-10)
    pyro.set_rng_seed(5)
    nll = importance_sampled_log_likelihood(vae.model, vae.guide, x, s, chunk_size=s, batch_size=4)
    torch.testing.assert_close(nll, torch.logsumexp(expected, 0) - math.log(s), rtol=0, atol=1e-10)
    # one-sample ELBO, Pyro's Trace_ELBO and vaeflows' own, at the same draw
    pyro.set_rng_seed(6)
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    elbo = model_trace.log_prob_sum() - guide_trace.log_prob_sum()
    hand = hand_log_weights(vae, x, guide_trace.nodes["z"]["value"]).sum()
    torch.testing.assert_close(elbo, hand, rtol=0, atol=1e-10)
    pyro.set_rng_seed(6)
    torch.testing.assert_close(reparameterized_elbo(vae.model, vae.guide, x), hand, rtol=0, atol=1e-10)


@pytest.mark.parametrize("prior", ["vamp", "flow"])
def test_pyro_elbo_trains_the_prior(prior):
    vae = tiny_vae(prior)
    loss = pyro.infer.Trace_ELBO(num_particles=2, vectorize_particles=True).differentiable_loss(
        vae.model, vae.guide, data()
    )
    loss.backward()
    for name, p in vae.latent_prior.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("prior", ["vamp", "flow"])
def test_state_dict_round_trip(prior):
    vae, other = tiny_vae(prior, seed=0), tiny_vae(prior, seed=1)
    buffer = io.BytesIO()
    torch.save(vae.state_dict(), buffer)
    buffer.seek(0)
    other.load_state_dict(torch.load(buffer))
    z = torch.randn(5, D, dtype=torch.float64)
    x = data()
    torch.testing.assert_close(other.prior(x).log_prob(z), vae.prior(x).log_prob(z), rtol=0, atol=0)


def test_prior_images_are_the_pseudo_inputs_in_the_unit_box():
    prior = VampPrior(SHAPE, num_components=4)
    u = prior.pseudo_inputs()
    assert u.shape == (4, *SHAPE) and (u >= 0).all() and (u <= 1).all()
    assert abs(prior.weight.mean().item() - 0.05) < 0.01  # the paper's code: N(0.05, 0.01^2)


def test_bad_prior_names_and_options():
    with pytest.raises(ValueError, match="unknown prior 'gauss'"):
        build_prior("gauss", D, SHAPE)
    with pytest.raises(TypeError, match="standard prior has no options"):
        build_prior("standard", D, SHAPE, num_components=3)
    with pytest.raises(ValueError, match="num_components"):
        build_prior("vamp", D, SHAPE, num_components=0)
    with pytest.raises(ValueError, match="unknown density flow"):
        build_prior("flow", D, SHAPE, flow="nope")
