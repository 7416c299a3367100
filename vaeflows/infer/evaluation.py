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
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union, cast

import pyro
import torch
from pyro import poutine
from pyro.distributions.torch_distribution import TorchDistributionMixin
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


#: Rows (samples x points) per torch thread that the model scores at once in
#: :func:`importance_sampled_log_likelihood` on a CPU: its decoder's activations and pixel
#: log-densities then stay in the cache instead of streaming chunk-sized tensors through memory
#: (``benchmarks/results/nll_throughput_cpu.md``).
CPU_MODEL_ROWS = 512


def _replay_block(trace: poutine.Trace, start: int, size: int, num_samples: int, max_plate_nesting: int):
    """The sample sites of ``trace`` with samples ``start : start + size`` of the importance-sample
    plate (dim ``-1 - max_plate_nesting`` of each value's batch dims), for ``poutine.replay``."""
    block = poutine.Trace()
    for name, site in trace.nodes.items():
        if site["type"] != "sample":
            continue
        value: torch.Tensor = site["value"]  # type: ignore[assignment]  # a sample site's value
        fn = cast(TorchDistributionMixin, site["fn"])
        if not isinstance(fn, _Subsample):
            dim = value.dim() - len(fn.event_shape) - 1 - max_plate_nesting
            if dim >= 0 and value.shape[dim] == num_samples:
                value = value.narrow(dim, start, size)
        block.add_node(name, type="sample", value=value, is_observed=site["is_observed"], infer=site["infer"])
    return block


def _sample_blocks(num_samples: int, points: int, rows: int) -> List[Tuple[int, int]]:
    """``(start, size)`` of the sample blocks of a chunk: about ``rows`` rows (samples x points)
    each, at least 64, a multiple of 16 rows but for the last block, which takes the rest.

    A matrix product computes its rows in panels (4 rows for float64 on AVX2 with MKL) and a
    ragged tail, or a product of 1-3 rows, another way: blocks of a multiple of 16 rows, none
    short, end where the whole chunk's panels end, so each row is computed as in the whole chunk.
    """
    align = 16 // math.gcd(points, 16)
    per_block = max(rows, 64) // points
    per_block = max(align, (per_block + align - 1) // align * align)
    count = max(1, num_samples // per_block)
    starts = [i * per_block for i in range(count)]
    return [(start, (starts[i + 1] if i + 1 < count else num_samples) - start) for i, start in enumerate(starts)]


def _log_importance_weights_blocked(
    model: Callable, guide: Callable, x: torch.Tensor, num_samples: int, rows: int, max_plate_nesting: int = 1
) -> torch.Tensor:
    """:func:`log_importance_weights` with the guide run once for all ``num_samples`` samples (the
    same random draws) and the model replayed on blocks of about ``rows`` rows (samples x points).

    The sums are those of :func:`log_importance_weights`, term by term in the same order: per block,
    ``0 + log p(site_1) + log p(site_2) + ...`` over the model's sites, the blocks concatenated along
    the sample dim, then ``- log q(site)`` for each guide site. Every operation of the model acts on
    each sample's row alone (a matrix product's row, a sum over one sample's pixels), so the result
    is the unblocked one bit for bit wherever the backend computes a row the same way in a smaller
    product (measured for MKL's matrix products: ``tests/infer/test_evaluation.py``).
    """
    sample_dim = -1 - max_plate_nesting
    with pyro.plate("_importance_samples", num_samples, dim=sample_dim):
        guide_trace = poutine.trace(guide).get_trace(x)
    parts = []
    for start, size in _sample_blocks(num_samples, x.shape[0], rows):
        replayed = _replay_block(guide_trace, start, size, num_samples, max_plate_nesting)
        with pyro.plate("_importance_samples", size, dim=sample_dim):
            model_trace = poutine.trace(poutine.replay(model, trace=replayed)).get_trace(x)
        model_trace.compute_log_prob()
        part: Union[torch.Tensor, float] = 0.0
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                part = part + 1.0 * site["log_prob"]
        if not isinstance(part, torch.Tensor) or part.dim() < -sample_dim or part.shape[sample_dim] != size:
            raise ValueError(
                "the model's log-density has no importance-sample dim to block over: pass model_rows=0 "
                "(importance_sampled_log_likelihood scores the whole chunk at once then)"
            )
        parts.append(part)
    log_w: torch.Tensor = parts[0] if len(parts) == 1 else torch.cat(parts, dim=sample_dim)
    guide_trace.compute_log_prob()
    for site in guide_trace.nodes.values():
        if site["type"] == "sample":
            log_w = log_w + -1.0 * site["log_prob"]
    return log_w.reshape(num_samples, x.shape[0])


@torch.no_grad()
def importance_sampled_log_likelihood(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    num_samples: int = 5000,
    chunk_size: int = 1000,
    batch_size: int = 10,
    progress: Callable[[int], None] = lambda n: None,
    model_rows: Optional[int] = None,
) -> torch.Tensor:
    """``log p(x) ~= logsumexp_s log w_s - log S`` for every point of ``x``: shape ``(N,)``.

    Samples are drawn ``chunk_size`` at a time for ``batch_size`` points at once (``chunk_size *
    batch_size`` latent samples in memory), combined with a running log-sum-exp. The model scores
    each chunk's samples ``model_rows`` rows (samples x points) at a time, replayed on the guide's
    draws: the same random draws and, term by term, the same sums as scoring the whole chunk at
    once, so the same numbers (bit for bit where the backend computes a matrix product's row the
    same way in a smaller product, as MKL does on a CPU; ``tests/infer/test_evaluation.py``), in
    less time and memory on a CPU.

    Args:
        progress: called with the number of points done after each batch (for a progress bar).
        model_rows: rows the model scores at once: ``None`` (default) is
            :data:`CPU_MODEL_ROWS` times torch's thread count on a CPU and the whole chunk on other
            devices; ``0`` is the whole chunk (the reference computation,
            :func:`log_importance_weights`).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if model_rows is None:
        model_rows = CPU_MODEL_ROWS * torch.get_num_threads() if x.device.type == "cpu" else 0
    if model_rows < 0:
        raise ValueError(f"model_rows must be >= 0 (0: the whole chunk), got {model_rows}")
    results = []
    for b in batches(x, batch_size):
        total: Optional[torch.Tensor] = None
        for start in range(0, num_samples, chunk_size):
            s = min(chunk_size, num_samples - start)
            if model_rows and s * b.shape[0] > model_rows:
                log_w = _log_importance_weights_blocked(model, guide, b, s, model_rows)
            else:
                log_w = log_importance_weights(model, guide, b, s)
            chunk = torch.logsumexp(log_w, dim=0)
            total = chunk if total is None else torch.logaddexp(total, chunk)
        assert total is not None, "num_samples >= 1: at least one chunk"
        results.append(total - math.log(num_samples))
        progress(b.shape[0])
    return torch.cat(results)
