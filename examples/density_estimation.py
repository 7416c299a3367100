"""Density estimation: fit a flow to a data set by maximum likelihood, or to an energy by reverse KL.

Maximum likelihood (NICE, RealNVP, MAF, Glow; 2-D toy sets or 8-bit MNIST), written to ``OUT``
with ``metrics.json`` and ``density.png`` (2-D) or ``samples.png`` (images):

    python examples/density_estimation.py --dataset moons --flow realnvp --epochs 20 --out runs/moons
    python examples/density_estimation.py --dataset mnist --data-dir ../shared/data --flow glow \
        --num-train 10000 --epochs 3 --out runs/mnist-glow

Reverse KL to ``exp(-U)`` for the energies U1-U4 with a posterior flow (planar, radial, ...),
written to ``OUT`` with ``metrics.json`` and ``energy_fit.png``:

    python examples/density_estimation.py --energy U3 --flow planar --num-flows 32 --epochs 20 --out runs/u3

About a minute each on 2 CPU cores with these settings.
"""

from __future__ import annotations

from pathlib import Path

from vaeflows.density import fit_energy, train_density
from vaeflows.infer import TrainConfig

#: The command's defaults; ``main`` takes any object with these attributes.
DEFAULTS = dict(
    dataset="moons",
    energy=None,
    flow="realnvp",
    data_dir=None,
    num_train=None,
    num_steps=8,
    hidden=64,
    num_flows=16,
    steps_per_epoch=100,
    epochs=20,
    batch_size=256,
    lr=1e-3,
    out="runs/density",
    device="auto",
)


def main(args) -> dict:
    """Fit ``args.flow`` to ``args.energy`` (reverse KL) if given, else to ``args.dataset`` (maximum
    likelihood); returns the metrics written to ``args.out/metrics.json``."""
    if args.energy is not None:
        config = TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            optimizer="adam",
            warmup=max(args.epochs // 2, 1),
            patience=args.epochs,
        )
        return fit_energy(
            args.energy,
            args.flow,
            args.num_flows,
            config,
            Path(args.out),
            steps_per_epoch=args.steps_per_epoch,
            progress=False,
        )
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer="adam", warmup=0, patience=args.epochs
    )
    options = {"num_steps": args.num_steps, "hidden": args.hidden}
    return train_density(
        args.dataset,
        args.flow,
        options,
        config,
        Path(args.out),
        data_dir=args.data_dir,
        num_train=args.num_train,
        device=args.device,
        progress=False,
    )


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=DEFAULTS["dataset"], help="moons, 8gaussians, checkerboard, rings, mnist")
    parser.add_argument(
        "--energy",
        default=DEFAULTS["energy"],
        choices=["U1", "U2", "U3", "U4"],
        help="fit exp(-U) by reverse KL instead of a data set",
    )
    parser.add_argument(
        "--flow",
        default=DEFAULTS["flow"],
        help="nice, realnvp, maf, glow (data); planar, radial, sylvester-... (energies)",
    )
    parser.add_argument("--data-dir", default=DEFAULTS["data_dir"], help="MNIST's folder")
    parser.add_argument("--num-train", type=int, default=DEFAULTS["num_train"])
    parser.add_argument("--num-steps", type=int, default=DEFAULTS["num_steps"], help="coupling/flow steps (data)")
    parser.add_argument("--hidden", type=int, default=DEFAULTS["hidden"], help="network width (data)")
    parser.add_argument("--num-flows", type=int, default=DEFAULTS["num_flows"], help="K (energies)")
    parser.add_argument("--steps-per-epoch", type=int, default=DEFAULTS["steps_per_epoch"], help="energies")
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    parser.add_argument("--out", default=DEFAULTS["out"])
    parser.add_argument("--device", default=DEFAULTS["device"])
    main(parser.parse_args())
