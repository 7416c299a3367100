"""The ``vaeflows`` command: train, evaluate and sample flow-posterior VAEs.

    vaeflows train --dataset binarized-mnist --data-dir DIR --flow sylvester-householder --out RUN_DIR
    vaeflows evaluate RUN_DIR --samples 5000
    vaeflows sample RUN_DIR --num 64
    vaeflows density train --flow realnvp --dataset moons --out RUN_DIR
    vaeflows density energy --energy U1 --flow planar --num-flows 16 --out RUN_DIR
    vaeflows density compress RUN_DIR --out test.idf      (a --flow idf run; lossless)
    vaeflows density decompress test.idf --out test-images.idx

Defaults follow van den Berg et al. (2018): gated-conv networks, z = 64, 4 flow steps, batch 100,
Adamax with learning rate 5e-4, 100 warm-up epochs, early-stopping patience 100, at most 2000
epochs, test NLL with 5000 importance samples. Every one can be cut down by a flag.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Callable, List, NoReturn, Optional

from vaeflows.checks import check_int, check_real, check_writable_dir
from vaeflows.data import DATASETS
from vaeflows.infer.run_log import LOG_FORMATS
from vaeflows.infer.training import TrainConfig
from vaeflows.nn import ARCHITECTURES
from vaeflows.transforms import POSTERIOR_FLOWS

__all__ = ["main", "build_parser"]

#: FFJORD's RNODE and solver flags (``vaeflows train`` and ``density train``) -> builder keyword.
FFJORD_OPTIONS = {
    "kinetic": ("kinetic_weight", {"ffjord"}),
    "jacobian_frobenius": ("jacobian_weight", {"ffjord"}),
    "solver": ("method", {"ffjord"}),
    "solver_steps": ("solver_steps", {"ffjord"}),
    "learn_time": ("learn_time", {"ffjord"}),
}

#: CLI flag -> (build_vae keyword, the flows it applies to).
FLOW_OPTIONS = {
    "num_ortho_vecs": ("num_ortho_vecs", {"sylvester-orthogonal"}),
    "num_householder": ("num_householder", {"sylvester-householder", "householder"}),
    "iaf_hidden": ("flow_hidden_dims", {"iaf"}),
    **FFJORD_OPTIONS,
}

#: ``vaeflows density`` flag -> (builder keyword, the flows it applies to): ``density train``'s
#: options of nsf, ``density energy``'s of the spline posterior flows.
SPLINE_FLOWS = {"spline-autoregressive", "spline-coupling"}
DENSITY_TRAIN_OPTIONS = {
    "transform": ("transform", {"nsf"}),
    "bins": ("bins", {"nsf"}),
    "tail_bound": ("tail_bound", {"nsf"}),
    "conditioner": ("conditioner", {"nsf"}),
    "num_blocks": ("num_blocks", {"nsf"}),
    "field": ("field", {"ffjord"}),
    "unconditional": ("unconditional", {"nsf"}),
    **FFJORD_OPTIONS,
}
ENERGY_OPTIONS = {"bins": ("count_bins", SPLINE_FLOWS), "tail_bound": ("bound", SPLINE_FLOWS)}


def _flow_flags(args: argparse.Namespace, table: dict) -> dict:
    """The builder options of the flags of ``table`` that were given; a flag of another flow is
    an error naming the flows it applies to."""
    options = {}
    for flag, (keyword, flows) in table.items():
        value = getattr(args, flag)
        if value is None:
            continue
        if args.flow not in flows:
            raise ValueError(f"--{flag.replace('_', '-')} applies to --flow {' or '.join(sorted(flows))} only")
        options[keyword] = value
    return options


RESUME_HELP = (
    "run directory; one that holds a run is resumed, with the run's own training settings "
    "(--epochs may change) unless --allow-changes"
)
ALLOW_CHANGES_HELP = (
    "resume even though training settings (--lr, --optimizer, --batch-size, ...) differ from the "
    "run's: the new ones apply from the next epoch (a new --optimizer starts with fresh state), "
    "recorded under 'changes' in config.json and metrics.json"
)
LOG_HELP = (
    "also log the epochs, final figures and report PNGs as TensorBoard events (RUN_DIR/tensorboard; "
    "needs pip install 'vaeflows[logs]') and/or RUN_DIR/metrics.csv; metrics.json stays the record"
)


def _dims(text: str) -> List[int]:
    try:
        dims = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not dims or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
    return dims


def _checked(check: Callable[..., object], parse: Callable[[str], object], **bounds) -> Callable[[str], object]:
    """An argparse ``type``: ``parse`` the text, then apply a :mod:`vaeflows.checks` check, so that
    a flag and its Python keyword share one rule; a failure is argparse's one-line error."""

    def convert(text: str) -> object:
        try:
            value = parse(text)
        except ValueError:
            value = text  # the check names it as it was typed
        try:
            return check("", value, **bounds)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error).strip()) from None

    return convert


class _Parser(argparse.ArgumentParser):
    """argparse with its error on one line, as vaeflows' own: ``vaeflows: error: MESSAGE`` and a
    pointer to the command's help (the subcommands' parsers are of this class too), status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"vaeflows: error: {message} (see `{self.prog} --help`)\n")


def _path(text: str) -> Path:
    """An argparse ``type`` for paths: an empty one (which would mean the current folder) is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return Path(text)


#: The argparse types of the numeric flags, defined once.
POSITIVE_INT = _checked(check_int, int, minimum=1)
COUNT = _checked(check_int, int, minimum=0)
POSITIVE = _checked(check_real, float, above=0)


def _add_ffjord_flags(parser: argparse.ArgumentParser) -> None:
    """RNODE (Finlay et al. 2020) and the ODE solver of ``--flow ffjord`` (FFJORD_OPTIONS)."""
    from vaeflows.transforms.ffjord import FIXED_GRID_SOLVERS

    parser.add_argument("--kinetic", type=POSITIVE, help="ffjord: RNODE weight of the kinetic energy int ||f||^2 dt")
    parser.add_argument(
        "--jacobian-frobenius", type=POSITIVE, help="ffjord: RNODE weight of int ||df/dz||_F^2 dt (Hutchinson or exact)"
    )
    parser.add_argument(
        "--solver",
        choices=["dopri5", "bosh3", *FIXED_GRID_SOLVERS],
        help="ffjord: ODE solver (default dopri5, adaptive; fixed-grid ones need --solver-steps)",
    )
    parser.add_argument("--solver-steps", type=POSITIVE_INT, help="ffjord: steps of a fixed-grid --solver (rk4, ...)")
    parser.add_argument(
        "--learn-time", action="store_const", const=True, help="ffjord: learn the integration time T (softplus)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vaeflows", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a VAE with a flow posterior")
    train.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    train.add_argument("--data-dir", help="folder with the data set's files (not needed for digits)")
    train.add_argument("--flow", default="none", choices=["none", *POSTERIOR_FLOWS])
    train.add_argument("--num-flows", type=POSITIVE_INT, help="flow steps (default 4; needs --flow)")
    train.add_argument("--latent-dim", type=POSITIVE_INT, default=64)
    train.add_argument("--arch", default="gated-conv", choices=sorted(ARCHITECTURES))
    train.add_argument("--hidden-dims", type=_dims, help="MLP hidden sizes, e.g. 300,300 (mlp only)")
    train.add_argument("--num-ortho-vecs", type=POSITIVE_INT, help="O-SNF's M (sylvester-orthogonal)")
    train.add_argument("--num-householder", type=POSITIVE_INT, help="reflections per step (H-SNF, householder)")
    train.add_argument("--iaf-hidden", type=_dims, help="MADE hidden sizes of IAF, e.g. 320,320")
    _add_ffjord_flags(train)
    _add_prior_flags(train)
    train.add_argument("--epochs", type=POSITIVE_INT, default=2000)
    train.add_argument("--warmup", type=COUNT, default=100, help="KL warm-up epochs (0: none)")
    train.add_argument("--patience", type=COUNT, default=100, help="early-stopping patience (0: none)")
    train.add_argument("--batch-size", type=POSITIVE_INT, default=100)
    train.add_argument("--lr", type=POSITIVE, default=5e-4)
    train.add_argument("--optimizer", default="adamax", choices=["adamax", "adam"])
    train.add_argument("--clip-norm", type=POSITIVE, help="clip the gradient norm to this value")
    train.add_argument("--objective", default="elbo", choices=["elbo", "iwae"])
    train.add_argument(
        "--iwae-samples", type=POSITIVE_INT, help="samples of the IWAE bound (--objective iwae; default 1)"
    )
    train.add_argument("--nll-samples", type=COUNT, default=5000, help="test NLL samples (0: skip)")
    train.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    train.add_argument("--seed", type=COUNT, default=0)
    train.add_argument("--out", required=True, type=_path, help=RESUME_HELP)
    train.add_argument("--allow-changes", action="store_true", help=ALLOW_CHANGES_HELP)
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.add_argument("--log", nargs="+", choices=LOG_FORMATS, default=[], help=LOG_HELP)

    evaluate = commands.add_parser(
        "evaluate",
        help="test -ELBO and importance-sampled NLL of a run",
        description="Test -ELBO and importance-sampled NLL of a run's best model. The figures are "
        "appended to the list 'evaluations' in RUN_DIR/metrics.json with their seed and sample "
        "count; the training's own test figures (top level, seed 0) and earlier evaluations are "
        "kept.",
    )
    evaluate.add_argument("run_dir", type=_path)
    evaluate.add_argument("--samples", type=int, default=5000, help="importance samples per test point (>= 1)")
    evaluate.add_argument(
        "--seed", type=int, default=0, help="seed of the figures' samples, recorded (0, as the training's own figures)"
    )
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--no-progress", action="store_true")

    sample = commands.add_parser("sample", help="draw images from a trained run")
    sample.add_argument("run_dir", type=_path)
    sample.add_argument("--num", type=POSITIVE_INT, default=64)
    sample.add_argument("--seed", type=COUNT, default=0)
    sample.add_argument("--out", type=_path, help="PNG path (default RUN_DIR/samples.png)")
    sample.add_argument("--device", default="auto")
    _add_density_commands(commands)
    return parser


def _add_density_commands(commands) -> None:
    """``vaeflows density train|energy``: maximum likelihood and reverse-KL fits of flows."""
    from vaeflows.density import (
        BASES,
        COUPLINGS,
        DENSITY_DATASETS,
        DENSITY_FLOWS,
        DENSITY_OBJECTIVES,
        DEQUANTIZERS,
        ENERGIES,
        FFJORD_FIELDS,
        INTEGER_FLOWS,
        NSF_CONDITIONERS,
        NSF_TRANSFORMS,
    )
    from vaeflows.density.matching import check_sigma_min

    density = commands.add_parser("density", help="density estimation and energy fits with flows")
    actions = density.add_subparsers(dest="density_command", required=True)
    train = actions.add_parser("train", help="fit a density flow by maximum likelihood or flow matching")
    train.add_argument(
        "--flow",
        required=True,
        choices=list(DENSITY_FLOWS) + list(INTEGER_FLOWS) + list(POSTERIOR_FLOWS),
        help="a density flow (idf: integer discrete flow on 8-bit mnist, for `density compress`); "
        "posterior flows are refused with the reason",
    )
    train.add_argument("--dataset", required=True, choices=list(DENSITY_DATASETS))
    train.add_argument("--data-dir", help="MNIST's folder (IDX files, or torchvision's root)")
    train.add_argument("--num-steps", type=POSITIVE_INT, default=4, help="flow steps (per level for images)")
    train.add_argument("--hidden", type=POSITIVE_INT, default=64, help="MLP width or conv channels")
    train.add_argument("--num-levels", type=POSITIVE_INT, help="scales of RealNVP/Glow/IDF on images (default 2)")
    train.add_argument("--num-train", type=POSITIVE_INT, help="training points (toy: generated, default 20000)")
    train.add_argument("--dequantization", choices=list(DEQUANTIZERS), help="8-bit data (mnist) only (default uniform)")
    train.add_argument("--conditional", action="store_true", help="class-conditional flow (mnist)")
    train.add_argument(
        "--objective",
        default="likelihood",
        choices=list(DENSITY_OBJECTIVES),
        help="maximum likelihood (default), or flow matching of --flow ffjord's vector field (no ODE "
        "solve in training; the test NLL is still the ODE's exact likelihood)",
    )
    train.add_argument(
        "--coupling",
        choices=list(COUPLINGS),
        help="noise-data pairs of --objective flow-matching: independent (default) or ot (minibatch "
        "optimal transport, needs scipy)",
    )
    train.add_argument(
        "--sigma-min",
        type=_checked(check_sigma_min, float),
        help="width of the flow-matching paths at the data, in [0, 1) (default 0: rectified flow)",
    )
    train.add_argument(
        "--transform",
        choices=list(NSF_TRANSFORMS),
        help="nsf: spline coupling (default) or autoregressive (MADE) steps",
    )
    train.add_argument(
        "--conditioner",
        choices=list(NSF_CONDITIONERS),
        help="nsf couplings' conditioner: mlp (default) or resnet (nflows' ResidualNet, normflows' layout)",
    )
    train.add_argument("--num-blocks", type=POSITIVE_INT, help="nsf --conditioner resnet: residual blocks (default 2)")
    train.add_argument(
        "--unconditional",
        action="store_true",
        default=None,
        help="nsf couplings: also spline the conditioning half with unconditional bins (normflows' layout)",
    )
    train.add_argument(
        "--field",
        choices=list(FFJORD_FIELDS),
        help="ffjord's vector field: mlp (default; images flattened) or conv (3x3 convolutions, images only)",
    )
    train.add_argument("--base", choices=list(BASES), default="normal", help="base distribution (default normal)")
    train.add_argument("--base-components", type=POSITIVE_INT, help="components of --base mixture (default 8)")
    train.add_argument(
        "--learned-prior", action="store_true", help="Glow's learned split and top priors (realnvp, glow)"
    )
    train.add_argument("--rezero", action="store_true", help="ReZero couplings (realnvp, glow, nsf)")
    _add_ffjord_flags(train)
    energy = actions.add_parser("energy", help="fit a posterior flow to U1-U4 by reverse KL")
    energy.add_argument("--energy", required=True, choices=list(ENERGIES))
    energy.add_argument("--flow", default="planar", choices=list(POSTERIOR_FLOWS))
    energy.add_argument("--num-flows", type=POSITIVE_INT, default=16)
    energy.add_argument("--steps-per-epoch", type=POSITIVE_INT, default=100)
    energy.add_argument("--warmup", type=COUNT, default=20, help="epochs of beta annealing")
    for action, flows in ((train, "nsf"), (energy, "spline-coupling/-autoregressive")):
        action.add_argument(
            "--bins", type=_checked(check_int, int, minimum=2), help=f"{flows}: spline bins (default 8)"
        )
        action.add_argument(
            "--tail-bound", type=POSITIVE, help=f"{flows}: splines on [-B, B], the identity outside (default 3)"
        )
    for action, (epochs, batch, lr) in ((train, (100, 256, 1e-3)), (energy, (50, 256, 1e-3))):
        action.add_argument("--epochs", type=POSITIVE_INT, default=epochs)
        action.add_argument("--batch-size", type=POSITIVE_INT, default=batch)
        action.add_argument("--lr", type=POSITIVE, default=lr)
        action.add_argument("--patience", type=COUNT, default=10, help="early-stopping patience (0: none)")
        action.add_argument("--clip-norm", type=POSITIVE, help="clip the gradient norm to this value")
        action.add_argument("--seed", type=COUNT, default=0)
        action.add_argument("--out", required=True, type=_path, help=RESUME_HELP)
        action.add_argument("--allow-changes", action="store_true", help=ALLOW_CHANGES_HELP)
        action.add_argument("--no-progress", action="store_true", help="no progress bars")
        action.add_argument("--log", nargs="+", choices=LOG_FORMATS, default=[], help=LOG_HELP)
    train.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    compress = actions.add_parser(
        "compress",
        help="losslessly compress a split of a --flow idf run's images (needs pip install 'vaeflows[codec]')",
        description="Encode the images of a split with a trained integer discrete flow and constriction's ANS "
        "coder; prints the file's bits/dim beside the model's. Decode with `vaeflows density decompress` on the "
        "same machine (the same torch build: the pmfs are recomputed in float64).",
    )
    compress.add_argument("run_dir", type=_path, help="a run of vaeflows density train --flow idf")
    compress.add_argument("--out", required=True, type=_path, help="the compressed file")
    compress.add_argument("--split", default="test", choices=["train", "valid", "test"])
    compress.add_argument("--num", type=POSITIVE_INT, help="the split's first NUM images (default all)")
    compress.add_argument(
        "--batch-size", type=POSITIVE_INT, default=100, help="images per coding batch (recorded in the file)"
    )
    decompress = actions.add_parser(
        "decompress",
        help="decode a file of `vaeflows density compress` to an IDX file of the images, bit-exactly",
    )
    decompress.add_argument("file", type=_path, help="a file of vaeflows density compress")
    decompress.add_argument(
        "--out",
        required=True,
        type=_path,
        help="IDX file of the images (MNIST's format: a whole test set decodes to a byte copy of "
        "t10k-images-idx3-ubyte)",
    )
    decompress.add_argument("--run", type=_path, help="the run it was compressed with (default: the one in FILE)")


def _codec(args: argparse.Namespace) -> None:
    from vaeflows.density.codec import compress_run, decompress_file

    if args.density_command == "compress":
        compress_run(args.run_dir, args.out, args.split, args.num, args.batch_size)
    else:
        decompress_file(args.file, args.out, args.run)


def _density(args: argparse.Namespace) -> None:
    from vaeflows.density import INTEGER_FLOWS, TOY_DATASETS, FlowMatching, fit_energy, train_density

    if args.density_command in ("compress", "decompress"):
        _codec(args)
        return
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer="adam",
        warmup=getattr(args, "warmup", 0),
        patience=args.patience,
        clip_norm=args.clip_norm,
        seed=args.seed,
    )
    if args.density_command == "energy":
        fit_energy(
            args.energy,
            args.flow,
            args.num_flows,
            config,
            args.out,
            args.steps_per_epoch,
            progress=not args.no_progress,
            allow_changes=args.allow_changes,
            logs=args.log,
            flow_options=_flow_flags(args, ENERGY_OPTIONS) or None,
        )
        return
    options = {"num_steps": args.num_steps, "hidden": args.hidden, **_flow_flags(args, DENSITY_TRAIN_OPTIONS)}
    if args.num_levels is not None:
        if args.flow not in ("realnvp", "glow", "nsf", *INTEGER_FLOWS):
            raise ValueError("--num-levels applies to --flow realnvp, glow, nsf or idf only (multi-scale on images)")
        options["num_levels"] = args.num_levels
    if args.dequantization is not None and args.flow in INTEGER_FLOWS:
        raise ValueError(f"--dequantization does not apply to --flow {args.flow}: it models the 8-bit values exactly")
    options.update(_density_extras(args))
    if args.dequantization is not None and args.dataset in TOY_DATASETS:
        raise ValueError(f"--dequantization applies to 8-bit data (mnist) only; {args.dataset} is continuous")
    matching = None
    if args.coupling is not None or args.sigma_min is not None:
        if args.objective != "flow-matching":
            raise ValueError("--coupling and --sigma-min apply to --objective flow-matching only")
    if args.objective == "flow-matching":
        matching = FlowMatching(args.coupling or "independent", args.sigma_min or 0.0)
    train_density(
        args.dataset,
        args.flow,
        options,
        config,
        args.out,
        args.data_dir,
        args.num_train,
        args.dequantization or "uniform",
        args.conditional,
        args.device,
        progress=not args.no_progress,
        allow_changes=args.allow_changes,
        logs=args.log,
        objective=args.objective,
        flow_matching=matching,
    )


def _density_extras(args: argparse.Namespace) -> dict:
    """The builder options of ``--base``, ``--base-components``, ``--learned-prior``, ``--rezero``."""
    options: dict = {}
    for flag, name, flows in (
        ("learned_prior", "--learned-prior", ("realnvp", "glow")),
        ("rezero", "--rezero", ("realnvp", "glow", "nsf")),
    ):
        if getattr(args, flag):
            if args.flow not in flows:
                listed = f"{', '.join(flows[:-1])} or {flows[-1]}"
                raise ValueError(f"{name} applies to --flow {listed} only (their couplings and factor-outs)")
            options[flag] = True
    if args.base_components is not None and args.base != "mixture":
        raise ValueError("--base-components applies to --base mixture only")
    if args.base != "normal":
        options["base"] = args.base
        if args.base_components is not None:
            options["base_options"] = {"num_components": args.base_components}
    return options


#: CLI flag -> (the prior option it sets, the prior it applies to).
PRIOR_OPTIONS = {
    "num_pseudo_inputs": ("num_components", "vamp"),
    "prior_flow": ("flow", "flow"),
    "prior_steps": ("num_steps", "flow"),
    "prior_hidden": ("hidden", "flow"),
}


def _add_prior_flags(train: argparse.ArgumentParser) -> None:
    from vaeflows.density import DENSITY_FLOWS

    train.add_argument(
        "--prior", default="standard", choices=["standard", "vamp", "flow"], help="p(z) (default N(0, I))"
    )
    train.add_argument("--num-pseudo-inputs", type=POSITIVE_INT, help="VampPrior components K (default 500)")
    train.add_argument("--prior-flow", choices=list(DENSITY_FLOWS), help="density flow of --prior flow (default maf)")
    train.add_argument("--prior-steps", type=POSITIVE_INT, help="steps of the --prior flow's density flow")
    train.add_argument("--prior-hidden", type=POSITIVE_INT, help="hidden width of the --prior flow's density flow")


def _prior_options(args: argparse.Namespace, model: dict) -> None:
    """Adds ``prior`` and ``prior_options`` to ``model`` (nothing for the standard prior, so that
    the runs of earlier versions resume); refuses a prior flag of another prior."""
    options = {}
    for flag, (keyword, prior) in PRIOR_OPTIONS.items():
        value = getattr(args, flag)
        if value is None:
            continue
        if args.prior != prior:
            raise ValueError(f"--{flag.replace('_', '-')} applies to --prior {prior} only")
        options[keyword] = value
    if args.prior != "standard":
        model["prior"] = args.prior
        if options:
            model["prior_options"] = options


def _model_options(args: argparse.Namespace) -> dict:
    """``build_vae``'s keywords from the flags, each flag to the option it names; refuses flags that
    would build nothing (``--num-flows`` without a flow, a flow option of another flow)."""
    if args.flow == "none" and args.num_flows is not None:
        raise ValueError("--num-flows applies to a flow posterior only: add --flow")
    model = {
        "arch": args.arch,
        "latent_dim": args.latent_dim,
        "flow": None if args.flow == "none" else args.flow,
        "num_flows": 4 if args.num_flows is None else args.num_flows,
    }
    if args.hidden_dims is not None:
        if args.arch != "mlp":
            raise ValueError("--hidden-dims applies to --arch mlp only")
        model["hidden_dims"] = args.hidden_dims
    model.update(_flow_flags(args, FLOW_OPTIONS))
    _prior_options(args, model)
    return model


def _train(args: argparse.Namespace) -> None:
    from vaeflows.infer.experiment import train_vae

    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        warmup=args.warmup,
        patience=args.patience,
        clip_norm=args.clip_norm,
        seed=args.seed,
    )
    train_vae(
        args.dataset,
        args.data_dir,
        _model_options(args),
        config,
        args.out,
        device=args.device,
        objective=args.objective,
        iwae_samples=1 if args.iwae_samples is None else args.iwae_samples,
        nll_samples=args.nll_samples,
        progress=not args.no_progress,
        allow_changes=args.allow_changes,
        logs=args.log,
    )


def _evaluate(args: argparse.Namespace) -> None:
    from vaeflows.infer.experiment import evaluate_run

    evaluate_run(args.run_dir, args.samples, args.device, args.seed, progress=not args.no_progress)


def _sample(args: argparse.Namespace) -> None:
    import torch

    from vaeflows.infer.experiment import load_run
    from vaeflows.report import save_images

    vae, _, data = load_run(args.run_dir, args.device)
    torch.manual_seed(args.seed)
    images = vae.sample_images(args.num, next(vae.parameters()))
    out = args.out or args.run_dir / "samples.png"
    if not save_images(images, out, f"{args.num} samples"):
        raise ImportError("drawing samples needs matplotlib, an optional dependency: pip install 'vaeflows[data]'")
    print(f"wrote {out}")


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse an output path that cannot be written, before anything is read or written."""
    if args.command == "density" and args.density_command in ("compress", "decompress"):
        if args.out.is_dir():
            raise IsADirectoryError(f"--out {args.out} is a folder: pass a file path")
        check_writable_dir(args.out.parent, "--out's folder")
    elif args.command in ("train", "density"):
        check_writable_dir(args.out, "--out")
    elif args.command == "sample":
        target = args.out or args.run_dir / "samples.png"
        if target.is_dir():
            raise IsADirectoryError(f"--out {target} is a folder: pass a PNG path, e.g. {target / 'samples.png'}")
        check_writable_dir(target.parent, "--out's folder" if args.out else "RUN_DIR")


_PACKAGE = Path(__file__).resolve().parent


def _is_user_error(error: Exception) -> bool:
    """An error to report in one line: an OSError (files, folders, permissions), an error of a
    vaeflows class (CheckpointMismatch, TrainingDiverged, RunLocked, ...), or a ValueError,
    TypeError, ImportError or NotImplementedError raised by a line of vaeflows (its messages name
    the argument and the fix). Anything else, such as a RuntimeError of a torch operation, means a
    check is missing: it keeps its traceback."""
    if isinstance(error, OSError) or type(error).__module__.split(".")[0] == "vaeflows":
        return True
    if not isinstance(error, (ValueError, TypeError, ImportError, NotImplementedError)) or error.__traceback__ is None:
        return False
    return Path(traceback.extract_tb(error.__traceback__)[-1].filename).resolve().is_relative_to(_PACKAGE)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_outputs(args)
        {"train": _train, "evaluate": _evaluate, "sample": _sample, "density": _density}[args.command](args)
    except KeyboardInterrupt:
        print("vaeflows: interrupted; rerun the same command to resume from the last epoch", file=sys.stderr)
        return 130
    except Exception as error:
        if not _is_user_error(error):
            raise
        print(f"vaeflows: error: {str(error).strip()}".replace("\n", " "), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
