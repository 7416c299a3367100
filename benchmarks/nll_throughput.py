"""Throughput of the importance-sampled test NLL, vectorized over points and samples vs a per-point loop.

The papers' test NLL takes ``S = 5000`` importance samples for each of the 10,000 MNIST test images:
``log p(x) ~= logsumexp_s (log p(x, z_s) - log q(z_s | x)) - log S``. vaeflows'
:func:`~vaeflows.infer.evaluation.importance_sampled_log_likelihood` draws ``chunk_size`` samples for
``batch_size`` points at once (one Pyro trace of the guide and of the model per chunk, the samples
in a plate left of the data plate) and combines chunks with a running log-sum-exp. The baseline is
the per-point loop of the reference code: one test point at a time, its samples in chunks
(``batch_size = 1``, same chunk size).

Both run on the same model (the MLP or gated-conv VAE of ``vaeflows train``, with the chosen flow;
initialized, or the best model of ``--run``) and the same test points; the table gives test points per
second, their ratio, the time the 10,000 test images would take, and the NLLs of the two runs
(equal up to Monte Carlo error: different random draws).

Results go to ``benchmarks/results/nll_throughput_<device>.md`` (or ``--out``).

Example:
    python benchmarks/nll_throughput.py --flow sylvester-orthogonal --points 20 --samples 5000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import List, Optional, Tuple

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, machine, package_version, results_header, synchronize, write_markdown  # noqa: E402

from vaeflows.data import load_dataset  # noqa: E402
from vaeflows.infer.evaluation import CPU_MODEL_ROWS, importance_sampled_log_likelihood  # noqa: E402
from vaeflows.infer.experiment import load_run, resolve_device  # noqa: E402
from vaeflows.models import build_vae  # noqa: E402

__all__ = ["main"]

HERE = Path(__file__).resolve().parent
MNIST_TEST_IMAGES = 10_000


def measure(
    vae, x: torch.Tensor, samples: int, chunk_size: int, batch_size: int, model_rows: Optional[int] = None
) -> dict:
    """Seconds, mean NLL and the per-point values of ``importance_sampled_log_likelihood`` on ``x``."""
    device = x.device
    synchronize(device)
    start = time.perf_counter()
    with pyro.validation_enabled(False):
        log_px = importance_sampled_log_likelihood(
            vae.model, vae.guide, x, samples, chunk_size=chunk_size, batch_size=batch_size, model_rows=model_rows
        )
    synchronize(device)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "points_per_second": x.shape[0] / seconds,
        "nll": -log_px.mean().item(),
        "values": log_px,
    }


def before_after(vae, x: torch.Tensor, args) -> Tuple[dict, dict]:
    """The reference (each chunk scored at once, ``model_rows=0``) and the default path, timed in
    turn ``--repeats`` times from the same seed (median seconds); raises unless both give the same
    numbers bit for bit."""
    runs: dict = {0: [], None: []}
    for repeat in range(args.repeats):
        for rows in (0, None) if repeat % 2 == 0 else (None, 0):
            torch.manual_seed(args.seed)
            runs[rows].append(measure(vae, x, args.samples, args.chunk_size, args.batch_size, rows))
    for run in runs[0] + runs[None]:
        if not torch.equal(run["values"], runs[0][0]["values"]):
            raise RuntimeError("the row-blocked NLL differs from the reference computation: not the same numbers")
    before, after = (
        {**runs[rows][0], "seconds": statistics.median(r["seconds"] for r in runs[rows])} for rows in (0, None)
    )
    for row in (before, after):
        row["points_per_second"] = x.shape[0] / row["seconds"]
    return before, after


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    parser.add_argument("--run", type=Path, help="a run directory: evaluate its best model (default: a fresh one)")
    parser.add_argument("--arch", default="mlp", choices=["mlp", "gated-conv"])
    parser.add_argument("--flow", default="sylvester-orthogonal")
    parser.add_argument("--latent-dim", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--points", type=int, default=20, help="test points timed by each method")
    parser.add_argument("--samples", type=int, default=5000, help="importance samples per point (S)")
    parser.add_argument("--chunk-size", type=int, default=1000, help="samples drawn at once")
    parser.add_argument("--batch-size", type=int, default=10, help="points at once (vectorized method)")
    parser.add_argument("--loop-samples", type=int, default=50, help="samples timed one at a time")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the before/after pair, interleaved")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or HERE / "results" / f"nll_throughput_{device.type}.md"
    code = package_version()
    print(machine())
    if args.run:
        vae, config, data = load_run(args.run, str(device))
        described = f"the best model of `{args.run}` ({config['model']})"
    else:
        data = load_dataset("binarized-mnist", args.data_dir)
        torch.manual_seed(args.seed)
        flow = None if args.flow == "none" else args.flow
        vae = build_vae(args.arch, data.image_shape, data.likelihood, args.latent_dim, flow, 4).to(device).eval()
        described = f"a freshly initialized {args.arch} VAE, z = {args.latent_dim}, flow {args.flow} (4 steps)"
    x = data.test[: args.points].to(device)
    measure(vae, x[:1], min(args.samples, args.chunk_size), args.chunk_size, 1)  # warm up
    reference, vectorized = before_after(vae, x, args)
    torch.manual_seed(args.seed)
    loop = measure(vae, x, args.samples, args.chunk_size, 1)
    # One sample at a time for one point, scaled to S samples (a full run would take hours).
    torch.manual_seed(args.seed)
    single = measure(vae, x[:1], args.loop_samples, 1, 1)
    single["points_per_second"] *= args.loop_samples / args.samples
    single["nll"] = float("nan")
    rows = [
        (
            f"before: vectorized, each chunk scored at once (`model_rows=0`, the reference; "
            f"{args.batch_size} points x {args.chunk_size} samples)",
            reference,
        ),
        (
            f"after: vectorized, the model replayed on row blocks (the default, "
            f"{CPU_MODEL_ROWS * torch.get_num_threads() if device.type == 'cpu' else 'whole chunk'} rows)",
            vectorized,
        ),
        (f"per-point loop (1 point x {args.chunk_size} samples at once)", loop),
        (f"per-point, per-sample loop (1 x 1; timed on {args.loop_samples} samples of one point, scaled to S)", single),
    ]
    lines = results_header(
        f"Importance-sampled NLL throughput ({device_name(device)})", "nll_throughput.py", argv, code
    ) + [
        f"- **Protocol**: {described}; the first {args.points} statically binarized MNIST test images, "
        f"S = {args.samples} importance samples each, wall clock after a warm-up; "
        f"before and after timed in turn {args.repeats} times (median), the per-point loops once. "
        "The machine is shared (2 cores, other jobs running): read the ratio, not the absolute figures.",
        "",
        "| method | test points / s | seconds for 10,000 test images | mean NLL (nats) |",
        "|---|---:|---:|---:|",
    ]
    for name, row in rows:
        lines.append(
            f"| {name} | {row['points_per_second']:.2f} | {MNIST_TEST_IMAGES / row['points_per_second']:.0f} | "
            + ("n/a |" if row["nll"] != row["nll"] else f"{row['nll']:.2f} |")
        )
    lines += [
        "",
        f"After over before: **{vectorized['points_per_second'] / reference['points_per_second']:.2f}x** the "
        f"points per second (median of {args.repeats} interleaved runs each, same seed), with the same "
        "numbers bit for bit (checked here for every run: the benchmark stops otherwise).",
        "",
        "Vectorized (after) over the per-point loop: "
        f"**{vectorized['points_per_second'] / loop['points_per_second']:.2f}x** "
        f"the throughput; over the per-point, per-sample loop: "
        f"**{vectorized['points_per_second'] / single['points_per_second']:.0f}x**.",
    ]
    print(write_markdown(lines, out))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
