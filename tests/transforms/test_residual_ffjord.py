"""The residual and FFJORD flows' own checks: inverse, Lipschitz bound, log-det estimators, ODE
log-density change on a linear field, 2-D density fits, and the optional torchdiffeq dependency.

The generic registry tests (test_posterior_flows.py, tests/density/test_density_flows.py) run
these flows in their exact modes; here the estimators are checked statistically: the mean of
many independent estimates against the exact value, within 4 standard errors.
"""

import math
import sys

import pytest
import torch
from torch import nn

from vaeflows.density import density_flow, toy_data
from vaeflows.transforms import posterior_flow
from vaeflows.transforms.ffjord import cnf_integrate
from vaeflows.transforms.residual import ResidualNet, exact_jacobian, residual_ladj, residual_step

F64 = torch.float64


def perturbed_net(dim=3, hidden=(16,), coeff=0.9, seed=0, scale=1.0, **options):
    torch.manual_seed(seed)
    net = ResidualNet(dim, hidden, coeff=coeff, **options).double()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn_like(p))
    return net


def exact_parts(net, z):
    """The Jacobian of ``g`` at ``z`` (``(..., D, D)``) and the exact log-det of ``I + J``."""
    z = z.detach().requires_grad_(True)
    jac = exact_jacobian(net(z), z, create_graph=False)
    eye = torch.eye(z.shape[-1], dtype=z.dtype)
    return jac, torch.linalg.slogdet(eye + jac).logabsdet


# --- residual flows -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("form", ["amortized", "global"])
def test_residual_inverse_round_trip(dtype, atol, form):
    torch.manual_seed(0)
    flow = posterior_flow("residual", 4, 3, 5 if form == "amortized" else None, hidden_dims=(16,)).to(dtype)
    with torch.no_grad():
        for p in flow.parameters():
            p.mul_(3.0)  # spectral normalization keeps Lip(g) <= 0.9 whatever the raw weights
    transform = flow.condition(torch.randn(7, 5, dtype=dtype)) if form == "amortized" else flow
    z = 2 * torch.randn(7, 4, dtype=dtype)
    y = transform(z)
    torch.testing.assert_close(transform.inv(y.clone()), z, rtol=0, atol=atol)


@pytest.mark.parametrize("spectral", ["power", "exact"])
@pytest.mark.parametrize("activation", ["lipswish", "elu"])
def test_jacobian_spectral_norm_below_one(spectral, activation):
    """The true spectral norm of dg/dz (autograd, float64) stays below coeff^layers < 1 with raw
    weights far from initialization, after training-mode power iterations too."""
    net = perturbed_net(4, (32, 32), 0.9, scale=2.0, spectral=spectral, activation=activation)
    for _ in range(3):  # training-mode calls update the power iteration's vectors
        net(torch.randn(2, 4, dtype=F64))
    jac, _ = exact_parts(net, 3 * torch.randn(256, 4, dtype=F64))
    norms = torch.linalg.matrix_norm(jac, ord=2)
    # the power iteration stops at a relative tolerance of 1e-6, from below: allow 1e-5
    assert float(norms.max()) < 0.9**3 * (1 + 1e-5) < 1
    assert net.lipschitz_bound() < 0.9**3 * (1 + 1e-5)
    if spectral == "power":  # the power iteration converged to the exact spectral norms
        for layer in net.layers:
            torch.testing.assert_close(layer.sigma(), torch.linalg.matrix_norm(layer.weight, ord=2), rtol=1e-5, atol=0)


def test_power_iteration_reads_its_init_flag_once_and_again_after_a_load():
    """The "initialized" buffer is read on the host at the first call only (a GPU sync otherwise),
    and again after load_state_dict: loading an uninitialized layer's state re-runs the long
    initial power iteration, as it would in a fresh process."""
    from vaeflows.transforms.residual import LipschitzLinear

    torch.manual_seed(0)
    layer, fresh = LipschitzLinear(6, 5), LipschitzLinear(6, 5)
    layer.sigma()
    assert bool(layer.initialized)
    torch.testing.assert_close(layer.sigma(), torch.linalg.matrix_norm(layer.weight, ord=2), rtol=1e-5, atol=0)
    layer.load_state_dict(fresh.state_dict())  # fresh's weight, its random u and v, "not initialized"
    layer.eval()  # no training-mode iterations: only the initial ones can make sigma exact
    torch.testing.assert_close(layer.sigma(), torch.linalg.matrix_norm(fresh.weight, ord=2), rtol=1e-5, atol=0)
    assert bool(layer.initialized)


def test_power_iteration_follows_updates_that_bypass_the_version_counter():
    """An update through ``p.data`` (Pyro's ClippedAdam, hand-written SGD) does not bump the
    weight's version counter; the power iteration must still follow it, and must not move while
    the values stay put (a step's forward pass and inverse use one map). Keyed on the version,
    a residual guide trained with ClippedAdam never refreshed sigma and its bound grew past 1."""
    from vaeflows.transforms.residual import LipschitzLinear

    torch.manual_seed(0)
    layer = LipschitzLinear(6, 5, n_power_iterations=50)
    layer.sigma()
    u = layer.u.clone()
    layer.sigma()  # unchanged values: the vectors stay, even in training mode
    assert torch.equal(layer.u, u)
    version = layer.weight._version
    layer.weight.data.mul_(3.0).add_(torch.randn(5, 6))
    assert layer.weight._version == version  # the update the version counter does not see
    torch.testing.assert_close(layer.sigma(), torch.linalg.matrix_norm(layer.weight, ord=2), rtol=1e-5, atol=0)
    assert float(torch.linalg.matrix_norm(layer.normalized_weight(), ord=2)) <= 0.9 * (1 + 1e-5)


def test_module_apply_reaches_a_residual_flow_s_nets():
    """``nn.Module.apply(fn)`` visits every submodule: ResidualNet must not shadow it."""
    flow = posterior_flow("residual", 3, 2, hidden_dims=(8,))
    seen = []
    flow.apply(seen.append)
    assert sum(isinstance(m, ResidualNet) for m in seen) == 2


def test_residual_exact_log_det_matches_slogdet_and_step():
    net = perturbed_net()
    z = torch.randn(5, 3, dtype=F64)
    _, expected = exact_parts(net, z)
    y, ladj = residual_step(net, z, "exact")
    torch.testing.assert_close(y, z + net(z))
    torch.testing.assert_close(ladj, expected, rtol=0, atol=1e-12)


def estimates(net, z, mode, calls, **options):
    """``(calls, N)`` log-det estimates at the rows of ``z``, one fresh call (noise, roulette draw)
    each time."""
    torch.manual_seed(1)
    with torch.no_grad():
        return torch.stack([residual_step(net, z, mode, **options)[1] for _ in range(calls)])


def test_hutchinson_mean_matches_the_truncated_series():
    """Hutchinson's estimate of the n-term series is unbiased for it: the mean of 4000 estimates
    (400 calls x 10 copies of each point) is within 4 standard errors of the exact truncated sum
    sum_k (-1)^(k+1) tr(J^k) / k; the truncation bias to the exact log-det is small at Lip <= 0.81."""
    net = perturbed_net(3, (16,), 0.9)
    points = torch.randn(2, 3, dtype=F64)
    z = points.repeat(10, 1)
    values = estimates(net, z, "hutchinson", 400, n_terms=6).reshape(400 * 10, 2)
    jac, exact = exact_parts(net, points)
    power, series = torch.eye(3, dtype=F64).expand(2, 3, 3), torch.zeros(2, dtype=F64)
    for k in range(1, 7):
        power = power @ jac
        series = series + (-1) ** (k + 1) / k * torch.diagonal(power, dim1=-2, dim2=-1).sum(-1)
    mean, error = values.mean(0), values.std(0) / math.sqrt(len(values))
    assert bool(((mean - series).abs() < 4 * error).all()), (mean, series, error)
    assert float(error.max()) < 0.05
    assert float((series - exact).abs().max()) < 3 * sum(0.81**k / k for k in range(7, 200))


def test_roulette_is_unbiased_for_the_exact_log_det():
    """The Russian-roulette estimator's mean over 2000 calls (one geometric draw per call, shared
    by the batch: calls are the independent units) is within 4 standard errors of slogdet(I + J)."""
    net = perturbed_net(3, (16,), 0.8, seed=3)
    z = torch.randn(4, 3, dtype=F64)
    values = estimates(net, z, "roulette", 2000, n_exact_terms=2, geometric_p=0.5)
    _, exact = exact_parts(net, z)
    mean, error = values.mean(0), values.std(0) / math.sqrt(len(values))
    assert bool(((mean - exact).abs() < 4 * error).all()), (mean, exact, error)
    assert float(error.max()) < 0.05


def test_estimators_carry_gradients_and_log_det_kind_is_visible():
    flow = posterior_flow("residual", 3, 2, 4, hidden_dims=(8,))
    assert flow.log_det_kind == "stochastic"
    assert posterior_flow("residual", 3, 2, ladj="exact").log_det_kind == "exact"
    assert posterior_flow("residual", 3, 2, eval_ladj="exact").eval().log_det_kind == "exact"
    assert posterior_flow("ffjord", 3, 1, trace="exact").log_det_kind == "ode"
    assert posterior_flow("ffjord", 3, 1).log_det_kind == "stochastic"
    assert posterior_flow("planar", 3, 2).log_det_kind == "exact"
    stack = flow.condition(torch.randn(5, 4))
    z = torch.randn(5, 3)
    y = stack(z)
    (y.sum() + stack.log_abs_det_jacobian(z, y).sum()).backward()
    assert all(p.grad is not None for p in flow.parameters())


def test_residual_bad_options():
    with pytest.raises(ValueError, match=r"coeff must be in \(0, 1\)"):
        posterior_flow("residual", 3, 2, coeff=1.0)
    with pytest.raises(ValueError, match="unknown ladj"):
        posterior_flow("residual", 3, 2, ladj="neumann")
    with pytest.raises(TypeError, match="unknown option.*hiden_dims.*known: hidden_dims"):
        posterior_flow("residual", 3, 2, hiden_dims=(4,))
    with pytest.raises(ValueError, match="unknown trace"):
        posterior_flow("ffjord", 3, 1, trace="approx")
    with pytest.raises(ValueError, match="unknown log-det mode"):
        residual_ladj(torch.zeros(1, 2), torch.zeros(1, 2), "series")


# --- continuous flows -----------------------------------------------------------------------------


class LinearField(nn.Module):
    """``f(z, t) = A z``: ``z(T) = expm(T A) z(0)`` and ``log|det| = T tr(A)``."""

    def __init__(self, a):
        super().__init__()
        self.a = nn.Parameter(a)
        self.nfe = 0

    def forward(self, t, z, context=None):
        return z @ self.a.mT


@pytest.mark.parametrize("adjoint", [False, True], ids=["backprop", "adjoint"])
def test_cnf_linear_field_matches_exact_change_of_variables(adjoint):
    torch.manual_seed(0)
    a = 0.7 * torch.randn(3, 3, dtype=F64)
    field = LinearField(a.clone())
    z0 = torch.randn(6, 3, dtype=F64)
    t1 = 0.8
    z1, ladj = cnf_integrate(field, z0, None, 0.0, t1, "exact", rtol=1e-10, atol=1e-10, adjoint=adjoint)
    flow_map = torch.linalg.matrix_exp(t1 * a)
    torch.testing.assert_close(z1, z0 @ flow_map.mT, rtol=0, atol=1e-8)
    torch.testing.assert_close(ladj, (t1 * torch.trace(a)).expand(6), rtol=0, atol=1e-8)
    torch.testing.assert_close(ladj[0], torch.linalg.slogdet(flow_map).logabsdet, rtol=0, atol=1e-8)
    back, minus = cnf_integrate(field, z1, None, t1, 0.0, "exact", rtol=1e-10, atol=1e-10, adjoint=adjoint)
    torch.testing.assert_close(back, z0, rtol=0, atol=1e-8)
    torch.testing.assert_close(minus, -ladj, rtol=0, atol=1e-8)
    # gradients w.r.t. A: d(sum z1 + sum ladj)/dA against those of the closed form
    (z1.sum() + ladj.sum()).backward()
    a_ref = a.clone().requires_grad_(True)
    ((z0 @ torch.linalg.matrix_exp(t1 * a_ref).mT).sum() + 6 * t1 * torch.trace(a_ref)).backward()
    torch.testing.assert_close(field.a.grad, a_ref.grad, rtol=0, atol=1e-6)
    assert field.nfe > 0


def test_cnf_hutchinson_trace_is_unbiased_on_a_linear_field():
    """With one Gaussian probe per solve, the log-det estimate of a linear field is T e^T A e: its
    mean over 4000 rows is within 4 standard errors of T tr(A)."""
    torch.manual_seed(0)
    a = 0.7 * torch.randn(3, 3, dtype=F64)
    z0 = torch.randn(4000, 3, dtype=F64)
    with torch.no_grad():
        _, ladj = cnf_integrate(LinearField(a), z0, None, 0.0, 0.8, "hutchinson", rtol=1e-7, atol=1e-7)
    error = ladj.std() / math.sqrt(len(ladj))
    assert abs(float(ladj.mean() - 0.8 * torch.trace(a))) < 4 * float(error)


def test_torchdiffeq_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchdiffeq", None)  # import torchdiffeq -> ImportError
    with pytest.raises(ImportError, match=r"vaeflows\[cnf\]"):
        posterior_flow("ffjord", 3, 1)
    with pytest.raises(ImportError, match=r"vaeflows\[cnf\]"):
        density_flow("ffjord", (2,))
    posterior_flow("residual", 3, 1)  # the residual flow does not need it


# --- 2-D density fits ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,options,steps",
    [("residual", {"num_steps": 3, "hidden": 32}, 120), ("ffjord", {"num_steps": 1, "hidden": 32}, 100)],
)
def test_two_d_fit_improves_held_out_log_likelihood(name, options, steps):
    """A short maximum-likelihood fit on moons (training estimators: roulette / Hutchinson)
    lowers the held-out NLL (exact log-dets in eval mode) by more than 0.4 nats from about 3.8."""
    torch.manual_seed(0)
    train, test = toy_data("moons", 2000, seed=0), toy_data("moons", 1000, seed=2)
    model = density_flow(name, (2,), **options)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def held_out_nll():
        model.eval()
        with torch.no_grad():
            value = -float(model.log_prob(test).mean())
        model.train()
        return value

    before = held_out_nll()
    for _ in range(steps):
        loss = -model.log_prob(train[torch.randint(len(train), (128,))]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = held_out_nll()
    assert math.isfinite(after) and after < before - 0.4, (before, after)
