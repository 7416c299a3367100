"""One generic test of every registered posterior flow, amortized and global.

Checks run in float64 with every parameter perturbed by N(0, 0.5^2) away from its initialization
(tests at initialization only are how Pyro's Sylvester log-det bug slipped through).
"""

import gc
import io
import weakref

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from vaeflows.transforms import POSTERIOR_FLOWS, NoInverseError, posterior_flow

#: Variants of a registry flow that run through the same generic tests: name -> (flow, options).
# the affine update with ReLU MADEs: both options of the IAF beside its defaults (gated, ELU)
VARIANTS = {"iaf-affine-relu": ("iaf", {"update": "affine", "activation": "relu"})}
NAMES = list(POSTERIOR_FLOWS) + list(VARIANTS)
CONTEXT_DIM = 6
NUM_FLOWS = 3
#: Leading dims of the latent: none (a global latent, rsample() without a sample shape), a batch,
#: particles x batch.
LEADS = [(), (4,), (2, 3)]
FORMS = ["amortized", "global"]


#: Small options of the flows whose defaults are large, for the checks of exact log-dets. The
#: residual and FFJORD flows estimate their log-dets by default: here they run in their exact
#: modes (the residual flow with the full-Jacobian log-det and SVD spectral norms; FFJORD with the
#: exact trace and dopri5 at rtol = atol = 1e-8, over T = 0.25 to keep the solves short),
#: and each test checks ``log_det_kind`` so that no estimator slips in. Their estimators have
#: statistical tests in test_residual_ffjord.py.
EXACT_OPTIONS = {
    "iaf": {"hidden_dims": (12, 12)},
    "residual": {"hidden_dims": (12,), "ladj": "exact", "spectral": "exact"},
    "ffjord": {"hidden_dims": (8,), "trace": "exact", "rtol": 1e-8, "atol": 1e-8, "time_length": 0.25},
    "spline-autoregressive": {"hidden_dims": (12, 12), "count_bins": 4},
    "spline-coupling": {"hidden_dims": (12,), "count_bins": 4},
}
#: Options of the checks that need no exact log-det (gradients, dtypes, finiteness, training in a
#: guide): the residual and FFJORD flows' default estimators (Russian roulette, Hutchinson), and
#: two fixed Euler steps for FFJORD, whose cost does not blow up with large parameters.
FAST_OPTIONS = {
    "iaf": EXACT_OPTIONS["iaf"],
    "residual": {"hidden_dims": (12,)},
    "ffjord": {"hidden_dims": (8,), "method": "euler", "solver_options": {"step_size": 0.25}},
    "spline-autoregressive": EXACT_OPTIONS["spline-autoregressive"],
    "spline-coupling": EXACT_OPTIONS["spline-coupling"],
}
#: Log-det and inverse tolerances by ``log_det_kind``: closed forms and full Jacobians to 1e-8;
#: FFJORD's ODE solution map (dopri5 at rtol = atol = 1e-8) to 1e-6.
LADJ_ATOL = {"exact": 1e-8, "ode": 1e-6}
INVERSE_ATOL = {"exact": 1e-9, "ode": 1e-6}


def small_options(name, fast=False):
    """The small options of a registry flow, or of a variant (with the variant's own)."""
    flow, options = VARIANTS.get(name, (name, {}))
    return {**(FAST_OPTIONS if fast else EXACT_OPTIONS).get(flow, {}), **options}


def small_flow(name, *sizes, fast=False, **kwargs):
    """``posterior_flow`` of a registry name or a variant, with its small options."""
    return posterior_flow(VARIANTS.get(name, (name,))[0], *sizes, **small_options(name, fast), **kwargs)


def make_flow(name, form, latent_dim, seed=0, dtype=torch.float64, perturb=0.5, fast=False):
    torch.manual_seed(seed)
    context_dim = CONTEXT_DIM if form == "amortized" else None
    flow = small_flow(name, latent_dim, NUM_FLOWS, context_dim, fast=fast)
    flow = flow.to(dtype)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(perturb * torch.randn_like(p))
    return flow


def transform_of(flow, form, lead, dtype=torch.float64, seed=1):
    """The transform to apply to latents of shape ``lead + (D,)``; the context has the batch dim
    only, so that it broadcasts against the particle dim of ``(P, B)``."""
    if form == "global":
        return flow
    generator = torch.Generator().manual_seed(seed)
    context = torch.randn(*lead[-1:], CONTEXT_DIM, generator=generator, dtype=dtype)
    return flow.condition(context)


def per_sample_jacobians(fn, z):
    """``(N, D, D)`` Jacobians of a map applied row-wise to ``z`` of shape ``lead + (D,)``.

    Row ``i`` of every sample's Jacobian is the gradient of ``sum(y[..., i])``: ``D`` backward
    passes rather than ``N * D`` (the rows of a flow's output depend on their own input row only;
    a flow mixing rows would fail the log-det check all the same)."""
    d = z.shape[-1]
    z = z.detach().requires_grad_(True)
    y = fn(z)
    rows = [torch.autograd.grad(y[..., i].sum(), z, retain_graph=True)[0] for i in range(d)]
    return torch.stack(rows, dim=-2).reshape(-1, d, d)


cases = pytest.mark.parametrize("name", NAMES)
forms = pytest.mark.parametrize("form", FORMS)
dims = pytest.mark.parametrize("latent_dim", [1, 2, 5])
leads = pytest.mark.parametrize("lead", LEADS, ids=["unbatched", "B", "PxB"])


@cases
@forms
@dims
@leads
def test_log_det_matches_autograd_jacobian(name, form, latent_dim, lead):
    flow = make_flow(name, form, latent_dim)
    assert flow.log_det_kind in LADJ_ATOL, f"{name}: the generic test needs an exact log-det mode"
    transform = transform_of(flow, form, lead)
    z = torch.randn(*lead, latent_dim, dtype=torch.float64)
    y = transform(z)
    ladj = transform.log_abs_det_jacobian(z, y)
    assert y.shape == z.shape and ladj.shape == lead
    expected = torch.linalg.slogdet(per_sample_jacobians(transform, z)).logabsdet
    torch.testing.assert_close(ladj.reshape(-1), expected, rtol=0, atol=LADJ_ATOL[flow.log_det_kind])


@cases
@forms
@leads
def test_inverse(name, form, lead):
    flow = make_flow(name, form, 5)
    transform = transform_of(flow, form, lead)
    z = torch.randn(*lead, 5, dtype=torch.float64)
    y = transform(z)
    assert transform.inv(y) is z  # its own sample is scored through the cache
    fresh = y.clone()
    if flow.invertible:
        torch.testing.assert_close(transform.inv(fresh), z, rtol=0, atol=INVERSE_ATOL[flow.log_det_kind])
        x = transform.inv(fresh)
        # the log-det at a recovered input is the forward one
        torch.testing.assert_close(transform.log_abs_det_jacobian(x, fresh), transform.log_abs_det_jacobian(z, y))
    else:
        with pytest.raises(NoInverseError, match="no analytic inverse"):
            transform.inv(fresh)


@cases
@forms
@pytest.mark.parametrize("latent_dim", [2, 5])
def test_gradients_reach_every_parameter(name, form, latent_dim):
    # (With D = 1 some parameters rightly get no gradient: a reflection of a line is -z whatever v.)
    flow = make_flow(name, form, latent_dim, fast=True)
    transform = transform_of(flow, form, (4,))
    z = torch.randn(4, latent_dim, dtype=torch.float64)
    y = transform(z)
    (y.sin().sum() + transform.log_abs_det_jacobian(z, y).sum()).backward()
    for param_name, p in flow.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, param_name


@cases
@forms
def test_state_dict_round_trip(name, form):
    flow = make_flow(name, form, 5, seed=0)
    buffer = io.BytesIO()
    torch.save(flow.state_dict(), buffer)
    buffer.seek(0)
    other = make_flow(name, form, 5, seed=123)
    other.load_state_dict(torch.load(buffer))
    z = torch.randn(2, 3, 5, dtype=torch.float64)
    outs = []
    for f in (flow, other):
        t = transform_of(f, form, (2, 3))
        y = t(z)
        outs.append((y, t.log_abs_det_jacobian(z, y)))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


@cases
@forms
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))],
)
def test_dtype_and_device_follow_input(name, form, dtype, device):
    flow = make_flow(name, form, 5, dtype=dtype, fast=True).to(device)
    if form == "global":
        transform = flow
    else:
        transform = flow.condition(torch.randn(4, CONTEXT_DIM, dtype=dtype, device=device))
    z = torch.randn(4, 5, dtype=dtype, device=device)
    y = transform(z)
    ladj = transform.log_abs_det_jacobian(z, y)
    for t in (y, ladj):
        assert t.dtype == dtype and t.device.type == device
        assert torch.isfinite(t).all()


@cases
@forms
@pytest.mark.parametrize("scale", [0.0, 10.0], ids=["init", "params~N(0,10^2)"])
def test_finite_at_init_and_with_large_parameters(name, form, scale):
    for seed in range(3):
        flow = make_flow(name, form, 5, seed=seed, dtype=torch.float32, perturb=0.0, fast=True)
        with torch.no_grad():
            for p in flow.parameters():
                if scale:
                    p.copy_(scale * torch.randn_like(p))
        transform = transform_of(flow, form, (16,), dtype=torch.float32)
        z = torch.randn(16, 5)
        y = transform(z)
        ladj = transform.log_abs_det_jacobian(z, y)
        assert torch.isfinite(y).all() and torch.isfinite(ladj).all()


# --- inside a real Pyro guide -------------------------------------------------------------------

DATA_DIM, LATENT, N = 3, 2, 32


def toy_data():
    torch.manual_seed(0)
    z = torch.randn(N, LATENT)
    return torch.tanh(z @ torch.randn(LATENT, DATA_DIM)) + 0.1 * torch.randn(N, DATA_DIM)


class FlowGuideModel(torch.nn.Module):
    """A nonlinear latent-variable model with one latent per data point and a flow guide."""

    def __init__(self, name, form):
        super().__init__()
        self.decoder = torch.nn.Linear(LATENT, DATA_DIM)
        self.encoder = torch.nn.Sequential(torch.nn.Linear(DATA_DIM, CONTEXT_DIM), torch.nn.Tanh())
        self.loc = torch.nn.Linear(CONTEXT_DIM, LATENT)
        self.scale = torch.nn.Sequential(torch.nn.Linear(CONTEXT_DIM, LATENT), torch.nn.Softplus())
        context_dim = CONTEXT_DIM if form == "amortized" else None
        self.flow = small_flow(name, LATENT, 2, context_dim, fast=True)

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(LATENT), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(torch.tanh(self.decoder(z)), 0.1).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("guide", self)
        h = self.encoder(x)
        transform = self.flow.condition(h) if hasattr(self.flow, "condition") else self.flow
        with pyro.plate("data", x.shape[0]):
            q = dist.TransformedDistribution(dist.Normal(self.loc(h), self.scale(h)), [transform])
            assert q.event_shape == (LATENT,)
            pyro.sample("z", q)


@cases
@forms
@pytest.mark.parametrize("particles", [1, 4], ids=["Trace_ELBO", "vectorized-4"])
def test_trains_in_a_pyro_guide(name, form, particles):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    x = toy_data()
    vae = FlowGuideModel(name, form)
    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=particles > 1)
    svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-2}), elbo)
    losses = [svi.step(x) for _ in range(80)]
    assert all(torch.isfinite(torch.tensor(losses)))
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first - 0.1 * abs(first), (first, last)


# --- bad input ----------------------------------------------------------------------------------


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError) as info:
        posterior_flow("planr", 4, 2)
    for name in POSTERIOR_FLOWS:
        assert name in str(info.value)


@cases
def test_context_size_mismatch_names_both_sizes(name):
    flow = small_flow(name, 4, 2, context_dim=6)
    with pytest.raises(ValueError, match=r"size 5.*context_dim=6"):
        flow.condition(torch.randn(3, 5))


@cases
@forms
@pytest.mark.parametrize("sizes", [(0, 2), (4, 0), (-1, 1)])
def test_bad_sizes(name, form, sizes):
    context_dim = CONTEXT_DIM if form == "amortized" else None
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        small_flow(name, *sizes, context_dim=context_dim)


# --- the pieces of the Sylvester flows ----------------------------------------------------------


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("dim,m", [(5, 2), (16, 16), (64, 8)])
def test_orthogonalize_gives_orthonormal_columns(dtype, atol, dim, m):
    from vaeflows.transforms.sylvester_flows import orthogonalize

    q = orthogonalize(10 * torch.randn(7, dim, m, dtype=dtype))
    eye = torch.eye(m, dtype=dtype).expand(7, m, m)
    torch.testing.assert_close(q.mT @ q, eye, rtol=0, atol=atol)


@pytest.mark.parametrize("check_every", [3, 8])
def test_orthogonalize_checking_less_often_gives_the_same_result_and_gradient(check_every):
    """The GPU path (a host check every few iterations, the device holding the first iterate that
    met the tolerance) returns bitwise what stopping at that iterate returns, with the same
    gradient, and asks the host only every ``check_every`` iterations."""
    from tests.host_reads import HostReads
    from vaeflows.transforms.sylvester_flows import orthogonalize

    torch.manual_seed(0)
    raw = torch.randn(5, 16, 6, requires_grad=True)
    weights = torch.randn(5, 16, 6)
    every_iteration = orthogonalize(raw, check_every=1)
    spy = HostReads()
    with spy:
        fewer_checks = orthogonalize(raw, check_every=check_every)
    assert torch.equal(every_iteration, fewer_checks)
    grads = [torch.autograd.grad((q * weights).sum(), raw)[0] for q in (every_iteration, fewer_checks)]
    assert torch.equal(grads[0], grads[1])
    one_check_per_iteration = HostReads()
    with one_check_per_iteration:
        orthogonalize(raw, check_every=1)
    needed = len(one_check_per_iteration.reads)  # iterations until tol, plus the one that met it
    assert len(spy.reads) == -(-needed // check_every)


def test_orthogonalize_warns_when_it_does_not_converge():
    from vaeflows.transforms.sylvester_flows import orthogonalize

    with pytest.warns(UserWarning, match="did not reach"):
        orthogonalize(torch.randn(3, 8, 4), max_iter=1)


@pytest.mark.parametrize("check_every", [1, 3])
def test_orthogonalize_accepts_a_last_iterate_that_converged(check_every):
    """With exactly as many iterations as ``q`` needs, the last iterate meets the tolerance: no
    warning, and the same result as with room to spare; one iteration fewer warns."""
    import warnings

    from tests.host_reads import HostReads
    from vaeflows.transforms.sylvester_flows import orthogonalize

    raw = torch.randn(4, 10, 3, generator=torch.Generator().manual_seed(1))
    reads = HostReads()
    with reads:
        expected = orthogonalize(raw, check_every=1)
    needed = len(reads.reads) - 1  # one host check per iterate 0 .. needed
    assert needed >= 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(orthogonalize(raw, max_iter=needed, check_every=check_every), expected)
    with pytest.warns(UserWarning, match="did not reach"):
        orthogonalize(raw, max_iter=needed - 1, check_every=check_every)


@forms
def test_iaf_paper_width_log_det_per_step(form):
    """With the paper's MADE width (320, 320) and perturbed weights, gates saturate and the Jacobian
    of the whole stack can be too ill-conditioned for slogdet; each step's Jacobian is triangular
    in its MADE order, so its log-det is exactly the sum of log|diagonal|."""
    torch.manual_seed(0)
    flow = posterior_flow("iaf", 5, 2, CONTEXT_DIM if form == "amortized" else None).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.5 * torch.randn_like(p))
    context = torch.randn(CONTEXT_DIM, dtype=torch.float64)
    steps = flow.steps(context) if form == "amortized" else flow.steps()
    z = torch.randn(5, dtype=torch.float64)
    for step in steps:
        y = step(z)
        jac = torch.autograd.functional.jacobian(step, z)
        order = step.permutation
        assert torch.equal(jac[order][:, order], jac[order][:, order].tril())  # autoregressive
        expected = torch.diagonal(jac).abs().log().sum()
        torch.testing.assert_close(step.log_abs_det_jacobian(z, y), expected, rtol=1e-12, atol=1e-10)
        z = y.detach()


@cases
def test_a_scored_sample_frees_its_transform_without_the_garbage_collector(name):
    """A sample site's transform (``flow.condition(h)``), and with it the tensors it caches and
    their autograd graph, is freed when its distribution is, not later by Python's cyclic
    garbage collector: no reference cycle through ``.inv``, which ``log_prob`` calls."""
    flow = make_flow(name, "amortized", 3, fast=True)
    context = torch.randn(4, CONTEXT_DIM, dtype=torch.float64)
    loc = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    base = dist.Normal(loc, 1.0).to_event(1)
    gc.disable()
    try:
        stack = flow.condition(context)
        q = dist.TransformedDistribution(base, [stack])
        q.log_prob(q.rsample()).sum().backward()
        freed = weakref.ref(stack)
        del q, stack
        assert freed() is None
    finally:
        gc.enable()


def test_iaf_affine_update_is_the_soft_clamped_affine_map():
    """``z' = exp(a) z + m`` with ``a = s / (1 + |s| / 7)``: the MADE's outputs as they are used."""
    torch.manual_seed(0)
    # the random output layer (the default's zero one makes m = s = 0: nothing to check)
    flow = posterior_flow("iaf", 3, 1, hidden_dims=(8,), update="affine", zero_init=False).double()
    (step,) = flow.steps()
    z = 30 * torch.randn(4, 3, dtype=torch.float64)  # large enough to reach the clamp's bend
    mean, s = step.made(z)
    a = s / (1 + s.abs() / 7)
    torch.testing.assert_close(step(z), a.exp() * z + mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(step.log_abs_det_jacobian(z, step(z)), a.sum(-1), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="sigmoid_bias applies to update='gated' only"):
        posterior_flow("iaf", 3, 1, update="affine", sigmoid_bias=2.0)
    with pytest.raises(ValueError, match="unknown update 'afine'; known: gated, affine"):
        posterior_flow("iaf", 3, 1, update="afine")


def test_iaf_zero_init_starts_the_affine_update_at_the_identity():
    """The affine update zeroes the MADEs' output layers by default (each step the identity, global
    and amortized); the gated one keeps the random ones; ``zero_init`` overrides either; the zero
    layers still get gradients; a non-bool is refused."""
    z, context = torch.randn(4, 3), torch.randn(4, 6)
    for flow, transform in (
        (flow := posterior_flow("iaf", 3, 2, hidden_dims=(8,), update="affine"), flow),
        (flow := posterior_flow("iaf", 3, 2, 6, hidden_dims=(8,), update="affine"), flow.condition(context)),
    ):
        torch.testing.assert_close(transform(z), z, rtol=0, atol=0)
        assert (transform.log_abs_det_jacobian(z, transform(z)) == 0).all()
        transform(z).pow(2).sum().backward()
        assert all(made.layers[-1].weight.grad.abs().sum() > 0 for made in flow.mades)
    outputs = lambda flow: [made.layers[-1].weight.abs().sum().item() for made in flow.mades]  # noqa: E731
    assert all(w > 0 for w in outputs(posterior_flow("iaf", 3, 2, hidden_dims=(8,))))
    assert all(w > 0 for w in outputs(posterior_flow("iaf", 3, 2, hidden_dims=(8,), update="affine", zero_init=False)))
    assert all(w == 0 for w in outputs(posterior_flow("iaf", 3, 2, hidden_dims=(8,), zero_init=True)))
    with pytest.raises(ValueError, match="zero_init must be True, False or None"):
        posterior_flow("iaf", 3, 2, zero_init=1)


def test_iaf_activation_is_the_mades_hidden_nonlinearity():
    """``activation="relu"`` puts ReLUs between the MADEs' layers (ELU by default); a bad name is refused."""
    for name, kind in (("elu", torch.nn.ELU), ("relu", torch.nn.ReLU)):
        flow = posterior_flow("iaf", 3, 2, hidden_dims=(8,), activation=name)
        assert all(isinstance(made.f, kind) for made in flow.mades)
    amortized = posterior_flow("iaf", 3, 1, context_dim=4, hidden_dims=(8,), activation="relu")
    assert isinstance(amortized.mades[0].f, torch.nn.ReLU)
    with pytest.raises(ValueError, match="unknown activation 'tanh'; known: elu, relu"):
        posterior_flow("iaf", 3, 1, activation="tanh")
