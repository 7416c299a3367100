"""Seconds per epoch of the paper's protocol next to what the arithmetic alone would allow.

For the gated-conv VAE with an H-SNF posterior (van den Berg et al. 2018: z = 64, 4 steps, batch
100, 50,000 training and 10,000 validation images of statically binarized MNIST), this script
measures on one device:

* the floating-point operations of one training step (forward and backward; counted by
  ``torch.utils.flop_counter.FlopCounterMode``, which counts matmuls and convolutions, the bulk);
* the device's matmul rate (float32, square matrices, best of several runs);
* the seconds of vaeflows' training step (the loss ``vaeflows train`` uses, backward, Adamax), median
  of blocks of steps, and of one validation pass over the validation set.

The arithmetic limit of a step is its FLOPs over the matmul rate; convolutions rarely reach the
matmul rate, so the limit is optimistic, and the gap says how much of a step is not arithmetic
(kernel launches, Python, memory-bound elementwise work). Projected seconds per epoch = steps per
epoch x step time + validation pass.

Results go to ``benchmarks/results/epoch_throughput_<device>.md`` (or ``--out``).

Example:
    python benchmarks/epoch_throughput.py --device cuda
    python benchmarks/epoch_throughput.py --device cpu --steps 6 --block 2   # slow: about a second a step
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import List, Optional

import pyro
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, package_version, results_header, synchronize, write_markdown  # noqa: E402

from vaeflows.data import load_dataset  # noqa: E402
from vaeflows.infer.evaluation import elbo_per_point  # noqa: E402
from vaeflows.infer.experiment import resolve_device, vae_loss  # noqa: E402
from vaeflows.models import build_vae  # noqa: E402

__all__ = ["matmul_rate", "main"]

HERE = Path(__file__).resolve().parent


def matmul_rate(device: torch.device, size: int, repeats: int = 5) -> float:
    """Float32 FLOP/s of a ``size x size`` matmul on ``device`` (best of ``repeats``)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    parser.add_argument("--arch", default="gated-conv", choices=["mlp", "gated-conv"])
    parser.add_argument("--flow", default="sylvester-householder")
    parser.add_argument("--latent-dim", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=100, help="training steps timed")
    parser.add_argument("--block", type=int, default=20, help="steps per timed block")
    parser.add_argument("--matmul-size", type=int, help="default 8192 on a GPU, 2048 on a CPU")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.steps < args.block or args.block < 1:
        parser.error("--steps must be at least --block, and --block at least 1")
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or HERE / "results" / f"epoch_throughput_{device.type}.md"
    code = package_version()
    data = load_dataset("binarized-mnist", args.data_dir)
    torch.manual_seed(args.seed)
    flow = None if args.flow == "none" else args.flow
    vae = build_vae(args.arch, data.image_shape, data.likelihood, args.latent_dim, flow, 4).to(device)
    vae.register_params = False
    loss = vae_loss(vae, data, warmup=0)
    optimizer = torch.optim.Adamax(vae.parameters(), lr=5e-4, eps=1e-7)
    train = data.train[: args.block * args.batch_size].to(device).split(args.batch_size)
    valid = data.valid.to(device)

    def step(x: torch.Tensor) -> None:
        value = loss(x, 1)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()

    with pyro.validation_enabled(False):
        step(train[0])  # warm-up (and optimizer state)
        with FlopCounterMode(display=False) as counter:
            value = loss(train[0], 1)
            value.backward()
        flops = counter.get_total_flops()
        optimizer.zero_grad(set_to_none=True)
        blocks = []
        for _ in range(args.steps // args.block):
            synchronize(device)
            start = time.perf_counter()
            for x in train:
                step(x)
            synchronize(device)
            blocks.append((time.perf_counter() - start) / len(train))
        synchronize(device)
        start = time.perf_counter()
        elbo_per_point(vae.model, vae.guide, valid).mean().item()
        valid_seconds = time.perf_counter() - start
    step_seconds = statistics.median(blocks)
    matmul_size = args.matmul_size or (8192 if device.type == "cuda" else 2048)
    rate = matmul_rate(device, matmul_size)
    limit = flops / rate
    steps_per_epoch = len(data.train) // args.batch_size
    epoch = steps_per_epoch * step_seconds + valid_seconds
    epoch_limit = steps_per_epoch * limit
    title = f"Seconds per epoch of the {args.arch} {args.flow} protocol against its arithmetic ({device_name(device)})"
    lines = results_header(title, "epoch_throughput.py", argv, code) + [
        f"- **Protocol**: {args.arch} VAE, z = {args.latent_dim}, {args.flow} (4 steps), batch {args.batch_size}, "
        f"Adamax; {len(data.train)} training images ({steps_per_epoch} steps per epoch), {len(valid)} "
        f"validation images; {len(blocks)} blocks of {args.block} training steps, median per step; one "
        "validation pass (one-sample ELBO of every validation image).",
        "",
        "| quantity | value |",
        "|---|---:|",
        f"| FLOPs per training step (forward + backward) | {flops / 1e9:.1f} GFLOP |",
        f"| matmul rate (float32, {matmul_size}^2) | {rate / 1e12:.3f} TFLOP/s |",
        f"| arithmetic limit per step (FLOPs / matmul rate) | {1000 * limit:.2f} ms |",
        f"| measured step | {1000 * step_seconds:.2f} ms |",
        f"| measured / limit | {step_seconds / limit:.1f}x |",
        f"| validation pass | {valid_seconds:.2f} s |",
        f"| projected seconds per epoch (steps + validation) | {epoch:.1f} s |",
        f"| arithmetic limit per epoch (training steps only) | {epoch_limit:.1f} s |",
        "",
        "The limit takes every FLOP at the matmul rate; convolutions, elementwise work and the "
        "optimizer's per-parameter updates run below it, so a ratio near 1 is out of reach and the "
        "ratio bounds what the machinery around the arithmetic can cost.",
    ]
    print(write_markdown(lines, out))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
