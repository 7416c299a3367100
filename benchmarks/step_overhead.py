"""Where vaeflows' per-step overhead over hand-written PyTorch comes from, and what fixes would buy.

``vs_handwritten.py`` measures that a vaeflows training step costs more than the hand-written one.
This script splits the difference by timing, in alternating blocks of training steps on the same
minibatches (loss, backward, Adamax step), variants that each remove one source of overhead while
computing the same loss (checked: same value at the same seed):

* ``hand-written``: ``benchmarks/handwritten_vae.py``;
* ``vaeflows``: the loss ``train_vae`` trains with (``vae_loss``: Pyro's
  ``Trace_ELBO.differentiable_loss`` on the VAE's ``model``/``guide``);
* ``trace ELBO without syncs``: the same Pyro traces (guide traced, model replayed on it), the loss
  taken as ``model_trace.log_prob_sum() - guide_trace.log_prob_sum()``. ``Trace_ELBO`` also builds a
  float copy of the ELBO with ``.item()`` on every site plus a NaN check, five host syncs per step
  that cost little on a CPU and stall a GPU; valid because every vaeflows posterior is
  reparameterized (no score-function terms);
* ``torch.distributions, no Pyro tracing``: the VAE's own ``posterior``, ``prior``, ``likelihood``
  and ``decoder`` scored directly, ``-(log p(x|z) + beta (log p(z) - log q(z|x)))``;
* for ``planar``, each of those with the planar maths written elementwise (``(w * z).sum(-1)``) in
  place of Pyro's ``ConditionedPlanar``, which uses a batched ``matmul`` with ``unsqueeze``/``squeeze``
  for every dot product (patched into Pyro's class for the duration of those blocks only).

A second section times the H-SNF ``Q`` construction (``vaeflows.transforms.sylvester.householder_matrix``,
which materializes every reflection as a dense ``D x D`` matrix and multiplies them) against the same
product built by rank-one updates ``Q <- Q - 2 v (v^T Q)``, forward and backward, at the shapes of
a training step.

Nothing here changes vaeflows: the variants are candidate fixes, measured. Results go to
``benchmarks/results/step_overhead.md``.

Example:
    python benchmarks/step_overhead.py --flows none,planar --latent-dim 40
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pyro
import torch
import torch.nn.functional as F
from pyro import poutine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, machine, package_version, write_markdown  # noqa: E402
from handwritten_vae import HandwrittenVAE  # noqa: E402

from vaeflows.data import load_dataset  # noqa: E402
from vaeflows.infer.experiment import vae_loss  # noqa: E402
from vaeflows.infer.training import kl_beta  # noqa: E402
from vaeflows.models import build_vae  # noqa: E402
from vaeflows.transforms.sylvester import householder_matrix  # noqa: E402

__all__ = ["main"]

HERE = Path(__file__).resolve().parent
_planar_module = importlib.import_module("pyro.distributions.transforms.planar")
_PYRO_PLANAR_CALL = _planar_module.ConditionedPlanar._call


def _elementwise_planar_call(self, x: torch.Tensor) -> torch.Tensor:
    """Pyro's ``ConditionedPlanar._call`` with dot products as ``(a * b).sum(-1)``: same maths."""
    bias, u, w = self._params() if callable(self._params) else self._params
    wu = (w * u).sum(-1, keepdim=True)
    u_hat = u + (F.softplus(wu) - 1 - wu) * w / (w * w).sum(-1, keepdim=True)
    act = torch.tanh((w * x).sum(-1, keepdim=True) + bias)
    psi = (1 - act * act) * w
    self._cached_logDetJ = torch.log(torch.abs(1 + (psi * u_hat).sum(-1)))
    return x + u_hat * act


def _trace_loss(vae, warmup: int) -> Callable[[torch.Tensor, int], torch.Tensor]:
    def loss(batch: torch.Tensor, epoch: int) -> torch.Tensor:
        beta = kl_beta(epoch, warmup)
        with pyro.validation_enabled(False):
            guide_trace = poutine.trace(vae.guide).get_trace(batch, beta)
            model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(batch, beta)
            return -(model_trace.log_prob_sum() - guide_trace.log_prob_sum()) / batch.shape[0]

    return loss


def _direct_loss(vae, warmup: int) -> Callable[[torch.Tensor, int], torch.Tensor]:
    def loss(batch: torch.Tensor, epoch: int) -> torch.Tensor:
        beta = kl_beta(epoch, warmup)
        with pyro.validation_enabled(False):
            q = vae.posterior(batch)
            z = q.rsample()
            log_q = q.log_prob(z)
            log_prior = vae.prior(batch).log_prob(z)
            log_lik = vae.likelihood(vae.decoder(z)).log_prob(batch)
            return -(log_lik + beta * (log_prior - log_q)).mean()

    return loss


def _variants(args: argparse.Namespace, flow: str, data) -> Dict[str, dict]:
    """name -> {"loss": loss(i) on minibatch i, "params", "planar": patch the planar maths}."""
    train = data.train
    flat = train.flatten(1)
    epoch = 1
    beta = kl_beta(epoch, args.warmup)

    def vae():
        torch.manual_seed(args.seed)
        model = build_vae(
            image_shape=data.image_shape, likelihood=data.likelihood, arch="mlp", latent_dim=args.latent_dim,
            flow=None if flow == "none" else flow, num_flows=args.num_flows,
        )
        if hasattr(model, "register_params"):
            model.register_params = False  # as train_vae does
        return model

    torch.manual_seed(args.seed)
    hand = HandwrittenVAE(args.latent_dim, flow, args.num_flows)
    out = {"hand-written": {"loss": lambda i: hand.loss(flat[i * 100 : (i + 1) * 100], beta),
                            "params": list(hand.parameters()), "planar": False}}
    makers = {
        "vaeflows (Trace_ELBO)": lambda v: vae_loss(v, data, args.warmup),
        "trace ELBO without syncs": lambda v: _trace_loss(v, args.warmup),
        "torch.distributions, no Pyro tracing": lambda v: _direct_loss(v, args.warmup),
    }
    for patch in ([False, True] if flow == "planar" else [False]):
        for name, make in makers.items():
            model = vae()
            loss = make(model)
            label = name + (" + elementwise planar" if patch else "")
            out[label] = {
                "loss": (lambda loss: lambda i: loss(train[i * 100 : (i + 1) * 100], epoch))(loss),
                "params": list(model.parameters()),
                "planar": patch,
            }
    return out


def _with_planar(patch: bool):
    class _Patch:
        def __enter__(self):
            if patch:
                _planar_module.ConditionedPlanar._call = _elementwise_planar_call

        def __exit__(self, *exc):
            _planar_module.ConditionedPlanar._call = _PYRO_PLANAR_CALL

    return _Patch()


def time_variants(args: argparse.Namespace, flow: str, data, log) -> Dict[str, dict]:
    variants = _variants(args, flow, data)
    values = {}
    for name, v in variants.items():  # same objective: same loss at the same seed and weights
        with torch.no_grad(), _with_planar(v["planar"]):
            torch.manual_seed(123)
            values[name] = v["loss"](0).item()
    optimizers = {name: torch.optim.Adamax(v["params"], lr=5e-4, eps=1e-7) for name, v in variants.items()}
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    times: Dict[str, List[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(args.rounds + 1):
        order = names if r % 2 == 0 else names[::-1]
        i0 = (r * args.block) % 400
        for name in order:
            v, opt = variants[name], optimizers[name]
            with _with_planar(v["planar"]):
                start = clock()
                for i in range(i0, i0 + args.block):
                    value = v["loss"](i)
                    opt.zero_grad(set_to_none=True)
                    value.backward()
                    opt.step()
                elapsed = (clock() - start) / args.block
            if r:
                times[name].append(elapsed)
    base = statistics.median(times["hand-written"])
    rows = {}
    for name in names:
        median = statistics.median(times[name])
        rows[name] = {
            "ms": 1000 * median,
            "ratio": median / base,
            "round_ratio": statistics.median(a / b for a, b in zip(times[name], times["hand-written"])),
            "loss": values[name],
        }
        log(f"[{flow}] {name:55s} {1000 * median:7.2f} ms/step  x{median / base:.3f}")
    return rows


def time_householder(args: argparse.Namespace, log) -> Dict[str, float]:
    """Dense-reflection ``householder_matrix`` vs rank-one updates, forward + backward."""

    def rank_one(v: torch.Tensor) -> torch.Tensor:
        v = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)
        d = v.shape[-1]
        q = torch.eye(d, dtype=v.dtype, device=v.device).expand(*v.shape[:-2], d, d)
        for i in range(v.shape[-2]):
            vi = v[..., i, :]
            q = q - 2 * vi.unsqueeze(-1) * (vi.unsqueeze(-2) @ q)  # H_i q
        return q

    shape = (100, args.num_flows, args.num_householder, args.latent_dim)
    torch.manual_seed(0)
    v = torch.randn(shape, requires_grad=True)
    error = (householder_matrix(v) - rank_one(v)).abs().max().item()
    fns = {"dense reflections (vaeflows)": householder_matrix, "rank-one updates": rank_one}
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for r in range(args.rounds + 1):
        for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            start = time.perf_counter()
            for _ in range(5):
                fns[name](v).sum().backward()
            if r:
                times[name].append((time.perf_counter() - start) / 5)
    out = {k: 1000 * statistics.median(t) for k, t in times.items()}
    out["max_abs_difference"] = error
    out["shape"] = shape
    log(f"[householder] {out}")
    return out


def write_results(args, argv, code, tables, householder, path: Path) -> str:
    code_now = package_version()
    if code_now != code:
        code += f" when the run started ({code_now} when it ended)"
    lines = [
        "# Where vaeflows' per-step overhead comes from",
        "",
        f"Written by `benchmarks/step_overhead.py` on {time.strftime('%Y-%m-%d %H:%M %Z')}.",
        "",
        f"- **Command**: `{command_line('step_overhead.py', argv)}`",
        f"- **Code**: {code}.",
        f"- **Machine**: {machine()}; shared with other work, so read the ratios.",
        f"- **Protocol**: MLP VAE of `vaeflows train --arch mlp`, z = {args.latent_dim}, {args.num_flows} flow "
        f"steps, batch 100, Adamax; {args.rounds} rounds of {args.block} training steps (loss, backward, "
        f"optimizer step) per variant, variants in turn on the same minibatches, order reversed every "
        f"round, first round dropped; {args.clock} time; median per step. Ratio: to the hand-written "
        "step (ratio of medians, and median of the per-round ratios).",
        "",
        "| flow | variant | ms/step | ratio to hand-written | median per-round ratio | loss at a fixed seed |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for flow, rows in tables.items():
        for name, row in rows.items():
            lines.append(
                f"| {flow} | {name} | {row['ms']:.2f} | {row['ratio']:.3f} | {row['round_ratio']:.3f} | "
                f"{row['loss']:.4f} |"
            )
    lines += [
        "",
        "Equal losses at a fixed seed show that every variant computes the same objective on the same "
        "weights; only the machinery around it differs.",
    ]
    if householder:
        lines += [
            "",
            "## H-SNF: building Q",
            "",
            f"`householder_matrix` on reflection vectors of shape {householder['shape']} (batch, steps, "
            "reflections, z), then `.sum().backward()`; median ms per call:",
            "",
            "| construction | ms per forward + backward |",
            "|---|---:|",
            f"| dense reflections (vaeflows: `eye - 2 v v^T` for every reflection, then matmuls) | "
            f"{householder['dense reflections (vaeflows)']:.2f} |",
            f"| rank-one updates `Q <- Q - 2 v (v^T Q)` | {householder['rank-one updates']:.2f} |",
            "",
            f"Largest difference between the two Q: {householder['max_abs_difference']:.1e}.",
        ]
    return write_markdown(lines, path)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="/work/shared/data")
    parser.add_argument("--flows", default="none,planar", help="comma-separated: none, planar")
    parser.add_argument("--latent-dim", type=int, default=40)
    parser.add_argument("--num-flows", type=int, default=4)
    parser.add_argument("--num-householder", type=int, default=8, help="H-SNF reflections per step")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--block", type=int, default=20)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-householder", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "step_overhead.md")
    args = parser.parse_args(argv)
    flows = [f for f in args.flows.split(",") if f]
    for flow in flows:
        if flow not in ("none", "planar"):
            parser.error(f"--flows: {flow!r} has no hand-written counterpart (none, planar)")
    if args.threads:
        torch.set_num_threads(args.threads)
    code = package_version()
    print(machine())
    data = load_dataset("binarized-mnist", args.data_dir)
    tables = {flow: time_variants(args, flow, data, print) for flow in flows}
    householder = None if args.skip_householder else time_householder(args, print)
    text = write_results(args, argv, code, tables, householder, args.out)
    print(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
