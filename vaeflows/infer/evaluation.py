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
from typing import Callable, Dict, Iterator, Optional, Union

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample
from pyro.poutine.util import is_validation_enabled
from pyro.util import warn_if_nan

__all__ = [
    "reparameterized_elbo",
    "log_importance_weights",
    "elbo_per_point",
    "importance_sampled_log_likelihood",
    "batches",
]


class _LogDensity(Messenger):
    """Sums ``sum(scale * mask * log fn(value))`` over the sample sites of one run of a program.

    Given ``replay`` (site name -> value), latent sites found there take that value instead of
    sampling, as ``poutine.replay`` does (plates' subsample indices included). ``values`` holds
    every site's value afterwards. The sum is
    taken after every handler inside this one has acted (plates, ``poutine.scale``,
    ``poutine.mask``), exactly where ``poutine.trace`` records a site.
    """

    def __init__(self, replay: Optional[Dict[str, torch.Tensor]] = None) -> None:
        super().__init__()
        self.replay = replay
        self.values: Dict[str, torch.Tensor] = {}
        self.total: Union[torch.Tensor, float] = 0.0  # a tensor once a site is scored

    def _pyro_sample(self, msg) -> None:
        if self.replay is not None and not msg["is_observed"] and msg["name"] in self.replay:
            msg["value"] = self.replay[msg["name"]]
            msg["done"] = True

    def _pyro_post_sample(self, msg) -> None:
        fn, name = msg["fn"], msg["name"]
        if msg["infer"].get("_do_not_trace"):  # auxiliary sites, which poutine.trace skips too
            return
        if name in self.values:
            raise RuntimeError(f"Multiple sample sites named {name!r}")
        self.values[name] = msg["value"]
        if isinstance(fn, _Subsample):  # a plate's indices: replayed in the model, no density
            return
        if self.replay is None and not msg["is_observed"] and not fn.has_rsample:
            raise ValueError(
                f"guide site {name!r} is not reparameterized: its gradient needs the score "
                "function terms of pyro.infer.Trace_ELBO"
            )
        log_p = fn.log_prob(msg["value"], *msg["args"], **msg["kwargs"])
        scale, mask = msg["scale"], msg["mask"]
        if mask is not None or not (isinstance(scale, float) and scale == 1.0):  # else a no-op
            log_p = scale_and_mask(log_p, scale, mask)
        log_p = log_p.sum()
        if is_validation_enabled():
            warn_if_nan(log_p, f"log_prob_sum at site {name!r}")
        self.total = log_p if isinstance(self.total, float) else self.total + log_p


def reparameterized_elbo(model: Callable, guide: Callable, *args, **kwargs) -> torch.Tensor:
    """The one-sample ELBO ``log p(x, z) - log q(z | x)``, ``z ~ q``, summed over the data: the
    value and gradient of ``-Trace_ELBO().differentiable_loss(model, guide, *args)`` for a guide
    whose samples are all reparameterized (every vaeflows posterior), at the same random draws.

    The guide runs under one small Pyro messenger that sums its sites' log-densities and keeps
    their values; the model runs under another that replays those values and sums its own. That
    is what ``Trace_ELBO`` computes from ``poutine.trace`` and ``poutine.replay``, without
    building the two traces and without ``Trace_ELBO``'s host synchronizations (``.item()``, NaN
    checks): a stall per step on a GPU, and on a CPU a few percent of a small model's step
    (``benchmarks/results/step_time_cpu_mlp.md``). With Pyro's validation on, each site's sum is
    still checked for NaN.

    Raises:
        ValueError: a guide sample site is not reparameterized (use ``Trace_ELBO`` there).
    """
    with _LogDensity() as guide_density:
        guide(*args, **kwargs)
    with _LogDensity(replay=guide_density.values) as model_density:
        model(*args, **kwargs)
    elbo = model_density.total - guide_density.total
    return elbo if isinstance(elbo, torch.Tensor) else torch.tensor(elbo)  # a float without sample sites


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
    log_w: Union[torch.Tensor, float] = 0.0
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        trace.compute_log_prob()
        for site in trace.nodes.values():
            if site["type"] == "sample":
                log_w = log_w + sign * site["log_prob"]
    if not isinstance(log_w, torch.Tensor):
        raise ValueError("log_importance_weights: the model and guide have no sample sites")
    return log_w.reshape(num_samples, x.shape[0])


def batches(x: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Consecutive slices of ``x`` along its first dim."""
    for start in range(0, x.shape[0], batch_size):
        yield x[start : start + batch_size]


@torch.no_grad()
def elbo_per_point(model: Callable, guide: Callable, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
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
        total: Optional[torch.Tensor] = None
        for start in range(0, num_samples, chunk_size):
            s = min(chunk_size, num_samples - start)
            chunk = torch.logsumexp(log_importance_weights(model, guide, b, s), dim=0)
            total = chunk if total is None else torch.logaddexp(total, chunk)
        assert total is not None, "num_samples >= 1: at least one chunk"
        results.append(total - math.log(num_samples))
        progress(b.shape[0])
    return torch.cat(results)
