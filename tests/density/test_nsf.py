"""What is particular to the neural spline density flow ``nsf`` (the generic checks, log-det against
autograd, round trips, shapes, save/load, run it through tests/density/test_density_flows.py and
test_transform_contract.py, both forms): identity tails outside ``[-B, B]``, the context, the
options reaching the layers, and clear errors. Float64, parameters perturbed."""

import pytest
import torch

from tests.density.test_density_flows import jacobians
from vaeflows.density import NSF_TRANSFORMS, SplineCoupling, SplineMAFStep, density_flow, nsf

BOUND = 2.0


def perturbed(transform, shape=(3,), context_dim=None, scale=0.5, **options):
    torch.manual_seed(0)
    options = {"num_steps": 3, "hidden": 16, "tail_bound": BOUND, **options}
    model = nsf(shape, transform=transform, context_dim=context_dim, **options).double()
    if len(shape) == 3:  # ActNorm's initialization
        context = None if context_dim is None else torch.eye(context_dim, dtype=torch.float64)[torch.arange(8) % 2]
        model.log_prob(torch.rand(8, *shape, dtype=torch.float64), context)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


forms = pytest.mark.parametrize("transform", NSF_TRANSFORMS)


def far_out(n, dim=3):
    """Points with every coordinate outside ``[-BOUND, BOUND]``."""
    x = BOUND + 0.1 + 3 * torch.rand(n, dim, dtype=torch.float64)
    return x * torch.where(torch.rand(n, dim, dtype=torch.float64) < 0.5, -1.0, 1.0)


@forms
def test_tails_are_the_identity_outside_the_bound(transform):
    model = perturbed(transform)
    x = far_out(50)
    # every layer is the identity there, so the whole flow is: log p(x) is the base's, both ways
    z, ladj = model.flow.inverse_and_ladj(x)
    assert torch.equal(z, x) and torch.equal(ladj, torch.zeros(50, dtype=torch.float64))
    assert torch.equal(model.flow.forward_and_ladj(x)[0], x)
    torch.testing.assert_close(model.log_prob(x), model.base_log_prob(x), rtol=0, atol=0)
    # ... while inside the bound the perturbed splines are far from it
    inside = 0.9 * BOUND * (2 * torch.rand(50, 3, dtype=torch.float64) - 1)
    assert (model.flow.inverse_and_ladj(inside)[0] - inside).abs().max() > 0.05


@forms
def test_log_det_across_the_bound(transform):
    """Points straddling ``+-B``, some coordinates in the tails, some inside: slopes continuous, the
    log-det still the autograd Jacobian's."""
    model = perturbed(transform)
    x = torch.tensor([[-2.5, 0.3, 1.99], [2.01, -1.0, -3.0], [0.0, 2.4, -1.5]], dtype=torch.float64)
    z, ladj = model.flow.inverse_and_ladj(x)
    # the splines run data to noise: the data side's Jacobian is the direct one ...
    data_side = torch.linalg.slogdet(jacobians(lambda v: model.flow.inverse_and_ladj(v)[0], x, 1)).logabsdet
    torch.testing.assert_close(ladj, -data_side, rtol=0, atol=1e-8)
    # ... and the noise side's (through the splines' inverses) agrees to float64's conditioning
    noise_side = torch.linalg.slogdet(jacobians(lambda v: model.flow.forward_and_ladj(v)[0], z, 1)).logabsdet
    torch.testing.assert_close(ladj, noise_side, rtol=1e-7, atol=1e-8)
    # sampling inverts the splines: near-flat bins of the perturbed splines amplify rounding
    torch.testing.assert_close(model.flow.forward_and_ladj(z)[0], x, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "transform, shape",
    [("coupling", (2,)), ("autoregressive", (2,)), ("coupling", (1, 4, 4))],
    ids=["coupling", "autoregressive", "coupling-image"],
)
def test_the_context_conditions_the_density(transform, shape):
    model = perturbed(transform, shape, context_dim=2, scale=0.15)
    one, other = torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    x = 0.1 + 0.8 * torch.rand(6, *shape, dtype=torch.float64)
    assert (model.log_prob(x, one) - model.log_prob(x, other)).abs().min() > 1e-4
    torch.manual_seed(3)
    a = model.sample(4, one)
    torch.manual_seed(3)
    b = model.sample(4, other)
    assert a.shape == (4, *shape) and not torch.allclose(a, b)
    # a context per row gives each row its own conditional density
    both = torch.cat([one, other]).expand(3, 2, 2).reshape(6, 2)
    per_row = model.log_prob(x, both)
    torch.testing.assert_close(per_row[0::2], model.log_prob(x[0::2], one))
    torch.testing.assert_close(per_row[1::2], model.log_prob(x[1::2], other))
    if len(shape) == 1:  # each conditional integrates to one
        axis = torch.linspace(-7, 7, 201, dtype=torch.float64)
        grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
        for c in (one, other):
            with torch.no_grad():
                mass = model.log_prob(grid, c).exp().sum() * (axis[1] - axis[0]) ** 2
            assert abs(float(mass) - 1) < 0.02


def test_options_reach_the_layers():
    model = nsf((4,), num_steps=3, hidden=16, bins=5, tail_bound=1.5, hidden_dims=(12, 7))
    layers = [m for m in model.modules() if isinstance(m, SplineCoupling)]
    assert len(layers) == 3 and all(m.bins == 5 and m.tail_bound == 1.5 for m in layers)
    linears = [m for m in layers[0].net.modules() if isinstance(m, torch.nn.Linear)]
    # Vectors: the net takes the 2 conditioning entries and returns the 2 others' parameters only.
    assert linears[0].in_features == 2 and [m.out_features for m in linears] == [12, 7, 2 * (3 * 5 - 1)]
    assert all(m.bin_scale == 1 / 7**0.5 for m in layers)  # nflows' 1 / sqrt(last hidden width)
    ar = nsf((4,), num_steps=2, hidden=16, transform="autoregressive", bins=3)
    steps = [m for m in ar.modules() if isinstance(m, SplineMAFStep)]
    assert len(steps) == 2 and steps[0].bins == 3
    assert torch.equal(steps[1].made.permutation, steps[0].made.permutation.flip(0))
    image = nsf((1, 4, 4), num_steps=1, hidden=8, bins=4)
    assert image.unit_interval and {m.bins for m in image.modules() if isinstance(m, SplineCoupling)} == {4}


def test_vector_coupling_is_the_spline_of_the_gathered_parts():
    """By hand: the transformed entries go through the bounded, scaled spline of net(x[conditioning]),
    the conditioning ones through the unscaled spline of phi, each put back in its place."""
    from vaeflows.density.splines import LOGIT_BOUND
    from vaeflows.transforms.spline import _split_raw, rational_quadratic_spline

    torch.manual_seed(0)
    model = nsf((5,), num_steps=1, hidden=8, bins=4, tail_bound=2.0, unconditional=True)
    (layer,) = [m for m in model.modules() if isinstance(m, SplineCoupling)]
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p))
    x = 1.5 * torch.randn(6, 5, dtype=torch.float64)
    layer.double()
    z, ladj = layer.inverse_and_ladj(x)

    def spline(v, raw, scale):
        w, h, d = _split_raw(raw, 4)
        bound = lambda r: (r * scale) / (1 + (r * scale).abs() / LOGIT_BOUND)  # noqa: E731
        return rational_quadratic_spline(v, bound(w), bound(h), d, 2.0)

    cond, free = [0, 2, 4], [1, 3]
    raw = layer.net(x[:, cond], None).unflatten(-1, (2, 11))
    z_free, l_free = spline(x[:, free], raw, 1 / 8**0.5)
    z_cond, l_cond = spline(x[:, cond], layer.phi, 1.0)
    torch.testing.assert_close(z[:, free], z_free)
    torch.testing.assert_close(z[:, cond], z_cond)
    torch.testing.assert_close(ladj, -(l_free.sum(-1) + l_cond.sum(-1)))  # log|dx/dz|, x the data


def test_coupling_starts_as_the_identity():
    model = nsf((3,), num_steps=2, hidden=8)
    x = torch.randn(5, 3)
    z, ladj = model.flow.inverse_and_ladj(x)
    torch.testing.assert_close(z, x)
    torch.testing.assert_close(ladj, torch.zeros(5), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"transform": "masked"}, "unknown nsf transform 'masked'"),
        ({"bins": 1}, "bins"),
        ({"tail_bound": 0.0}, "tail_bound"),
        ({"transform": "autoregressive", "hidden": 2}, "MADE widths >= the data's dimension 3"),
        ({"num_levels": 2}, "num_levels applies to nsf's multi-scale image models"),
    ],
)
def test_bad_options_have_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        density_flow("nsf", (3,), **options)


def test_image_only_errors():
    with pytest.raises(ValueError, match="hidden_dims applies to vector conditioners"):
        nsf((1, 4, 4), hidden_dims=(8,))
    with pytest.raises(ValueError, match="cannot be squeezed"):
        nsf((1, 6, 6), num_levels=3)
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\]"):
        nsf((1, 4, 4), num_steps=1, hidden=4).log_prob(torch.full((1, 1, 4, 4), 2.0))


def test_resnet_conditioner_is_nflows_residual_net_and_refuses_what_does_not_apply():
    from vaeflows.density.nets import CouplingResNet

    model = nsf((6,), num_steps=2, hidden=8, bins=3, conditioner="resnet", num_blocks=3)
    nets = [m for m in model.modules() if isinstance(m, CouplingResNet)]
    assert len(nets) == 2 and all(len(n.blocks) == 3 for n in nets)
    assert all(n.initial.in_features == 3 and n.final.out_features == 3 * 8 for n in nets)
    x = torch.randn(5, 6)
    torch.testing.assert_close(model.log_prob(x), nsf((6,), num_steps=2, hidden=8, bins=3).log_prob(x))  # identity
    for block in nets[0].blocks:
        assert block[-1].weight.abs().max() <= 1e-3  # nflows' near-zero second layer of each block
    with pytest.raises(ValueError, match="unknown nsf conditioner 'cnn'"):
        nsf((4,), conditioner="cnn")
    with pytest.raises(ValueError, match="transform='coupling'"):
        nsf((4,), hidden=8, transform="autoregressive", conditioner="resnet")
    with pytest.raises(ValueError, match="hidden_dims applies to conditioner='mlp'"):
        nsf((4,), conditioner="resnet", hidden_dims=(8, 8))
    with pytest.raises(ValueError, match="num_blocks"):
        nsf((4,), conditioner="resnet", num_blocks=0)
