"""FFJORD's convolutional vector field on images (``ffjord(..., field="conv")``).

The generic density tests run ``ffjord`` on vectors; here the conv field on a tiny image, in
float64 with the exact trace at ``rtol = atol = 1e-9``, every parameter perturbed: log-det against
the autograd Jacobian, both round trips, leading batch shapes, gradients to every parameter,
save/load, the flow-matching loss, and the errors for bad input.
"""

import io

import pytest
import torch

from tests.density.test_density_flows import jacobians
from vaeflows.density import FlowMatching, density_flow
from vaeflows.transforms.ffjord import ConvODENet, rnode_penalty

pytest.importorskip("torchdiffeq")

SHAPE = (1, 3, 3)
EXACT = {"trace": "exact", "eval_trace": "exact", "rtol": 1e-9, "atol": 1e-9}


def model(context_dim=None, seed=0):
    torch.manual_seed(seed)
    m = density_flow("ffjord", SHAPE, num_steps=1, hidden=4, context_dim=context_dim, field="conv", **EXACT).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("context_dim", [None, 2], ids=["plain", "conditional"])
def test_log_det_matches_autograd_and_round_trips(context_dim):
    m = model(context_dim)
    assert isinstance(m.flow.layers[0].net, ConvODENet)
    ctx = torch.randn(3, 2, dtype=torch.float64) if context_dim else None
    x = torch.rand(3, *SHAPE, dtype=torch.float64)
    z, ladj = m.flow.inverse_and_ladj(x, ctx)
    x_back, ladj_forward = m.flow.forward_and_ladj(z, ctx)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-6)
    torch.testing.assert_close(ladj_forward, ladj, rtol=0, atol=1e-6)
    expected = torch.linalg.slogdet(jacobians(lambda v: m.flow.forward_and_ladj(v, ctx)[0], z, 1))
    torch.testing.assert_close(ladj, expected.logabsdet, rtol=0, atol=1e-6)
    torch.testing.assert_close(m.log_prob(x, ctx), m.base_log_prob(z) - ladj)


def test_the_field_is_local_and_depends_on_time_and_context():
    """A 3x3 convolution stack of L layers: an output pixel sees only its (2L+1)^2 neighbourhood."""
    torch.manual_seed(0)
    net = ConvODENet((1, 7, 7), (4,), context_dim=2).double()  # L = 2: a 5x5 neighbourhood
    z, h = torch.randn(1, 49, dtype=torch.float64, requires_grad=True), torch.randn(1, 2, dtype=torch.float64)
    out = net(torch.tensor(0.3), z, h)
    (grad,) = torch.autograd.grad(out[0, 0], z)  # pixel (0, 0)
    seen = grad.reshape(7, 7).abs() > 0
    assert seen[:3, :3].all() and not seen[3:].any() and not seen[:, 3:].any()
    assert not torch.equal(out, net(torch.tensor(0.7), z, h))
    assert not torch.equal(out, net(torch.tensor(0.3), z, -h))


def test_batch_shapes_gradients_save_load_and_flow_matching():
    m = model()
    x = torch.rand(2, 3, *SHAPE, dtype=torch.float64)
    assert m.log_prob(x).shape == (2, 3) and m.log_prob(x[0, 0]).shape == ()
    m.log_prob(x).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    buffer = io.BytesIO()
    torch.save(m, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    torch.testing.assert_close(loaded.log_prob(x), m.log_prob(x))
    m.zero_grad()
    loss = FlowMatching().loss(m, x[0])
    loss.backward()
    assert loss > 0 and all(p.grad is not None for p in m.parameters())
    assert m.sample(4).shape == (4, *SHAPE)


def test_bad_input_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="field='conv' needs images"):
        density_flow("ffjord", (9,), field="conv")
    with pytest.raises(ValueError, match="unknown field 'unet'; known: mlp, conv"):
        density_flow("ffjord", SHAPE, field="unet")
    with pytest.raises(ValueError, match="needs an image shape"):
        ConvODENet((9,))


def test_rnode_penalty_of_the_conv_field_reaches_the_loss():
    torch.manual_seed(0)
    options = dict(kinetic_weight=0.5, jacobian_weight=0.5, method="rk4", solver_steps=2)
    m = density_flow("ffjord", SHAPE, num_steps=1, hidden=4, field="conv", **options).double()
    m.log_prob(torch.rand(4, *SHAPE, dtype=torch.float64))
    penalty = rnode_penalty(m)
    assert penalty > 0 and penalty.requires_grad
