"""The banana's output-layer initialization probe (issue 13): the ELBO per seed of one guide variant.

    python benchmarks/banana_init.py VARIANT SEED_START SEED_STOP [--steps 1000]

Prints one line per seed: variant, seed, ELBO (10000 draws; log Z = 0 on the banana, so -KL),
seconds. Every guide is the IAF of ``AutoFlow(model, "iaf", num_flows=2, update="affine",
activation="relu", base="standard")`` (width 3D+1 = 7) or zuko's MAF at the same size, trained by
``pyro_models.make_svi`` as ``pyro_guides.py`` trains them. Variants: ``vf`` (random output layer,
``zero_init=False``), ``vf_zero`` (zero output layer, the default), ``vf_out01`` (random output
layer scaled by 0.1), ``zuko``. The figures are in ``RESULTS.md`` (the standard-base section).
"""

import argparse
import functools
import sys
import time
from pathlib import Path

import pyro
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "examples"), str(HERE)]

from pyro_guides import AutoZuko, _zuko_flow  # noqa: E402
from pyro_models import MODELS, elbo_estimate, make_svi  # noqa: E402

from vaeflows.guides import AutoFlow  # noqa: E402

SPEC = MODELS["banana"]


def _vaeflows(zero_init: bool, scale: float = 1.0):
    def build():
        guide = AutoFlow(
            SPEC.model, "iaf", num_flows=2, update="affine", activation="relu", base="standard", zero_init=zero_init
        )
        if scale != 1.0:
            guide._setup_prototype()
            with torch.no_grad():
                for made in guide.flow.mades:
                    made.layers[-1].weight.mul_(scale)
                    made.layers[-1].bias.mul_(scale)
        return guide

    return build


VARIANTS = {
    "vf": _vaeflows(False),
    "vf_zero": _vaeflows(True),
    "vf_out01": _vaeflows(False, 0.1),
    "zuko": lambda: AutoZuko(SPEC.model, functools.partial(_zuko_flow, "MAF", 2)),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", choices=list(VARIANTS))
    parser.add_argument("seed_start", type=int)
    parser.add_argument("seed_stop", type=int)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=10000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pyro.enable_validation(False)
    for seed in range(args.seed_start, args.seed_stop):
        start = time.time()
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        guide = VARIANTS[args.variant]()
        svi = make_svi(SPEC, guide, 0.01, 8, steps=args.steps)
        for _ in range(args.steps):
            svi.step()
        pyro.set_rng_seed(123)
        elbo = elbo_estimate(SPEC, guide, args.draws)[0]
        print(args.variant, seed, f"{elbo:.4f}", f"{time.time() - start:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
