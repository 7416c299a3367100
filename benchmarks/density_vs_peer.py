"""vaeflows' density flows against normflows at equal architecture, data, batches and steps.

Protocol (both libraries in one process, trained in lockstep: one step of each in turn, so that the
load of a shared machine falls on both alike; the same data, the same minibatch order, Adam with the
same learning rate, float32, ``torch.set_num_threads(--threads)``):

* 2-D (moons, 8gaussians, checkerboard, rings; 20000 generated training points, 5000 test points):
  RealNVP of ``--steps2d`` affine couplings, each an MLP with two hidden layers of 64 ReLU units,
  the halves alternating (normflows: ``AffineCouplingBlock(MLP([1, 64, 64, 2], init_zeros=True))``
  with ``Permute(2, "swap")``; vaeflows: ``realnvp((2,), num_steps, hidden=64)``, masked halves).
  Test NLL in nats.
* MNIST (8-bit, uniform dequantization ``(x + u) / 256``, the same noise for both): Glow with
  ``--levels`` levels of ``--glow-steps`` steps (ActNorm, LU 1x1 convolution, affine coupling with
  a 3x3-1x1-3x3 conv net of ``--hidden`` channels, sigmoid scale, channel split), a standard normal
  base (normflows: ``GlowBlock`` in a ``MultiscaleFlow`` with fixed ``DiagGaussian`` bases).
  Test bits/dim on the first ``--test-images`` test images.

Seconds per step are the mean wall time of a training step (forward, backward, Adam) of each
library, measured interleaved; the ratio vaeflows / normflows is the figure that matters (the
issue asks for at most 1.2). normflows is installed for this benchmark only (``pip install
normflows``); without it the script says so and exits.

``--suite nsf`` (issue 15): neural spline flows against zuko's ``zuko.flows.NSF`` and normflows'
``CoupledRationalQuadraticSpline`` / ``AutoregressiveRationalQuadraticSpline`` on the four 2-D
sets, all five models trained in lockstep on the same batches: ``--nsf-steps`` spline steps of
``--bins`` bins on ``[-B, B]`` (``B = --tail-bound``, default 5, zuko's fixed bound, which holds
every toy point), conditioners of two hidden layers of ``--hidden`` ReLU units (vaeflows:
``nsf((2,), transform=..., hidden=H, bins=K, tail_bound=B)``, coupling on alternating halves
or MADEs with the order reversed every other step; zuko: ``NSF(2, bins=K, transforms=S,
hidden_features=(H, H))``, its fixed order alternating, which for two features is the coupling and
the autoregressive flow at once; normflows: the conditioner is a ``ResidualNet`` of one residual
block of width ``H``, the nearest it has to a two-layer MLP, with one linear layer more, and its
coupling also applies an unconditional spline to the conditioning half, a ``Permute("swap")``
between autoregressive steps). Time ratios are vaeflows over the faster peer. Unless
``--skip-mnist``, it adds one MNIST row (:func:`nsf_mnist`): vector spline couplings on the 784
pixels (conditioners of ``--nsf-mnist-hidden``), bits/dim after ``--iters-mnist`` steps.

    python benchmarks/density_vs_peer.py --out benchmarks/results/density_vs_peer.md
    python benchmarks/density_vs_peer.py --suite nsf --out benchmarks/results/density_vs_peer_nsf.md
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA_DIR, command_line, machine  # noqa: E402

from vaeflows.density import bits_per_dim, glow, load_density_data, nsf, realnvp, toy_data  # noqa: E402
from vaeflows.density.dequantization import NUM_LEVELS  # noqa: E402

PAPERS = "RealNVP 1.06, Glow 1.05, FFJORD 0.99 bits/dim on MNIST (as reported in the FFJORD paper, Table 2)"


def peer_realnvp_2d(nf, num_steps: int, hidden: int):
    flows = []
    for _ in range(num_steps):
        flows += [
            nf.flows.AffineCouplingBlock(nf.nets.MLP([1, hidden, hidden, 2], init_zeros=True)),
            nf.flows.Permute(2, mode="swap"),
        ]
    return nf.NormalizingFlow(nf.distributions.DiagGaussian(2, trainable=False), flows)


def peer_glow(nf, shape, levels: int, steps: int, hidden: int):
    """normflows' multi-scale Glow, as in its README example, with fixed standard normal bases."""
    c, h, w = shape
    q0, merges, flows = [], [], []
    for i in range(levels):
        channels = c * 2 ** (levels + 1 - i)
        flows.append(
            [nf.flows.GlowBlock(channels, hidden, split_mode="channel", scale=True) for _ in range(steps)]
            + [nf.flows.Squeeze()]
        )
        if i > 0:
            merges.append(nf.flows.Merge())
            latent = (c * 2 ** (levels - i), h // 2 ** (levels - i), w // 2 ** (levels - i))
        else:
            latent = (c * 2 ** (levels + 1), h // 2**levels, w // 2**levels)
        q0.append(nf.distributions.DiagGaussian(latent, trainable=False))
    return nf.MultiscaleFlow(q0, flows, merges, class_cond=False)


def lockstep(
    losses: List[Callable[[torch.Tensor], torch.Tensor]],
    models: List[torch.nn.Module],
    batches: Callable[[int], torch.Tensor],
    steps: int,
    lr: float,
) -> List[float]:
    """Train the models in turn on the same batches; the mean seconds per step of each."""
    optimizers = [torch.optim.Adam(m.parameters(), lr=lr) for m in models]
    seconds = [0.0] * len(models)
    for step in range(steps):
        batch = batches(step)
        for k, (loss, opt) in enumerate(zip(losses, optimizers)):
            start = time.perf_counter()
            value = loss(batch)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            seconds[k] += time.perf_counter() - start
    return [s / steps for s in seconds]


@torch.no_grad()
def mean_over(log_prob: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk: int = 500) -> float:
    return float(sum(log_prob(part).sum() for part in x.split(chunk))) / len(x)


def two_d(nf, args) -> List[str]:
    """One row per data set: NLLs averaged over ``--seeds`` (initialization and batch order), the
    difference with its standard error, and the time ratio over all seeds."""
    rows = []
    for name in ("moons", "8gaussians", "checkerboard", "rings"):
        train, test = toy_data(name, 20000, seed=0), toy_data(name, 5000, seed=2)
        runs = []
        for seed in args.seeds:
            torch.manual_seed(seed)
            ours, peer = realnvp((2,), num_steps=args.steps2d, hidden=64), peer_realnvp_2d(nf, args.steps2d, 64)
            order = torch.randint(
                len(train), (args.iters2d, args.batch2d), generator=torch.Generator().manual_seed(seed)
            )
            times = lockstep(
                [lambda x: -ours.log_prob(x).mean(), lambda x: peer.forward_kld(x)],
                [ours, peer],
                lambda s: train[order[s]],
                args.iters2d,
                args.lr,
            )
            runs.append([-mean_over(ours.log_prob, test), -mean_over(peer.log_prob, test), *times])
        nll_ours, nll_peer, t_ours, t_peer = torch.tensor(runs, dtype=torch.float64).T
        finite = torch.isfinite(nll_ours) & torch.isfinite(nll_peer)
        diff = (nll_ours - nll_peer)[finite]
        error = float(diff.std() / math.sqrt(len(diff))) if len(diff) > 1 else float("nan")
        failed = [
            f"{lib} NaN in seed {seed}"
            for lib, nll in (("vaeflows", nll_ours), ("normflows", nll_peer))
            for seed, value in zip(args.seeds, nll)
            if not torch.isfinite(value)
        ]
        note = f" ({'; '.join(failed)}: means over the other seeds)" if failed else ""
        rows.append(
            f"| {name}{note} | {float(nll_ours[finite].mean()):.4f} | {float(nll_peer[finite].mean()):.4f} | "
            f"{float(diff.mean()):+.4f} ± {error:.4f} | {1e3 * float(t_ours.mean()):.2f} | "
            f"{1e3 * float(t_peer.mean()):.2f} | {float(t_ours.sum() / t_peer.sum()):.2f} |"
        )
        print(rows[-1], flush=True)
    return rows


def mnist(nf, args) -> List[str]:
    data = load_density_data("mnist", args.data_dir)
    shape, dims = data.event_shape, math.prod(data.event_shape)
    torch.manual_seed(args.seed)
    ours = glow(shape, num_steps=args.glow_steps, hidden=args.hidden, num_levels=args.levels)
    peer = peer_glow(nf, shape, args.levels, args.glow_steps, args.hidden)
    generator = torch.Generator().manual_seed(1)
    order = torch.randint(len(data.train), (args.iters_mnist, args.batch_mnist), generator=generator)
    noise = torch.rand(args.iters_mnist, args.batch_mnist, *shape, generator=generator)
    dequantized = lambda s: (data.train[order[s]] + noise[s]) / NUM_LEVELS  # noqa: E731
    log256 = dims * math.log(NUM_LEVELS)
    t_ours, t_peer = lockstep(
        [lambda y: -ours.log_prob(y).mean(), lambda y: peer.forward_kld(y)],
        [ours, peer],
        dequantized,
        args.iters_mnist,
        args.lr,
    )
    test = data.test[: args.test_images]
    test = (test + torch.rand(test.shape, generator=torch.Generator().manual_seed(2))) / NUM_LEVELS
    bpd = [
        float(bits_per_dim(torch.tensor(mean_over(m, test, 200) - log256), dims))
        for m in (ours.log_prob, lambda y: peer.log_prob(y, None))
    ]
    row = (
        f"| MNIST, Glow L={args.levels} K={args.glow_steps} hidden {args.hidden} | {bpd[0]:.4f} | {bpd[1]:.4f} | "
        f"{bpd[0] - bpd[1]:+.4f} | {1e3 * t_ours:.1f} | {1e3 * t_peer:.1f} | {t_ours / t_peer:.2f} |"
    )
    print(row, flush=True)
    return [row]


def peer_nsf_2d(nf, form: str, num_steps: int, hidden: int, bins: int, bound: float):
    """normflows' spline flows: coupling (alternating masks) or autoregressive (order swapped between steps)."""
    flows: list = []
    for k in range(num_steps):
        if form == "coupling":
            flows.append(
                nf.flows.CoupledRationalQuadraticSpline(
                    2, 1, hidden, num_bins=bins, tail_bound=bound, reverse_mask=k % 2 == 1
                )
            )
        else:
            flows += [
                nf.flows.AutoregressiveRationalQuadraticSpline(2, 1, hidden, num_bins=bins, tail_bound=bound),
                nf.flows.Permute(2, mode="swap"),
            ]
    return nf.NormalizingFlow(nf.distributions.DiagGaussian(2, trainable=False), flows)


NSF_MODELS = ("vaeflows coupling", "vaeflows autoregressive", "zuko", "normflows coupling", "normflows autoregressive")


def nsf_two_d(nf, zuko, args) -> List[str]:
    """Per data set, two rows (coupling, autoregressive): the NLLs of vaeflows and the two peers
    (means over ``--seeds``), vaeflows minus each peer (mean ± standard error over the seeds), the
    milliseconds per step and vaeflows' time over the faster peer's."""
    rows = []
    for name in ("moons", "8gaussians", "checkerboard", "rings"):
        train, test = toy_data(name, 20000, seed=0), toy_data(name, 5000, seed=2)
        runs = []
        for seed in args.seeds:
            torch.manual_seed(seed)
            size = {
                "num_steps": args.nsf_steps,
                "hidden": args.hidden,
                "bins": args.bins,
                "tail_bound": args.tail_bound,
            }
            ours = [nsf((2,), transform=form, **size) for form in ("coupling", "autoregressive")]
            z = zuko.flows.NSF(2, bins=args.bins, transforms=args.nsf_steps, hidden_features=(args.hidden, args.hidden))
            peers = [
                peer_nsf_2d(nf, f, args.nsf_steps, args.hidden, args.bins, args.tail_bound) for f in ("coupling", "ar")
            ]
            order = torch.randint(
                len(train), (args.iters2d, args.batch2d), generator=torch.Generator().manual_seed(seed)
            )
            scores = [
                ours[0].log_prob,
                ours[1].log_prob,
                lambda x: z().log_prob(x),
                peers[0].log_prob,
                peers[1].log_prob,
            ]
            times = lockstep(
                [lambda x, f=f: -f(x).mean() for f in scores[:3]] + [p.forward_kld for p in peers],
                [*ours, z, *peers],
                lambda s: train[order[s]],
                args.iters2d,
                args.lr,
            )
            runs.append([-mean_over(f, test) for f in scores] + times)
        table = torch.tensor(runs, dtype=torch.float64)  # (seeds, 10): 5 NLLs, 5 times
        nll, seconds = table[:, :5], table[:, 5:]
        for form, us, peer in (("coupling", 0, 3), ("autoregressive", 1, 4)):
            cells, notes = [], []
            for k in (us, 2, peer):
                bad = [str(s) for s, v in zip(args.seeds, nll[:, k]) if not torch.isfinite(v)]
                if bad:
                    notes.append(f"{NSF_MODELS[k]} NaN in seed {', '.join(bad)}")
                finite = nll[:, k][torch.isfinite(nll[:, k])]
                cells.append(f"{float(finite.mean()):.4f}" if len(finite) else "NaN")
            for k in (2, peer):
                both = torch.isfinite(nll[:, us]) & torch.isfinite(nll[:, k])
                diff = (nll[:, us] - nll[:, k])[both]
                error = float(diff.std() / math.sqrt(len(diff))) if len(diff) > 1 else float("nan")
                cells.append(f"{float(diff.mean()):+.4f} ± {error:.4f}")
            ms = [1e3 * float(seconds[:, k].mean()) for k in (us, 2, peer)]
            ratio = float(seconds[:, us].sum() / min(seconds[:, 2].sum(), seconds[:, peer].sum()))
            note = f" ({'; '.join(notes)}: means over the other seeds)" if notes else ""
            rows.append(
                f"| {name}{note} | {form} | {' | '.join(cells)} | {' | '.join(f'{t:.2f}' for t in ms)} | {ratio:.2f} |"
            )
            print(rows[-1], flush=True)
    return rows


#: The fixed affine map of the MNIST rows of ``--suite nsf``: dequantized pixels in ``[0, 1]`` to
#: ``[-3, 3]``, inside the splines' ``[-B, B]`` (its log-det, ``D log 6``, is added back to every model).
NSF_MNIST_SCALE = 6.0


#: The MNIST pairs of ``--suite nsf``: peer -> (vaeflows' conditioner of the equal architecture, its label).
NSF_MNIST_PAIRS = {
    "zuko": ("mlp", "MLP {h}-{h}"),
    "normflows": ("resnet", "ResidualNet of 1 block, width {h}, unconditional splines"),
}


def nsf_mnist(nf, zuko, args) -> List[str]:
    """MNIST bits/dim at a fixed step budget, one row per peer of ``--nsf-mnist-peers``, each beside
    vaeflows' vector coupling ``nsf`` at that peer's architecture: zuko's NSF with ``passes=2`` (its
    coupling form, a masked MLP) against ``nsf(conditioner='mlp')``; normflows'
    ``CoupledRationalQuadraticSpline`` (nflows' ``ResidualNet`` of one block, an unconditional
    spline on the conditioning half) against
    ``nsf(conditioner='resnet', num_blocks=1, unconditional=True)``. All the models train in
    lockstep on the same dequantized batches; bits/dim on the first ``--test-images`` test images."""
    data = load_density_data("mnist", args.data_dir)
    dims = math.prod(data.event_shape)
    hidden, steps = args.nsf_mnist_hidden, args.nsf_steps
    torch.manual_seed(args.seed)
    models: List[torch.nn.Module] = []
    scores: List[Callable[[torch.Tensor], torch.Tensor]] = []
    for peer_name in args.nsf_mnist_peers:
        conditioner = NSF_MNIST_PAIRS[peer_name][0]
        ours = nsf(
            (dims,),
            transform="coupling",
            num_steps=steps,
            hidden=hidden,
            bins=args.bins,
            tail_bound=args.tail_bound,
            conditioner=conditioner,
            num_blocks=1,
            unconditional=peer_name == "normflows",
        )
        if peer_name == "zuko":
            peer = zuko.flows.NSF(dims, bins=args.bins, transforms=steps, passes=2, hidden_features=(hidden, hidden))
            peer_score: Callable[[torch.Tensor], torch.Tensor] = lambda y, p=peer: p().log_prob(y)  # noqa: E731
        else:
            peer = nf.NormalizingFlow(
                nf.distributions.DiagGaussian(dims, trainable=False),
                [
                    nf.flows.CoupledRationalQuadraticSpline(
                        dims, 1, hidden, num_bins=args.bins, tail_bound=args.tail_bound, reverse_mask=k % 2 == 1
                    )
                    for k in range(steps)
                ],
            )
            peer_score = peer.log_prob
        models += [ours, peer]
        scores += [ours.log_prob, peer_score]
    generator = torch.Generator().manual_seed(1)
    order = torch.randint(len(data.train), (args.iters_mnist, args.batch_mnist), generator=generator)
    noise = torch.rand(args.iters_mnist, args.batch_mnist, dims, generator=generator)

    def scaled(images: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return NSF_MNIST_SCALE * ((images.flatten(1) + u) / NUM_LEVELS - 0.5)

    times = lockstep(
        [lambda y, f=f: -f(y).mean() for f in scores],
        models,
        lambda s: scaled(data.train[order[s]], noise[s]),
        args.iters_mnist,
        args.lr,
    )
    test = data.test[: args.test_images]
    test = scaled(test, torch.rand(len(test), dims, generator=torch.Generator().manual_seed(2)))
    log_jacobian = dims * math.log(NSF_MNIST_SCALE) - dims * math.log(NUM_LEVELS)  # y from x, x from pixels
    bpd = [float(bits_per_dim(torch.tensor(mean_over(f, test, 200) + log_jacobian), dims)) for f in scores]
    rows = []
    for k, peer_name in enumerate(args.nsf_mnist_peers):
        ours_bpd, peer_bpd, ours_s, peer_s = bpd[2 * k], bpd[2 * k + 1], times[2 * k], times[2 * k + 1]
        label = NSF_MNIST_PAIRS[peer_name][1].format(h=hidden)
        rows.append(
            f"| MNIST, coupling, {steps} steps, {label} | {peer_name} | {ours_bpd:.4f} | {peer_bpd:.4f} | "
            f"{ours_bpd - peer_bpd:+.4f} | {1e3 * ours_s:.1f} | {1e3 * peer_s:.1f} | {ours_s / peer_s:.2f} |"
        )
        print(rows[-1], flush=True)
    return rows


def nsf_main(args, argv) -> int:
    try:
        import normflows as nf
        import zuko
    except ImportError as error:
        print(
            f"{error.name} is not installed: `pip install zuko normflows` (the bench extra) for --suite nsf; skipping."
        )
        return 0
    torch.set_num_threads(args.threads)
    rows = nsf_two_d(nf, zuko, args)
    mnist_rows = [] if args.skip_mnist else nsf_mnist(nf, zuko, args)
    lines = [
        "# Neural spline flows: vaeflows against zuko and normflows",
        "",
        f"Command: `{command_line('density_vs_peer.py', argv if argv is not None else sys.argv[1:])}`",
        "",
        f"Machine: {machine()}; zuko {getattr(zuko, '__version__', '?')}, normflows {getattr(nf, '__version__', '?')}.",
        "",
        "Protocol: see the docstring of `benchmarks/density_vs_peer.py` (`--suite nsf`: five models trained in "
        f"lockstep on the same batches, Adam lr {args.lr}, float32). {args.nsf_steps} spline steps, {args.bins} "
        f"bins, tail bound {args.tail_bound:g}, conditioners {args.hidden}-{args.hidden} ReLU; {args.iters2d} steps "
        f"of batch {args.batch2d}; NLL in nats on 5000 test points, mean over seeds {args.seeds} (differences: "
        "mean ± standard error over the seeds; negative favours vaeflows). zuko's one NSF is both forms in 2-D. "
        "ms/step: mean over all steps and seeds; time ratio: vaeflows over the faster of its two peers.",
        "",
        "| problem | form | vaeflows NLL | zuko NLL | normflows NLL | vaeflows − zuko | vaeflows − normflows | "
        "vaeflows ms/step | zuko ms/step | normflows ms/step | time ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    if mnist_rows:
        lines += [
            "",
            f"MNIST: {args.iters_mnist} steps of batch {args.batch_mnist} (a CPU budget, far from convergence), "
            f"all {2 * len(args.nsf_mnist_peers)} models in lockstep on the same batches; uniform dequantization, "
            f"then the fixed map y = {NSF_MNIST_SCALE:g} (x - 1/2) to [-3, 3] (its log-det added back); bits/dim "
            f"on the first {args.test_images} test images, seed {args.seed}. Vector coupling flows on the 784 "
            "pixels, even/odd masks alternating, each peer beside vaeflows at its conditioner (zuko: "
            "`NSF(784, passes=2)`, a masked MLP, against `nsf((784,), conditioner='mlp')`; normflows: "
            "`CoupledRationalQuadraticSpline`, nflows' `ResidualNet` of one block, against "
            "`nsf((784,), conditioner='resnet', num_blocks=1, unconditional=True)`). Both peers also give the "
            "conditioning half of every coupling an unconditional spline; vaeflows does in the normflows row only "
            "(zuko's masked MLP has no such option in vaeflows). Time ratio: vaeflows over the peer of its row.",
            "",
            "| problem | peer | vaeflows bits/dim | peer bits/dim | vaeflows − peer | vaeflows ms/step | "
            "peer ms/step | time ratio |",
            "|---|---|---|---|---|---|---|---|",
            *mnist_rows,
        ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=DATA_DIR, help="default: $VAEFLOWS_DATA_DIR or ../shared/data")
    parser.add_argument("--steps2d", type=int, default=8, help="coupling layers of the 2-D RealNVP")
    parser.add_argument("--iters2d", type=int, default=2000)
    parser.add_argument("--batch2d", type=int, default=256)
    parser.add_argument("--glow-steps", type=int, default=4)
    parser.add_argument("--levels", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--iters-mnist", type=int, default=300)
    parser.add_argument("--batch-mnist", type=int, default=64)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="seed of the MNIST run")
    parser.add_argument(
        "--seeds",
        type=lambda t: [int(v) for v in t.split(",")],
        default=[0, 1, 2],
        help="seeds of the 2-D runs, comma-separated",
    )
    parser.add_argument("--skip-mnist", action="store_true")
    parser.add_argument(
        "--nsf-mnist-peers",
        nargs="+",
        choices=list(NSF_MNIST_PAIRS),
        default=list(NSF_MNIST_PAIRS),
        help="--suite nsf's MNIST rows: one per peer, each beside vaeflows at its architecture",
    )
    parser.add_argument(
        "--suite", choices=["realnvp", "nsf"], default="realnvp", help="nsf: the spline flows, 2-D and MNIST"
    )
    parser.add_argument("--nsf-steps", type=int, default=4, help="spline steps of --suite nsf")
    parser.add_argument("--bins", type=int, default=8, help="spline bins of --suite nsf")
    parser.add_argument("--tail-bound", type=float, default=5.0, help="spline tail bound of --suite nsf")
    parser.add_argument(
        "--nsf-mnist-hidden", type=int, default=128, help="conditioner width of --suite nsf's MNIST row"
    )
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/density_vs_peer[_nsf].md")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = Path(f"benchmarks/results/density_vs_peer{'_nsf' if args.suite == 'nsf' else ''}.md")
    if args.suite == "nsf":
        return nsf_main(args, argv)
    try:
        import normflows as nf
    except ImportError:
        print(
            "normflows is not installed: `pip install normflows` to run this comparison (it is not a "
            "dependency of vaeflows); skipping."
        )
        return 0
    torch.set_num_threads(args.threads)
    header = [
        "| problem | vaeflows NLL | normflows NLL | difference | vaeflows ms/step | normflows ms/step | time ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = two_d(nf, args)
    mnist_rows = [] if args.skip_mnist else mnist(nf, args)
    lines = [
        "# Density flows: vaeflows against normflows",
        "",
        f"Command: `{command_line('density_vs_peer.py', argv if argv is not None else sys.argv[1:])}`",
        "",
        f"Machine: {machine()}; normflows {nf.__version__ if hasattr(nf, '__version__') else '?'}.",
        "",
        "Protocol: see the docstring of `benchmarks/density_vs_peer.py` (lockstep training on the same "
        f"batches, Adam lr {args.lr}, float32). 2-D: RealNVP, {args.steps2d} couplings, MLP 64-64, "
        f"{args.iters2d} steps of batch {args.batch2d}; NLL in nats on 5000 test points, mean over "
        f"seeds {args.seeds} (difference: mean ± standard error; negative favours vaeflows).",
        "",
        *header,
        *rows,
    ]
    if mnist_rows:
        lines += [
            "",
            f"MNIST: {args.iters_mnist} steps of batch {args.batch_mnist} (a CPU budget, far from convergence), "
            f"uniform dequantization; bits/dim on the first {args.test_images} test images.",
            "",
            *header[:1],
            "|---|---|---|---|---|---|---|",
            *mnist_rows,
            "",
            f"For scale, the papers at convergence: {PAPERS}.",
        ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
