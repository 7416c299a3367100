"""ReZero couplings, learnable bases and Glow's learned prior against the plain flows, at equal budgets.

Protocol (one process; within a seed the variants train in lockstep, one step of each in turn on
the same minibatch, so that the load of a shared machine falls on all alike; Adam, float32,
``torch.set_num_threads(--threads)``):

* 2-D toy sets (moons, 8gaussians, checkerboard, rings; 20000 generated training points, 2000 test
  points): ``realnvp((2,), num_steps=--toy-steps-per-flow, hidden=--toy-hidden)`` as it is
  (``baseline``), with ReZero couplings (``rezero``), with a ``K = 8`` Gaussian-mixture base
  (``mixture``) and with a MADE Gaussian base (``made``); ``--toy-iters`` steps of batch
  ``--batch`` for every variant, ``--seeds`` seeds;
* MNIST (8-bit, uniform dequantization, bits/dim with the logit Jacobian included):
  ``glow((1, 28, 28), num_steps=--mnist-steps-per-level, hidden=--mnist-hidden, num_levels=2)`` as
  it is, with ReZero, with the learned split and top priors (``learned-prior``), with the mixture
  and the MADE base (hidden 784); ``--mnist-iters`` steps of batch ``--mnist-batch`` on the first
  ``--mnist-train`` training images, scored on the first ``--mnist-test`` test images (the same
  dequantization noise for every variant);
* metrics: the final test NLL (nats; MNIST: bits/dim), mean over seeds; the number of steps each
  variant needs to reach the baseline's final test NLL (evaluated every ``--eval-every`` steps;
  "not reached" when it does not within the budget), mean over the seeds that reach it; seconds
  per step relative to the baseline (lockstep, same process: a rough ratio on a shared machine).

    python benchmarks/rezero_bases.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA_DIR, package_version, results_header, write_markdown  # noqa: E402

from vaeflows.density import (  # noqa: E402
    TOY_DATASETS,
    UniformDequantizer,
    bits_per_dim,
    density_flow,
    dequantized_log_likelihood,
    load_mnist_8bit,
    toy_data,
)

HERE = Path(__file__).resolve().parent
TOY_VARIANTS: Dict[str, dict] = {
    "baseline": {},
    "rezero": {"rezero": True},
    "mixture": {"base": "mixture", "base_options": {"num_components": 8}},
    "made": {"base": "made"},
}
MNIST_VARIANTS: Dict[str, dict] = {
    "baseline": {},
    "rezero": {"rezero": True},
    "learned-prior": {"learned_prior": True},
    "mixture": {"base": "mixture", "base_options": {"num_components": 8}},
    "made": {"base": "made", "base_options": {"hidden": 784}},
}


def lockstep(models, score, batches, evaluate, eval_every: int, lr: float) -> Dict[str, dict]:
    """Train every model one step in turn on each batch; evaluate every ``eval_every`` steps."""
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=lr) for name, m in models.items()}
    curves: Dict[str, list] = {name: [] for name in models}
    seconds = {name: 0.0 for name in models}
    for step, batch in enumerate(batches, start=1):
        for name, model in models.items():
            start = time.perf_counter()
            loss = -score(model, batch).mean()
            optimizers[name].zero_grad()
            loss.backward()
            optimizers[name].step()
            seconds[name] += time.perf_counter() - start
        if step % eval_every == 0 or step == len(batches):
            for name, model in models.items():
                curves[name].append((step, evaluate(model)))
    return {name: {"curve": curves[name], "seconds": seconds[name] / len(batches)} for name in models}


def steps_to(curve, target: float) -> Optional[int]:
    return next((step for step, value in curve if value <= target), None)


def summarize(results: List[Dict[str, dict]], variants, baseline: str = "baseline") -> List[dict]:
    """Per variant: the final value (seed mean), steps to the baseline's final value, time ratio."""
    finals = {v: [r[v]["curve"][-1][1] for r in results] for v in variants}
    target = statistics.mean(finals[baseline])
    rows = []
    for v in variants:
        reached = [steps_to(r[v]["curve"], target) for r in results]
        hits = [s for s in reached if s is not None]
        ratio = statistics.median(r[v]["seconds"] / r[baseline]["seconds"] for r in results)
        rows.append(
            {
                "variant": v,
                "final": statistics.mean(finals[v]),
                "spread": (min(finals[v]), max(finals[v])),
                "steps": (statistics.mean(hits) if hits else None, len(hits), len(reached)),
                "time": ratio,
            }
        )
    return rows


def table(rows: List[dict], unit: str, budget: int) -> List[str]:
    lines = [
        f"| variant | test {unit} (mean) | min..max over seeds | steps to the baseline's final {unit} | "
        "s/step vs baseline |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        mean_steps, hit, total = row["steps"]
        steps = f"{mean_steps:.0f} ({hit}/{total} seeds)" if hit else f"not reached in {budget} (0/{total})"
        lo, hi = row["spread"]
        lines.append(f"| {row['variant']} | {row['final']:.3f} | {lo:.3f}..{hi:.3f} | {steps} | {row['time']:.2f}x |")
    return lines


def run_toy(args, dataset: str, seed: int) -> Dict[str, dict]:
    train = toy_data(dataset, 20000, seed=100 + seed)
    test = toy_data(dataset, 2000, seed=999)
    models = {}
    for name in args.toy_variants:
        torch.manual_seed(seed)  # every variant from the same initial conditioners where they agree
        options = {"num_steps": args.toy_steps_per_flow, "hidden": args.toy_hidden, **TOY_VARIANTS[name]}
        models[name] = density_flow("realnvp", (2,), **options)
    order = torch.randint(len(train), (args.toy_iters, args.batch), generator=torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def evaluate(model) -> float:
        return -float(model.log_prob(test).mean())

    return lockstep(models, lambda m, b: m.log_prob(b), [train[i] for i in order], evaluate, args.eval_every, args.lr)


def run_mnist(args, seed: int) -> Dict[str, dict]:
    data = load_mnist_8bit(args.data_dir, num_train=args.mnist_train)
    train, test = data.train, data.test[: args.mnist_test]
    dims = train[0].numel()
    deq = UniformDequantizer()
    models = {}
    for name in args.mnist_variants:
        torch.manual_seed(seed)
        options = {"num_steps": args.mnist_steps_per_level, "hidden": args.mnist_hidden, "num_levels": 2}
        model = density_flow("glow", data.event_shape, **options, **MNIST_VARIANTS[name])
        model.check_values = False
        models[name] = model
    order = torch.randint(
        len(train), (args.mnist_iters, args.mnist_batch), generator=torch.Generator().manual_seed(seed)
    )

    def score(model, batch):
        return dequantized_log_likelihood(model, batch, deq)

    @torch.no_grad()
    def evaluate(model) -> float:
        with torch.random.fork_rng():
            torch.manual_seed(12345)  # the same dequantization noise for every variant and evaluation
            total = sum(score(model, chunk).sum() for chunk in test.split(100))
        return float(bits_per_dim(total / len(test), dims))

    # The first batch initializes ActNorm; every variant sees the same one.
    return lockstep(models, score, [train[i] for i in order], evaluate, args.eval_every, args.lr)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=DATA_DIR)
    parser.add_argument("--datasets", default=",".join(TOY_DATASETS))
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--toy-variants", default=",".join(TOY_VARIANTS))
    parser.add_argument("--toy-iters", type=int, default=300)
    parser.add_argument("--toy-steps-per-flow", type=int, default=6)
    parser.add_argument("--toy-hidden", type=int, default=32)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--mnist-variants", default=",".join(MNIST_VARIANTS))
    parser.add_argument("--mnist-iters", type=int, default=200, help="0: no MNIST part")
    parser.add_argument("--mnist-seeds", type=int, default=1)
    parser.add_argument("--mnist-steps-per-level", type=int, default=2)
    parser.add_argument("--mnist-hidden", type=int, default=32)
    parser.add_argument("--mnist-batch", type=int, default=32)
    parser.add_argument("--mnist-train", type=int, default=10000)
    parser.add_argument("--mnist-test", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    parser.add_argument("--results", type=Path, help="markdown file (default benchmarks/results/rezero_bases_cpu.md)")
    args = parser.parse_args(argv)
    args.datasets = [d for d in args.datasets.split(",") if d]
    args.toy_variants = [v for v in args.toy_variants.split(",") if v]
    args.mnist_variants = [v for v in args.mnist_variants.split(",") if v]
    for given, known, flag in (
        (args.datasets, TOY_DATASETS, "--datasets"),
        (args.toy_variants, TOY_VARIANTS, "--toy-variants"),
        (args.mnist_variants, MNIST_VARIANTS, "--mnist-variants"),
    ):
        unknown = [g for g in given if g not in known]
        if unknown:
            parser.error(f"{flag}: unknown {', '.join(unknown)}; known: {', '.join(known)}")
    for variants, flag in ((args.toy_variants, "--toy-variants"), (args.mnist_variants, "--mnist-variants")):
        if "baseline" not in variants:
            parser.error(f"{flag} must include baseline (the reference of the steps-to-target column)")
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    title = "ReZero couplings, learnable bases and Glow's learned prior (CPU)"
    lines = results_header(title, "rezero_bases.py", argv, package_version())
    lines += [
        "",
        "Protocol: see the docstring of `benchmarks/rezero_bases.py`. "
        "The machine was shared with other jobs while this ran: the seconds-per-step ratios are rough.",
        "",
        f"## 2-D toy sets: RealNVP, {args.toy_steps_per_flow} couplings of width {args.toy_hidden}, "
        f"{args.toy_iters} steps of batch {args.batch}, {args.seeds} seeds; test NLL in nats",
    ]
    for dataset in args.datasets:
        results = [run_toy(args, dataset, seed) for seed in range(args.seeds)]
        rows = summarize(results, args.toy_variants)
        lines += ["", f"### {dataset}", "", *table(rows, "NLL", args.toy_iters)]
        print(f"{dataset}: " + ", ".join(f"{r['variant']} {r['final']:.3f}" for r in rows), flush=True)
    if args.mnist_iters:
        results = [run_mnist(args, seed) for seed in range(args.mnist_seeds)]
        rows = summarize(results, args.mnist_variants)
        lines += [
            "",
            f"## MNIST: Glow, 2 levels of {args.mnist_steps_per_level} steps, width {args.mnist_hidden}, "
            f"{args.mnist_iters} steps of batch {args.mnist_batch} ({args.mnist_train} training images), "
            f"{args.mnist_seeds} seed(s); bits/dim on {args.mnist_test} test images",
            "",
            *table(rows, "bits/dim", args.mnist_iters),
        ]
        print("mnist: " + ", ".join(f"{r['variant']} {r['final']:.3f}" for r in rows), flush=True)
    lines += ["", f"Total run time: {time.perf_counter() - started:.0f} s."]
    write_markdown(lines, args.results or HERE / "results" / "rezero_bases_cpu.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
