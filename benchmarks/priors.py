"""Learnable priors side by side: ``--prior standard``, ``vamp`` and ``flow`` at one step budget.

Each prior trains the same VAE (``mlp``, a diagonal Gaussian posterior, the same seed, batch 100,
Adamax 5e-4, KL warm-up) for the same number of epochs, so the same number of optimizer steps, with
:func:`vaeflows.infer.experiment.train_vae`; then its test -ELBO (one sample per test point, best
validation epoch) and importance-sampled test NLL (``--nll-samples`` per point, every test image)
go into ``benchmarks/results/priors_cpu.md`` with the seconds per epoch and their ratio to the
standard prior's, measured in the same invocation (the priors run one after the other on a shared
machine: the ratios are rough).

Example:
    python benchmarks/priors.py --epochs 3 --warmup 1 --latent-dim 40 --nll-samples 100 --threads 1
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
from common import DATA_DIR, results_header, write_markdown  # noqa: E402

from vaeflows.infer.experiment import train_vae  # noqa: E402
from vaeflows.infer.training import TrainConfig  # noqa: E402
from vaeflows.models import PRIORS  # noqa: E402

HERE = Path(__file__).resolve().parent


def prior_options(args: argparse.Namespace, prior: str) -> Optional[dict]:
    if prior == "vamp":
        return {"num_components": args.num_pseudo_inputs}
    if prior == "flow":
        options = {"flow": args.prior_flow}
        if args.prior_steps:
            options["num_steps"] = args.prior_steps
        return options
    return None


def describe(args: argparse.Namespace, prior: str) -> str:
    if prior == "vamp":
        return f"VampPrior, K = {args.num_pseudo_inputs} pseudo-inputs (init N(0.05, 0.01^2), hardtanh to [0, 1])"
    if prior == "flow":
        steps = f"{args.prior_steps} steps" if args.prior_steps else "its default steps"
        return f"density flow `{args.prior_flow}` on z ({steps}, default width)"
    return "N(0, I)"


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=DATA_DIR)
    parser.add_argument("--dataset", default="binarized-mnist")
    parser.add_argument("--priors", default="standard,vamp,flow")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--latent-dim", type=int, default=40)
    parser.add_argument("--num-pseudo-inputs", type=int, default=500)
    parser.add_argument("--prior-flow", default="maf")
    parser.add_argument("--prior-steps", type=int)
    parser.add_argument("--nll-samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    parser.add_argument("--out-dir", type=Path, help="run directories (default benchmarks/runs/priors)")
    parser.add_argument("--results", type=Path, help="markdown file (default benchmarks/results/priors_cpu.md)")
    args = parser.parse_args(argv)
    priors = [p for p in args.priors.split(",") if p]
    unknown = [p for p in priors if p not in PRIORS]
    if unknown:
        parser.error(f"--priors: unknown {', '.join(unknown)}; known: {', '.join(PRIORS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = args.out_dir or HERE / "runs" / "priors"
    results = args.results or HERE / "results" / "priors_cpu.md"
    from common import package_version

    code = package_version()
    rows: Dict[str, dict] = {}
    for prior in priors:
        model = {"arch": "mlp", "latent_dim": args.latent_dim, "flow": None, "num_flows": 4}
        if prior != "standard":
            model["prior"] = prior
            options = prior_options(args, prior)
            if options:
                model["prior_options"] = options
        config = TrainConfig(epochs=args.epochs, warmup=args.warmup, patience=100, seed=args.seed)
        start = time.perf_counter()
        metrics = train_vae(
            args.dataset,
            args.data_dir,
            model,
            config,
            out_dir / prior,
            device="cpu",
            nll_samples=args.nll_samples,
            progress=False,
            log=lambda line, p=prior: print(f"[{p}] {line}", flush=True),
        )
        metrics["wall"] = time.perf_counter() - start
        rows[prior] = metrics
    base = rows.get("standard")
    base_seconds = statistics.median(e["seconds"] for e in base["epochs"]) if base else None
    lines = results_header("Learnable priors: standard, VampPrior, flow prior", "priors.py", argv, code)
    lines += [
        f"- **Budget**: {args.epochs} epochs for every prior (the same optimizer steps: batch 100), KL warm-up "
        f"{args.warmup} epoch(s), `mlp` VAE (300, 300), z = {args.latent_dim}, diagonal Gaussian posterior, "
        f"Adamax 5e-4, seed {args.seed}; data `{args.dataset}`. Test -ELBO: one sample per test point, best "
        f"validation epoch; NLL: {args.nll_samples} importance samples per test point, every test image.",
        "- **Priors**: " + "; ".join(f"{p}: {describe(args, p)}" for p in priors) + ".",
        "",
        "| prior | test -ELBO | test NLL | seconds/epoch | vs standard | epochs (best) | wall (train + eval) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for prior, m in rows.items():
        seconds = statistics.median(e["seconds"] for e in m["epochs"])
        ratio = f"{seconds / base_seconds:.2f}x" if base_seconds else "—"
        nll = f"{m['test_nll']:.2f}" if "test_nll" in m else "—"
        lines.append(
            f"| {prior} | {m['test_elbo']:.2f} | {nll} | {seconds:.1f} | {ratio} | "
            f"{len(m['epochs'])} ({m['best_epoch']}) | {m['wall'] / 60:.1f} min |"
        )
    lines += [
        "",
        "seconds/epoch: median over the epochs of the training steps and the validation pass; the priors ran "
        "one after the other on a machine shared with other work, so the ratios are rough. A budget of a few "
        "epochs is far from convergence: the table says which prior is ahead at equal steps, not where each ends.",
    ]
    print(write_markdown(lines, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
