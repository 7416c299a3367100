"""Residual flow and FFJORD against RealNVP on 2-D toy data at an equal budget.

Protocol (all in one process, trained in lockstep: one step of each model in turn on the same
minibatch, so that the load of a shared machine falls on all alike; Adam, the same learning rate,
float32, ``torch.set_num_threads(--threads)``):

* data: ``--dataset`` (default moons), 20000 generated training points, 5000 test points;
* models (vaeflows' density registry): ``realnvp((2,), num_steps=8, hidden=64)``;
  ``residual((2,), num_steps=8, hidden=64)`` (2 hidden layers of 64 LipSwish units per block,
  spectral norm <= 0.9, Russian-roulette log-det in training); ``ffjord((2,), num_steps=1,
  hidden=64)`` (one CNF block, 2 hidden tanh layers of 64, T = 0.5, dopri5 at rtol = atol = 1e-5,
  Hutchinson trace in training);
* budget: ``--iters`` steps of batch ``--batch`` for every model (equal number of steps and data,
  not equal wall time: the seconds per step are reported beside);
* metric: test NLL in nats with exact log-dets (the models' eval mode: full-Jacobian log-det for
  the residual flow, exact trace for FFJORD), mean over ``--seeds``.

Writes a markdown table and a PNG of each model's density beside the data.

    python benchmarks/density_freeform_2d.py --out benchmarks/results/density_freeform_2d.md
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, machine, write_markdown  # noqa: E402

from vaeflows.density import density_flow, toy_data  # noqa: E402
from vaeflows.density.plots import density_on_grid, save_panels  # noqa: E402

MODELS = {
    "realnvp": {"num_steps": 8, "hidden": 64},
    "residual": {"num_steps": 8, "hidden": 64},
    "ffjord": {"num_steps": 1, "hidden": 64},
}


@torch.no_grad()
def test_nll(model, x: torch.Tensor, chunk: int = 1000) -> float:
    model.eval()
    value = -float(sum(model.log_prob(part).sum() for part in x.split(chunk))) / len(x)
    model.train()
    return value


def run_seed(args, seed: int, train: torch.Tensor, test: torch.Tensor) -> Dict[str, dict]:
    torch.manual_seed(seed)
    models = {name: density_flow(name, (2,), **MODELS[name]) for name in args.models}
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=args.lr) for name, m in models.items()}
    seconds = {name: 0.0 for name in models}
    order = torch.randint(len(train), (args.iters, args.batch), generator=torch.Generator().manual_seed(seed))
    for step in range(args.iters):
        batch = train[order[step]]
        for name, model in models.items():
            start = time.perf_counter()
            loss = -model.log_prob(batch).mean()
            optimizers[name].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[name].step()
            seconds[name] += time.perf_counter() - start
        if (step + 1) % max(args.iters // 5, 1) == 0:
            print(f"seed {seed} step {step + 1}/{args.iters}", flush=True)
    results = {}
    for name, model in models.items():
        start = time.perf_counter()
        nll = test_nll(model, test)
        results[name] = {
            "nll": nll,
            "ms_per_step": 1e3 * seconds[name] / args.iters,
            "eval_seconds": time.perf_counter() - start,
            "model": model,
        }
        print(f"seed {seed} {name}: test NLL {nll:.4f}, {results[name]['ms_per_step']:.1f} ms/step", flush=True)
    return results


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="moons")
    parser.add_argument("--iters", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", type=lambda t: [int(v) for v in t.split(",")], default=[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--models",
        type=lambda t: [v for v in t.split(",") if v],
        default=list(MODELS),
        help="comma-separated subset of " + ", ".join(MODELS),
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/density_freeform_2d.md"))
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; known: {', '.join(MODELS)}")
    torch.set_num_threads(args.threads)
    train, test = toy_data(args.dataset, 20000, seed=0), toy_data(args.dataset, 5000, seed=2)
    start = time.perf_counter()
    runs = [run_seed(args, seed, train, test) for seed in args.seeds]
    wall = time.perf_counter() - start
    rows = []
    for name in args.models:
        nll = torch.tensor([r[name]["nll"] for r in runs], dtype=torch.float64)
        spread = f" ± {float(nll.std() / math.sqrt(len(nll))):.4f}" if len(nll) > 1 else ""
        ms = sum(r[name]["ms_per_step"] for r in runs) / len(runs)
        ratio = "—"
        if "realnvp" in args.models:
            ratio = f"{ms / (sum(r['realnvp']['ms_per_step'] for r in runs) / len(runs)):.1f}"
        rows.append(
            f"| {name} | {float(nll.mean()):.4f}{spread} | {ms:.1f} | {ratio} | "
            f"{sum(r[name]['eval_seconds'] for r in runs) / len(runs):.1f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    png = args.out.with_suffix(".png")
    bound = 4.5
    like = torch.zeros(())
    panels = [("test data", "points", test)]
    for name, result in runs[0].items():
        model = result["model"].eval()
        with torch.no_grad():
            panels.append((f"{name} density", "grid", density_on_grid(model.log_prob, bound, 120, like)))
    drawn = save_panels(panels, png, bound, args.dataset)
    lines = [
        f"# Residual flow and FFJORD against RealNVP: 2-D {args.dataset}, equal steps",
        "",
        f"Command: `{command_line('density_freeform_2d.py', argv)}`",
        "",
        f"Machine: {machine()}. Wall time {wall / 60:.1f} min. Written {time.strftime('%Y-%m-%d %H:%M %Z')}.",
        "",
        f"Protocol: see the docstring of `benchmarks/density_freeform_2d.py`: {args.iters} Adam steps "
        f"(lr {args.lr}) of batch {args.batch} for each model on the same minibatches, in lockstep; "
        f"test NLL in nats on 5000 test points with exact log-dets, seeds {args.seeds}"
        + (" (mean ± standard error)" if len(args.seeds) > 1 else "")
        + ".",
        "",
        "| model | test NLL (nats) | ms/step (train) | time ratio vs RealNVP | test eval (s) |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
        "Models: " + "; ".join(f"`{name}` {MODELS[name]}" for name in args.models) + ". The steps are "
        "equal, not the wall time: the residual flow's and FFJORD's steps cost more (seconds per step "
        "on a CPU shared with other work are rough; the ratio, measured interleaved, is the figure to read).",
        "",
        f"![densities]({png.name})" if drawn else "(matplotlib missing: no figure)",
    ]
    print(write_markdown(lines, args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
