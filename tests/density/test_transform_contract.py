"""Pyro's transform contract for every registered flow: density flows (vectors and images) and
posterior flows (global and amortized).

A transform's ``domain``/``codomain`` event dims and ``forward_shape``/``inverse_shape`` must agree
with what ``__call__`` and ``inv`` return, in both directions: ``TransformedDistribution`` builds
its batch and event shapes, expands its base and sums its log-dets from them alone. For density
flows the contract is checked on the whole flow and on every layer inside it (a ``Squeeze`` and an
``Unsqueeze`` that both claimed to keep shapes would cancel out in the whole flow); then
``TransformedDistribution(base, [model.flow])`` must score data as the model's own ``log_prob``
does, and sample in the data's shape. Both registries are iterated: a new flow is covered as it
is added. Float64, parameters perturbed away from their initialization.
"""

import pyro.distributions as dist
import pytest
import torch

from tests.density.test_density_flows import VARIANTS, data, make_model
from tests.transforms.test_posterior_flows import CONTEXT_DIM, make_flow
from vaeflows.density import DENSITY_FLOWS, Bijection
from vaeflows.transforms import POSTERIOR_FLOWS

SHAPES = {"vector": (4,), "image": (1, 4, 4)}
#: FFJORD's adaptive solves with the exact trace cost seconds in 16-D and 32-D; the checks here
#: compare shapes and two runs of the same solve, so four fixed Euler steps suffice.
CHEAPER = {"ffjord": {"method": "euler", "solver_options": {"step_size": 0.125}}}
LEAD = (2, 3)
LATENT_DIM = 3
BATCH = 4


def density_model(name, shape):
    return make_model(name, shape, **CHEAPER.get(name, {}))


def record_layers(flow):
    """Wrap ``forward_and_ladj``/``inverse_and_ladj`` of every :class:`Bijection` inside ``flow``
    (``flow`` included) to record ``(layer, direction, input shape, output shape, ladj shape)``."""
    records = []

    def recording(layer, direction, method):
        def wrapped(v, context=None):
            out, ladj = method(v, context)
            records.append((layer, direction, v.shape, out.shape, ladj.shape))
            return out, ladj

        return wrapped

    layers = [m for m in flow.modules() if isinstance(m, Bijection)]
    for layer in layers:
        layer.forward_and_ladj = recording(layer, "forward", layer.forward_and_ladj)
        layer.inverse_and_ladj = recording(layer, "inverse", layer.inverse_and_ladj)
    return layers, records


def batch_of(shape, ndim):
    return shape[: len(shape) - ndim]


density_cases = pytest.mark.parametrize("name", list(DENSITY_FLOWS) + list(VARIANTS))
shapes = pytest.mark.parametrize("kind", list(SHAPES))


@density_cases
@shapes
def test_density_flow_shapes_and_event_dims(name, kind):
    shape = SHAPES[kind]
    model = density_model(name, shape)
    flow = model.flow
    assert flow.domain.event_dim == len(model.noise_shape)
    assert flow.codomain.event_dim == len(model.event_shape)
    layers, records = record_layers(flow)
    z = torch.randn(*LEAD, *model.noise_shape, dtype=torch.float64)
    x = flow(z)
    assert x.shape == flow.forward_shape(z.shape) == (*LEAD, *model.event_shape)
    assert flow.inverse_shape(x.shape) == z.shape
    z_back = flow.inv(x)
    assert z_back.shape == flow.inverse_shape(x.shape) == z.shape
    assert flow.forward_shape(z_back.shape) == x.shape
    assert flow.log_abs_det_jacobian(z, x).shape == LEAD
    # Every layer, both directions: its shapes, and a log-det over exactly its event dims.
    for layer, direction, v_in, v_out, ladj in records:
        noise, values = (v_in, v_out) if direction == "forward" else (v_out, v_in)
        label = f"{type(layer).__name__} ({direction})"
        assert layer.forward_shape(noise) == values, label
        assert layer.inverse_shape(values) == noise, label
        assert ladj == batch_of(noise, layer.domain.event_dim), label
        assert ladj == batch_of(values, layer.codomain.event_dim), label
    seen = {(id(layer), direction) for layer, direction, *_ in records}
    assert seen == {(id(layer), d) for layer in layers for d in ("forward", "inverse")}


@density_cases
@shapes
def test_transformed_distribution_is_the_model(name, kind):
    shape = SHAPES[kind]
    model = density_model(name, shape)
    base = dist.Normal(torch.zeros(model.noise_shape, dtype=torch.float64), 1.0).to_event(len(model.noise_shape))
    p = dist.TransformedDistribution(base, [model.flow])
    assert p.batch_shape == () and p.event_shape == model.event_shape
    x = data(shape, None, lead=LEAD)
    torch.testing.assert_close(p.log_prob(x), model.log_prob(x), rtol=0, atol=1e-10)
    assert p.sample().shape == model.event_shape
    sample = p.rsample((5,))
    assert sample.shape == (5, *model.event_shape) and sample.dtype == torch.float64
    assert p.log_prob(sample).shape == (5,)


posterior_cases = pytest.mark.parametrize("name", list(POSTERIOR_FLOWS))
forms = pytest.mark.parametrize("form", ["amortized", "global"])


def posterior_transform(name, form):
    """The transform and the batch shape its parameters add: a context of ``(BATCH,)`` rows.

    The flows' fast options (FFJORD: fixed Euler steps; residual: its default estimators): the
    checks here are of shapes, and of a log-density against the very log-det it is built from."""
    flow = make_flow(name, form, LATENT_DIM, fast=True)
    if form == "global":
        return flow, flow, ()
    context = torch.randn(BATCH, CONTEXT_DIM, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    return flow, flow.condition(context), (BATCH,)


@posterior_cases
@forms
@pytest.mark.parametrize("lead", [(), (BATCH,), (2, 1)], ids=["unbatched", "B", "Px1"])
def test_posterior_flow_shapes_and_event_dims(name, form, lead):
    flow, transform, batch = posterior_transform(name, form)
    assert transform.domain.event_dim == transform.codomain.event_dim == 1
    z = torch.randn(*lead, LATENT_DIM, dtype=torch.float64)
    y = transform(z)
    full = torch.broadcast_shapes(lead, batch)
    assert y.shape == transform.forward_shape(z.shape) == (*full, LATENT_DIM)
    assert transform.log_abs_det_jacobian(z, y).shape == full
    assert transform.inverse_shape(y.shape) == y.shape
    if lead == full:
        assert transform.inverse_shape(y.shape) == z.shape
    if flow.invertible:  # a value the flow did not produce, unbatched and batched: the real inverse
        for value in (y.clone(), torch.randn(LATENT_DIM, dtype=torch.float64)):
            assert transform.inv(value).shape == transform.inverse_shape(value.shape)


@posterior_cases
@forms
@pytest.mark.parametrize("base_batch", [(), (BATCH,)], ids=["unbatched-base", "batched-base"])
def test_posterior_transformed_distribution(name, form, base_batch):
    flow, transform, batch = posterior_transform(name, form)
    base = dist.Normal(torch.zeros(*base_batch, LATENT_DIM, dtype=torch.float64), 1.0).to_event(1)
    q = dist.TransformedDistribution(base, [transform])
    full = torch.broadcast_shapes(base_batch, batch)
    assert q.batch_shape == full and q.event_shape == (LATENT_DIM,)
    assert q.sample().shape == (*full, LATENT_DIM)
    z_k = q.rsample((2,))
    assert z_k.shape == (2, *full, LATENT_DIM)
    # The flow's own log-density of its own sample: log q0(z_0) - sum_k log|det dz_k/dz_(k-1)|,
    # with the base expanded to the flow's batch shape, as TransformedDistribution expands it.
    assert q.base_dist.batch_shape == full
    z_0 = q.base_dist.sample((2,))
    z_k = transform(z_0)
    own = q.base_dist.log_prob(z_0) - transform.log_abs_det_jacobian(z_0, z_k)
    assert own.shape == (2, *full)
    torch.testing.assert_close(q.log_prob(z_k), own, rtol=0, atol=1e-12)
