"""vaeflows against Pyro's, zuko's and normflows' flows on the same flow-posterior VAE, in one run.

The model is the MLP VAE of ``vaeflows train --arch mlp`` (784-300-300 ReLU encoder, ``Linear`` loc
and ``Linear`` + Softplus scale heads, 300-300-784 ReLU decoder, Bernoulli pixels) on statically
binarized MNIST, with a ``K``-step flow posterior ``q(z_K | x)``: ``z_0 ~ N(mu(h), sigma(h)^2)``,
``h = encoder(x)``, then the flow. The encoder, heads and decoder of every variant start from the
same weights (one seed); only the flow is each library's own. The posterior is built

* **vaeflows**: ``build_vae(..., flow=...)`` and the loss of ``vaeflows train``
  (:func:`vaeflows.infer.experiment.vae_loss`);
* **Pyro**: Pyro's own conditional transforms (``pyro.distributions.transforms``:
  ``ConditionalPlanar``, ``conditional_affine_autoregressive`` (with ``stable=True``, the gated
  IAF, beside vaeflows' default gated ``iaf``; without, the affine IAF ``z' = exp(a) z + m``,
  beside vaeflows' ``iaf`` with ``update="affine"``), ``ConditionalHouseholder``) conditioned on
  ``h`` in a ``TransformedDistribution``; the model
  with ``dist.Normal(0, 1).to_event(1)`` and ``dist.Bernoulli(logits=...).to_event(3)``; the loss
  ``Trace_ELBO().differentiable_loss``;
* **zuko** (the affine IAF rows): ``zuko.flows.MAF`` with ``context = 300`` (the encoder
  features), inverted (the inverted MAF is an IAF: one pass to sample), on a base that is the encoder's Gaussian (a zuko
  ``LazyDistribution``), wrapped by ``pyro.contrib.zuko.ZukoToPyro`` in the same Pyro model/guide and
  ``Trace_ELBO`` as the Pyro rows;
* **normflows**: ``normflows.flows.MaskedAffineAutoregressive`` (the affine IAF rows) with ``context_features = 300``
  (used forward, its one-pass direction, as normflows samples) with ``Permute`` between steps, and
  ``normflows.flows.Planar``; the ELBO written out as normflows' ``NormalizingFlowVAE`` does it
  (normflows has no Pyro integration and its VAE class passes no context to the flows).

Flow sizes match vaeflows' defaults: planar and Householder parameters come from one linear map of
``h`` per step (vaeflows: one ``Linear(300, K P)`` for all steps, Pyro: a ``Linear(300, P)`` per
step: the same parameters); the IAFs have MADEs of width (320, 320) taking ``h`` as an extra input.
Two peers differ in kind, which the table says: **normflows has no conditional planar flow**, so its
planar row is a *global* (not amortized) planar flow, the one of normflows' VAE example; and Pyro's
and zuko's IAFs use ReLU MADEs (vaeflows' use ELU).

Protocol: the variants of one flow are trained **round-robin in blocks** of ``--block`` steps on the
same minibatches (Adamax, lr 5e-4, eps 1e-7, batch 100, no KL warm-up), the order rotated every
round, with ``torch.set_num_threads(--threads)``; the first round is not timed. Step cost: each
block's seconds per step over vaeflows' block in the same round (median over rounds, 95% bootstrap
interval). After ``--steps`` steps each variant's test -ELBO (one sample per point, the first
``--test-points`` test images) is computed, so the ELBOs are at an equal step budget, with its
difference to vaeflows' and the standard error of that difference from the paired batch means
(the same ``--test-batch`` images: the spread between images, common to all, cancels). A peer that is
not installed (zuko, normflows: the ``bench`` extra) is skipped, and the results file says so.

Results go to ``benchmarks/results/peers_<device>.md`` (or ``--out``).

Example:
    python benchmarks/peers.py --flows planar,iaf --steps 500 --block 25
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA_DIR, device_name, package_version, results_header, synchronize, write_markdown  # noqa: E402
from step_time import bootstrap_interval  # noqa: E402

from vaeflows.data import load_dataset  # noqa: E402
from vaeflows.distributions import HALF_LOG_2PI  # noqa: E402
from vaeflows.infer.experiment import resolve_device, vae_loss  # noqa: E402
from vaeflows.models import VAE, build_vae  # noqa: E402

__all__ = ["Variant", "PEERS", "VAEFLOWS_FLOWS", "FLOWS", "peer_missing", "build_variants", "main"]

HERE = Path(__file__).resolve().parent
#: Hidden widths of the IAFs' MADEs (vaeflows' default for ``iaf``).
IAF_HIDDEN = [320, 320]
BENCH_EXTRA = "pip install -e '.[bench]'"


def peer_missing(package: str) -> Optional[str]:
    """``None`` if ``package`` imports, else the line the results file and the screen give."""
    if importlib.util.find_spec(package) is None:
        return f"skipped: {package} missing ({BENCH_EXTRA})"
    return None


@dataclass
class Variant:
    """One row: a library's flow posterior on the shared VAE.

    Attributes:
        library: ``vaeflows``, ``Pyro``, ``zuko`` or ``normflows``.
        flow: the flow family (a key of :data:`VAEFLOWS_FLOWS`).
        detail: what exactly is built (the table's third column).
        module: every trained parameter.
        loss: minibatch ``x`` -> minus the mean ELBO.
    """

    library: str
    flow: str
    detail: str
    module: nn.Module
    loss: Callable[[torch.Tensor], torch.Tensor]


class LinearParams(nn.Module):
    """``context -> params``: one ``Linear`` split into ``param_dims`` (as Pyro's ``DenseNN`` returns
    them, a tensor for one parameter, else a tuple), i.e. ``DenseNN`` without hidden layers."""

    def __init__(self, context_dim: int, param_dims: Sequence[int]) -> None:
        super().__init__()
        self.param_dims = list(param_dims)
        self.linear = nn.Linear(context_dim, sum(param_dims))

    def forward(self, context: torch.Tensor):
        out = self.linear(context)
        if len(self.param_dims) == 1:
            return out
        return tuple(out.split(self.param_dims, dim=-1))


class PyroFlowVAE(nn.Module):
    """The shared VAE's networks with a posterior made by ``posterior(h, mu, sigma)`` (a Pyro
    distribution of batch shape ``(B,)``, event ``(D,)``) and a plain Pyro model; loss by
    ``Trace_ELBO``."""

    def __init__(self, base: VAE, flows: nn.Module, posterior: Callable) -> None:
        super().__init__()
        self.encoder, self.decoder, self.loc, self.scale = base.encoder, base.decoder, base.loc, base.scale
        self.flows = flows
        self.latent_dim = base.latent_dim
        self._posterior = posterior
        self.elbo = pyro.infer.Trace_ELBO()

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0], device=x.device):  # type: ignore[arg-type]
            prior = dist.Normal(x.new_zeros(()), x.new_ones(())).expand([x.shape[0], self.latent_dim]).to_event(1)
            z = pyro.sample("z", prior)
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(3), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        h = self.encoder(x)
        with pyro.plate("data", x.shape[0], device=x.device):  # type: ignore[arg-type]
            pyro.sample("z", self._posterior(h, self.loc(h), self.scale(h)))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return self.elbo.differentiable_loss(self.model, self.guide, x) / x.shape[0]


def _pyro_posterior(transforms: nn.ModuleList) -> Callable:
    def posterior(h, mu, sigma):
        base = dist.Normal(mu, sigma).to_event(1)
        if not len(transforms):
            return base
        return dist.TransformedDistribution(base, [t.condition(h) for t in transforms])

    return posterior


def _pyro_transforms(flow: str, d: int, c: int, k: int) -> nn.ModuleList:
    if flow == "none":
        return nn.ModuleList()
    if flow == "planar":
        return nn.ModuleList(T.ConditionalPlanar(LinearParams(c, [1, d, d])) for _ in range(k))
    if flow == "householder":
        return nn.ModuleList(T.ConditionalHouseholder(d, LinearParams(c, [d]), 1) for _ in range(k))
    stable = flow == "iaf"  # the gated update; iaf-affine: Pyro's default affine one
    return nn.ModuleList(T.conditional_affine_autoregressive(d, c, IAF_HIDDEN, stable=stable) for _ in range(k))


def build_pyro(base: VAE, flow: str, k: int) -> Variant:
    d, c = base.latent_dim, base.loc.in_features
    transforms = _pyro_transforms(flow, d, c, k)
    details = {
        "none": "`dist.Normal(mu, sigma).to_event(1)`",
        "planar": f"{k} x `ConditionalPlanar(Linear(300, 2D+1))`",
        "householder": f"{k} x `ConditionalHouseholder(D, Linear(300, D), 1)`",
        "iaf": f"{k} x `conditional_affine_autoregressive(D, 300, {IAF_HIDDEN}, stable=True)`",
        "iaf-affine": f"{k} x `conditional_affine_autoregressive(D, 300, {IAF_HIDDEN})`",
    }
    vae = PyroFlowVAE(base, transforms, _pyro_posterior(transforms))
    return Variant("Pyro", flow, details[flow] + ", `Trace_ELBO`", vae, vae.loss)


def build_zuko(base: VAE, flow: str, k: int) -> Variant:
    import zuko
    from pyro.contrib.zuko import ZukoToPyro

    class EncoderGaussian(zuko.lazy.LazyDistribution):
        """zuko's base ``N(mu(h), sigma(h)^2)``: the shared Gaussian heads, ``h`` as the context."""

        def __init__(self, loc: nn.Module, scale: nn.Module) -> None:
            super().__init__()
            self.loc, self.scale = loc, scale

        def forward(self, c=None):
            return zuko.distributions.DiagNormal(self.loc(c), self.scale(c))

    d, c = base.latent_dim, base.loc.in_features
    maf = zuko.flows.MAF(d, context=c, transforms=k, hidden_features=IAF_HIDDEN)
    flows = zuko.lazy.Flow(maf.transform.inv, EncoderGaussian(base.loc, base.scale))
    vae = PyroFlowVAE(base, flows, lambda h, mu, sigma: ZukoToPyro(flows(h)))
    detail = (
        f"`zuko.flows.MAF(D, context=300, transforms={k}, hidden_features={IAF_HIDDEN})` inverted, "
        "`ZukoToPyro`, `Trace_ELBO`"
    )
    return Variant("zuko", flow, detail, vae, vae.loss)


class NormflowsVAE(nn.Module):
    """The shared networks with normflows flows; minus the ELBO as normflows' ``NormalizingFlowVAE``
    computes it (``z, log_det = flow(z)``, ``log_q -= log_det``), with ``h`` passed to the flows that
    take a context."""

    def __init__(self, base: VAE, flows: nn.ModuleList, conditional: bool) -> None:
        super().__init__()
        self.encoder, self.decoder, self.loc, self.scale = base.encoder, base.decoder, base.loc, base.scale
        self.flows = flows
        self.conditional = conditional

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        mu, sigma = self.loc(h), self.scale(h)
        eps = torch.randn_like(mu)
        z = mu + sigma * eps
        log_q = (-0.5 * eps * eps - sigma.log() - HALF_LOG_2PI).sum(-1)
        for flow in self.flows:
            z, log_det = flow(z, context=h) if self.conditional else flow(z)
            log_q = log_q - log_det
        log_p = (-0.5 * z * z - HALF_LOG_2PI).sum(-1)
        log_p = log_p - F.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="none").flatten(1).sum(-1)
        return (log_q - log_p).mean()


def build_normflows(base: VAE, flow: str, k: int) -> Variant:
    import normflows as nf

    d, c = base.latent_dim, base.loc.in_features
    if flow == "planar":
        flows = nn.ModuleList(nf.flows.Planar((d,)) for _ in range(k))
        detail = (
            f"{k} x `normflows.flows.Planar((D,))`: **global**, not amortized "
            "(normflows has no conditional planar flow)"
        )
        vae = NormflowsVAE(base, flows, conditional=False)
    else:
        steps: List[nn.Module] = []
        for i in range(k):
            steps.append(
                nf.flows.MaskedAffineAutoregressive(
                    d, IAF_HIDDEN[0], context_features=c, num_blocks=1, use_residual_blocks=True
                )
            )
            if i < k - 1:
                steps.append(nf.flows.Permute(d, mode="swap"))
        flows = nn.ModuleList(steps)
        detail = (
            f"{k} x `normflows.flows.MaskedAffineAutoregressive(D, 320, context_features=300, num_blocks=1)`"
            " (one residual block: its MADE takes a context only with residual blocks; scale `sigmoid(u + 2) + 1e-3`), "
            "`Permute` between, "
            "used forward (one pass)"
        )
        vae = NormflowsVAE(base, flows, conditional=True)
    return Variant("normflows", flow, detail, vae, vae.loss)


def build_vaeflows(base: VAE, flow: str, k: int, data) -> Variant:
    name, options = VAEFLOWS_FLOWS[flow]
    vae = build_vae("mlp", data.image_shape, data.likelihood, base.latent_dim, name, k, **options)
    missing, unexpected = vae.load_state_dict(base.state_dict(), strict=False)
    if unexpected or any(not name.startswith("flow.") for name in missing):
        raise RuntimeError(f"vaeflows' VAE does not share the base's networks: {missing} {unexpected}")
    vae.register_params = False  # as train_vae does
    loss = vae_loss(vae, data, warmup=0)
    settings = [f'flow="{name}"' if name else "flow=None", *(f'{key}="{value}"' for key, value in options.items())]
    shown = ", ".join(settings)
    detail = f'`build_vae("mlp", ..., {shown})`' + (f", {k} steps" if flow != "none" else "") + ", `vae_loss`"
    return Variant("vaeflows", flow, detail, vae, lambda x: loss(x, 1))


#: library -> (the package it needs, the flows it has, its builder ``(base, flow, K) -> Variant``).
PEERS: Dict[str, tuple] = {
    "Pyro": ("pyro", ("none", "planar", "iaf", "iaf-affine", "householder"), build_pyro),
    "zuko": ("zuko", ("iaf-affine",), build_zuko),
    "normflows": ("normflows", ("planar", "iaf-affine"), build_normflows),
}
#: The rows' flows -> vaeflows' flow name and options: ``iaf`` is the gated IAF (vaeflows' default,
#: Pyro's ``stable=True``), ``iaf-affine`` the affine one (``z' = exp(a) z + m``: Pyro's default,
#: zuko's MAF, normflows' MAF).
VAEFLOWS_FLOWS: Dict[str, Tuple[Optional[str], Dict[str, str]]] = {
    "none": (None, {}),
    "planar": ("planar", {}),
    "iaf": ("iaf", {}),
    "iaf-affine": ("iaf", {"update": "affine"}),
    "householder": ("householder", {}),
}
FLOWS = tuple(VAEFLOWS_FLOWS)


def _copy_base(base: VAE, device: torch.device) -> VAE:
    return copy.deepcopy(base).to(device)


def build_variants(flow: str, base: VAE, data, args: argparse.Namespace, device: torch.device, notes: List[str]):
    """vaeflows' variant of ``flow`` and every installed peer's, each on a copy of ``base``."""
    variants = [build_vaeflows(_copy_base(base, device), flow, args.num_flows, data)]
    variants[0].module.to(device)
    for library, (package, flows, build) in PEERS.items():
        if flow not in flows or library not in args.peers:
            continue
        missing = peer_missing(package)
        if missing:
            note = f"{library} ({flow}): {missing}"
            if note not in notes:
                notes.append(note)
            continue
        torch.manual_seed(args.seed + 1)
        variant = build(_copy_base(base, device), flow, args.num_flows)
        variant.module.to(device)
        variants.append(variant)
    return variants


def _step(variant: Variant, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> torch.Tensor:
    value = variant.loss(x)
    optimizer.zero_grad(set_to_none=True)
    value.backward()
    optimizer.step()
    return value.detach()


@torch.no_grad()
def test_elbo(variant: Variant, test: torch.Tensor, batch_size: int, seed: int) -> torch.Tensor:
    """Minus the one-sample ELBO of each ``batch_size``-point batch of ``test``, averaged within the
    batch (nats; float64, on the CPU)."""
    torch.manual_seed(seed)
    return torch.stack([variant.loss(x) for x in test.split(batch_size)]).double().cpu()


def paired_difference(ours: torch.Tensor, theirs: torch.Tensor) -> tuple:
    """``theirs - ours`` of the batch means (the same test batches): its mean and standard error.
    Paired, so the spread between images, common to both, cancels."""
    difference = theirs - ours
    error = float(difference.std() / math.sqrt(len(difference))) if len(difference) > 1 else float("nan")
    return float(difference.mean()), error


def train_family(variants: List[Variant], train: torch.Tensor, args, device, log) -> List[dict]:
    """Train ``variants`` round-robin in blocks on the same minibatches; seconds per step and ratios."""
    optimizers = [torch.optim.Adamax(v.module.parameters(), lr=5e-4, eps=1e-7) for v in variants]
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    times: List[List[float]] = [[] for _ in variants]
    last = [float("nan")] * len(variants)
    rounds = math.ceil(args.steps / args.block)
    batches_per_pass = train.shape[0] // args.batch_size
    for r in range(rounds):
        first = r * args.block
        count = min(args.block, args.steps - first)
        order = [(i + r) % len(variants) for i in range(len(variants))]
        for i in order:
            torch.manual_seed(args.seed + r)
            synchronize(device)
            start = clock()
            for s in range(first, first + count):
                b = s % batches_per_pass
                value = _step(variants[i], optimizers[i], train[b * args.batch_size : (b + 1) * args.batch_size])
            synchronize(device)
            if r or rounds == 1:
                times[i].append((clock() - start) / count)
            last[i] = float(value)
    rows = []
    for i, variant in enumerate(variants):
        ratios = [t / t0 for t, t0 in zip(times[i], times[0])]
        low, high = bootstrap_interval(ratios)
        rows.append(
            {
                "variant": variant,
                "ms": 1000 * statistics.median(times[i]),
                "ratio": statistics.median(ratios),
                "low": low,
                "high": high,
                "last_loss": last[i],
                "params": sum(p.numel() for p in variant.module.parameters()),
            }
        )
        if not math.isfinite(last[i]):
            log(f"[{variant.flow} {variant.library}] the loss is not finite after training: {last[i]}")
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=DATA_DIR)
    parser.add_argument("--flows", default=",".join(FLOWS), help=f"comma-separated: {', '.join(FLOWS)}")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated: {', '.join(PEERS)}")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--latent-dim", type=int, default=64)
    parser.add_argument("--num-flows", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--steps", type=int, default=500, help="training steps of every variant (the budget)")
    parser.add_argument("--block", type=int, default=25, help="steps per variant per round")
    parser.add_argument("--test-points", type=int, default=10000, help="test images scored (the first N)")
    parser.add_argument("--test-batch", type=int, default=100, help="test points per batch (the paired s.e.'s unit)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--clock", choices=["cpu", "wall"], help="default: cpu on a CPU, wall on a GPU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/peers_<device>.md")
    args = parser.parse_args(argv)
    flows = [f for f in args.flows.split(",") if f]
    args.peers = [p for p in args.peers.split(",") if p]
    for flow in flows:
        if flow not in FLOWS:
            parser.error(f"--flows: unknown flow {flow!r}; known: {', '.join(FLOWS)}")
    for peer in args.peers:
        if peer not in PEERS:
            parser.error(f"--peers: unknown peer {peer!r}; known: {', '.join(PEERS)}")
    if args.steps < 1 or args.block < 1:
        parser.error("--steps and --block must be at least 1")
    device = resolve_device(args.device)
    args.clock = args.clock or ("cpu" if device.type == "cpu" else "wall")
    out = args.out or HERE / "results" / f"peers_{device.type}.md"
    torch.set_num_threads(args.threads)
    code = package_version()
    data = load_dataset("binarized-mnist", args.data_dir)
    generator = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(data.train.shape[0], generator=generator)
    needed = min(data.train.shape[0], args.steps * args.batch_size)
    train = data.train[order[:needed]].to(device)
    points = args.test_points - args.test_points % args.test_batch or args.test_points  # equal batches
    test = data.test[:points].to(device)
    torch.manual_seed(args.seed)
    base = build_vae("mlp", data.image_shape, data.likelihood, args.latent_dim, None, args.num_flows)
    notes: List[str] = []
    rows: List[dict] = []
    with pyro.validation_enabled(False):
        for flow in flows:
            variants = build_variants(flow, base, data, args, device, notes)
            family = train_family(variants, train, args, device, print)
            for row in family:
                row["test_batches"] = test_elbo(row["variant"], test, args.test_batch, args.seed)
                row["test_elbo"] = float(row["test_batches"].mean())
                row["gap"], row["gap_se"] = paired_difference(family[0]["test_batches"], row["test_batches"])
                v = row["variant"]
                print(
                    f"[{flow:11s} {v.library:9s}] {row['ms']:8.2f} ms/step  x{row['ratio']:.2f} "
                    f"({row['low']:.2f}-{row['high']:.2f})  test -ELBO {row['test_elbo']:.2f}  {row['params']} params"
                )
            rows += family
            text = write_results(args, argv, code, device, rows, notes, test.shape[0], out)
    for note in notes:
        print(note)
    print(text)
    print(f"wrote {out}")
    return 0


def write_results(args, argv: List[str], code: str, device: torch.device, rows, notes, points: int, out: Path) -> str:
    """The results file of the rows so far (written after every flow: a run cut short keeps them)."""
    machine_note = (
        "The development machine is shared (2 cores, other jobs running): read the ratios, not the milliseconds."
        if device.type == "cpu"
        else "Wall clock with the device synchronized around every block."
    )
    title = f"vaeflows against Pyro, zuko and normflows on one flow-posterior VAE ({device_name(device)})"
    lines = results_header(title, "peers.py", argv, code) + [
        f"- **Peers**: {_versions()}.",
        f"- **Protocol**: the MLP VAE of `vaeflows train --arch mlp` on statically binarized MNIST, z = "
        f"{args.latent_dim}, {args.num_flows} flow steps, batch {args.batch_size}, Adamax (lr 5e-4, eps 1e-7), "
        f"no KL warm-up; encoder, heads and decoder from one seed for every variant. The variants of one flow "
        f"are trained round-robin in blocks of {args.block} steps on the same minibatches (the order rotated "
        f"every round, the first round not timed) for {args.steps} steps each; {args.clock} clock, torch "
        f"threads {args.threads}. Step cost: seconds per step over vaeflows' in the same round, median over "
        f"rounds with a 95% bootstrap interval. Test -ELBO: one sample per point on the first {points} "
        f"test images after the same number of steps, and its difference to vaeflows' with the standard error "
        f"of the paired differences of {args.test_batch}-image batch means (a small budget: the figures compare "
        "the libraries, "
        f"they are far from converged). {machine_note}",
        "",
        "| flow | library | what is built | ms / step | step time / vaeflows' (95% interval) | "
        "test -ELBO (nats) | minus vaeflows' (± paired s.e.) | parameters |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        v = row["variant"]
        lines.append(
            f"| {v.flow} | {v.library} | {v.detail} | {row['ms']:.2f} | "
            f"{row['ratio']:.2f} ({row['low']:.2f}-{row['high']:.2f}) | "
            f"{row['test_elbo']:.2f} | {row['gap']:+.2f} ± {row['gap_se']:.2f} | {row['params']:,} |"
        )
    if notes:
        lines += ["", *[f"- {note}" for note in notes]]
    lines += ["", *_verdict(rows)]
    return write_markdown(lines, out)


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("pyro-ppl", "zuko", "normflows"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} not installed")
    return ", ".join(found)


def _verdict(rows: List[dict]) -> List[str]:
    """Plain sentences: where vaeflows is slower (the whole interval of the ratio under 1) or reaches a
    worse test -ELBO (by more than twice the paired standard error) than a peer."""
    base = {row["variant"].flow: row for row in rows if row["variant"].library == "vaeflows"}
    lines = []
    for row in rows:
        v = row["variant"]
        if v.library == "vaeflows":
            continue
        ours = base[v.flow]
        if row["high"] < 1.0:
            lines.append(
                f"- **vaeflows loses on speed** ({v.flow}): {v.library}'s step is {row['ratio']:.2f}x vaeflows'."
            )
        if -row["gap"] > 2 * row["gap_se"]:
            lines.append(
                f"- **vaeflows loses on test -ELBO** ({v.flow}): {v.library} {row['test_elbo']:.2f} against "
                f"vaeflows' {ours['test_elbo']:.2f} nats at the same {v.flow} budget."
            )
    head = [
        "Where vaeflows loses (a peer's step-time interval wholly under 1, or its test -ELBO better by more than "
        "twice the paired standard error):",
        "",
    ]
    return head + (
        lines
        or ["- nowhere: vaeflows is as fast as every peer or faster, with a test -ELBO as good, on every flow here."]
    )


if __name__ == "__main__":
    sys.exit(main())
