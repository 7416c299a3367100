"""Mean-field, full-rank and flow guides side by side on three Pyro models nobody here wrote, and a multimodal one.

The models are those of ``examples/pyro_models.py``: the banana of Pyro's NeuTra example (2
latents, ``log Z = 0``, so its ELBO is ``-KL(q || p)``), Rubin's eight schools (10 latents), a
Bayesian logistic regression on scikit-learn's breast-cancer data (11 latents) and the folded
model (2 latents seen through ``|z|``: four posterior modes, ``log Z`` exact). On each, every
guide is a :class:`vaeflows.guides.AutoFlow`, trained for the same number of steps by the same
protocol (``pyro_models.make_svi``: ``Trace_ELBO`` with 8 vectorized particles, ``ClippedAdam``,
the learning rate a tenth for the last 20% of the steps):

* ``mean field``: ``AutoFlow(model, None, base="diagonal")``, the posterior of ``AutoDiagonalNormal``;
* ``full rank``: ``AutoFlow(model, None, base="full")``, that of ``AutoMultivariateNormal``;
* one flow guide per ``--flows`` entry ``FLOW[:BASE]`` (a name of
  ``vaeflows.transforms.POSTERIOR_FLOWS`` and an affine base of ``vaeflows.guides.BASES``,
  ``diagonal`` if omitted), ``--num-flows`` steps each;
* on the folded model, also a spline guide (:data:`MODEL_FLOWS`):
  ``AutoFlow(model, "spline-autoregressive", base="standard", zero_init=True)``.

Each trained guide's ELBO is estimated from 10,000 draws (``pyro_models.elbo_estimate``, mean +-
standard error), a NUTS chain gives the reference posterior (on the folded model, whose modes
one chain does not cross, exact draws: ``PyroModel.exact_posterior``), and ``OUT/<model>.png``
draws the model's pair of latents (``PyroModel.pair``) for each guide (the regions holding 30 to
99% of 20,000 guide draws) under the reference draws, the ELBO in every title. A table of ELBO +- se is
printed at the end.

The default flows, ``iaf:full`` and ``sylvester-triangular:diagonal``, did best over the three
models among the posterior flows on a diagonal or full base (2,000 steps, seed 0; the
Sylvester-orthogonal and Householder flows, on either base, did no better than the full-rank
Gaussian on eight schools). The default run, one torch thread, takes about 3 minutes on 2 CPU
cores of its own (of which NUTS about 1; 25 minutes while other jobs loaded the machine to 6).
Its ELBOs (+- se, nats; on the banana ``-KL(q || p)``), with the rate drop of ``make_svi``::

    guide                          banana            eight schools      logistic
    mean field                     -0.752 +- 0.009   -32.892 +- 0.010   -96.388 +- 0.030
    full rank                      -0.692 +- 0.008   -32.792 +- 0.010   -92.624 +- 0.003
    iaf, full base                 -0.204 +- 0.004   -32.671 +- 0.010   -92.639 +- 0.003
    sylvester-triangular, diagonal -0.498 +- 0.006   -32.750 +- 0.008   -92.675 +- 0.004

A flow wins where the posterior is curved or skewed (the banana; eight schools' ``log tau``); on
the logistic regression, whose posterior is close to a correlated Gaussian, the full-rank
Gaussian is as good as any flow (0.015 nats ahead of the IAF here) and the mean field loses 3.8
nats.

On the folded model (``log Z = -2.636``, four modes; 38 s on top of the run above) every Gaussian
and affine-flow guide sits on one mode, ``log Z - 2 log 2`` (ELBO -4.017 to -4.019: mean field,
full rank, the IAF and T-SNF alike), and the spline guide holds all four (-2.679 +- 0.003, a KL of
0.04 nats; ``benchmarks/results/pyro_guides_folded_seeds.md`` has it over 9 seeds against zuko's and
Pyro's splines). The picture draws exact posterior draws, not NUTS, whose chain stays on one side
of ``z_1 = 0``.

    python examples/flow_guides.py --out runs/flow-guides
    python examples/flow_guides.py --models folded
    python examples/flow_guides.py --models banana --flows iaf:full planar radial --steps 3000
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pyro
import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pyro_models import MODELS, PyroModel, elbo_estimate, make_svi, nuts_samples, pair  # noqa: E402

from vaeflows.guides import BASES, AutoFlow  # noqa: E402
from vaeflows.transforms import POSTERIOR_FLOWS  # noqa: E402

#: The command's defaults; ``main`` takes any object with these attributes.
DEFAULTS = dict(
    models=list(MODELS),
    flows=["iaf:full", "sylvester-triangular:diagonal"],
    num_flows=2,
    steps=2000,
    lr=1e-2,
    particles=8,
    elbo_samples=10000,
    plot_samples=20000,
    nuts_warmup=300,
    nuts_samples=600,
    out="runs/flow-guides",
    seed=0,
    threads=1,
    progress=True,
)


#: A guide: ``(flow, base, options)``, the arguments of ``AutoFlow(model, flow, base=base, **options)``.
GuideOption = Tuple[Optional[str], str, Dict[str, object]]

#: Model name -> guides added on that model to those of ``--flows`` (label -> :data:`GuideOption`):
#: the folded model's four modes are the case of a spline posterior, which no affine flow can
#: split (``benchmarks/results/pyro_guides_folded.md``: ELBO -2.74 against -4.02 for the IAF, of
#: ``log Z = -2.64``; zero_init on the standard base was the best spline start there).
MODEL_FLOWS: Dict[str, Dict[str, GuideOption]] = {
    "folded": {
        "spline-autoregressive, standard base": ("spline-autoregressive", "standard", {"zero_init": True}),
    },
}


def guide_options(flows: Sequence[str], model: Optional[str] = None) -> Dict[str, GuideOption]:
    """Guide label -> ``(flow, base, options)``: the two Gaussians, one per ``FLOW[:BASE]`` of
    ``flows``, then those :data:`MODEL_FLOWS` adds on ``model``.

    Raises:
        ValueError: for an unknown flow or base, naming the known ones.
    """
    options: Dict[str, GuideOption] = {"mean field": (None, "diagonal", {}), "full rank": (None, "full", {})}
    for entry in flows:
        flow, _, base = entry.partition(":")
        base = base or "diagonal"
        if flow not in POSTERIOR_FLOWS:
            raise ValueError(f"unknown flow {flow!r} in {entry!r}; known flows: {', '.join(POSTERIOR_FLOWS)}")
        if base not in BASES:
            raise ValueError(f"unknown base {base!r} in {entry!r}; known bases: {', '.join(BASES)}")
        options[f"{flow}, {base} base"] = (flow, base, {})
    options.update(MODEL_FLOWS.get(model or "", {}))
    return options


def train_guide(
    spec: PyroModel,
    label: str,
    flow: Optional[str],
    base: str,
    args,
    index: int = 0,
    options: Optional[Dict[str, object]] = None,
) -> Dict[str, object]:
    """Train ``AutoFlow(spec.model, flow, args.num_flows, base, **options)`` for ``args.steps`` steps, then score it.

    The guide gets a parameter-store name of its own (``AutoFlow_<index>``: Pyro keys a module's
    parameters by its name, so two ``AutoFlow`` would otherwise share theirs) and is seeded from
    ``args.seed`` alone, so its run does not depend on which guides ran before it.

    Returns:
        ``guide``, ``elbo_history`` (``-loss`` at every step, ``args.particles`` particles),
        ``elbo`` and ``elbo_se`` (``args.elbo_samples`` draws), ``seconds_per_step``, and
        ``diverged_at`` (the step whose loss was not finite, ``None`` if none; the ELBO is then NaN).
    """
    pyro.set_rng_seed(args.seed)
    guide = AutoFlow(spec.model, flow, num_flows=args.num_flows, base=base, **(options or {}))
    guide._pyro_name = f"AutoFlow_{index}"
    svi = make_svi(spec, guide, args.lr, args.particles, steps=args.steps)
    history: List[float] = []
    diverged_at = None
    start = time.perf_counter()
    bar = tqdm(range(args.steps), desc=f"{spec.name}: {label}", disable=not args.progress, leave=False)
    for step in bar:
        loss = svi.step()
        if not math.isfinite(loss):
            diverged_at = step + 1
            print(f"{spec.name}, {label}: loss {loss} at step {step + 1}; training stopped")
            break
        history.append(-loss)
        if step % 50 == 0:
            bar.set_postfix(elbo=f"{sum(history[-100:]) / len(history[-100:]):.3f}")
    bar.close()
    seconds = (time.perf_counter() - start) / max(len(history), 1)
    elbo, elbo_se = (math.nan, math.nan) if diverged_at else elbo_estimate(spec, guide, args.elbo_samples)
    return dict(
        guide=guide,
        flow=flow,
        base=base,
        elbo_history=history,
        elbo=elbo,
        elbo_se=elbo_se,
        seconds_per_step=seconds,
        diverged_at=diverged_at,
    )


#: Probability masses inside the contours of the pictures (highest-density regions).
MASSES = (0.99, 0.9, 0.7, 0.5, 0.3)


def mass_levels(counts: torch.Tensor, masses: Sequence[float]) -> List[float]:
    """Histogram heights whose upper sets hold ``masses`` of the draws, increasing, then the top."""
    heights = counts.flatten().sort(descending=True).values
    inside = heights.cumsum(0) / heights.sum()
    levels = sorted(
        {heights[int(torch.searchsorted(inside, mass).clamp(max=len(heights) - 1))].item() for mass in masses}
    )
    return [level for level in levels if level > 0] + [heights[0].item() + 1]


@torch.no_grad()
def draw_pair(spec: PyroModel, guide: AutoFlow, num_samples: int) -> torch.Tensor:
    """``num_samples`` draws of ``spec``'s pair of latents from ``guide``, ``(num_samples, 2)``.

    The guide runs once under a plate of the draws left of the model's plates, as vectorized
    particles do. (Not ``pyro_models.guide_samples``: Pyro's ``Predictive(parallel=True)`` reshapes
    the logistic regression's ``weights``, a ``(10,)`` event outside the data plate, to
    ``(S, 10)`` where the model needs ``(S, 1, 10)``, and the model then fails.)
    """
    with pyro.plate("draws", num_samples, dim=-(spec.max_plate_nesting + 1)):
        return pair(spec, guide())


def plot_model(
    spec: PyroModel, guides: Dict[str, dict], reference: torch.Tensor, num_samples: int, reference_label: str = "NUTS"
):
    """One panel per guide: ``spec``'s pair of latents, the reference draws ``reference`` ``(S, 2)``
    (NUTS's, or the exact posterior's: ``reference_label``) over the regions holding 30, 50, 70, 90
    and 99% of ``num_samples`` guide draws (a 48 x 48 histogram), the ELBO in the title. All
    panels share the axes, which hold the middle 99.6% of the reference draws and of every guide's.

    Returns:
        a ``matplotlib.figure.Figure`` (no pyplot: it works headless and in a notebook alike).
    """
    from matplotlib.figure import Figure

    drawn = {
        label: draw_pair(spec, result["guide"], num_samples).float()
        for label, result in guides.items()
        if result["diverged_at"] is None
    }
    every = [reference.float(), *drawn.values()]
    low = torch.stack([torch.quantile(points, 0.002, dim=0) for points in every]).min(0).values
    high = torch.stack([torch.quantile(points, 0.998, dim=0) for points in every]).max(0).values
    low, high = low - 0.1 * (high - low), high + 0.1 * (high - low)
    bounds = [low[0].item(), high[0].item(), low[1].item(), high[1].item()]
    figure = Figure(figsize=(3.6 * len(guides), 3.6), layout="constrained")
    axes = figure.subplots(1, len(guides), squeeze=False)[0]
    for ax, (label, result) in zip(axes, guides.items()):
        ax.scatter(reference[:, 0], reference[:, 1], s=3, color="black", alpha=0.5, label=reference_label, zorder=2)
        if label in drawn:
            counts, edges = torch.histogramdd(drawn[label], bins=[48, 48], range=bounds)
            centres = [(edge[1:] + edge[:-1]) / 2 for edge in edges]
            levels = mass_levels(counts, MASSES)
            if len(levels) >= 2:
                ax.contourf(centres[0], centres[1], counts.T, levels=levels, cmap="Blues", zorder=1)
            else:  # all draws in one bin: no regions to draw
                ax.scatter(drawn[label][:, 0], drawn[label][:, 1], s=3, color="tab:blue", zorder=1)
            title = f"{label}\nELBO {result['elbo']:.3f} ± {result['elbo_se']:.3f}"
        else:
            title = f"{label}\ndiverged at step {result['diverged_at']}"
        ax.set_title(title, fontsize=10)
        ax.set_xlim(*bounds[:2])
        ax.set_ylim(*bounds[2:])
        ax.set_xlabel(spec.labels[0])
        ax.set_ylabel(spec.labels[1])
    axes[0].legend(loc="upper left", fontsize=8)
    figure.suptitle(f"{spec.description}: guides (blue) against {reference_label} (black)", fontsize=11)
    return figure


def main(args) -> Dict[str, dict]:
    """Train every guide on every model of ``args.models``, run NUTS, draw and print the comparison.

    Runs on ``args.threads`` torch threads (restored afterwards): the models are small, and two
    threads fighting over tensors of a few hundred numbers make a step several times slower
    (logistic regression, IAF guide, 2 shared cores: 11 ms a step on one thread, 180 on two).

    Returns:
        Model name -> ``{"guides": {label: result of train_guide}, "nuts": (S, 2) NUTS draws of the
        pair, "figure": path of the PNG}``.
    """
    guide_options(args.flows)  # checks the entries before any training
    unknown = [name for name in args.models if name not in MODELS]
    if unknown:
        raise ValueError(f"unknown models {unknown}; known models: {', '.join(MODELS)}")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _compare(args)
    finally:
        torch.set_num_threads(threads)


def _compare(args) -> Dict[str, dict]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: Dict[str, dict] = {}
    for name in args.models:
        spec = MODELS[name]
        pyro.clear_param_store()
        guides = {
            label: train_guide(spec, label, flow, base, args, index, options)
            for index, (label, (flow, base, options)) in enumerate(guide_options(args.flows, name).items())
        }
        start = time.perf_counter()
        if spec.exact_posterior is not None:
            pyro.set_rng_seed(args.seed)
            reference, reference_label = pair(spec, spec.exact_posterior(args.nuts_samples)), "exact posterior"
            print(f"{name}: {args.nuts_samples} exact posterior draws (no NUTS chain)")
        else:
            reference, reference_label = (
                pair(spec, nuts_samples(spec, args.nuts_warmup, args.nuts_samples, args.seed)),
                "NUTS",
            )
            print(
                f"{name}: NUTS, {args.nuts_warmup} warm-up + {args.nuts_samples} draws, "
                f"{time.perf_counter() - start:.0f} s"
            )
        pyro.set_rng_seed(args.seed)
        path = out / f"{name}.png"
        plot_model(spec, guides, reference, args.plot_samples, reference_label).savefig(path, dpi=100)
        results[name] = {"guides": guides, "nuts": reference, "figure": path}
    print(
        f"\n{'model':14s} {'guide':34s} {'ELBO':>10s} {'± se':>7s} {'ms/step':>8s}"
        f"   ({args.steps} steps, {args.num_flows} flow steps, {args.elbo_samples} draws)"
    )
    for name, result in results.items():
        for label, guide in result["guides"].items():
            print(
                f"{name:14s} {label:34s} {guide['elbo']:10.3f} {guide['elbo_se']:7.3f} "
                f"{1000 * guide['seconds_per_step']:8.1f}"
            )
    print(f"pictures: {', '.join(str(result['figure']) for result in results.values())}")
    return results


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULTS["models"], choices=list(MODELS))
    parser.add_argument(
        "--flows",
        nargs="*",
        default=DEFAULTS["flows"],
        help=f"flow guides as FLOW[:BASE]; FLOW in {', '.join(POSTERIOR_FLOWS)}; "
        f"BASE in {', '.join(BASES)} (default diagonal)",
    )
    parser.add_argument("--num-flows", type=int, default=DEFAULTS["num_flows"], help="flow steps of each flow guide")
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="SVI steps per guide")
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    parser.add_argument("--particles", type=int, default=DEFAULTS["particles"], help="vectorized ELBO particles")
    parser.add_argument("--elbo-samples", type=int, default=DEFAULTS["elbo_samples"], help="draws of the final ELBO")
    parser.add_argument("--plot-samples", type=int, default=DEFAULTS["plot_samples"], help="guide draws per picture")
    parser.add_argument("--nuts-warmup", type=int, default=DEFAULTS["nuts_warmup"])
    parser.add_argument("--nuts-samples", type=int, default=DEFAULTS["nuts_samples"])
    parser.add_argument("--out", default=DEFAULTS["out"], help="folder of the PNGs")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--threads", type=int, default=DEFAULTS["threads"], help="torch threads")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    main(parser.parse_args())
