"""Per-data-point ELBO and the importance-sampled marginal log-likelihood, for any Pyro model/guide.

Both come from log importance weights ``log w_s = log p(x, z_s) - log q(z_s | x)``, ``z_s ~ q``,
computed by Pyro's own traces (guide traced, model replayed on it), vectorized over samples with an
extra plate left of the model's plates:

* the ELBO per point is ``log w`` with one sample;
* ``log p(x) ~= logsumexp_s log w_s - log S`` (Burda et al. 2016; the papers' NLL with S = 5000).

By Jensen's inequality the latter is at least the ELBO in expectation and grows with ``S``.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

__all__ = [
    "reparameterized_elbo",
    "log_importance_weights",
    "elbo_per_point",
    "importance_sampled_log_likelihood",
    "batches",
]


def reparameterized_elbo(model: Callable, guide: Callable, *args, **kwargs) -> torch.Tensor:
    """The one-sample ELBO ``log p(x, z) - log q(z | x)``, ``z ~ q``, summed over the data: the
    value of ``-Trace_ELBO().differentiable_loss(model, guide, *args)`` for a guide whose samples
    are all reparameterized (every vaeflows posterior), from the same Pyro traces (guide traced,
    model replayed on it), without Trace_ELBO's host synchronizations (``.item()``, NaN checks):
    about 3% of a CPU training step (``benchmarks/results/step_overhead.md``), a stall per step on
    a GPU. With Pyro's validation on, ``log_prob_sum`` still checks for NaN.

    Raises:
        ValueError: a guide sample site is not reparameterized (use ``Trace_ELBO`` there).
    """
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    for name, site in guide_trace.nodes.items():
        if (
            site["type"] == "sample"
            and not site["is_observed"]
            and not site_is_subsample(site)
            and not site["fn"].has_rsample
        ):
            raise ValueError(
                f"guide site {name!r} is not reparameterized: its gradient needs the score "
                "function terms of pyro.infer.Trace_ELBO"
            )
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    return model_trace.log_prob_sum() - guide_trace.log_prob_sum()


def log_importance_weights(
    model: Callable, guide: Callable, x: torch.Tensor, num_samples: int, max_plate_nesting: int = 1
) -> torch.Tensor:
    """``log p(x, z) - log q(z | x)`` for ``num_samples`` samples per point: shape ``(S, B)``.

    Args:
        model, guide: Pyro programs taking ``x`` (of batch size ``B``, the plate of dim ``-1``).
        x: the data.
        num_samples: ``S``.
        max_plate_nesting: how many plates the model nests (the sample plate goes left of them).
    """
    samples = pyro.plate("_importance_samples", num_samples, dim=-1 - max_plate_nesting)
    with samples:
        guide_trace = poutine.trace(guide).get_trace(x)
    with samples:
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    log_w = 0.0
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        trace.compute_log_prob()
        for site in trace.nodes.values():
            if site["type"] == "sample":
                log_w = log_w + sign * site["log_prob"]
    return log_w.reshape(num_samples, x.shape[0])


def batches(x: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Consecutive slices of ``x`` along its first dim."""
    for start in range(0, x.shape[0], batch_size):
        yield x[start : start + batch_size]


@torch.no_grad()
def elbo_per_point(
    model: Callable, guide: Callable, x: torch.Tensor, batch_size: int = 1000
) -> torch.Tensor:
    """The one-sample ELBO estimate of every point of ``x``: shape ``(N,)``."""
    return torch.cat([log_importance_weights(model, guide, b, 1)[0] for b in batches(x, batch_size)])


@torch.no_grad()
def importance_sampled_log_likelihood(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    num_samples: int = 5000,
    chunk_size: int = 1000,
    batch_size: int = 10,
    progress: Callable[[int], None] = lambda n: None,
) -> torch.Tensor:
    """``log p(x) ~= logsumexp_s log w_s - log S`` for every point of ``x``: shape ``(N,)``.

    Samples are drawn ``chunk_size`` at a time for ``batch_size`` points at once (``chunk_size *
    batch_size`` latent samples in memory), combined with a running log-sum-exp.

    Args:
        progress: called with the number of points done after each batch (for a progress bar).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    results = []
    for b in batches(x, batch_size):
        total = None
        for start in range(0, num_samples, chunk_size):
            s = min(chunk_size, num_samples - start)
            chunk = torch.logsumexp(log_importance_weights(model, guide, b, s), dim=0)
            total = chunk if total is None else torch.logaddexp(total, chunk)
        results.append(total - math.log(num_samples))
        progress(b.shape[0])
    return torch.cat(results)
