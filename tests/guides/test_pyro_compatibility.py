"""The compatibility matrix: every registry flow in Pyro programs, with Pyro's inference toolbox.

Every flow x {global, amortized} x {unbatched latent, batched latents, vectorized particles} x
Pyro's objectives, at tiny sizes: a step must give a finite loss and move every parameter of the
flow (JIT refuses the residual and FFJORD flows by name instead). Then ``Predictive``,
``poutine.scale`` / ``mask`` / subsampling, float64, one global flow at two sample sites, and
saving and loading.
"""

import io

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import (
    SVI,
    JitTrace_ELBO,
    Predictive,
    RenyiELBO,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceGraph_ELBO,
    TraceMeanField_ELBO,
)
from pyro.optim import Adam

from tests.transforms.test_posterior_flows import small_options
from vaeflows.transforms import POSTERIOR_FLOWS, posterior_flow

NAMES = list(POSTERIOR_FLOWS)
D, C, N = 2, 3, 6  # latent size, context size, data points
UNTRACEABLE = {"residual", "ffjord"}

OBJECTIVES = {
    "Trace_ELBO": lambda: Trace_ELBO(),
    "TraceMeanField_ELBO": lambda: TraceMeanField_ELBO(),
    "TraceGraph_ELBO": lambda: TraceGraph_ELBO(),
    "RenyiELBO-IWAE": lambda: RenyiELBO(alpha=0.0, num_particles=2),
    "JitTrace_ELBO": lambda: JitTrace_ELBO(),
    "TraceEnum_ELBO": lambda: TraceEnum_ELBO(max_plate_nesting=1),
    "vectorized-particles": lambda: Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1),
}


def data(dtype=torch.float32):
    return torch.linspace(-1.0, 2.0, N * D, dtype=dtype).reshape(N, D)


class Program(torch.nn.Module):
    """A model and a flow guide of a shape the test picks.

    * ``global``: one unbatched latent ``z`` of shape ``(D,)`` shared by all points, drawn from
      ``TransformedDistribution(Normal(loc, scale), [flow])`` with a global flow;
    * ``amortized``: a latent per point in a plate, its flow conditioned on an encoder's features
      ``(N, C)``, and a global latent whose flow is conditioned on an unbatched context ``(C,)``
      (the mean of the features), so the amortized flows meet an unbatched latent too.

    With ``enumerate``, the model also has a discrete site per point (a mixture label of the
    likelihood), which ``TraceEnum_ELBO`` sums out.
    """

    def __init__(self, name, form, enumerate=False):
        super().__init__()
        self.form, self.enumerate = form, enumerate
        context_dim = C if form == "amortized" else None
        self.flow = posterior_flow(name, D, 2, context_dim, **small_options(name, fast=True))
        self.loc = torch.nn.Parameter(torch.zeros(D))
        self.log_scale = torch.nn.Parameter(torch.full((D,), -1.0))
        self.encoder = torch.nn.Linear(D, C)
        self.local_loc = torch.nn.Linear(C, D)

    def model(self, x, scale=1.0):
        z = pyro.sample("z", dist.Normal(x.new_zeros(D), 1.0).to_event(1))
        with pyro.plate("data", x.shape[0], subsample_size=x.shape[0]):
            mean = z
            if self.form == "amortized":
                mean = mean + pyro.sample("w", dist.Normal(x.new_zeros(D), 1.0).to_event(1))
            if self.enumerate:
                label = pyro.sample("label", dist.Bernoulli(0.3), infer={"enumerate": "parallel"})
                mean = mean + label.unsqueeze(-1)
            with poutine.scale(scale=scale):
                pyro.sample("x", dist.Normal(mean, 0.5).to_event(1), obs=x)

    def guide(self, x, scale=1.0):
        pyro.module("program", self)
        base = dist.Normal(self.loc, self.log_scale.exp())
        if self.form == "global":
            pyro.sample("z", dist.TransformedDistribution(base, [self.flow]))
            return
        h = torch.tanh(self.encoder(x))
        pyro.sample("z", dist.TransformedDistribution(base, [self.flow.condition(h.mean(0))]))
        with pyro.plate("data", x.shape[0], subsample_size=x.shape[0]):
            local = dist.Normal(self.local_loc(h), 0.3)
            pyro.sample("w", dist.TransformedDistribution(local, [self.flow.condition(h)]))


def flow_parameters(program):
    return {k: p.detach().clone() for k, p in program.flow.named_parameters()}


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("form", ["global", "amortized"])
@pytest.mark.parametrize("name", NAMES)
def test_every_flow_trains_with_every_objective(name, form, objective):
    pyro.set_rng_seed(0)
    program = Program(name, form, enumerate=objective == "TraceEnum_ELBO")
    svi = SVI(program.model, program.guide, Adam({"lr": 1e-2}), OBJECTIVES[objective]())
    if objective == "JitTrace_ELBO" and name in UNTRACEABLE:
        with pytest.raises(NotImplementedError, match=f"the {name} flow cannot run under a JIT trace"):
            svi.step(data())
        return
    before = flow_parameters(program)
    losses = [svi.step(data()) for _ in range(2)]
    assert all(torch.isfinite(torch.tensor(losses))), losses
    moved = [k for k, p in program.flow.named_parameters() if not torch.equal(p.detach(), before[k])]
    assert moved == list(before), f"parameters the step left alone: {set(before) - set(moved)}"


@pytest.mark.parametrize("form", ["global", "amortized"])
@pytest.mark.parametrize("name", NAMES)
def test_predictive_scale_mask_and_float64(name, form):
    pyro.set_rng_seed(0)
    program = Program(name, form).double()
    x = data(torch.float64)
    svi = SVI(program.model, program.guide, Adam({"lr": 1e-2}), Trace_ELBO())
    assert torch.isfinite(torch.tensor(svi.step(x, scale=0.5)))
    samples = Predictive(program.model, guide=program.guide, num_samples=4, return_sites=["z", "x"])(x)
    assert samples["z"].shape == (4, 1, D) and samples["z"].dtype == torch.float64  # Pyro keeps the plate dim
    assert samples["x"].shape == (4, N, D)
    # poutine.scale and poutine.mask act on the flow posterior's log-density as on any site's
    scaled = poutine.trace(poutine.scale(program.guide, scale=0.25)).get_trace(x)
    masked = poutine.trace(poutine.mask(program.guide, mask=False)).get_trace(x)
    scaled.compute_log_prob(), masked.compute_log_prob()
    site = scaled.nodes["z"]
    torch.testing.assert_close(site["log_prob_sum"], 0.25 * site["fn"].log_prob(site["value"]).sum())
    assert masked.nodes["z"]["log_prob_sum"] == 0


def test_subsampled_amortized_guide_trains_and_scales_its_local_sites():
    """With ``subsample_size`` the plate scales the local terms by N / batch size."""
    pyro.set_rng_seed(0)
    flow = posterior_flow("sylvester-orthogonal", D, 2, C)
    encoder = torch.nn.Linear(D, C)
    x = data()

    def model(x):
        with pyro.plate("data", N, subsample_size=3) as idx:
            w = pyro.sample("w", dist.Normal(x.new_zeros(D), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(w, 0.5).to_event(1), obs=x[idx])

    def guide(x):
        pyro.module("encoder", encoder), pyro.module("flow", flow)
        with pyro.plate("data", N, subsample_size=3) as idx:
            h = encoder(x[idx])
            pyro.sample("w", dist.TransformedDistribution(dist.Normal(h[..., :D], 0.3), [flow.condition(h)]))

    trace = poutine.trace(guide).get_trace(x)
    assert trace.nodes["w"]["scale"] == N / 3 and trace.nodes["w"]["value"].shape == (3, D)
    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    assert all(torch.isfinite(torch.tensor([svi.step(x) for _ in range(3)])))


# --- one global flow at two sample sites ---------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_a_global_flow_scores_its_samples_at_two_sites(name):
    """Each site's ``log_prob`` of its own sample equals ``log q0(z0) - log|det J|`` from an
    autograd Jacobian, for flows without an inverse too (planar, radial, Sylvester)."""
    torch.manual_seed(0)
    flow = posterior_flow(name, D, 2, **small_options(name)).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    base = dist.Normal(torch.zeros(D, dtype=torch.float64), 1.0).to_event(1)
    q1, q2 = (dist.TransformedDistribution(base, [flow]) for _ in range(2))
    z1, z2 = base.sample(), base.sample()
    y1, y2 = flow(z1), flow(z2)  # as rsample() at two sites: the second call replaces the first
    for z, y, q in ((z1, y1, q1), (z2, y2, q2)):
        jac = torch.autograd.functional.jacobian(flow, z)
        expected = base.log_prob(z) - torch.linalg.slogdet(jac).logabsdet
        torch.testing.assert_close(q.log_prob(y), expected, rtol=0, atol=1e-6)


def test_a_global_flow_forgets_a_sample_when_the_sample_goes():
    """The flow remembers its outputs by weak reference: nothing outlives the step's tensors."""
    import gc

    flow = posterior_flow("planar", D, 2)
    gc.disable()
    try:
        ys = [flow(torch.randn(4, D)) for _ in range(3)]
        assert len(flow._produced) == 2  # the third is in torch's one-entry cache
        del ys
        assert len(flow._produced) == 0
    finally:
        gc.enable()


# --- saving and loading --------------------------------------------------------------------------


def trained_program(name, form):
    pyro.set_rng_seed(0)
    program = Program(name, form)
    svi = SVI(program.model, program.guide, Adam({"lr": 1e-2}), Trace_ELBO())
    for _ in range(2):
        svi.step(data())
    return program


def guide_log_density(program, seed=3):
    pyro.set_rng_seed(seed)
    trace = poutine.trace(program.guide).get_trace(data())
    return trace.log_prob_sum().detach()


@pytest.mark.parametrize("form", ["global", "amortized"])
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_after_training(name, form):
    program = trained_program(name, form)
    buffer = io.BytesIO()
    torch.save(program.state_dict(), buffer)
    buffer.seek(0)
    other = Program(name, form)
    other.load_state_dict(torch.load(buffer))
    torch.testing.assert_close(guide_log_density(other), guide_log_density(program), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["planar", "sylvester-orthogonal", "iaf"])
def test_torch_save_of_a_flow_after_training(name):
    """vaeflows' own flows pickle after use (their caches and weak references are left out).
    Pyro's ``pyro.module`` attaches a weak reference to every parameter it registers, so a module
    registered with it pickles once those are dropped: ``pyro.get_param_store().get_state()``
    drops them (the README says so)."""
    program = trained_program(name, "global")
    pyro.get_param_store().get_state()  # Pyro's own way to drop its weak references
    buffer = io.BytesIO()
    torch.save(program, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    torch.testing.assert_close(guide_log_density(loaded), guide_log_density(program), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["radial", "sylvester-householder"])
def test_param_store_save_and_load_with_update_module_params(tmp_path, name):
    program = trained_program(name, "amortized")
    expected = guide_log_density(program)
    pyro.get_param_store().save(tmp_path / "params.pt")
    other = Program(name, "amortized")
    pyro.get_param_store().load(tmp_path / "params.pt")
    pyro.module("program", other, update_module_params=True)
    torch.testing.assert_close(guide_log_density(other), expected, rtol=0, atol=0)
