"""The MNIST table of van den Berg et al. (2018), rerun with vaeflows at a budget set by flags.

For each posterior (``none``, ``planar``, ``iaf``, ``sylvester-orthogonal``,
``sylvester-householder``, ``sylvester-triangular``) this trains a VAE on statically binarized
MNIST with :func:`vaeflows.infer.experiment.train_vae` (batch 100, Adamax 5e-4, KL warm-up,
early stopping, best validation epoch), then takes its test -ELBO (one sample per point) and its
importance-sampled test NLL (``--nll-samples`` per point, all 10,000 test images), and writes
``benchmarks/results/mnist_table_<arch>_<device>.md``:

    flow | -ELBO (ours) | NLL (ours) | seconds/epoch | epochs | paper -ELBO

beside the paper's figures, with the budget, the machine and the command. Each model lives in
``--out-dir/<flow>``; a rerun with the same flags reuses finished models and resumes unfinished
ones (vaeflows' run directories resume from ``last.pt``). The table is rewritten after every model,
so a run cut short leaves the rows it finished.

The paper trains gated-conv networks with z = 64 for up to 2000 epochs (100 warm-up, patience 100)
and scores the NLL with 5000 samples: a budget of a few epochs is far from it, and its figures are
not comparable in absolute terms; the table shows whether the ordering of the flows appears early.

Example:
    python benchmarks/mnist_table.py --arch mlp --epochs 5 --warmup 3 --latent-dim 64 \\
        --nll-samples 200 --device cpu
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA_DIR, command_line, machine, package_version, write_markdown  # noqa: E402

from vaeflows.infer.experiment import resolve_device, train_vae  # noqa: E402
from vaeflows.infer.training import TrainConfig, load_checkpoint  # noqa: E402

DATASET = "binarized-mnist"
HERE = Path(__file__).resolve().parent
FLOWS = (
    "none",
    "planar",
    "iaf",
    "sylvester-orthogonal",
    "sylvester-householder",
    "sylvester-triangular",
)
#: Flows beyond the paper's table, run when named in ``--flows`` (residual flows, FFJORD, the
#: convex-combination linear IAF, the neural spline posteriors).
EXTRA_FLOWS = ("residual", "ffjord", "cc-liaf", "spline-autoregressive", "spline-coupling")
LABELS = {
    "none": "VAE (diagonal Gaussian)",
    "planar": "planar",
    "iaf": "IAF",
    "sylvester-orthogonal": "O-SNF",
    "sylvester-householder": "H-SNF",
    "sylvester-triangular": "T-SNF",
    "residual": "residual flow",
    "ffjord": "FFJORD",
    "cc-liaf": "ccLinIAF (Tomczak & Welling 2017)",
    "spline-autoregressive": "spline IAF (Durkan et al. 2019)",
    "spline-coupling": "spline coupling (Durkan et al. 2019)",
}
#: Test -ELBO (nats) of van den Berg et al. 2018, Table 1 (mean +- std of 3 runs), statically
#: binarized MNIST. H-SNF and T-SNF are in the paper too, but their MNIST figures could not be
#: checked against a source here, so they are left blank rather than quoted from memory.
PAPER_ELBO = {
    "none": "86.55 ± 0.06",
    "planar": "86.06 ± 0.31",
    "iaf": "84.20 ± 0.17",
    "sylvester-orthogonal": "83.32 ± 0.06",
    "sylvester-householder": "—",
    "sylvester-triangular": "—",
    "residual": "—",
    "ffjord": "82.82 ± 0.01",
    "cc-liaf": "—",
    "spline-autoregressive": "—",
    "spline-coupling": "—",
}
FFJORD_ELBO = "82.82 ± 0.01"
#: The flow settings vaeflows uses by default (and this benchmark does not change).
FLOW_SETTINGS = {
    "planar": "K amortized planar steps",
    "iaf": "MADE hidden (320, 320), context from the encoder, order reversed every other step",
    "sylvester-orthogonal": "M = min(z, 8) orthonormal columns",
    "sylvester-householder": "8 Householder reflections per step",
    "sylvester-triangular": "Q = I / reversal, alternating",
    "residual": "g = 2 hidden layers of 64 LipSwish units, spectral norm <= 0.9 per layer (power iteration), "
    "context as a first-layer bias, Russian-roulette log-det (2 exact terms + Geometric(0.5)), also at test time",
    "ffjord": "f = 2 hidden layers of 64 tanh units taking [z, t, h] at every layer, T = 0.5, dopri5 "
    "rtol = atol = 1e-5, Hutchinson trace (Gaussian), also at test time",
    "cc-liaf": "J = 5 unit lower-triangular matrices per step shared by all points, their softmax weights "
    "from the encoder's features by one linear map (volume preserving)",
    "spline-autoregressive": "rational-quadratic splines of 8 bins on [-3, 3], their bins from a MADE of z_<i and "
    "the encoder's features, hidden (320, 320) ELU, order reversed every other step",
    "spline-coupling": "rational-quadratic splines of 8 bins on [-3, 3] on one half, their bins from an MLP "
    "(320, 320) ELU of the other half and the encoder's features, the halves alternating",
}


def model_options(args: argparse.Namespace, flow: str) -> dict:
    return {
        "arch": args.arch,
        "latent_dim": args.latent_dim,
        "flow": None if flow == "none" else flow,
        "num_flows": args.num_flows,
    }


def finished(metrics_path: Path, args: argparse.Namespace) -> Optional[dict]:
    """The metrics of a finished run with this budget, or ``None`` if it must be (re)run."""
    if not metrics_path.exists():
        return None
    metrics = json.loads(metrics_path.read_text())
    done = len(metrics.get("epochs", [])) >= args.epochs
    if not done or "test_elbo" not in metrics:
        return None
    if args.nll_samples and metrics.get("nll_samples") != args.nll_samples:
        return None
    return metrics


def _epochs_done(run_dir: Path) -> int:
    """Epochs already in ``run_dir/last.pt`` (0 for a fresh directory)."""
    last = run_dir / "last.pt"
    if not last.exists():
        return 0
    return int(load_checkpoint(last, map_location="cpu")["state"]["epoch"])


def run_flow(args: argparse.Namespace, flow: str, run_dir: Path, code: str) -> dict:
    """Train and evaluate one flow into ``run_dir``, or reuse it if it is finished at this budget.

    Writes ``run_dir/benchmark_info.json``: which code, how many torch threads and how many of the
    epochs this invocation trained, so that a table assembled over reruns says where its rows
    come from.
    """
    info_path = run_dir / "benchmark_info.json"
    metrics = finished(run_dir / "metrics.json", args)
    if metrics is not None:
        print(f"=== {flow}: reusing the finished run in {run_dir}", flush=True)
        metrics["reused"] = True
        metrics["info"] = json.loads(info_path.read_text()) if info_path.exists() else None
        return metrics
    print(f"=== {flow}: training into {run_dir}", flush=True)
    before = _epochs_done(run_dir)
    config = TrainConfig(epochs=args.epochs, warmup=args.warmup, patience=args.patience, seed=args.seed)
    start = time.perf_counter()
    metrics = train_vae(
        DATASET,
        args.data_dir,
        model_options(args, flow),
        config,
        run_dir,
        device=args.device,
        nll_samples=args.nll_samples,
        progress=False,
        log=lambda line: print(f"[{flow}] {line}", flush=True),
    )
    info = {
        "code": code,
        "torch_threads": torch.get_num_threads(),
        "epochs_trained_here": len(metrics["epochs"]) - before,
        "epochs_from_an_earlier_invocation": before,
        "wall_seconds": time.perf_counter() - start,
        "finished": time.strftime("%Y-%m-%d %H:%M %Z"),
    }
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    metrics["info"] = info
    metrics["wall_seconds"] = info["wall_seconds"]
    return metrics


def _provenance(flow: str, m: dict) -> str:
    info = m.get("info")
    if info is None:
        return f"{LABELS[flow]}: reused from its run directory, which has no record of how it was trained."
    text = (
        f"{LABELS[flow]}: {info['epochs_trained_here']} epoch(s) trained and evaluated on {info['finished']} "
        f"({info['code']}, {info['torch_threads']} torch thread(s))"
    )
    if info["epochs_from_an_earlier_invocation"]:
        text += (
            f"; {info['epochs_from_an_earlier_invocation']} earlier epoch(s) came from an earlier invocation, "
            "whose threads and code are not recorded, and its seconds/epoch include them"
        )
    return text + ("; reused by this invocation." if m.get("reused") else ".")


def write_table(
    args: argparse.Namespace, argv: List[str], device: str, code: str, rows: Dict[str, dict], path: Path
) -> str:
    nll = f"{args.nll_samples} importance samples per test point" if args.nll_samples else "not computed"
    lines = [
        f"# MNIST table (van den Berg et al. 2018) with vaeflows: {args.arch}, {device}",
        "",
        f"Written by `benchmarks/mnist_table.py` on {time.strftime('%Y-%m-%d %H:%M %Z')}.",
        "",
        f"- **Command**: `{command_line('mnist_table.py', argv)}`",
        f"- **Code** (when this invocation started): {code}.",
        f"- **Machine**: {machine()}.",
        f"- **Budget**: {args.epochs} epochs, KL warm-up {args.warmup} epochs (beta = min(epoch/{args.warmup}, 1)), "
        f"early-stopping patience {args.patience}; architecture `{args.arch}`, z = {args.latent_dim}, "
        f"{args.num_flows} flow steps; batch 100, Adamax lr 5e-4 eps 1e-7, seed {args.seed}, one run per flow. "
        f"Test -ELBO: one sample per test point, best validation epoch. NLL: {nll}, all 10,000 test images.",
        "- **Data**: statically binarized MNIST (Larochelle & Murray), 50,000 / 10,000 / 10,000.",
        "- **Flow settings** (vaeflows' defaults): "
        + "; ".join(f"{LABELS[f]}: {s}" for f, s in FLOW_SETTINGS.items() if f in args.flows)
        + ".",
        "",
        "**This budget is far from the paper's** (gated-conv networks, z = 64, up to 2000 epochs with 100 "
        "warm-up epochs and patience 100, NLL with 5000 samples; the paper's -ELBO is the mean of 3 runs): "
        "the numbers below are not comparable with the paper's in absolute terms. Only the ordering "
        "of the flows, and how far each is from the paper, can be read from them.",
        "",
        "| flow | -ELBO (ours) | NLL (ours) | seconds/epoch | epochs | paper -ELBO |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for flow in args.flows:
        m = rows.get(flow)
        if m is None:
            lines.append(f"| {LABELS[flow]} | not run yet | | | | {PAPER_ELBO[flow]} |")
            continue
        seconds = statistics.median(h["seconds"] for h in m["epochs"])
        nll_text = f"{m['test_nll']:.2f}" if "test_nll" in m else "—"
        lines.append(
            f"| {LABELS[flow]} | {m['test_elbo']:.2f} | {nll_text} | {seconds:.1f} | "
            f"{len(m['epochs'])} (best {m['best_epoch']}) | {PAPER_ELBO[flow]} |"
        )
    if "ffjord" not in args.flows:
        lines.append(f"| FFJORD (Grathwohl et al. 2019) | not run here | | | | {FFJORD_ELBO} |")
    lines += [
        "",
        "seconds/epoch: median over the epochs of the training steps and the validation pass "
        f"(vaeflows' `fit` timing) on {device}; the machine is shared with other work, so these are "
        "rough. epochs: epochs trained (the best validation epoch, whose weights were tested). "
        "Paper -ELBO: van den Berg et al. (2018), Table 1, statically binarized MNIST; FFJORD from "
        "Grathwohl et al. (2019), same architecture and "
        "protocol. H-SNF and T-SNF are reported in the paper too; their MNIST figures could not be "
        "checked against a source while writing this benchmark, so they are left as —.",
    ]
    lines += ["", "Where each row comes from (`benchmark_info.json` in its run directory):", ""]
    lines += [f"- {_provenance(flow, rows[flow])}" for flow in args.flows if flow in rows]
    if args.note:
        lines += ["", f"Note: {args.note}"]
    wall = [m.get("wall_seconds") for m in rows.values() if m.get("wall_seconds")]
    if wall:
        lines.append(
            f"\nWall time of the models trained in this invocation (training + evaluation): {sum(wall) / 60:.1f} min."
        )
    return write_markdown(lines, path)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=DATA_DIR, help="default: $VAEFLOWS_DATA_DIR or ../shared/data")
    parser.add_argument("--arch", default="mlp", choices=["mlp", "gated-conv"])
    parser.add_argument(
        "--flows",
        default=",".join(FLOWS),
        help="comma-separated subset of " + ", ".join(FLOWS + EXTRA_FLOWS) + " (default: the paper's six)",
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--patience", type=int, default=100)
    parser.add_argument("--latent-dim", type=int, default=64)
    parser.add_argument("--num-flows", type=int, default=4)
    parser.add_argument("--nll-samples", type=int, default=200, help="importance samples per test point (0: skip)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        help="torch.set_num_threads (default: torch's choice; 1 is far faster on a small CPU shared with other work)",
    )
    parser.add_argument("--note", help="a sentence to add to the results file (e.g. about how a run was resumed)")
    parser.add_argument(
        "--out-dir", type=Path, help="run directories (default benchmarks/runs/mnist_table_<arch>_<device>)"
    )
    parser.add_argument(
        "--results", type=Path, help="markdown file (default benchmarks/results/mnist_table_<arch>_<device>.md)"
    )
    args = parser.parse_args(argv)
    args.flows = [f for f in args.flows.split(",") if f]
    unknown = [f for f in args.flows if f not in FLOWS + EXTRA_FLOWS]
    if unknown:
        parser.error(f"--flows: unknown {', '.join(unknown)}; known: {', '.join(FLOWS + EXTRA_FLOWS)}")
    try:
        device = resolve_device(args.device).type
    except ValueError as error:
        parser.error(str(error))
    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = args.out_dir or HERE / "runs" / f"mnist_table_{args.arch}_{device}"
    results = args.results or HERE / "results" / f"mnist_table_{args.arch}_{device}.md"
    code = package_version()
    print(machine(), flush=True)
    print(code, flush=True)
    rows: Dict[str, dict] = {}
    for flow in args.flows:
        rows[flow] = run_flow(args, flow, out_dir / flow, code)
        write_table(args, argv, device, code, rows, results)
    print(write_table(args, argv, device, code, rows, results))
    print(f"wrote {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
