"""vaeflows' training step against a hand-written PyTorch step of exactly the same model, per flow.

For every posterior flow (and none), for the MLP and the gated-conv architecture, on the CPU or a
GPU, two training steps (loss, backward, Adamax step) are timed in alternating blocks on the same
minibatches:

* ``vaeflows``: the step ``vaeflows train`` takes: the loss of
  :func:`vaeflows.infer.experiment.vae_loss`, i.e. Pyro traces of the VAE's ``guide`` and ``model``
  (:func:`~vaeflows.infer.evaluation.reparameterized_elbo`), ``pyro.plate``, Pyro distributions, the
  flow inside a ``TransformedDistribution``;
* ``hand-written``: the same ELBO written out in plain PyTorch around the same modules, as a user
  who wanted no library would write it: ``h = encoder(x)``, ``z_0 = mu + sigma * eps``,
  ``log q0 = sum(-eps^2 / 2 - log sigma) - D log(2 pi) / 2``, the flow's maths applied directly
  (``flow.condition(h)`` called as a function: ``z_K`` and ``sum log|det|`` from one pass, no
  distribution around it), ``log p(z_K)`` and ``log p(x | z_K)`` as formulas.

Both start from the same weights (a deep copy), draw the same noise (the same seed before each
block) and use the same optimizer settings, so they compute the same loss: the script checks that
their losses at a fixed seed agree to float tolerance and refuses to report otherwise. The ratio is
the difference the library's machinery makes (Pyro's tracing, plates and distribution objects),
which is what issue 5 targets (<= 1.05 on a CPU, <= 1.10 on a GPU). The flow maths is shared; that
vaeflows' flow maths is as fast as hand-written maths is shown for planar flows by
``vs_handwritten.py``, where the planar flow, too, is written out by hand.

Peak memory: the most tensor memory held at once during one step beyond what was held before it
(CPU: from the profiler's allocation events; CUDA: ``torch.cuda.max_memory_allocated``).

Results go to ``benchmarks/results/step_time_<device>.md`` (or ``--out``).

Example:
    python benchmarks/step_time.py --archs mlp --flows none,planar --rounds 5
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import pyro
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, machine, package_version, results_header, synchronize, write_markdown  # noqa: E402

from vaeflows.data import load_dataset  # noqa: E402
from vaeflows.distributions import HALF_LOG_2PI  # noqa: E402
from vaeflows.infer.experiment import resolve_device, vae_loss  # noqa: E402
from vaeflows.models import VAE, build_vae  # noqa: E402
from vaeflows.transforms import POSTERIOR_FLOWS  # noqa: E402

__all__ = ["handwritten_loss", "peak_step_memory", "time_steps", "bootstrap_interval", "main"]

HERE = Path(__file__).resolve().parent
TARGETS = {"cpu": 1.05, "cuda": 1.10}


def handwritten_loss(vae: VAE, x: torch.Tensor, beta: float) -> torch.Tensor:
    """Minus the one-sample flow ELBO with KL weight ``beta``, averaged over the batch, in plain
    PyTorch on ``vae``'s modules (Bernoulli likelihood)."""
    h = vae.encoder(x)
    mu, sigma = vae.loc(h), vae.scale(h)
    eps = torch.empty_like(mu).normal_()
    z = mu + sigma * eps
    d = mu.shape[-1]
    log_q = (-0.5 * eps * eps - sigma.log()).sum(-1) - d * HALF_LOG_2PI
    if vae.flow is not None:
        stack = vae.flow.condition(h)
        z_k = stack(z)
        log_q = log_q - stack.log_abs_det_jacobian(z, z_k)
        z = z_k
    log_prior = -0.5 * (z * z).sum(-1) - d * HALF_LOG_2PI
    logits = vae.decoder(z)
    log_lik = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(-1)
    return -(log_lik + beta * (log_prior - log_q)).mean()


def _step(loss: Callable[[torch.Tensor], torch.Tensor], optimizer: torch.optim.Optimizer, x: torch.Tensor) -> None:
    value = loss(x)
    optimizer.zero_grad(set_to_none=True)
    value.backward()
    optimizer.step()


def peak_step_memory(step: Callable[[], None], device: torch.device) -> float:
    """MiB of tensor memory held at the peak of one ``step()``, beyond what was held before it."""
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # Allocations are attributed to the operator that made them (its self memory), frees to
    # "[memory]" events at the time they happen: their running sum in time order is what is held.
    held = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        held += event.self_cpu_memory_usage
        peak = max(peak, held)
    return peak / 2**20


def time_steps(
    arch: str, flow: str, data, device: torch.device, args: argparse.Namespace, log: Callable[[str], None]
) -> dict:
    """Median seconds per step of both variants, their ratio, peak memory and losses at a fixed seed."""
    torch.manual_seed(args.seed)
    model = dict(arch=arch, latent_dim=args.latent_dim, flow=None if flow == "none" else flow, num_flows=args.num_flows)
    vae = build_vae(image_shape=data.image_shape, likelihood=data.likelihood, **model).to(device)
    vae.register_params = False  # as train_vae does
    hand = copy.deepcopy(vae)
    epoch = 1 if args.during_warmup else args.warmup + 1  # beta < 1 in warm-up, then 1
    library_loss = vae_loss(vae, data, args.warmup)
    beta = min(epoch / args.warmup, 1.0) if args.warmup else 1.0
    variants = {
        "hand-written": (lambda x: handwritten_loss(hand, x, beta), hand),
        "vaeflows": (lambda x: library_loss(x, epoch), vae),
    }
    batches = data.train[: args.block * args.batch_size].to(device).split(args.batch_size)
    losses = {}
    with torch.no_grad():
        for name, (loss, _) in variants.items():
            torch.manual_seed(args.seed)
            losses[name] = loss(batches[0]).item()
    difference = abs(losses["vaeflows"] - losses["hand-written"])
    if difference > 1e-4 * abs(losses["hand-written"]):
        raise RuntimeError(f"{arch}/{flow}: the two steps compute different losses {losses}; not timing them")
    optimizers = {name: torch.optim.Adamax(m.parameters(), lr=5e-4, eps=1e-7) for name, (_, m) in variants.items()}
    memory = {}
    for name, (loss, _) in variants.items():
        torch.manual_seed(args.seed)
        _step(loss, optimizers[name], batches[0])  # warm: optimizer state exists
        memory[name] = peak_step_memory(lambda: _step(loss, optimizers[name], batches[0]), device)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    times: Dict[str, List[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(args.rounds + 1):  # round 0 warms up and is dropped
        for name in names if r % 2 == 0 else names[::-1]:
            loss, _ = variants[name]
            torch.manual_seed(args.seed + r)  # the same noise for both in a round
            synchronize(device)
            start = clock()
            for x in batches:
                _step(loss, optimizers[name], x)
            synchronize(device)
            if r:
                times[name].append((clock() - start) / len(batches))
    hand_time, lib_time = statistics.median(times["hand-written"]), statistics.median(times["vaeflows"])
    round_ratios = [a / b for a, b in zip(times["vaeflows"], times["hand-written"])]
    low, high = bootstrap_interval(round_ratios)
    row = {
        "arch": arch,
        "flow": flow,
        "hand_ms": 1000 * hand_time,
        "vaeflows_ms": 1000 * lib_time,
        "ratio": lib_time / hand_time,
        "round_ratio": statistics.median(round_ratios),
        "round_ratio_low": low,
        "round_ratio_high": high,
        "hand_mib": memory["hand-written"],
        "vaeflows_mib": memory["vaeflows"],
        "loss_difference": difference,
        "loss": losses["hand-written"],
    }
    log(
        f"[{arch} {flow}] hand-written {row['hand_ms']:8.2f} ms  vaeflows {row['vaeflows_ms']:8.2f} ms  "
        f"ratio {row['ratio']:.3f} (per round {row['round_ratio']:.3f}, 95% {low:.3f}-{high:.3f})  "
        f"peak {row['hand_mib']:.1f} / {row['vaeflows_mib']:.1f} MiB"
    )
    return row


def bootstrap_interval(values: List[float], level: float = 0.95, resamples: int = 2000) -> Tuple[float, float]:
    """A percentile-bootstrap interval of the median of ``values`` (seeded: the same data, the same
    interval)."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    tail = int((1 - level) / 2 * resamples)
    return medians[tail], medians[resamples - 1 - tail]


def write_results(args: argparse.Namespace, argv: List[str], code: str, device: torch.device, rows: List[dict]) -> str:
    target = TARGETS[device.type]
    title = f"vaeflows' training step vs a hand-written PyTorch step ({device_name(device)})"
    lines = results_header(title, "step_time.py", argv, code) + [
        f"- **Protocol**: statically binarized MNIST, batch {args.batch_size}, z = {args.latent_dim}, "
        f"{args.num_flows} flow steps with each flow's default options, Adamax (lr 5e-4, eps 1e-7), "
        f"KL weight {f'1/{args.warmup} (first warm-up epoch)' if args.during_warmup else '1 (after warm-up)'}. "
        f"{args.rounds} rounds of {args.block} training steps per variant, the two variants in turn on the "
        f"same minibatches and noise, order reversed every round, a warm-up round dropped; {args.clock} "
        "clock; median seconds per step. Ratio: vaeflows over hand-written, per round (the two variants "
        "measured back to back, so that a change in the machine's speed between rounds cancels): its "
        "median, with a 95% bootstrap interval of that median; and the ratio of the two medians. Both "
        "start from the same weights; their losses at one seed agree (largest relative difference in "
        "the table).",
        f"- **Target** (issue 5): ratio at most {target:.2f} on this device, judged on the median per-round ratio.",
        "",
        "| arch | flow | hand-written ms/step | vaeflows ms/step | per-round ratio (95% interval) | "
        "ratio of medians | target | peak MiB hand-written | peak MiB vaeflows | loss difference (relative) |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        met = "met" if row["round_ratio"] <= target else "**missed**"
        lines.append(
            f"| {row['arch']} | {row['flow']} | {row['hand_ms']:.2f} | {row['vaeflows_ms']:.2f} | "
            f"{row['round_ratio']:.3f} ({row['round_ratio_low']:.3f}-{row['round_ratio_high']:.3f}) | "
            f"{row['ratio']:.3f} | {met} | {row['hand_mib']:.1f} | "
            f"{row['vaeflows_mib']:.1f} | {row['loss_difference'] / abs(row['loss']):.1e} |"
        )
    return write_markdown(lines, args.out)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    parser.add_argument("--archs", default="mlp,gated-conv", help="comma-separated: mlp, gated-conv")
    parser.add_argument("--flows", default=",".join(["none", *POSTERIOR_FLOWS]), help="comma-separated")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--latent-dim", type=int, default=64)
    parser.add_argument("--num-flows", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=100, help="KL warm-up epochs (the paper's 100)")
    parser.add_argument(
        "--during-warmup",
        action="store_true",
        help="time the first warm-up epoch (beta = 1/warmup, poutine.scale on the z site); default: beta = 1",
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--block", type=int, default=10, help="training steps per variant per round")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/step_time_<device>.md")
    args = parser.parse_args(argv)
    archs = [a for a in args.archs.split(",") if a]
    flows = [f for f in args.flows.split(",") if f]
    for flow in flows:
        if flow != "none" and flow not in POSTERIOR_FLOWS:
            parser.error(f"--flows: unknown flow {flow!r}; known: none, {', '.join(POSTERIOR_FLOWS)}")
    device = resolve_device(args.device)
    if args.out is None:
        args.out = HERE / "results" / f"step_time_{device.type}.md"
    if args.threads:
        torch.set_num_threads(args.threads)
    code = package_version()
    print(machine())
    data = load_dataset("binarized-mnist", args.data_dir)
    rows: List[dict] = []
    with pyro.validation_enabled(False):
        for arch in archs:
            for flow in flows:
                rows.append(time_steps(arch, flow, data, device, args, print))
                text = write_results(args, argv, code, device, rows)  # after every row: a run cut short keeps them
    print(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
