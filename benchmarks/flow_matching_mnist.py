"""Flow matching against maximum-likelihood FFJORD on MNIST bits/dim, at a small equal CPU budget.

Issue 17's MNIST row, on this CPU: far from converged, to compare the two objectives on the same
model at the same CPU time, not with the GPU-scale anchors (FFJORD 0.99, RNODE 0.97 bits/dim).

Protocol (one process, one torch thread):

* data: 8-bit MNIST (``load_density_data("mnist")``), the first ``--num-train`` training images,
  the first ``--test-points`` test images; uniform dequantization ``y = (x + u) / 256``, no logit
  layer (the ``ffjord`` density models have none), the bound ``log p(y) - D log 256`` as
  ``vaeflows density train`` reports it;
* model: ``ffjord((1, 28, 28), num_steps=1, hidden=--hidden, field=--field)``, the flattened MLP
  field (``D = 784``, two tanh layers) or the convolutional one (``--field conv``: three 3x3
  convolutions of ``--hidden`` channels, ``t`` a constant input channel), the same initial weights
  for both; ``fm``: flow matching (rectified flow,
  independent coupling, :class:`vaeflows.density.FlowMatching`); ``ffjord``: maximum likelihood
  through dopri5 at ``rtol = atol = 1e-5`` with the Hutchinson trace (FFJORD's);
* budget: ``--budget`` seconds of process CPU time of training steps each, in lockstep rounds
  (:func:`flow_matching.train_in_lockstep`), Adam lr ``--lr``, batch ``--batch``, the same
  minibatches;
* metric: test bits/dim at the fractions 0.1 / 0.2 / 0.5 / 1 of the budget by dopri5 at
  ``rtol = atol = 1e-5`` with **Hutchinson's trace estimate** (one Gaussian probe per image:
  unbiased for ``log p``; ``D = 784`` is too large for the exact trace here), the dequantization
  noise and the probes drawn from a fixed seed; CPU ms per step; vector-field evaluations of
  one batched sampling solve of ``--nfe-samples`` images.

    python benchmarks/flow_matching_mnist.py --out benchmarks/results/flow_matching_mnist.md
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA_DIR, command_line, machine, write_markdown  # noqa: E402
from flow_matching import CHECKPOINTS, RNODE, accurate_solver, train_in_lockstep  # noqa: E402

from vaeflows.density import (  # noqa: E402
    DEQUANTIZERS,
    FFJORD_FIELDS,
    DensityModel,
    FlowMatching,
    bits_per_dim,
    cnf_blocks,
    density_flow,
    load_density_data,
    sample_nfe,
)
from vaeflows.density.training import mean_nll  # noqa: E402
from vaeflows.transforms.ffjord import rnode_penalty  # noqa: E402

#: The models: name -> (density flow, options); ``hidden`` is ``--hidden`` for all (the ffjord
#: variants also take ``--field``). ``rnode``: ML FFJORD with RNODE's penalties on an rk4 grid, as
#: ``flow_matching.py``'s; ``realnvp`` and ``nsf``: the multi-scale image flows (4 steps a level, 2 levels).
MODELS = {
    "fm": ("ffjord", {"num_steps": 1}),
    "ffjord": ("ffjord", {"num_steps": 1}),
    "rnode": ("ffjord", {"num_steps": 1, **RNODE}),
    "realnvp": ("realnvp", {"num_steps": 4}),
    "nsf": ("nsf", {"num_steps": 4}),
}

#: How the protocol line describes each vector field.
FIELD_WORDS = {
    "mlp": "flattened MLP field, two tanh layers",
    "conv": "convolutional field: three 3x3 convolutions, two tanh hidden layers, t as a constant channel",
}


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=DATA_DIR, help="default: $VAEFLOWS_DATA_DIR or ../shared/data")
    parser.add_argument("--budget", type=float, default=60.0, help="CPU seconds of training per model")
    parser.add_argument("--num-train", type=int, default=10000)
    parser.add_argument("--test-points", type=int, default=500)
    parser.add_argument("--hidden", type=int, default=256, help="MLP width, or conv channels with --field conv")
    parser.add_argument("--field", choices=list(FFJORD_FIELDS), default="mlp", help="the vector field (default mlp)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--nfe-samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--models", default="fm,ffjord", help=f"comma-separated: fm,ffjord, then any of {', '.join(list(MODELS)[2:])}"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/flow_matching_mnist.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = load_density_data("mnist", args.data_dir, num_train=args.num_train)
    train, test = data.train.flatten(1), data.test[: args.test_points].flatten(1)
    dims = math.prod(data.event_shape)
    names = args.models.split(",")
    unknown = [n for n in names if n not in MODELS]
    if unknown or names[:2] != ["fm", "ffjord"]:
        parser.error(f"--models: fm,ffjord first, then any of {', '.join(list(MODELS)[2:])}; got {args.models!r}")
    models, optimizers, losses = {}, {}, {}
    matching = FlowMatching()
    for name in names:
        flow_name, options = MODELS[name]
        if flow_name == "ffjord":
            options = {**options, "field": args.field}
        torch.manual_seed(args.seed)  # the same initial weights for the ffjord variants
        flow = density_flow(flow_name, data.event_shape, hidden=args.hidden, **options)
        flow.check_values = False
        models[name] = model = DensityModel(flow, DEQUANTIZERS["uniform"](data.event_shape))
        optimizers[name] = torch.optim.Adam(model.parameters(), lr=args.lr)
        if name == "fm":
            losses[name] = lambda rows, model=model: model.flow_matching_loss(rows, matching)
        else:  # maximum likelihood, plus RNODE's penalties where the blocks have weights
            losses[name] = lambda rows, model=model: -model.log_likelihood(rows).mean() + rnode_penalty(model)

    def test_bpd(model: torch.nn.Module) -> float:
        with accurate_solver(model), torch.no_grad():
            return float(bits_per_dim(torch.tensor(-mean_nll(model, test, batch_size=250)), dims))

    order = torch.randint(len(train), (10**6, args.batch), generator=torch.Generator().manual_seed(args.seed))
    torch.manual_seed(args.seed + 1000)
    start, load = time.perf_counter(), os.getloadavg()[0]
    curves, steps, cpu = train_in_lockstep(
        models, optimizers, losses, lambda k: train[order[k]], args.budget, test_bpd, "mnist"
    )
    nfe = {}
    for name, model in models.items():
        torch.manual_seed(0)
        if MODELS[name][0] == "ffjord":
            with accurate_solver(model):
                nfe[name] = str(sample_nfe(model.flow, args.nfe_samples))
        else:
            nfe[name] = "- (one pass)"
    wall, load = time.perf_counter() - start, max(load, os.getloadavg()[0])
    trace = cnf_blocks(models["fm"].flow)[0].eval_trace
    rows = [
        f"| {name} | {curves[name][-1]:.3f} | {' / '.join(f'{v:.3f}' for v in curves[name][:-1])} | "
        f"{steps[name]} | {1e3 * cpu[name] / steps[name]:.0f} | {nfe[name]} |"
        for name in models
    ]
    target = curves["ffjord"][-1]
    reached = next((f for f, v in zip(CHECKPOINTS, curves["fm"]) if v <= target), None)
    met = reached is not None and reached <= 0.2
    verdict = (
        f"reaches ML FFJORD's final {target:.3f} bits/dim at {reached:.0%} of the budget"
        if reached is not None
        else f"does not reach ML FFJORD's final {target:.3f} bits/dim in the budget"
    )
    lines = [
        "# Flow matching against maximum-likelihood FFJORD: MNIST bits/dim at a small equal CPU budget",
        "",
        f"Command: `{command_line('flow_matching_mnist.py', argv)}`",
        "",
        f"Machine: {machine()}; shared with other jobs (1-minute load average {load:.1f} at the start or "
        f"end, the larger): the budget is process CPU time. Wall time {wall / 60:.1f} min. "
        f"Written {time.strftime('%Y-%m-%d %H:%M %Z')}.",
        "",
        "Protocol: see the docstring of `benchmarks/flow_matching_mnist.py`. "
        f"`ffjord((1, 28, 28), num_steps=1, hidden={args.hidden}, field={args.field!r})` ({FIELD_WORDS[args.field]}, "
        f"D = {dims}), "
        f"{args.budget:g} CPU s of training each, {args.num_train} training images, Adam lr {args.lr}, batch "
        f"{args.batch}, seed {args.seed}; test bits/dim on the first {args.test_points} test images by dopri5 "
        f"(rtol = atol = 1e-5), eval trace: {trace} (an unbiased estimate, not the exact trace). "
        "**Far from converged** (minutes of one CPU thread against GPU training): not comparable with "
        "FFJORD's 0.99 or RNODE's 0.97 bits/dim (Grathwohl et al. 2019; Finlay et al. 2020).",
        "",
        "| model | test bits/dim | at 0.1 / 0.2 / 0.5 of the budget | steps | CPU ms/step "
        f"| NFE to sample {args.nfe_samples} (dopri5) |",
        "|---|---:|---|---:|---:|---:|",
        *rows,
        "",
        f"Flow matching {verdict} (target, within 20%: {'met' if met else 'MISSED'}).",
    ]
    print(write_markdown(lines, args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
