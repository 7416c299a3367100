"""RNODE for FFJORD (issue 17, item 2): the kinetic and Jacobian-Frobenius regularizers against
their definitions on linear fields, the fixed-grid solvers against the adaptive one and ``expm``,
the learned integration time's gradient, the log-dets with the new options against autograd
Jacobians, and the penalty reaching the density and VAE losses."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from vaeflows.density import density_flow
from vaeflows.density.freeform import CNFBlock
from vaeflows.transforms import posterior_flow
from vaeflows.transforms.ffjord import IntegrationTime, cnf_solve, rnode_penalty

F64 = torch.float64
TIGHT = dict(rtol=1e-10, atol=1e-10)


class LinearField(nn.Module):
    """``f(z, t) = A z``: ``z(t) = expm(t A) z(0)``, ``||df/dz||_F^2 = ||A||_F^2``."""

    def __init__(self, a):
        super().__init__()
        self.a = nn.Parameter(a)
        self.nfe = 0

    def forward(self, t, z, context=None):
        return z @ self.a.mT


def kinetic_by_quadrature(a, z0, t1, nodes=40):
    """``integral_0^T ||A expm(t A) z0||^2 dt`` by Gauss-Legendre on the exact solution."""
    x, w = np.polynomial.legendre.leggauss(nodes)
    total = torch.zeros(z0.shape[:-1], dtype=F64)
    for xi, wi in zip(x, w):
        t = 0.5 * t1 * (xi + 1)
        f = z0 @ torch.linalg.matrix_exp(t * a).mT @ a.mT
        total = total + 0.5 * t1 * wi * f.pow(2).sum(-1)
    return total


@pytest.mark.parametrize("adjoint", [False, True], ids=["backprop", "adjoint"])
def test_regularizers_on_a_symmetric_linear_field_match_their_closed_forms(adjoint):
    """``A = Q diag(l) Q^T``: ``||A z(t)||^2 = sum_i l_i^2 c_i^2 exp(2 l_i t)``, ``c = Q^T z0``."""
    torch.manual_seed(0)
    b = torch.randn(3, 3, dtype=F64)
    a = 0.5 * (b + b.mT)
    lam, q = torch.linalg.eigh(a)
    z0 = torch.randn(5, 3, dtype=F64)
    t1 = 0.7
    out = cnf_solve(LinearField(a), z0, None, 0.0, t1, "exact", regularize=True, adjoint=adjoint, **TIGHT)
    c2 = (z0 @ q).pow(2)
    kinetic = (c2 * lam.pow(2) * (torch.exp(2 * lam * t1) - 1) / (2 * lam)).sum(-1)
    torch.testing.assert_close(out.kinetic, kinetic, rtol=0, atol=1e-8)
    torch.testing.assert_close(out.jacobian, (a.pow(2).sum() * t1).expand(5), rtol=0, atol=1e-8)
    torch.testing.assert_close(out.z, z0 @ torch.linalg.matrix_exp(t1 * a).mT, rtol=0, atol=1e-8)
    torch.testing.assert_close(out.log_det, (t1 * torch.trace(a)).expand(5), rtol=0, atol=1e-8)


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_regularizers_on_a_general_linear_field_match_quadrature_both_ways(direction):
    """Integrated backwards (data to noise, as density training does) the integrals stay the
    positive ones over the interval, along the same trajectory."""
    torch.manual_seed(1)
    a = 0.8 * torch.randn(3, 3, dtype=F64)
    z0 = torch.randn(4, 3, dtype=F64)
    t1 = 0.9
    field = LinearField(a)
    if direction == "forward":
        out = cnf_solve(field, z0, None, 0.0, t1, "exact", regularize=True, **TIGHT)
    else:
        z1 = z0 @ torch.linalg.matrix_exp(t1 * a).mT
        out = cnf_solve(field, z1, None, t1, 0.0, "exact", regularize=True, **TIGHT)
        torch.testing.assert_close(out.z, z0, rtol=0, atol=1e-8)
    torch.testing.assert_close(out.kinetic, kinetic_by_quadrature(a, z0, t1), rtol=0, atol=1e-8)
    torch.testing.assert_close(out.jacobian, (a.pow(2).sum() * t1).expand(4), rtol=0, atol=1e-8)


def test_hutchinson_frobenius_is_unbiased_on_a_linear_field():
    """``T ||e^T A||^2`` per row: its mean over 4000 rows is within 4 standard errors of ``T ||A||_F^2``."""
    torch.manual_seed(0)
    a = 0.7 * torch.randn(3, 3, dtype=F64)
    z0 = torch.randn(4000, 3, dtype=F64)
    with torch.no_grad():
        out = cnf_solve(LinearField(a), z0, None, 0.0, 0.8, "hutchinson", regularize=True, rtol=1e-7, atol=1e-7)
    error = out.jacobian.std() / math.sqrt(len(z0))
    assert abs(float(out.jacobian.mean() - 0.8 * a.pow(2).sum())) < 4 * float(error)
    assert float(out.jacobian.std()) > 0  # an estimate, not the exact value


@pytest.mark.parametrize("method, steps, atol", [("rk4", 20, 1e-7), ("midpoint", 200, 1e-4), ("euler", 2000, 1e-3)])
def test_fixed_grid_solvers_against_expm_and_the_adaptive_solve(method, steps, atol):
    torch.manual_seed(0)
    a = 0.7 * torch.randn(3, 3, dtype=F64)
    field = LinearField(a)
    z0 = torch.randn(6, 3, dtype=F64)
    fixed = cnf_solve(field, z0, None, 0.0, 0.8, "exact", method=method, solver_steps=steps, regularize=True)
    assert field.nfe == steps * {"rk4": 4, "midpoint": 2, "euler": 1}[method]
    adaptive = cnf_solve(field, z0, None, 0.0, 0.8, "exact", regularize=True, **TIGHT)
    expm = z0 @ torch.linalg.matrix_exp(0.8 * a).mT
    torch.testing.assert_close(fixed.z, expm, rtol=0, atol=atol)
    for name in ("z", "log_det", "kinetic", "jacobian"):
        torch.testing.assert_close(getattr(fixed, name), getattr(adaptive, name), rtol=atol, atol=atol)
    # the trace and Frobenius norm of a linear field are constant: any grid integrates them exactly
    torch.testing.assert_close(fixed.log_det, (0.8 * torch.trace(a)).expand(6), rtol=0, atol=1e-12)


def test_rk4_error_falls_as_the_fourth_power_of_the_step():
    torch.manual_seed(0)
    a = 1.5 * torch.randn(3, 3, dtype=F64)
    z0 = torch.randn(6, 3, dtype=F64)
    expm = z0 @ torch.linalg.matrix_exp(a).mT
    errors = [
        float(
            (cnf_solve(LinearField(a), z0, None, 0.0, 1.0, method="rk4", solver_steps=n).z - expm).abs().max().detach()
        )
        for n in (8, 16)
    ]
    assert 10 < errors[0] / errors[1] < 22  # 2^4 = 16


@pytest.mark.parametrize("adjoint", [False, True], ids=["backprop", "adjoint"])
@pytest.mark.parametrize("grid", [{}, {"method": "rk4", "solver_steps": 50}], ids=["dopri5", "rk4"])
def test_a_learned_time_gets_the_exact_gradient(adjoint, grid):
    """``d z(T)/dT = A z(T)``, ``d log_det/dT = tr(A)``, ``d kinetic/dT = ||A z(T)||^2``."""
    torch.manual_seed(0)
    a = 0.7 * torch.randn(3, 3, dtype=F64)
    z0 = torch.randn(4, 3, dtype=F64)
    time = IntegrationTime(0.6, learn=True).double()
    t1 = time()
    assert torch.is_tensor(t1) and abs(float(t1.detach()) - 0.6) < 1e-6  # raw was a float32
    options = {**TIGHT, **grid}
    out = cnf_solve(LinearField(a), z0, None, 0.0, t1, "exact", adjoint=adjoint, regularize=True, **options)
    w = torch.randn(4, 3, dtype=F64)
    objective = (out.z * w).sum() + out.log_det.sum() + out.kinetic.sum()
    dt, draw = torch.autograd.grad(objective, (t1, time.raw))
    z1 = z0 @ torch.linalg.matrix_exp(t1.detach() * a).mT
    f1 = z1 @ a.mT
    expected = (f1 * w).sum() + 4 * torch.trace(a) + f1.pow(2).sum()
    torch.testing.assert_close(dt, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(draw, expected * torch.sigmoid(time.raw.detach()), rtol=1e-6, atol=1e-6)


def test_a_learned_time_runs_backwards_too():
    torch.manual_seed(0)
    a = 0.7 * torch.randn(3, 3, dtype=F64)
    z1 = torch.randn(4, 3, dtype=F64)
    t = torch.tensor(0.6, dtype=F64, requires_grad=True)
    out = cnf_solve(LinearField(a), z1, None, t, 0.0, "exact", regularize=True, **TIGHT)
    torch.testing.assert_close(out.z, z1 @ torch.linalg.matrix_exp(-0.6 * a).mT, rtol=0, atol=1e-8)
    torch.testing.assert_close(out.log_det, (-0.6 * torch.trace(a)).expand(4), rtol=0, atol=1e-8)
    torch.testing.assert_close(out.jacobian, (0.6 * a.pow(2).sum()).expand(4), rtol=0, atol=1e-8)


def _perturb(module, scale=0.5):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


NEW_OPTIONS = {
    "rnode-learned-time": (dict(kinetic_weight=0.1, jacobian_weight=0.2, learn_time=True, **TIGHT), 1e-7),
    "rk4": (dict(method="rk4", solver_steps=40, kinetic_weight=0.1, learn_time=True), 1e-6),
}


@pytest.mark.parametrize("options, atol", NEW_OPTIONS.values(), ids=NEW_OPTIONS.keys())
@pytest.mark.parametrize("lead", [(), (4,)], ids=["unbatched", "batched"])
def test_density_block_log_det_against_autograd_with_the_new_options(options, atol, lead):
    torch.manual_seed(0)
    block = CNFBlock(2, (8,), trace="exact", **options).double()
    _perturb(block)
    block.train()
    x = torch.randn(*lead, 2, dtype=F64)
    z, ladj = block.inverse_and_ladj(x)
    assert z.shape == x.shape and ladj.shape == lead
    penalty = rnode_penalty(block)
    assert penalty.shape == () and float(penalty) > 0
    for row in range(int(np.prod(lead))):
        xi = x.reshape(-1, 2)[row]
        jac = torch.autograd.functional.jacobian(lambda v: block.inverse_and_ladj(v)[0], xi)
        torch.testing.assert_close(ladj.reshape(-1)[row], -torch.linalg.slogdet(jac).logabsdet, rtol=0, atol=atol)
    back, fwd = block.forward_and_ladj(z)
    torch.testing.assert_close(back, x, rtol=0, atol=10 * atol)
    torch.testing.assert_close(fwd, ladj, rtol=0, atol=10 * atol)
    rnode_penalty(block)


@pytest.mark.parametrize("options, atol", NEW_OPTIONS.values(), ids=NEW_OPTIONS.keys())
def test_posterior_flow_log_det_and_gradients_with_the_new_options(options, atol):
    torch.manual_seed(0)
    flow = posterior_flow("ffjord", 2, 2, 3, hidden_dims=(8,), trace="exact", **options).double()
    _perturb(flow)
    context = torch.randn(3, dtype=F64)
    z0 = torch.randn(2, dtype=F64)
    stack = flow.condition(context)
    z = stack(z0)
    ladj = stack.log_abs_det_jacobian(z0, z)
    jac = torch.autograd.functional.jacobian(lambda v: flow.condition(context)(v), z0)
    torch.testing.assert_close(ladj, torch.linalg.slogdet(jac).logabsdet, rtol=0, atol=atol)
    flow.zero_grad()
    z = flow.condition(context)(z0)  # a fresh solve: the Jacobian's solves replaced the penalty
    loss = z.sum() + rnode_penalty(flow)
    loss.backward()
    missing = [name for name, p in flow.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    assert sum(name.endswith("raw") for name, _ in flow.named_parameters()) == 2


def test_penalty_only_in_training_solves_and_cleared_when_read():
    torch.manual_seed(0)
    model = density_flow(
        "ffjord", (2,), hidden=8, kinetic_weight=1.0, jacobian_weight=1.0, method="rk4", solver_steps=4
    )
    x = torch.randn(16, 2)
    model.train()
    model.log_prob(x)
    first = rnode_penalty(model)
    assert float(first) > 0 and first.requires_grad
    assert float(rnode_penalty(model)) == 0.0  # cleared
    with torch.no_grad():
        model.log_prob(x)
    model.eval()
    model.log_prob(x)
    assert float(rnode_penalty(model)) == 0.0
    plain = density_flow("ffjord", (2,), hidden=8, method="rk4", solver_steps=4)
    plain.log_prob(x)
    assert float(rnode_penalty(plain)) == 0.0


def test_density_training_loss_adds_the_weighted_penalty():
    from vaeflows.density.training import DensityModel, _training_loss

    torch.manual_seed(0)
    flow = density_flow("ffjord", (2,), hidden=8, trace="exact", kinetic_weight=0.5, method="rk4", solver_steps=4)
    model = DensityModel(flow, None).train()
    x = torch.randn(16, 2)
    loss = _training_loss(model, x)
    blocks = [m for m in model.modules() if isinstance(m, CNFBlock)]
    nll = -model.log_likelihood(x).mean()
    kinetic = cnf_solve(blocks[0].net, x, None, 0.5, 0.0, "exact", method="rk4", solver_steps=4, regularize=True)
    torch.testing.assert_close(loss, nll + 0.5 * kinetic.kinetic.mean())
    rnode_penalty(model)


def test_vae_loss_adds_the_penalty_of_an_ffjord_posterior():
    import pyro

    from vaeflows.infer.experiment import vae_loss
    from vaeflows.models import build_vae

    class Data:
        binarize = staticmethod(lambda batch: batch)

    x = torch.randint(0, 2, (5, 1, 4, 4)).float()
    losses = []
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        vae = build_vae(
            "mlp",
            (1, 4, 4),
            "bernoulli",
            latent_dim=2,
            hidden_dims=(8,),
            flow="ffjord",
            num_flows=1,
            flow_hidden_dims=(4,),
            kinetic_weight=weight,
            method="rk4",
            solver_steps=2,
        )
        vae.register_params = False
        pyro.set_rng_seed(1)
        losses.append(vae_loss(vae, Data(), warmup=0)(x, 1))
        assert float(rnode_penalty(vae)) == 0.0  # the loss collected it
    assert float(losses[1]) > float(losses[0])


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(method="rk4"), "solver_steps=N"),
        (dict(solver_steps=4), "fixed-grid"),
        (dict(method="rk4", solver_steps=0), "solver_steps"),
        (dict(kinetic_weight=-1.0), "kinetic_weight"),
        (dict(jacobian_weight=float("nan")), "jacobian_weight"),
    ],
)
def test_bad_rnode_options_are_one_clear_error(options, message):
    with pytest.raises(ValueError, match=message):
        density_flow("ffjord", (2,), hidden=4, **options)
    with pytest.raises(ValueError, match=message):
        posterior_flow("ffjord", 2, 1, **options)


def test_learn_time_keeps_the_state_dict_of_a_fixed_time_model():
    fixed = density_flow("ffjord", (2,), hidden=4)
    learned = density_flow("ffjord", (2,), hidden=4, learn_time=True)
    assert [key for key in learned.state_dict() if key not in fixed.state_dict()] == ["flow.layers.0.time.raw"]
    assert not any(key.endswith("time.raw") for key in fixed.state_dict())
