"""Learnable bases (mixture, MADE) with every registered density flow; Glow's and RealNVP's learned
priors; ReZero couplings.

Float64, parameters perturbed away from their initialization as in test_density_flows.py. The
bases are checked against by-hand log-densities (a loop over mixture components; the MADE's
log-density from the autograd Jacobian of its ``z -> eps`` map), for normalization on a 2-D grid,
and for sample/log_prob consistency (sample moments against the moments of ``exp(log_prob)`` on
the grid); with every flow, against Pyro's ``TransformedDistribution`` on
``model.base_distribution()``, for gradients to every parameter, save/load and batch shapes.
"""

import io

import pyro.distributions as dist
import pytest
import torch

from tests.density.test_density_flows import NAMES, context, data, jacobians, make_model
from tests.density.test_transform_contract import CHEAPER
from vaeflows.density import BASES, FactorOut, FlowSequence, MADEBase, MixtureBase, build_base, density_flow
from vaeflows.density.layers import ActNorm, Coupling, channel_mask
from vaeflows.density.nets import CouplingCNN, CouplingMLP, ZeroConv
from vaeflows.models.priors import FlowPrior

LEARNED = [name for name in BASES if name != "normal"]
SHAPES = {"vector": (3,), "image": (2, 4, 4)}


def base_options(base, shape):
    dim = torch.Size(shape).numel()
    return {"mixture": {"num_components": 3}, "made": {"hidden": max(8, dim)}}.get(base, {})


def with_base(name, shape, base, **overrides):
    return make_model(
        name, shape, base=base, base_options=base_options(base, shape), **CHEAPER.get(name, {}), **overrides
    )


def perturbed_base(base, shape=(2,), scale=0.5, seed=0):
    torch.manual_seed(seed)
    module = build_base(base, shape, **base_options(base, shape)).double()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


def grid_2d(limit=10.0, points=401):
    axis = torch.linspace(-limit, limit, points, dtype=torch.float64)
    return torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2), (axis[1] - axis[0]) ** 2


#: Every flow on vectors; on images the two kinds of noise: flattened (NICE, as MAF, residual,
#: FFJORD) and multi-scale (Glow, as RealNVP). The base does not depend on the flow's layers.
COMBINATIONS = [(name, "vector") for name in NAMES] + [("nice", "image"), ("glow", "image")]


@pytest.mark.parametrize("name, kind", COMBINATIONS)
@pytest.mark.parametrize("base", LEARNED)
def test_every_flow_with_every_base(name, base, kind):
    shape = SHAPES[kind]
    model = with_base(name, shape, base)
    assert type(model.base) is BASES[base]
    x = data(shape, None, lead=(2, 3))
    log_p = model.log_prob(x)
    assert log_p.shape == (2, 3)
    z, ladj = model.flow.inverse_and_ladj(x)
    torch.testing.assert_close(log_p, model.base.log_prob(z) - ladj)
    p = dist.TransformedDistribution(model.base_distribution(), [model.flow])
    assert p.event_shape == model.event_shape
    torch.testing.assert_close(p.log_prob(x), log_p, rtol=0, atol=1e-10)
    log_p.sum().backward()
    base_names = {n for n, _ in model.named_parameters() if n.startswith("base.")}
    assert base_names, "the learnable base has parameters"
    assert all(q.grad is not None and torch.isfinite(q.grad).all() for q in model.parameters())
    assert all(model.get_parameter(n).grad.abs().sum() > 0 for n in base_names)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = with_base(name, shape, base, seed=7, perturb=0.0)
    fresh.load_state_dict(torch.load(buffer))
    torch.testing.assert_close(fresh.log_prob(x), log_p.detach())
    samples = model.sample(4)
    assert samples.shape == (4, *shape) and samples.dtype == torch.float64 and torch.isfinite(samples).all()


@pytest.mark.parametrize("base", LEARNED)
def test_conditional_flow_with_a_learned_base(base):
    model = with_base("realnvp", (3,), base, conditional=True)
    ctx = context(4)
    x = data((3,), 4)
    z, ladj = model.flow.inverse_and_ladj(x, ctx)
    torch.testing.assert_close(model.log_prob(x, ctx), model.base.log_prob(z) - ladj)
    assert model.sample(4, ctx).shape == (4, 3)


def test_mixture_log_prob_by_hand():
    base = perturbed_base("mixture", (2, 2, 1))
    z = torch.randn(5, 2, 2, 1, dtype=torch.float64)
    flat = z.reshape(5, 4)
    weights = torch.softmax(base.logits, 0)
    by_hand = sum(
        weights[k] * torch.distributions.Normal(base.loc[k], base.log_scale[k].exp()).log_prob(flat).sum(-1).exp()
        for k in range(len(weights))
    ).log()
    torch.testing.assert_close(base.log_prob(z), by_hand)
    torch.testing.assert_close(base.distribution(z).log_prob(z), by_hand)


def test_made_log_prob_by_hand_and_autoregressive():
    base = perturbed_base("made", (4,))
    z = torch.randn(6, 4, dtype=torch.float64)

    def noise(v):
        return base.step.inverse_and_ladj(v)[0]

    jac = jacobians(noise, z, 1)
    # eps_i depends on z_<=i only (MADE order 0..D-1): the Jacobian is lower triangular.
    torch.testing.assert_close(jac.triu(1), torch.zeros_like(jac), rtol=0, atol=0)
    eps = noise(z)
    by_hand = torch.distributions.Normal(0.0, 1.0).log_prob(eps).sum(-1) + torch.linalg.slogdet(jac).logabsdet
    torch.testing.assert_close(base.log_prob(z), by_hand)
    torch.testing.assert_close(base.distribution(z).log_prob(z), by_hand)


def test_bases_start_as_the_standard_normal_or_near_it():
    z = torch.randn(8, 5)
    normal = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(MADEBase((5,)).log_prob(z), normal)
    mixture = MixtureBase((5,), num_components=4)
    assert torch.allclose(mixture.loc.norm(dim=-1), torch.ones(4), atol=1.5)  # centres about unit distance


@pytest.mark.parametrize("base", list(BASES))
def test_base_normalizes_and_samples_match_its_density(base):
    module = perturbed_base(base)
    grid, cell = grid_2d()
    with torch.no_grad():
        density = module.log_prob(grid).exp() * cell
        torch.manual_seed(3)
        samples = module.sample(40000, grid)
    assert abs(float(density.sum()) - 1) < 1e-3
    mean = (density[:, None] * grid).sum(0)
    second = (density[:, None, None] * grid[:, :, None] * grid[:, None, :]).sum(0)
    torch.testing.assert_close(samples.mean(0), mean, rtol=0, atol=0.04)
    empirical = (samples[:, :, None] * samples[:, None, :]).mean(0)
    torch.testing.assert_close(empirical, second, rtol=0, atol=0.1 * float(second.diagonal().max()))


@pytest.mark.parametrize("base", LEARNED)
def test_flow_with_learned_base_integrates_to_one(base):
    model = with_base("realnvp", (2,), base, perturb=0.2)
    grid, cell = grid_2d(12.0, 501)
    with torch.no_grad():
        mass = model.log_prob(grid).exp().sum() * cell
    assert abs(float(mass) - 1) < 0.01


def test_base_errors():
    with pytest.raises(ValueError, match="unknown base 'gmm'.*normal, mixture, made"):
        density_flow("nice", (2,), base="gmm")
    with pytest.raises(ValueError, match="hidden >= the noise dimension 16"):
        density_flow("nice", (1, 4, 4), base="made", base_options={"hidden": 8})
    with pytest.raises(TypeError):
        density_flow("nice", (2,), base="mixture", base_options={"hidden": 8})


def test_flow_prior_with_a_learned_base():
    prior = FlowPrior(3, "realnvp", num_steps=2, hidden=8, base="mixture")
    assert isinstance(prior.density.base, MixtureBase)
    p = prior.distribution().expand((4,))
    z = p.rsample((2,))
    assert z.shape == (2, 4, 3)
    torch.testing.assert_close(p.log_prob(z), prior.density.log_prob(z.reshape(-1, 3)).reshape(2, 4))


# Learned priors and ReZero: the generic checks of test_density_flows.py at perturbed parameters.

VARIANTS = {
    "learned_prior": {"learned_prior": True},
    "rezero": {"rezero": True},
    "both": {"learned_prior": True, "rezero": True},
}
multiscale = pytest.mark.parametrize("name", ["realnvp", "glow"])
IMAGE = (1, 4, 4)  # Glow squeezes twice at two levels


VARIANT_CASES = [(v, k, False) for v in VARIANTS for k in ("vector", "image")] + [("both", "image", True)]


@multiscale
@pytest.mark.parametrize("variant, kind, conditional", VARIANT_CASES)
def test_variants_log_det_round_trip_and_gradients(name, variant, kind, conditional):
    shape = (3,) if kind == "vector" else IMAGE
    model = make_model(name, shape, conditional, **VARIANTS[variant])
    ctx = context(3) if conditional else None
    x = data(shape, 3)
    z, ladj = model.flow.inverse_and_ladj(x, ctx)
    x_back, ladj_forward = model.flow.forward_and_ladj(z, ctx)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-10)
    torch.testing.assert_close(ladj_forward, ladj, rtol=0, atol=1e-9)
    expected = torch.linalg.slogdet(jacobians(lambda v: model.flow.forward_and_ladj(v, ctx)[0], z, len(shape)))
    torch.testing.assert_close(ladj, expected.logabsdet, rtol=0, atol=1e-8)
    model.log_prob(x, ctx).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    if variant != "rezero" and kind == "image":
        priors = [m.prior for m in model.modules() if isinstance(m, FactorOut)]
        assert priors and all(isinstance(p, ZeroConv) for p in priors)
        assert all(p.conv.weight.grad.abs().sum() > 0 for p in priors)


@multiscale
def test_variants_save_load_and_batch_dims(name):
    model = make_model(name, IMAGE, **VARIANTS["both"])
    x = data(IMAGE, None, lead=(2, 2))
    log_p = model.log_prob(x)
    torch.testing.assert_close(log_p[1], model.log_prob(x[1]))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = make_model(name, IMAGE, seed=7, perturb=0.0, **VARIANTS["both"])
    fresh.load_state_dict(torch.load(buffer))
    torch.testing.assert_close(fresh.log_prob(x), log_p)
    assert model.sample(3).shape == (3, *IMAGE)


def _split_prior_layer(seed=0):
    torch.manual_seed(seed)
    inner = FlowSequence([Coupling(channel_mask((2, 4, 4), 0), CouplingCNN(2, 4, 8)), ActNorm((2, 4, 4), False)])
    layer = FactorOut(inner, 2, ZeroConv(2, 4)).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return layer


def test_split_prior_log_prob_by_hand():
    layer = _split_prior_layer()
    x = torch.randn(5, 4, 4, 4, dtype=torch.float64)
    z, ladj = layer.inverse_and_ladj(x)
    flow_log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum((-3, -2, -1)) - ladj
    # By hand: N(out; mu(kept), sigma(kept)^2) times the inner flow's density of the kept channels.
    out, kept = x[:, :2], x[:, 2:]
    mean, raw = layer.prior.conv(kept).chunk(2, dim=1)
    sigma = torch.exp(3 * torch.tanh(raw / 3))
    rest, inner_ladj = layer.flow.inverse_and_ladj(kept)
    inner = torch.distributions.Normal(0.0, 1.0).log_prob(rest).sum((-3, -2, -1)) - inner_ladj
    by_hand = torch.distributions.Normal(mean, sigma).log_prob(out).sum((-3, -2, -1)) + inner
    torch.testing.assert_close(flow_log_p, by_hand)


def test_split_prior_samples_follow_the_conditional_gaussian():
    layer = _split_prior_layer()
    n = 20000
    torch.manual_seed(1)
    rest = torch.randn(1, 2, 4, 4, dtype=torch.float64).expand(n, 2, 4, 4)  # one kept part, many draws
    with torch.no_grad():
        x, _ = layer.forward_and_ladj(torch.cat([torch.randn(n, 2, 4, 4, dtype=torch.float64), rest], 1))
        kept = x[0, 2:]
        mean, raw = layer.prior.conv(kept[None]).chunk(2, dim=1)
    torch.testing.assert_close(x[:, 2:], kept.expand(n, 2, 4, 4))
    sigma = torch.exp(3 * torch.tanh(raw / 3))[0]
    torch.testing.assert_close(x[:, :2].mean(0), mean[0], rtol=0, atol=float(4 * sigma.max() / n**0.5))
    torch.testing.assert_close(x[:, :2].std(0) / sigma, torch.ones_like(sigma), rtol=0, atol=0.04)


@multiscale
def test_learned_prior_starts_at_the_standard_normal(name):
    torch.manual_seed(0)
    model = density_flow(name, IMAGE, num_steps=1, hidden=8, learned_prior=True).double()
    x = data(IMAGE, 4)
    with_prior = model.log_prob(x)
    for m in model.modules():
        if isinstance(m, FactorOut):
            m.prior = None
    torch.testing.assert_close(model.log_prob(x), with_prior, rtol=0, atol=1e-12)
    tops = [m for m in model.modules() if isinstance(m, ActNorm) and bool(m.initialized) and m.shift.abs().sum() == 0]
    assert tops, "the learned top prior starts as the identity"


@pytest.mark.parametrize("net", [CouplingMLP(4, 8, 8, zero_init=False), None], ids=["mlp", "cnn"])
def test_rezero_coupling_is_the_identity_at_init_and_trains(net):
    torch.manual_seed(0)
    shape = (4,) if net is not None else (2, 4, 4)
    net = net if net is not None else CouplingCNN(2, 4, 8, zero_init=False)
    layer = Coupling(channel_mask(shape, 0), net, rezero=True)
    z = torch.randn(3, *shape)
    x, ladj = layer.forward_and_ladj(z)
    torch.testing.assert_close(x, z, rtol=0, atol=0)
    torch.testing.assert_close(ladj, torch.zeros(3), rtol=0, atol=0)
    (x.pow(3).sum() + ladj.sum()).backward()  # a loss whose gradient in the gates is not zero
    assert layer.alpha.grad != 0 and layer.beta.grad != 0
    default = Coupling(channel_mask(shape, 0), CouplingMLP(4, 8, 8) if len(shape) == 1 else CouplingCNN(2, 4, 8))
    assert not hasattr(default, "alpha")


def test_rezero_models_start_as_their_unscaled_identity():
    torch.manual_seed(0)
    model = density_flow("glow", IMAGE, num_steps=1, hidden=8, rezero=True)
    couplings = [m for m in model.modules() if isinstance(m, Coupling)]
    assert couplings and all(m.rezero and not m.alpha.detach().any() and not m.beta.detach().any() for m in couplings)
    last = couplings[0].net.net[-1]
    assert last.weight.abs().sum() > 0, "ReZero conditioners keep PyTorch's default initialization"


@pytest.mark.parametrize("kind", ["vector", "image"])
def test_nsf_rezero_log_det_round_trip_gradients_and_identity_at_init(kind):
    """ReZero spline couplings: the identity with a zero gate whatever the conditioner, then (gates
    perturbed) exact log-dets against autograd, round trips and a gradient to every parameter."""
    from vaeflows.density.splines import SplineCoupling

    shape = (3,) if kind == "vector" else IMAGE
    torch.manual_seed(0)
    fresh = density_flow("nsf", shape, num_steps=2, hidden=8, bins=4, rezero=True).double()
    splines = [m for m in fresh.modules() if isinstance(m, SplineCoupling)]
    assert splines and all(m.rezero and m.alpha.item() == 0.0 for m in splines)
    assert all(any(p.abs().sum() > 0 for p in m.net.parameters()) for m in splines), "nets keep their init"
    for m in splines:
        z = torch.randn(4, *m.mask.shape, dtype=torch.float64)
        torch.testing.assert_close(m.forward_and_ladj(z), (z, torch.zeros(4, dtype=torch.float64)), rtol=0, atol=1e-12)
    model = make_model("nsf", shape, rezero=True, bins=4)
    assert all(m.alpha.item() != 0.0 for m in model.modules() if isinstance(m, SplineCoupling))
    x = data(shape, 3)
    z, ladj = model.flow.inverse_and_ladj(x)
    x_back, ladj_forward = model.flow.forward_and_ladj(z)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-9)
    torch.testing.assert_close(ladj_forward, ladj, rtol=0, atol=1e-8)
    expected = torch.linalg.slogdet(jacobians(lambda v: model.flow.forward_and_ladj(v)[0], z, len(shape)))
    torch.testing.assert_close(ladj, expected.logabsdet, rtol=0, atol=1e-8)
    model.log_prob(x).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with pytest.raises(ValueError, match="transform='coupling'"):
        density_flow("nsf", (3,), hidden=8, transform="autoregressive", rezero=True)
