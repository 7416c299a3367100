"""The lean distributions equal Pyro's own: densities, gradients, shapes under plates, support checks."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from vaeflows.distributions import DiagonalNormal, FlowPosterior, IndependentBernoulli, StandardNormal
from vaeflows.transforms import NoInverseError, posterior_flow


def _grads(value, params):
    """Total derivatives (a sample's dependence on the parameters included); unused -> zeros."""
    params = params if isinstance(params, tuple) else (params,)
    grads = torch.autograd.grad(value.sum(), params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def test_diagonal_normal_scores_own_samples_and_other_values_as_pyro_normal():
    torch.manual_seed(0)
    loc = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    scale = torch.rand(4, 3, dtype=torch.float64).add(0.1).requires_grad_()
    q = DiagonalNormal(loc, scale)
    reference = dist.Normal(loc, scale).to_event(1)
    assert (q.batch_shape, q.event_shape) == (reference.batch_shape, reference.event_shape)
    z = q.rsample()  # scored from its cached noise
    other = torch.randn(4, 3, dtype=torch.float64)  # scored from (z - loc) / scale
    for value in (z, other):
        ours, theirs = q.log_prob(value), reference.log_prob(value)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
        for a, b in zip(_grads(ours, (loc, scale)), _grads(theirs, (loc, scale))):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    torch.testing.assert_close(q.entropy(), reference.entropy(), rtol=0, atol=1e-12)


def test_diagonal_normal_broadcasts_expands_and_samples_with_sample_shape():
    q = DiagonalNormal(torch.zeros(3), torch.ones(2, 3))
    assert q.batch_shape == (2,) and q.rsample((5,)).shape == (5, 2, 3)
    assert q.expand((2,)) is q  # pyro.plate's expand to the same shape copies nothing
    wide = q.expand((7, 2))
    z = wide.rsample()
    assert z.shape == (7, 2, 3) and wide.log_prob(z).shape == (7, 2)
    with pytest.raises(ValueError, match=r"loc of shape \(\.\.\., D\)"):
        DiagonalNormal(torch.tensor(0.0), torch.tensor(1.0))


def test_standard_normal_equals_pyro_normal_and_expands_without_copies():
    like = torch.zeros((), dtype=torch.float64)
    p = StandardNormal(5, like)
    reference = dist.Normal(torch.zeros(5, dtype=torch.float64), 1.0).to_event(1)
    z = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(p.log_prob(z), reference.log_prob(z), rtol=0, atol=1e-12)
    torch.testing.assert_close(_grads(p.log_prob(z), z)[0], _grads(reference.log_prob(z), z)[0])
    wide = p.expand((6,))
    assert wide.expand((6,)) is wide
    assert wide.batch_shape == (6,) and wide.log_prob(torch.zeros(5, dtype=torch.float64)).shape == (6,)
    assert wide.sample((2,)).shape == (2, 6, 5) and wide.sample().dtype == torch.float64
    torch.testing.assert_close(wide.entropy(), reference.expand((6,)).entropy())


def test_independent_bernoulli_equals_pyro_bernoulli_to_event():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    ours = IndependentBernoulli(logits, 3)
    theirs = dist.Bernoulli(logits=logits).to_event(3)
    assert (ours.batch_shape, ours.event_shape) == (theirs.batch_shape, theirs.event_shape)
    x = torch.randint(0, 2, (2, 1, 3, 4)).double()
    torch.testing.assert_close(ours.log_prob(x), theirs.log_prob(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(_grads(ours.log_prob(x), logits)[0], _grads(theirs.log_prob(x), logits)[0])
    torch.testing.assert_close(ours.mean, theirs.mean)
    assert ours.sample((5,)).shape == (5, 2, 1, 3, 4)
    assert ours.expand((3, 2)).log_prob(x).shape == (3, 2) and ours.expand((2,)) is ours
    with pytest.raises(ValueError, match="event_dim must be in 1..4"):
        IndependentBernoulli(logits, 5)


def test_independent_bernoulli_refuses_non_binary_values_under_validation():
    p = IndependentBernoulli(torch.zeros(2, 1, 2, 2), 3, validate_args=True)
    p.log_prob(torch.ones(2, 1, 2, 2))
    with pytest.raises(ValueError, match="support"):
        p.log_prob(torch.full((2, 1, 2, 2), 0.5))


def test_lean_sites_under_pyro_plates_and_trace_elbo_match_pyro_distributions():
    """A model/guide pair written with either kind of distribution gives the same Trace_ELBO loss."""
    torch.manual_seed(0)
    x = torch.randint(0, 2, (6, 4)).float()
    loc, scale = torch.randn(6, 3), torch.rand(6, 3) + 0.5
    weight = torch.randn(3, 4)

    def program(lean):
        def model(x):
            with pyro.plate("data", x.shape[0]):
                prior = StandardNormal(3, x) if lean else dist.Normal(x.new_zeros(3), 1.0).to_event(1)
                z = pyro.sample("z", prior)
                logits = z @ weight
                like = IndependentBernoulli(logits, 1) if lean else dist.Bernoulli(logits=logits).to_event(1)
                pyro.sample("x", like, obs=x)

        def guide(x):
            with pyro.plate("data", x.shape[0]):
                q = DiagonalNormal(loc, scale) if lean else dist.Normal(loc, scale).to_event(1)
                pyro.sample("z", q)

        return model, guide

    losses = []
    for lean in (True, False):
        pyro.set_rng_seed(1)
        elbo = pyro.infer.Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)
        losses.append(elbo.loss(*program(lean), x))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    trace = poutine.trace(program(True)[1]).get_trace(x)
    assert trace.nodes["z"]["value"].shape == (6, 3)


@pytest.mark.parametrize("name", ["planar", "iaf"])
def test_flow_posterior_equals_transformed_distribution(name):
    """Own samples: the same value and gradients as TransformedDistribution's log_prob at the same
    draw (bitwise: the same operations on the same numbers); other values go through the inverse
    where the flow has one, and raise NoInverseError where it has none."""
    torch.manual_seed(0)
    flow = posterior_flow(name, 3, 2, context_dim=5).double()
    h = torch.randn(4, 5, dtype=torch.float64)
    loc = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    scale = torch.rand(4, 3, dtype=torch.float64).add(0.5).requires_grad_()
    params = (loc, scale, *flow.parameters())
    scores = []
    for lean in (True, False):
        torch.manual_seed(1)
        base, stack = DiagonalNormal(loc, scale), flow.condition(h)
        q = FlowPosterior(base, stack) if lean else dist.TransformedDistribution(base, [stack])
        z = q.rsample()
        scores.append((q.log_prob(z), _grads(q.log_prob(z), params), q))
    (ours, our_grads, q), (theirs, their_grads, reference) = scores
    assert torch.equal(ours, theirs)
    for a, b in zip(our_grads, their_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert isinstance(q, dist.TransformedDistribution)
    assert (q.batch_shape, q.event_shape) == (reference.batch_shape, reference.event_shape) == ((4,), (3,))
    other = torch.randn(4, 3, dtype=torch.float64)
    if name == "iaf":  # invertible: scored through the inverse, as TransformedDistribution does
        torch.testing.assert_close(q.log_prob(other), reference.log_prob(other), rtol=0, atol=1e-12)
    else:
        with pytest.raises(NoInverseError):
            q.log_prob(other)


def test_flow_posterior_expands_under_plates_and_refuses_non_vector_flows():
    flow = posterior_flow("planar", 3, 2, context_dim=5)
    q = FlowPosterior(DiagonalNormal(torch.zeros(4, 3), torch.ones(4, 3)), flow.condition(torch.randn(4, 5)))
    assert q.expand((4,)) is q  # what pyro.plate asks at every site copies nothing
    wide = q.expand((2, 4))
    assert wide.batch_shape == (2, 4) and wide.rsample().shape == (2, 4, 3)
    with pyro.plate("particles", 6, dim=-2), pyro.plate("data", 4, dim=-1):
        z = pyro.sample("z", q)
    assert z.shape == (6, 4, 3)
    with pytest.raises(ValueError, match="flow on vectors"):
        FlowPosterior(dist.Normal(torch.zeros(4), 1.0), flow.condition(torch.randn(4, 5)))


def test_flow_posterior_of_an_unbatched_base_takes_the_contexts_batch_shape():
    """An amortized flow broadcasts an unbatched ``z_0`` against its context ``(B, C)``: the
    distribution's batch shape is ``(B,)``, as TransformedDistribution's, and so are its scores."""
    flow = posterior_flow("radial", 3, 2, context_dim=5)
    base, h = DiagonalNormal(torch.zeros(3), torch.ones(3)), torch.randn(4, 5)
    stack = flow.condition(h)
    q, reference = FlowPosterior(base, stack), dist.TransformedDistribution(base, [stack])
    assert q.batch_shape == reference.batch_shape == (4,)
    z = q.rsample()
    assert z.shape == (4, 3) and q.log_prob(z).shape == (4,)
