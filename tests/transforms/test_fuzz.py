"""Fuzzing the posterior-flow registry (issue 14): random configurations, a few of them invalid.

Each draw picks a flow, sizes, options, amortized or global, and a batch shape (none, a batch, or
particles times a batch), with about one size in ten out of range (0, negative, fractional, a
bool). A valid draw must run forward with finite ``z_K`` and log-det of the right shapes; an
invalid one must be refused at construction by a ValueError or TypeError that vaeflows raised,
naming the argument.
"""

import math
import random

import pytest
import torch

from vaeflows.transforms import POSTERIOR_FLOWS, posterior_flow

BAD_SIZES = [0, -1, 2.5, True]


def _size(rng: random.Random, good):
    """A size from ``good``, or one from :data:`BAD_SIZES` one time in ten; and whether it is bad."""
    if rng.random() < 0.1:
        return rng.choice(BAD_SIZES), True
    return rng.choice(good), False


def _options(rng: random.Random, name: str, latent_dim, amortized: bool):
    """Options of flow ``name``: (options, the names of those drawn out of range)."""
    options, bad = {}, []
    if (
        amortized
        and name
        in ("planar", "radial", "householder", "sylvester-orthogonal", "sylvester-householder", "sylvester-triangular")
        and rng.random() < 0.3
    ):
        width, wrong = _size(rng, [4, 16])
        options["hypernet_dims"], bad = (width,), bad + ["hypernet_dims"] * wrong
    if name == "sylvester-orthogonal":
        top = latent_dim if isinstance(latent_dim, int) and latent_dim >= 1 else 1
        options["num_ortho_vecs"], wrong = _size(rng, list(range(1, top + 1)))
        bad += ["num_ortho_vecs"] * wrong
    if name in ("householder", "sylvester-householder"):
        options["num_householder"], wrong = _size(rng, [1, 2, 4])
        bad += ["num_householder"] * wrong
    if name == "iaf":
        floor = latent_dim if isinstance(latent_dim, int) and latent_dim >= 1 else 1
        width, wrong = _size(rng, [floor, floor + 3, 2 * floor + 8])
        options["hidden_dims"], bad = (width, width), bad + ["hidden_dims"] * wrong
    if name in ("spline-autoregressive", "spline-coupling"):
        floor = latent_dim if isinstance(latent_dim, int) and latent_dim >= 1 else 1
        width, wrong = _size(rng, [floor, floor + 3] if name == "spline-autoregressive" else [2, 8])
        options["hidden_dims"], bad = (width,), bad + ["hidden_dims"] * wrong
        options["count_bins"], wrong = _size(rng, [2, 5, 8])
        bad += ["count_bins"] * wrong
        options["bound"] = rng.choice([1.0, 3.0])
        if rng.random() < 0.1:
            options["bound"], bad = rng.choice([0.0, -1.0, math.nan]), bad + ["bound"]
    if name == "residual":
        width, wrong = _size(rng, [4, 8])
        options.update(hidden_dims=(width,), ladj=rng.choice(["exact", "hutchinson", "roulette"]))
        bad += ["hidden_dims"] * wrong
    if name == "ffjord":
        options.update(
            hidden_dims=(4,), time_length=0.1, rtol=1e-3, atol=1e-3, trace=rng.choice(["exact", "hutchinson"])
        )
        if rng.random() < 0.1:
            key = rng.choice(["rtol", "atol", "time_length"])
            options[key], bad = rng.choice([-1.0, 0.0, math.nan]), bad + [key]
    return options, bad


def _draw(seed: int):
    rng = random.Random(seed)
    name = rng.choice(sorted(POSTERIOR_FLOWS))
    latent_dim, bad_latent = _size(rng, [1, 2, 3, 5, 8])
    num_flows, bad_flows = _size(rng, [1, 2, 3] if name != "ffjord" else [1])
    context_dim, bad_context = _size(rng, [3, 7]) if rng.random() < 0.5 else (None, False)
    options, bad = _options(rng, name, latent_dim, context_dim is not None)
    bad += ["latent_dim"] * bad_latent + ["num_flows"] * bad_flows + ["context_dim"] * bad_context
    batch = rng.choice([(), (4,), (2, 3)])
    return name, latent_dim, num_flows, context_dim, options, bad, batch


@pytest.mark.parametrize("seed", range(400))
def test_random_configuration(seed):
    name, latent_dim, num_flows, context_dim, options, bad, batch = _draw(seed)
    torch.manual_seed(seed)
    if bad:
        with pytest.raises((ValueError, TypeError)) as info:
            posterior_flow(name, latent_dim, num_flows, context_dim, **options)
        assert "/vaeflows/" in str(info.traceback[-1].path), "raised inside torch or Pyro, not by a check"
        assert any(argument in str(info.value) for argument in bad), (bad, str(info.value))
        return
    flow = posterior_flow(name, latent_dim, num_flows, context_dim, **options)
    for parameter in flow.parameters():  # away from the initialization, as after some training
        parameter.data.add_(0.3 * torch.randn_like(parameter))
    lead = batch[-1:] if context_dim else batch
    transform = flow.condition(torch.randn(*lead, context_dim)) if context_dim else flow
    z0 = 3 * torch.randn(*batch, latent_dim)
    zk = transform(z0)
    ladj = transform.log_abs_det_jacobian(z0, zk)
    assert zk.shape == (*batch, latent_dim) and ladj.shape == batch
    assert torch.isfinite(zk).all() and torch.isfinite(ladj).all(), (name, options)
