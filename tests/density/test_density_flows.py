"""One generic test of every registered density flow, vectors and images, unconditional and conditional.

Checks run in float64 with every parameter perturbed away from its initialization (after
ActNorm's data-dependent initialization), by N(0, 0.3^2) for vector flows and N(0, 0.1^2) for the
deeper image flows (larger kicks make their unbounded coupling shifts blow noise up to 1e8): the
log-det against the autograd Jacobian, the inverse round trip both ways, extra leading batch dims,
gradients reaching every parameter, a ``torch.save``/``load`` round trip, Pyro interoperability,
sample shapes, and that ``exp(log_prob)`` of a 2-D model integrates to 1.
"""

import io

import pyro.distributions as dist
import pytest
import torch

from vaeflows.density import DENSITY_FLOWS, ActNorm, FlowDensity, density_flow

#: Variants of a registry flow that run through the same generic tests: name -> (flow, options).
VARIANTS = {
    "nsf-autoregressive": ("nsf", {"transform": "autoregressive"}),
    "nsf-resnet": ("nsf", {"conditioner": "resnet", "num_blocks": 2, "unconditional": True}),
    "nsf-unconditional": ("nsf", {"unconditional": True}),
}
NAMES = list(DENSITY_FLOWS) + list(VARIANTS)
SHAPES = {"vector": (3,), "image": (2, 4, 4)}
CONTEXT_DIM = 3


#: The residual and FFJORD flows estimate their log-dets by default; here they run in exact
#: modes (residual: full-Jacobian log-det, SVD spectral norms; FFJORD: exact trace, dopri5 at
#: rtol = atol = 1e-9), and their checks use the tolerances of ``ATOL`` (the ODE solution map is
#: exact up to the solver's tolerance). Their estimators are tested in
#: tests/transforms/test_residual_ffjord.py.
EXACT_MODES = {
    "residual": {"ladj": "exact", "eval_ladj": "exact", "spectral": "exact"},
    "ffjord": {"num_steps": 1, "trace": "exact", "eval_trace": "exact", "rtol": 1e-9, "atol": 1e-9},
}
#: (round trip, log-det) absolute tolerances: exact flows 1e-10 / 1e-8 (1e-9 between the two
#: directions' log-dets), FFJORD 1e-6.
ATOL = {"ffjord": (1e-6, 1e-6, 1e-6)}


def options(name, shape, **overrides):
    variant = VARIANTS.get(name, (name, {}))[1]
    small = {"num_steps": 2, "hidden": 8, **EXACT_MODES.get(name, {}), **variant, **overrides}
    if name in ("maf", "nsf-autoregressive"):
        small["hidden"] = max(8, torch.Size(shape).numel())
    if name in ("realnvp", "glow") and len(shape) == 3:
        small["num_levels"] = 2
    return small


def make_model(name, shape, conditional=False, seed=0, perturb=None, **overrides):
    torch.manual_seed(seed)
    if perturb is None:
        perturb = 0.3 if len(shape) == 1 else 0.1
    model = density_flow(
        VARIANTS.get(name, (name,))[0],
        shape,
        context_dim=CONTEXT_DIM if conditional else None,
        **options(name, shape, **overrides),
    )
    model = model.double()
    model.log_prob(data(shape, 16, seed), context(16) if conditional else None)  # ActNorm's init
    with torch.no_grad():
        for p in model.parameters():
            p.add_(perturb * torch.randn_like(p))
    return model


def data(shape, n, seed=1, lead=None):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(*(lead or (n,)), *shape, generator=generator, dtype=torch.float64)
    return 0.1 + 0.8 * x  # inside (0, 1), where RealNVP's logit layer lives on images


def context(n):
    return torch.randn(n, CONTEXT_DIM, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


def jacobians(fn, z, event_ndim):
    """``(N, D, D)`` Jacobians of ``fn`` applied per sample to ``z`` of shape ``(N, *event)``.

    Row ``i`` of every sample's Jacobian is the gradient of ``sum(fn(z)[:, i])``: ``D`` backward
    passes rather than ``N * D`` (every sample's output depends on its own input only)."""
    n, d = z.shape[0], z[0].numel()
    z = z.detach().requires_grad_(True)
    y = fn(z).reshape(n, d)
    rows = [torch.autograd.grad(y[:, i].sum(), z, retain_graph=True)[0].reshape(n, d) for i in range(d)]
    return torch.stack(rows, dim=1)


cases = pytest.mark.parametrize("name", NAMES)
kinds = pytest.mark.parametrize("kind", list(SHAPES))
conditional = pytest.mark.parametrize("conditional", [False, True], ids=["plain", "conditional"])


@cases
@kinds
@conditional
def test_log_det_matches_autograd_and_inverse_round_trips(name, kind, conditional):
    if name == "ffjord" and kind == "image":
        pytest.skip(
            "ffjord on images is its vector flow on the flattened pixels (Flatten is checked with "
            "nice, maf, residual); its exact trace in 32-D at rtol 1e-9 would cost ~15 s here"
        )
    shape = SHAPES[kind]
    model = make_model(name, shape, conditional)
    ctx = context(3) if conditional else None
    x = data(shape, 3)
    round_trip, between, log_det = ATOL.get(name, (1e-10, 1e-9, 1e-8))
    z, ladj = model.flow.inverse_and_ladj(x, ctx)
    x_back, ladj_forward = model.flow.forward_and_ladj(z, ctx)
    torch.testing.assert_close(x_back, x, rtol=0, atol=round_trip)
    torch.testing.assert_close(ladj_forward, ladj, rtol=0, atol=between)
    expected = torch.linalg.slogdet(jacobians(lambda v: model.flow.forward_and_ladj(v, ctx)[0], z, len(shape)))
    torch.testing.assert_close(ladj, expected.logabsdet, rtol=0, atol=log_det)
    noise = torch.randn(3, *model.noise_shape, dtype=torch.float64)
    torch.testing.assert_close(
        model.flow.inverse_and_ladj(model.flow.forward_and_ladj(noise, ctx)[0], ctx)[0],
        noise,
        rtol=0,
        atol=max(round_trip, 1e-9),
    )
    torch.testing.assert_close(model.log_prob(x, ctx), model.base_log_prob(z) - ladj)


@cases
@kinds
def test_leading_batch_dims_gradients_and_save_load(name, kind):
    shape = SHAPES[kind]
    model = make_model(name, shape)
    x = data(shape, None, lead=(2, 3))
    log_p = model.log_prob(x)
    assert log_p.shape == (2, 3)
    torch.testing.assert_close(log_p[1], model.log_prob(x[1]))
    log_p.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = make_model(name, shape, seed=7, perturb=0.0)
    fresh.load_state_dict(torch.load(buffer))
    torch.testing.assert_close(fresh.log_prob(x), log_p.detach())


@cases
@kinds
@conditional
def test_sample_shapes(name, kind, conditional):
    shape = SHAPES[kind]
    model = make_model(name, shape, conditional)
    samples = model.sample(5, context(5) if conditional else None)
    assert samples.shape == (5, *shape) and samples.dtype == torch.float64
    assert torch.isfinite(samples).all()


@cases
def test_pyro_transformed_distribution_agrees(name):
    model = make_model(name, (3,))
    base = dist.Normal(torch.zeros(3, dtype=torch.float64), 1.0).to_event(1)
    x = data((3,), 4)
    torch.testing.assert_close(dist.TransformedDistribution(base, [model.flow]).log_prob(x), model.log_prob(x))


@cases
def test_two_d_density_integrates_to_one(name):
    loose = {"rtol": 1e-5, "atol": 1e-5} if name == "ffjord" else {}  # 361,201 points: a cheaper solve
    model = make_model(name, (2,), perturb=0.2, **loose)
    axis = torch.linspace(-12, 12, 601, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        mass = model.log_prob(grid).exp().sum() * (axis[1] - axis[0]) ** 2
    assert abs(float(mass) - 1) < 0.01


@pytest.mark.parametrize("shape", [(3,), (3, 4, 4)])
def test_actnorm_initialization_standardizes_first_batch(shape):
    layer = ActNorm(shape)
    x = 3 + 2 * torch.randn(64, *shape) * torch.arange(1, shape[0] + 1).reshape(-1, *[1] * (len(shape) - 1))
    z, _ = layer.inverse_and_ladj(x)
    per_channel = z.movedim(1, 0).reshape(shape[0], -1)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(shape[0]), rtol=0, atol=1e-5)
    torch.testing.assert_close(per_channel.var(1, unbiased=False), torch.ones(shape[0]), rtol=0, atol=1e-4)
    assert bool(layer.initialized)
    before = layer.shift.clone()
    layer.inverse_and_ladj(x + 5)  # later batches do not re-initialize
    torch.testing.assert_close(layer.shift, before)


@cases
def test_bad_inputs_have_clear_errors(name):
    model = make_model(name, (3,), perturb=0.0)
    with pytest.raises(ValueError, match=r"event shape \(3,\)"):
        model.log_prob(torch.zeros(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN"):
        model.log_prob(torch.tensor([[0.0, float("nan"), 1.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="conditional"):
        make_model(name, (3,), conditional=True, perturb=0.0).log_prob(data((3,), 2))


@pytest.mark.parametrize("name", ["realnvp", "glow"])
def test_image_sizes_a_squeeze_cannot_halve(name):
    with pytest.raises(ValueError, match="cannot be squeezed"):
        density_flow(name, (1, 6, 6), num_levels=3)


@pytest.mark.parametrize("name", ["planar", "radial", "sylvester-orthogonal", "iaf"])
def test_posterior_flows_are_refused_with_the_reason(name):
    with pytest.raises(ValueError, match="cannot estimate densities.*nice, realnvp, maf, glow"):
        density_flow(name, (2,))


def test_unknown_flow_and_bad_shapes():
    with pytest.raises(ValueError, match="unknown density flow"):
        density_flow("nvp", (2,))
    with pytest.raises(ValueError, match=r"\(D,\) for vectors or \(C, H, W\)"):
        density_flow("realnvp", (4, 4))
    with pytest.raises(ValueError, match="num_levels applies to image"):
        density_flow("glow", (2,), num_levels=2)
    assert isinstance(density_flow("nice", (1, 4, 4)), FlowDensity)
