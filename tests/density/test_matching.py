"""Flow matching (issue 17): the loss and its minimizer in closed form on a Gaussian-to-Gaussian
problem, the direction and clock of the field against the model's own ODE, the couplings, and
flow-matching runs of ``train_density``."""

import itertools
import json
import math

import pytest
import torch
from torch import nn

pytest.importorskip("torchdiffeq")

from vaeflows.density import (  # noqa: E402
    FlowMatching,
    cnf_blocks,
    cnf_velocity,
    conditional_path,
    density_flow,
    flow_matching_loss,
    ot_coupling,
    sample_nfe,
    train_density,
)
from vaeflows.infer.training import CheckpointMismatch, TrainConfig  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: on a shared CPU torch's thread pool makes these tiny nets' steps ~30x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


#: A cheap fixed-step solve (T = 0.5 in 10 steps) where the test is not of the solver's accuracy.
RK4 = {"method": "rk4", "solver_options": {"step_size": 0.05}}
# The target N(M, diag(S^2)); the noise N(0, I).
M = torch.tensor([1.0, -0.5], dtype=torch.float64)
S = torch.tensor([0.5, 0.8], dtype=torch.float64)


def optimal(s, sigma_min):
    """The marginal field's coefficients: v*(x, s) = M + c(s) (x - s M), and the loss's minimum at s.

    With a = 1 - (1 - sigma_min) s, b = 1 - sigma_min: x_s = a x0 + s x1 and u = x1 - b x0 are jointly
    Gaussian per dimension, Var x_s = a^2 + s^2 S^2, Cov(x_s, u) = s S^2 - a b, Var u = b^2 + S^2,
    so E[u | x_s] is linear with slope c = Cov / Var x_s and the minimum is sum_d Var(u | x_s).
    """
    a, b = 1 - (1 - sigma_min) * s, 1 - sigma_min
    var_x = a**2 + s**2 * S**2
    cov = s * S**2 - a * b
    return cov / var_x, (b**2 + S**2 - cov**2 / var_x).sum(-1)


def optimal_velocity(sigma_min):
    def velocity(x, s):
        c, _ = optimal(s[:, None].to(x), sigma_min)
        return M.to(x) + c * (x - s[:, None].to(x) * M.to(x))

    return velocity


def gaussian_batch(n, seed):
    g = torch.Generator().manual_seed(seed)
    x1 = M + S * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return x1, torch.randn(n, 2, generator=g, dtype=torch.float64)


def test_conditional_path_ends_at_noise_and_data():
    x0, x1 = torch.randn(3, 2), torch.randn(3, 2)
    start, u = conditional_path(x0, x1, torch.zeros(3), 0.1)
    end, _ = conditional_path(x0, x1, torch.ones(3), 0.1)
    assert torch.allclose(start, x0) and torch.allclose(end, x1 + 0.1 * x0)
    assert torch.allclose(u, x1 - 0.9 * x0)
    h = 1e-3  # u is the path's derivative in s
    s = torch.full((3,), 0.4)
    ahead, _ = conditional_path(x0, x1, s + h, 0.1)
    behind, _ = conditional_path(x0, x1, s - h, 0.1)
    assert torch.allclose((ahead - behind) / (2 * h), u, atol=1e-3)


@pytest.mark.parametrize("sigma_min", [0.0, 0.1])
def test_loss_at_the_optimal_field_is_its_closed_form_minimum(sigma_min):
    x1, x0 = gaussian_batch(100_000, 0)
    v = optimal_velocity(sigma_min)
    for s_value in (0.1, 0.5, 0.9):
        s = torch.full((len(x1),), s_value, dtype=torch.float64)
        loss = flow_matching_loss(v, x1, x0, s, sigma_min)
        minimum = optimal(torch.tensor(s_value, dtype=torch.float64), sigma_min)[1]
        assert loss.item() == pytest.approx(minimum.item(), rel=0.02)
        # any other field is worse by E||v - v*||^2: here a constant offset d
        d = torch.tensor([0.3, -0.2], dtype=torch.float64)
        worse = flow_matching_loss(lambda x, t: v(x, t) + d, x1, x0, s, sigma_min)
        assert (worse - loss).item() == pytest.approx(d.pow(2).sum().item(), abs=0.01)
    # and over uniform times, the minimum integrated over s in [0, 1]
    grid = torch.linspace(0, 1, 2001, dtype=torch.float64)
    expected = torch.trapezoid(optimal(grid[:, None], sigma_min)[1], grid)
    s = torch.rand(len(x1), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert flow_matching_loss(v, x1, x0, s, sigma_min).item() == pytest.approx(expected.item(), rel=0.02)


def test_a_fitted_linear_field_converges_to_the_optimal_one():
    sigma_min, s_value = 0.1, 0.3
    x1, x0 = gaussian_batch(20_000, 2)
    s = torch.full((len(x1),), s_value, dtype=torch.float64)
    alpha = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    beta = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([alpha, beta], max_iter=30, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = flow_matching_loss(lambda x, t: alpha + beta * x, x1, x0, s, sigma_min)
        loss.backward()
        return loss

    optimizer.step(closure)
    c, _ = optimal(torch.tensor(s_value, dtype=torch.float64), sigma_min)
    assert torch.allclose(beta.detach(), c, atol=0.03)
    assert torch.allclose(alpha.detach(), M - c * s_value * M, atol=0.03)


class OptimalNet(nn.Module):
    """Block ``k`` of ``K`` (each on [0, T]) holding the optimal field: ``f_k(t, z) = v*(z, (k + t/T)/K) / (K T)``,
    the inverse of the clock change that :func:`cnf_velocity` documents."""

    def __init__(self, k, count, time_length):
        super().__init__()
        self.k, self.count, self.time_length, self.nfe = k, count, time_length, 0
        self.velocity = optimal_velocity(0.0)

    def forward(self, t, z, context=None):
        s = ((self.k + t / self.time_length) / self.count).to(z).reshape(-1).expand(len(z))
        v = self.velocity(z, s)
        return v / (self.count * self.time_length)


@pytest.mark.parametrize("num_steps, time_length", [(1, 1.0), (2, 0.5)])
def test_the_field_regressed_is_the_one_the_ode_integrates(num_steps, time_length):
    """With the optimal field in its blocks, the model's ODE density is the target's, the field that
    flow matching regresses is the optimal one, and its loss is the closed-form minimum."""
    model = density_flow(
        "ffjord", (2,), num_steps=num_steps, hidden=4, trace="exact", time_length=time_length, rtol=1e-8, atol=1e-8
    ).double()
    for k, block in enumerate(cnf_blocks(model)):
        block.net = OptimalNet(k, num_steps, time_length)
    x1, x0 = gaussian_batch(1000, 3)
    target = torch.distributions.Normal(M, S).log_prob(x1[:100]).sum(-1)
    assert torch.allclose(model.log_prob(x1[:100]), target, atol=1e-5)
    s = torch.rand(len(x1), dtype=torch.float64)
    assert torch.allclose(cnf_velocity(model)(x0, s), optimal_velocity(0.0)(x0, s), atol=1e-12)
    with torch.no_grad():
        samples = model.sample(2000)
    assert torch.allclose(samples.mean(0), M, atol=0.07) and torch.allclose(samples.std(0), S, atol=0.07)


def test_ode_likelihood_of_a_trained_field_integrates_to_one():
    torch.manual_seed(0)
    model = density_flow("ffjord", (2,), num_steps=1, hidden=16, **RK4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    options = FlowMatching(coupling="ot")
    for step in range(150):
        x1, _ = gaussian_batch(128, 100 + step)
        loss = options.loss(model, x1.float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    bound, n = 4.5, 45
    edges = torch.linspace(-bound, bound, n + 1)
    centers = (edges[1:] + edges[:-1]) / 2
    grid = torch.cartesian_prod(centers, centers)
    x1, _ = gaussian_batch(500, 7)
    with torch.no_grad():
        mass = model.log_prob(grid).exp().sum() * (2 * bound / n) ** 2
        nll = -model.log_prob(x1.float()).mean()
        samples = model.sample(500)
    assert mass.item() == pytest.approx(1.0, abs=0.03)
    # it learned the target, in the right direction (noise -> data)
    entropy = torch.distributions.Normal(M, S).entropy().sum()
    assert nll.item() < entropy.item() + 0.15
    assert torch.allclose(samples.mean(0).double(), M, atol=0.2)
    assert 0 < sample_nfe(model, 100) < 200


def test_ot_coupling_is_the_optimal_assignment():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    paired = ot_coupling(x0, x1)
    assert sorted(map(tuple, paired.tolist())) == sorted(map(tuple, x0.tolist()))  # a permutation of x0
    cost = (paired - x1).pow(2).sum().item()
    best = min((x0[list(p)] - x1).pow(2).sum().item() for p in itertools.permutations(range(6)))
    assert cost == pytest.approx(best)


def test_bad_options_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="coupling"):
        FlowMatching(coupling="sinkhorn")
    with pytest.raises(ValueError, match=r"sigma_min.*\[0, 1\)"):
        FlowMatching(sigma_min=1.0)
    with pytest.raises(ValueError, match="continuous flows only.*ffjord"):
        FlowMatching().loss(density_flow("realnvp", (2,), hidden=4), torch.randn(3, 2))
    with pytest.raises(ValueError, match="noise like x1"):
        flow_matching_loss(lambda x, s: x, torch.randn(3, 2), x0=torch.randn(4, 2))


def test_several_blocks_share_the_clock():
    """Each of K blocks is trained on its segment of s: every block's net gets gradients."""
    torch.manual_seed(0)
    model = density_flow("ffjord", (3,), num_steps=3, hidden=4)
    FlowMatching().loss(model, torch.randn(64, 3)).backward()
    for block in cnf_blocks(model):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.net.parameters())


def test_train_density_by_flow_matching(tmp_path):
    config = TrainConfig(epochs=1, batch_size=128, warmup=0)
    options = {"num_steps": 1, "hidden": 8, **RK4}
    fm = FlowMatching(coupling="ot", sigma_min=0.01)
    lines = []
    kwargs = dict(num_train=256, progress=False, log=lines.append)
    metrics = train_density(
        "moons", "ffjord", options, config, tmp_path / "fm", objective="flow-matching", flow_matching=fm, **kwargs
    )
    epoch_line = next(line for line in lines if line.startswith("epoch"))  # the regression loss, named so
    assert " fm loss " in epoch_line and " valid " in epoch_line and "beta" not in epoch_line
    assert metrics["objective"] == {"name": "flow-matching", "coupling": "ot", "sigma_min": 0.01}
    assert metrics["trace"] == "exact" and metrics["sample_nfe"] > 0 and math.isfinite(metrics["test_nll"])
    assert json.loads((tmp_path / "fm" / "config.json").read_text())["objective"]["coupling"] == "ot"
    # resumable: a second epoch continues it; maximum likelihood into the same directory is refused
    longer = TrainConfig(epochs=2, batch_size=128, warmup=0)  # the run's settings, epochs aside
    again = train_density(
        "moons", "ffjord", options, longer, tmp_path / "fm", objective="flow-matching", flow_matching=fm, **kwargs
    )
    assert len(again["epochs"]) == 2
    with pytest.raises(CheckpointMismatch, match="objective"):
        train_density("moons", "ffjord", options, longer, tmp_path / "fm", **kwargs)
    with pytest.raises(ValueError, match="continuous flows only"):
        train_density("moons", "realnvp", {}, config, tmp_path / "x", objective="flow-matching", **kwargs)
    with pytest.raises(ValueError, match="uniform dequantization"):
        train_density(
            "mnist", "ffjord", {}, config, tmp_path / "x", dequantization="variational", objective="flow-matching"
        )
    with pytest.raises(ValueError, match="objective='flow-matching'"):
        train_density("moons", "ffjord", options, config, tmp_path / "x", flow_matching=fm, **kwargs)
    assert not (tmp_path / "x").exists()


def test_images_are_matched_flat_as_the_model_flattens_them():
    """An ffjord model of (C, H, W) images regresses its flat field on the flattened data: the loss
    equals flow_matching_loss of cnf_velocity on x.flatten(1), and every block gets gradients."""
    torch.manual_seed(0)
    model = density_flow("ffjord", (1, 2, 2), num_steps=2, hidden=4)
    x1 = torch.rand(8, 1, 2, 2)
    torch.manual_seed(1)
    loss = FlowMatching().loss(model, x1)
    torch.manual_seed(1)
    flat = flow_matching_loss(cnf_velocity(model), x1.flatten(1))
    assert torch.equal(loss, flat)
    loss.backward()
    assert all(p.grad is not None for block in cnf_blocks(model) for p in block.net.parameters())
    with torch.no_grad():
        assert model.sample(3).shape == (3, 1, 2, 2)
