"""RNODE-regularized against plain maximum-likelihood FFJORD on 2-D toy data (issue 17, item 2).

Protocol (per data set and seed, in one process, trained in lockstep: one step of each variant in
turn on the same minibatch, so that the load of a shared machine falls on all alike; Adam at the
same learning rate, float32, ``torch.set_num_threads(1)``):

* data: ``--datasets`` (default moons, rings), 20000 generated training points, 5000 test points;
* models: ``ffjord((2,), num_steps=1, hidden=64)`` (one CNF block, two hidden tanh layers of 64,
  ``T = 0.5``, Hutchinson trace in training), the same initial weights for every variant:

  - ``ml``: plain maximum likelihood, dopri5 at ``rtol = atol = 1e-5`` (FFJORD's);
  - ``rnode``: the same solver, loss ``NLL + lambda_K int ||f||^2 dt + lambda_J int
    ||e^T df/dz||^2 dt`` with ``lambda_K = lambda_J = --weight`` (Finlay et al. use 0.01);
  - ``rnode-rk4``: the RNODE loss on a fixed grid, ``rk4`` with ``--rk4-steps`` steps (a cost known
    in advance, ``4 x steps`` evaluations per solve);
  - ``rnode-rk4-T``: as ``rnode-rk4`` with a learned integration time ``T`` (``learn_time``);

* budget: ``--iters`` steps of batch ``--batch`` for each variant (equal steps and data);
* metrics: test NLL in nats with the **exact** trace and dopri5 at ``rtol = atol = 1e-5`` for every
  variant (the fixed-grid ones too: their likelihood is measured by the accurate solver, not the
  grid they trained on); milliseconds per training step (the ratio to ``ml``, measured
  interleaved, is the figure to read); function evaluations per training solve (mean over the
  steps) and of the test solve (dopri5, data to noise), the figure RNODE is meant to lower.

``--jobs N`` runs the (data set, seed) pairs in N processes (each single-threaded), for a machine
with cores to spare; the lockstep within each pair is unchanged.

    python benchmarks/rnode.py --out benchmarks/results/rnode.md
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, machine, write_markdown  # noqa: E402
from flow_matching import accurate_solver  # noqa: E402

from vaeflows.density import CNFBlock, density_flow, toy_data  # noqa: E402
from vaeflows.transforms.ffjord import rnode_penalty  # noqa: E402


def variants(weight: float, rk4_steps: int) -> Dict[str, dict]:
    rnode = {"kinetic_weight": weight, "jacobian_weight": weight}
    rk4 = {"method": "rk4", "solver_steps": rk4_steps}
    return {
        "ml": {},
        "rnode": rnode,
        "rnode-rk4": {**rnode, **rk4},
        "rnode-rk4-T": {**rnode, **rk4, "learn_time": True},
    }


def blocks(model) -> List[CNFBlock]:
    return [m for m in model.modules() if isinstance(m, CNFBlock)]


@torch.no_grad()
def evaluate(model, x: torch.Tensor, chunk: int = 1000) -> Tuple[float, float]:
    """Test NLL with the exact trace by dopri5 (rtol = atol = 1e-5), and the mean NFE per solve."""
    total, nfe, parts = 0.0, 0, 0
    with accurate_solver(model):
        for part in x.split(chunk):
            total += float(model.log_prob(part).sum())
            nfe += sum(b.net.nfe for b in blocks(model))
            parts += 1
    return -total / len(x), nfe / parts


def run_pair(task: Tuple[argparse.Namespace, str, int]) -> Dict[str, dict]:
    args, dataset, seed = task
    torch.set_num_threads(1)
    train, test = toy_data(dataset, 20000, seed=0), toy_data(dataset, 5000, seed=2)
    names = variants(args.weight, args.rk4_steps)
    models = {}
    for name, options in names.items():
        torch.manual_seed(seed)  # the same initial weights for every variant
        models[name] = density_flow("ffjord", (2,), num_steps=1, hidden=args.hidden, **options)
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=args.lr) for name, m in models.items()}
    seconds = {name: [] for name in models}
    nfe = {name: 0 for name in models}
    order = torch.randint(len(train), (args.iters, args.batch), generator=torch.Generator().manual_seed(seed))
    for step in range(args.iters):
        batch = train[order[step]]
        for name, model in models.items():
            start = time.perf_counter()
            loss = -model.log_prob(batch).mean() + rnode_penalty(model)
            optimizers[name].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[name].step()
            seconds[name].append(time.perf_counter() - start)
            nfe[name] += sum(b.net.nfe for b in blocks(model))
        if (step + 1) % max(args.iters // 5, 1) == 0:
            print(f"{dataset} seed {seed} step {step + 1}/{args.iters}", flush=True)
    results = {}
    for name, model in models.items():
        nll, eval_nfe = evaluate(model, test)
        median = sorted(seconds[name])[len(seconds[name]) // 2]
        results[name] = {
            "nll": nll,
            "ms_per_step": 1e3 * median,
            "train_nfe": nfe[name] / args.iters,
            "eval_nfe": eval_nfe,
            "time": float(torch.as_tensor(blocks(model)[0].time_length).detach()),
        }
        print(
            f"{dataset} seed {seed} {name}: test NLL {nll:.4f}, {results[name]['ms_per_step']:.1f} ms/step, "
            f"NFE train {results[name]['train_nfe']:.0f} test {eval_nfe:.0f}, T {results[name]['time']:.3f}",
            flush=True,
        )
    return results


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=lambda t: [v for v in t.split(",") if v], default=["moons", "rings"])
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight", type=float, default=0.01, help="lambda_K = lambda_J")
    parser.add_argument("--rk4-steps", type=int, default=4)
    parser.add_argument("--seeds", type=lambda t: [int(v) for v in t.split(",")], default=[0, 1])
    parser.add_argument("--jobs", type=int, default=1, help="processes over the (data set, seed) pairs")
    parser.add_argument("--note", default="", help="a line on the machine (e.g. that it was shared)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/rnode.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    tasks = [(args, dataset, seed) for dataset in args.datasets for seed in args.seeds]
    start = time.perf_counter()
    if args.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            runs = pool.map(run_pair, tasks)
    else:
        runs = [run_pair(task) for task in tasks]
    wall = time.perf_counter() - start
    names = list(variants(args.weight, args.rk4_steps))
    rows = []
    for dataset in args.datasets:
        mine = [run for (_, d, _), run in zip(tasks, runs) if d == dataset]
        base_ms = [run["ml"]["ms_per_step"] for run in mine]
        for name in names:
            nll = torch.tensor([run[name]["nll"] for run in mine], dtype=torch.float64)
            spread = f" ± {float(nll.std() / math.sqrt(len(nll))):.4f}" if len(nll) > 1 else ""
            ratio = sorted(run[name]["ms_per_step"] / b for run, b in zip(mine, base_ms))
            ms = sum(run[name]["ms_per_step"] for run in mine) / len(mine)
            mean = {key: sum(run[name][key] for run in mine) / len(mine) for key in ("train_nfe", "eval_nfe", "time")}
            rows.append(
                f"| {dataset} | {name} | {float(nll.mean()):.4f}{spread} | {ms:.1f} | "
                f"{ratio[len(ratio) // 2]:.2f} | {mean['train_nfe']:.0f} | {mean['eval_nfe']:.0f} | "
                f"{mean['time']:.3f} |"
            )
    lines = [
        "# RNODE against plain maximum-likelihood FFJORD: 2-D data, equal steps",
        "",
        f"Command: `{command_line('rnode.py', argv)}`",
        "",
        f"Machine: {machine()}. {args.note} Wall time {wall / 60:.1f} min. "
        f"Written {time.strftime('%Y-%m-%d %H:%M %Z')}.",
        "",
        f"Protocol: see the docstring of `benchmarks/rnode.py`: {args.iters} Adam steps (lr {args.lr}) of "
        f"batch {args.batch} for each variant on the same minibatches, in lockstep, from the same initial "
        f"weights; RNODE weights lambda_K = lambda_J = {args.weight}; rk4 with {args.rk4_steps} steps; test NLL "
        f"in nats on 5000 test points with the exact trace by dopri5 (rtol = atol = 1e-5) for every variant, "
        f"seeds {args.seeds}" + (" (mean ± standard error)" if len(args.seeds) > 1 else "") + ".",
        "",
        "| data | variant | test NLL (nats) | ms/step (train, median) | time ratio vs ml (median over seeds) "
        "| NFE per training solve | NFE of the test solve (dopri5) | T at the end |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "NFE: evaluations of the vector field in the forward solve (backpropagation through the solver "
        "adds no evaluations). The step times are medians over the steps of each run; the ratio is the "
        "figure to read on a shared machine.",
    ]
    print(write_markdown(lines, args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
