"""Pyro's autoguides, zuko's flows and vaeflows' ``AutoFlow`` on Pyro models: final ELBO and step time.

Issue 13 ("Measured"). On each model of ``examples/pyro_models.py`` (the banana of Pyro's NeuTra
example, the eight schools, a logistic regression on the breast-cancer data; and, for issue 15's
spline posteriors, the four-mode folded model), for each seed, every
guide below is trained for the same fixed number of steps by the same protocol
(``pyro_models.make_svi``: ``Trace_ELBO`` with vectorized particles, ``ClippedAdam``), then scored by
``pyro_models.elbo_estimate`` (10,000 draws, eval mode):

* Pyro: ``AutoDiagonalNormal``, ``AutoMultivariateNormal``, ``AutoIAFNormal(num_transforms=K)``
  (hidden width ``3 D + 1``, Pyro's default), and ``AutoNormalizingFlow`` with ``K`` of Pyro's
  planar, radial, block-autoregressive (BNAF) and spline-autoregressive (NSF) transforms, each with
  Pyro's default options (``functools.partial(T.iterated, K, T.planar)``, ...);
* zuko (``pip install -e '.[bench]'``): ``zuko.flows.MAF`` (hidden width ``3 D + 1``) and
  ``zuko.flows.NSF`` (zuko's defaults), ``K`` transforms each, inverted for fast sampling and
  wrapped by ``pyro.contrib.zuko.ZukoToPyro`` as in Pyro's ``svi_flow_guide`` tutorial, as the
  posterior of an ``AutoContinuous`` guide (:class:`AutoZuko`); the inverted MAF is an IAF.
  Without zuko these rows are skipped, with a note on screen and in the results file;
* vaeflows: ``AutoFlow(model, flow, num_flows=K)`` for every flow of
  ``vaeflows.transforms.POSTERIOR_FLOWS``, on the ``"diagonal"`` affine base, each flow with its
  default options, and on the ``"full"`` (lower-triangular) base for the flows in
  :data:`FULL_BASE_FLOWS`.

All flow guides have the same depth ``K`` (``--num-flows``). The guides of one model and seed
are trained **in turn, in blocks** of ``--block`` steps (round-robin, the order rotated each
round), so that the machine's changing speed hits all of them alike; the seconds of every block
are recorded, and a guide's step cost is given as its **per-round ratio** to ``AutoIAFNormal``'s
block in the same round (median over all rounds but the first, which holds first-call costs, and
all seeds, with a 95% bootstrap interval). Each
guide is initialized from the same seed whatever the order, and each of its blocks draws from a
seed of its own (seed, round, the guide's name), so a guide's run does not depend on which others run.
A guide whose loss turns non-finite (or raises) stops training there and is reported as diverged.
Pyro's argument validation is off while training (as in ``step_time.py``), for every guide alike.

Guides keep their parameters in Pyro's global parameter store under their module name; two
instances of one class (``AutoFlow``) would share one name and so one set of parameters. Every
guide here is renamed (``guide._pyro_name``) before its first call, so none sees another's.

Results go to ``benchmarks/results/pyro_guides.md`` (or ``--out``): a table per model (guide,
ELBO mean +- standard error over seeds, the mean within-run Monte Carlo standard error, best seed,
parameters, step-cost ratio to ``AutoIAFNormal``), the machine line, the code and the command, and
what the numbers say against the issue's targets: a vaeflows guide has the best ELBO on every
model, and ``AutoFlow("iaf")``'s step costs no more than ``AutoIAFNormal``'s at equal depth.

Example:
    python benchmarks/pyro_guides.py --models banana --seeds 1 --steps 500
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import pyro
import pyro.distributions.transforms as T
import torch
from pyro.infer.autoguide import (
    AutoContinuous,
    AutoDiagonalNormal,
    AutoIAFNormal,
    AutoMultivariateNormal,
    AutoNormalizingFlow,
)
from tqdm import tqdm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "examples"))
from common import machine, package_version, results_header, write_markdown  # noqa: E402
from pyro_models import ANNEAL, MODELS, PyroModel, elbo_estimate, make_svi  # noqa: E402
from step_time import bootstrap_interval  # noqa: E402

from vaeflows.guides import AutoFlow  # noqa: E402
from vaeflows.transforms import POSTERIOR_FLOWS  # noqa: E402

__all__ = ["AutoZuko", "GuideSpec", "guide_specs", "zuko_available", "train_and_time", "main"]

#: The reference of the step-cost ratios.
REFERENCE = "AutoIAFNormal"
#: Flows that AutoFlow also runs on the full (lower-triangular) affine base.
FULL_BASE_FLOWS = ("iaf", "planar", "sylvester-triangular")
ZUKO_MISSING = "zuko is not installed, so the zuko rows were skipped: pip install -e '.[bench]'"


def zuko_available() -> bool:
    """Whether ``import zuko`` works (zuko is the ``bench`` extra, not a dependency)."""
    try:
        import zuko  # noqa: F401
    except ImportError:
        return False
    return True


class AutoZuko(AutoContinuous):
    """An ``AutoContinuous`` guide whose posterior on the unconstrained latent vector is a zuko flow.

    ``make_flow(D)`` builds the flow (a ``zuko.flows.Flow``, a ``LazyDistribution``) once the
    latent size ``D`` is known; its distribution is wrapped by ``pyro.contrib.zuko.ZukoToPyro``,
    which samples and scores in one pass (``rsample_and_log_prob``). The flow is a plain
    ``nn.Module`` attribute, which ``PyroModule`` registers with ``pyro.module``.

    Args:
        model: a Pyro model with continuous latents.
        make_flow: ``D -> zuko flow``.
    """

    def __init__(self, model: Callable, make_flow: Callable[[int], torch.nn.Module]) -> None:
        self._make_flow = make_flow
        super().__init__(model)

    def _setup_prototype(self, *args, **kwargs) -> None:
        super()._setup_prototype(*args, **kwargs)
        self.flow = self._make_flow(self.latent_dim)

    def get_posterior(self, *args, **kwargs):
        from pyro.contrib.zuko import ZukoToPyro

        return ZukoToPyro(self.flow())


def _zuko_flow(kind: str, depth: int, dim: int) -> torch.nn.Module:
    """zuko's ``MAF`` (hidden width ``3 D + 1``) or ``NSF`` (zuko's defaults), inverted: sampling,
    what a guide does, is then one pass (Pyro's ``svi_flow_guide`` tutorial does the same)."""
    import zuko

    if kind == "MAF":
        flow = zuko.flows.MAF(dim, transforms=depth, hidden_features=[3 * dim + 1])
    else:
        flow = zuko.flows.NSF(dim, transforms=depth)
    flow.transform = flow.transform.inv
    return flow


@dataclass(frozen=True)
class GuideSpec:
    """One row of the tables.

    Attributes:
        name: its label (and ``--guides`` key).
        source: ``Pyro``, ``zuko`` or ``vaeflows``.
        build: ``(model, K) -> guide``.
        flow: whether it has ``K`` flow steps (the others have none).
    """

    name: str
    source: str
    build: Callable[[Callable, int], AutoContinuous]
    flow: bool = True


def _pyro_flow(transform: Callable) -> Callable[[Callable, int], AutoContinuous]:
    return lambda model, depth: AutoNormalizingFlow(model, functools.partial(T.iterated, depth, transform))


def _zuko(kind: str) -> Callable[[Callable, int], AutoContinuous]:
    return lambda model, depth: AutoZuko(model, functools.partial(_zuko_flow, kind, depth))


def _auto_flow(flow: str, base: str, **options) -> Callable[[Callable, int], AutoContinuous]:
    return lambda model, depth: AutoFlow(model, flow, num_flows=depth, base=base, **options)


def guide_specs(with_zuko: bool = True) -> List[GuideSpec]:
    """Every guide of the benchmark, in table order (zuko's only ``with_zuko``)."""
    specs = [
        GuideSpec("AutoDiagonalNormal", "Pyro", lambda model, depth: AutoDiagonalNormal(model), flow=False),
        GuideSpec("AutoMultivariateNormal", "Pyro", lambda model, depth: AutoMultivariateNormal(model), flow=False),
        GuideSpec(REFERENCE, "Pyro", lambda model, depth: AutoIAFNormal(model, num_transforms=depth)),
        GuideSpec("AutoNormalizingFlow planar", "Pyro", _pyro_flow(T.planar)),
        GuideSpec("AutoNormalizingFlow radial", "Pyro", _pyro_flow(T.radial)),
        GuideSpec("AutoNormalizingFlow block_autoregressive", "Pyro", _pyro_flow(T.block_autoregressive)),
        GuideSpec("AutoNormalizingFlow spline_autoregressive", "Pyro", _pyro_flow(T.spline_autoregressive)),
    ]
    if with_zuko:
        for kind in ("MAF", "NSF"):
            specs.append(GuideSpec(f"zuko {kind} (ZukoToPyro)", "zuko", _zuko(kind)))
    for flow in POSTERIOR_FLOWS:
        specs.append(GuideSpec(f"AutoFlow {flow}", "vaeflows", _auto_flow(flow, "diagonal")))
    for flow in FULL_BASE_FLOWS:
        specs.append(GuideSpec(f"AutoFlow {flow}, full base", "vaeflows", _auto_flow(flow, "full")))
    for update in ("gated", "affine"):
        for base in ("diagonal", "full"):
            name = "iaf" if update == "gated" else "iaf affine"
            label = "" if base == "diagonal" else ", full base"
            build = _auto_flow("iaf", base, init_scale=1.0, **({"update": update} if update == "affine" else {}))
            specs.append(GuideSpec(f"AutoFlow {name}{label}, init_scale 1", "vaeflows", build))
    # the affine update with ReLU MADEs (zuko's MAF, stepwise), on the standard base (the flow
    # alone on N(0, I), as zuko's and AutoNormalizingFlow's) and on the learned bases
    relu = {"update": "affine", "activation": "relu"}
    specs.append(
        GuideSpec("AutoFlow iaf affine relu, standard base", "vaeflows", _auto_flow("iaf", "standard", **relu))
    )
    for base in ("diagonal", "full"):
        label = "" if base == "diagonal" else ", full base"
        build = _auto_flow("iaf", base, init_scale=1.0, **relu)
        specs.append(GuideSpec(f"AutoFlow iaf affine relu{label}, init_scale 1", "vaeflows", build))
    # the spline flows (their conditioners 3D+1 wide in AutoFlow): a base as wide as their bins
    # (init_scale 1: N(0, I) against the tail bound 3), and zero_init (every spline the identity)
    for flow in ("spline-autoregressive", "spline-coupling"):
        specs.append(
            GuideSpec(f"AutoFlow {flow}, init_scale 1", "vaeflows", _auto_flow(flow, "diagonal", init_scale=1.0))
        )
        zero = {"zero_init": True}
        for base, label, scale in (
            ("diagonal", "", 1.0),
            ("standard", ", standard base", None),
            ("full", ", full base", 1.0),
        ):
            options = dict(zero, **({"init_scale": scale} if scale else {}))
            suffix = f"{label}, init_scale 1" if scale else label
            specs.append(GuideSpec(f"AutoFlow {flow} zero{suffix}", "vaeflows", _auto_flow(flow, base, **options)))
    return specs


@dataclass
class Run:
    """One guide's training on one model and seed."""

    spec: GuideSpec
    guide: AutoContinuous
    svi: pyro.infer.SVI
    index: int
    seed: int
    block_seconds: List[float] = field(default_factory=list)
    losses: List[float] = field(default_factory=list)
    diverged_at: Optional[int] = None
    error: str = ""
    elbo: float = math.nan
    elbo_se: float = math.nan
    num_params: int = 0


def _name_code(name: str) -> int:
    """A number fixed by a guide's name (its seeds depend on it, not on its place in the list)."""
    return zlib.crc32(name.encode())


def _seed(*parts: int) -> int:
    """One torch/Pyro seed from several integers."""
    value = 0
    for part in parts:
        value = (value * 1_000_003 + part) % (2**31 - 1)
    return value


def train_and_time(
    spec: PyroModel, guides: Sequence[GuideSpec], seed: int, args: argparse.Namespace, progress: Optional[tqdm] = None
) -> List[Run]:
    """Train every guide on ``spec`` for ``args.steps`` steps in round-robin blocks, time each block,
    then estimate each guide's ELBO."""
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    pyro.clear_param_store()
    runs = []
    for index, guide_spec in enumerate(guides):
        pyro.set_rng_seed(_seed(seed, _name_code(guide_spec.name)))
        guide = guide_spec.build(spec.model, args.num_flows)
        # A name of its own: the param store is keyed by module name (see the module docstring).
        guide._pyro_name = f"{type(guide).__name__}_{index}"
        svi = make_svi(spec, guide, args.lr, args.particles, steps=args.steps, anneal=args.anneal)
        with torch.no_grad():
            guide()  # builds the parameters now, from this guide's seed
        runs.append(Run(guide_spec, guide, svi, index, seed, num_params=sum(p.numel() for p in guide.parameters())))
    rounds = math.ceil(args.steps / args.block)
    for r in range(rounds):
        block = min(args.block, args.steps - r * args.block)
        shift = r % len(runs)
        for run in runs[shift:] + runs[:shift]:
            if run.diverged_at is not None:
                run.block_seconds.append(math.nan)
                continue
            pyro.set_rng_seed(_seed(seed, _name_code(run.spec.name), r + 1))
            start = clock()
            try:
                for _ in range(block):
                    loss = run.svi.step()
                    if not math.isfinite(loss):
                        raise FloatingPointError(f"loss {loss}")
                    run.losses.append(loss)
            except (ValueError, RuntimeError, FloatingPointError, AssertionError) as error:
                run.diverged_at = len(run.losses) + 1
                run.error = f"{type(error).__name__}: {str(error).splitlines()[0][:120] if str(error) else ''}"
                run.block_seconds.append(math.nan)
                continue
            run.block_seconds.append((clock() - start) / block)
        if progress is not None:
            progress.update(1)
    for run in runs:
        if run.diverged_at is None:
            pyro.set_rng_seed(_seed(seed, _name_code(run.spec.name), 0))
            try:
                run.elbo, run.elbo_se = elbo_estimate(spec, run.guide, args.elbo_samples)
                if not math.isfinite(run.elbo):
                    run.error = f"ELBO estimate {run.elbo}"
            except (ValueError, RuntimeError) as error:
                run.error = f"ELBO estimate failed: {type(error).__name__}: {str(error).splitlines()[0][:120]}"
    return runs


def _summary(runs_by_seed: List[List[Run]], name: str) -> dict:
    """Across seeds: ELBO mean and standard error, MC se, best seed, divergences, step ratios."""
    runs = [run for runs in runs_by_seed for run in runs if run.spec.name == name]
    references = [run for runs in runs_by_seed for run in runs if run.spec.name == REFERENCE]
    elbos = [run.elbo for run in runs if math.isfinite(run.elbo)]
    ratios, seconds = [], []
    for run, ref in zip(runs, references):
        skip = 1 if len(run.block_seconds) > 1 else 0  # round 0 holds first-call costs: dropped
        for mine, theirs in zip(run.block_seconds[skip:], ref.block_seconds[skip:]):
            if math.isfinite(mine) and math.isfinite(theirs):
                ratios.append(mine / theirs)
            if math.isfinite(mine):
                seconds.append(mine)
    row = {
        "name": name,
        "source": runs[0].spec.source,
        "params": runs[0].num_params,
        "seeds": len(runs),
        "finite": len(elbos),
        "elbo": statistics.mean(elbos) if elbos else math.nan,
        "elbo_se": statistics.stdev(elbos) / math.sqrt(len(elbos)) if len(elbos) > 1 else math.nan,
        "mc_se": statistics.mean([r.elbo_se for r in runs if math.isfinite(r.elbo_se)]) if elbos else math.nan,
        "best": max(elbos) if elbos else math.nan,
        "ratio": statistics.median(ratios) if ratios else math.nan,
        "ratio_interval": bootstrap_interval(ratios) if len(ratios) > 1 else (math.nan, math.nan),
        "ms": 1000 * statistics.median(seconds) if seconds else math.nan,
        "failures": [
            f"seed {r.seed} step {r.diverged_at}: {r.error}" if r.diverged_at else f"seed {r.seed}: {r.error}"
            for r in runs
            if r.error
        ],
    }
    return row


def _fmt(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"


def _verdict(model: str, rows: List[dict]) -> List[str]:
    """What the table of ``model`` says against the issue's targets, in sentences."""
    scored = [row for row in rows if math.isfinite(row["elbo"])]
    lines = []
    if not scored:
        return [f"- **{model}**: no guide has a finite ELBO."]
    best = max(scored, key=lambda row: row["elbo"])
    ours = [row for row in scored if row["source"] == "vaeflows"]
    theirs = [row for row in scored if row["source"] != "vaeflows"]
    best_ours = max(ours, key=lambda row: row["elbo"]) if ours else None
    best_theirs = max(theirs, key=lambda row: row["elbo"]) if theirs else None
    if best_ours is not None and best_theirs is not None:
        gap = best_ours["elbo"] - best_theirs["elbo"]
        se = math.hypot(best_ours["elbo_se"], best_theirs["elbo_se"])
        size = f"{abs(gap) / se:.1f} standard errors" if math.isfinite(se) and se > 0 else "no seed spread to judge by"
        if gap > 0:
            lines.append(
                f"- **{model}**: best ELBO is vaeflows' ({best_ours['name']}, {_fmt(best_ours['elbo'])}), "
                f"{_fmt(gap)} nats above the best other guide ({best_theirs['name']}, {_fmt(best_theirs['elbo'])}; "
                f"{size}). Target met."
            )
        else:
            lines.append(
                f"- **{model}**: vaeflows **loses**: best ELBO is {best['name']}'s ({_fmt(best['elbo'])}); the best "
                f"vaeflows guide ({best_ours['name']}, {_fmt(best_ours['elbo'])}) is {_fmt(-gap)} nats below "
                f"({size}). Target missed."
            )
    diverged = [row["name"] for row in rows if row["failures"]]
    if diverged:
        lines.append(f"  Failed or diverged in some seed: {', '.join(diverged)} (see below the table).")
    return lines


def write_results(
    args: argparse.Namespace,
    argv: List[str],
    code: str,
    tables: Dict[str, List[dict]],
    notes: List[str],
    minutes: float,
    cpu_minutes: float,
) -> str:
    title = "Pyro's autoguides, zuko and vaeflows' AutoFlow on Pyro models"
    lines = results_header(title, "pyro_guides.py", argv, code)
    lines += [
        f"- **Protocol**: each model, seeds 0-{args.seeds - 1}; every guide trained {args.steps} steps with "
        f"`pyro_models.make_svi` (Trace_ELBO, {args.particles} vectorized particles, ClippedAdam lr {args.lr}, "
        f"clip norm 10, the rate a tenth of that for the last {args.anneal:.0%} of the steps), "
        f"flow depth K = {args.num_flows} for every flow guide; then the ELBO from "
        f"{args.elbo_samples} draws in eval mode (`pyro_models.elbo_estimate`). The guides of a model and seed "
        f"train in turn in blocks of {args.block} step(s), the order rotated every round; {args.clock} clock, "
        f"{torch.get_num_threads()} torch thread(s); Pyro's validation off while training. Run time "
        f"{minutes:.1f} min wall, {cpu_minutes:.1f} min of CPU (the rest is other jobs on the machine).",
        "- **Columns**: ELBO: mean over seeds +- its standard error (spread of the seeds); MC se: the mean "
        "within-run Monte Carlo standard error of one seed's ELBO; best seed: the highest seed's ELBO; "
        f"step / {REFERENCE}: median over all rounds and seeds of the guide's block time over {REFERENCE}'s "
        "block in the same round (the first round, which holds first-call costs, dropped), with a 95% "
        "bootstrap interval. On the banana log Z = 0, so the ELBO is -KL(q || p).",
        "- **Guides**: Pyro's with their defaults (`AutoIAFNormal` hidden width 3D+1; `AutoNormalizingFlow` "
        "with `functools.partial(T.iterated, K, T.<flow>)` on its fixed N(0, I) base); zuko's MAF (hidden "
        "3D+1) and NSF (defaults), inverted, wrapped by `ZukoToPyro` in an `AutoContinuous` guide; "
        "`AutoFlow(model, flow, num_flows=K)` for every registry flow with its default options on the "
        f"diagonal base (init_to_median, init_scale 0.1; iaf hidden 3D+1), and on the full base for "
        f"{', '.join(FULL_BASE_FLOWS)}; and iaf, with its gated and with its affine update "
        "(`update='affine'`, the form of zuko's MAF and `AutoIAFNormal`, its MADEs' output layers zero at the "
        "start: `zero_init`, that update's default), on both bases with `init_scale=1` "
        "(the base as wide as `AutoIAFNormal`'s N(0, I) at the start).",
        *[f"- **Note**: {note}" for note in notes],
        "",
        "## What this says",
        "",
    ]
    for model, rows in tables.items():
        lines += _verdict(model, rows)
    speed = []
    for model, rows in tables.items():
        for row in rows:
            if row["name"] == "AutoFlow iaf":
                low, high = row["ratio_interval"]
                met = "met" if row["ratio"] <= 1.0 else "**missed**"
                speed.append(f"{model} {_fmt(row['ratio'], 2)} ({_fmt(low, 2)}-{_fmt(high, 2)}, {met})")
    if speed:
        lines.append(
            f"- **Step cost**, `AutoFlow iaf` over `AutoIAFNormal` at equal depth K = {args.num_flows} and width "
            f"(target <= 1): {'; '.join(speed)}."
        )
    for model, rows in tables.items():
        spec = MODELS[model]
        lines += [
            "",
            f"## {model}",
            "",
            f"{spec.description}; latent dimension {spec.latent_dim}. "
            + (f"log Z = {spec.log_z:.4f} exactly, so KL(q || p) = log Z - ELBO. " if spec.log_z is not None else "")
            + f"{REFERENCE}: "
            f"{_fmt(next((r['ms'] for r in rows if r['name'] == REFERENCE), math.nan), 2)} ms a step here "
            "(median; for scale only, this machine is shared).",
            "",
            f"| guide | source | ELBO (mean +- se, {args.seeds} seeds) | MC se | best seed | params | "
            f"step / {REFERENCE} (95% interval) |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        best = max((row["elbo"] for row in rows if math.isfinite(row["elbo"])), default=math.nan)
        for row in rows:
            elbo = f"{_fmt(row['elbo'])} +- {_fmt(row['elbo_se'])}"
            if row["elbo"] == best:
                elbo = f"**{elbo}**"
            if row["finite"] < row["seeds"]:
                elbo += f" ({row['seeds'] - row['finite']} of {row['seeds']} failed)"
            low, high = row["ratio_interval"]
            lines.append(
                f"| {row['name']} | {row['source']} | {elbo} | {_fmt(row['mc_se'])} | {_fmt(row['best'])} | "
                f"{row['params']} | {_fmt(row['ratio'], 2)} ({_fmt(low, 2)}-{_fmt(high, 2)}) |"
            )
        failures = [f"- {row['name']}, {failure}" for row in rows for failure in row["failures"]]
        if failures:
            lines += ["", "Failures:", "", *failures]
    return write_markdown(lines, args.out)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated: {', '.join(MODELS)}")
    parser.add_argument(
        "--guides", nargs="+", metavar="NAME", help="guide names, each quoted (default: all; AutoIAFNormal always runs)"
    )
    parser.add_argument("--exclude", nargs="+", metavar="NAME", default=[], help="guide names not to run")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1")
    parser.add_argument("--steps", type=int, default=1000, help="training steps of every guide")
    parser.add_argument("--num-flows", type=int, default=2, help="depth K of every flow guide")
    parser.add_argument("--particles", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument(
        "--anneal", type=float, default=ANNEAL, help="fraction of the steps, at the end, at a tenth of --lr"
    )
    parser.add_argument("--elbo-samples", type=int, default=10000)
    parser.add_argument("--block", type=int, default=50, help="steps per guide per round")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="a tiny run: 1 seed, 2 steps, 100 ELBO draws")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "pyro_guides.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.block, args.elbo_samples = 1, 2, 1, 100
    models = [m for m in args.models.split(",") if m]
    for model in models:
        if model not in MODELS:
            parser.error(f"--models: unknown model {model!r}; known: {', '.join(MODELS)}")
    for name in ("seeds", "steps", "num_flows", "particles", "elbo_samples", "block"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    notes = []
    with_zuko = zuko_available()
    if not with_zuko:
        notes.append(ZUKO_MISSING)
        print(f"note: {ZUKO_MISSING}")
    specs = guide_specs(with_zuko)
    known = {spec.name: spec for spec in guide_specs(True)}
    for name in args.exclude:
        if name not in known or name == REFERENCE:
            parser.error(f"--exclude: not a guide one can leave out: {name!r}; known: {', '.join(known)}")
    specs = [spec for spec in specs if spec.name not in args.exclude]
    if args.guides:
        wanted = args.guides
        for name in wanted:
            if name not in known:
                parser.error(f"--guides: unknown guide {name!r}; known: {', '.join(known)}")
            if known[name].source == "zuko" and not with_zuko:
                parser.error(f"--guides: {name!r} needs zuko: pip install -e '.[bench]'")
        specs = [spec for spec in specs if spec.name in wanted or spec.name == REFERENCE]
    torch.set_num_threads(args.threads)
    code = package_version()
    print(machine())
    rounds = math.ceil(args.steps / args.block)
    tables = {}
    start, cpu_start = time.perf_counter(), time.process_time()
    bar = tqdm(total=len(models) * args.seeds * rounds, desc="rounds", unit="round")
    with pyro.validation_enabled(False), bar:
        for model in models:
            runs_by_seed = []
            for seed in range(args.seeds):
                bar.set_postfix_str(f"{model} seed {seed}")
                runs_by_seed.append(train_and_time(MODELS[model], specs, seed, args, bar))
            tables[model] = [_summary(runs_by_seed, spec.name) for spec in specs]
    minutes, cpu_minutes = (time.perf_counter() - start) / 60, (time.process_time() - cpu_start) / 60
    print(write_results(args, argv, code, tables, notes, minutes, cpu_minutes))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
