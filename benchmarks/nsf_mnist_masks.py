"""nsf's vector spline couplings on flattened MNIST with halves or even/odd masks (issue 15).

    python benchmarks/nsf_mnist_masks.py halves|interleaved TAIL_BOUND [--iters 300] [--data-dir DIR]

vaeflows' model of ``density_vs_peer.py --suite nsf``'s MNIST row alone, at its seed, batches and
test images (4 steps, MLP 128-128, 8 bins, batch 64, Adam 1e-3, the first 2000 test images), so its
figure sits beside that row's peers: ``halves 5`` reproduces the row's 4.5590 bits/dim bit for bit.
``halves`` masks the first and second half of the 784 pixels in turn (``channel_mask``, the old
default), ``interleaved`` the even and odd pixels (``alternating_mask``, the default since). Prints
the training loss every 50 steps and the test bits/dim. Figures in ``RESULTS.md`` (the nsf section).
"""

import argparse
import math
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import density_vs_peer as dvp  # noqa: E402
from common import DATA_DIR  # noqa: E402

import vaeflows.density.flows as flows  # noqa: E402
from vaeflows.density import bits_per_dim, load_density_data  # noqa: E402
from vaeflows.density.layers import channel_mask  # noqa: E402

MASKS = {"halves": lambda dim, parity: channel_mask((dim,), parity), "interleaved": flows.alternating_mask}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("masks", choices=list(MASKS))
    parser.add_argument("tail_bound", type=float)
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--data-dir", default=DATA_DIR, help="default: $VAEFLOWS_DATA_DIR or ../shared/data")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    flows.alternating_mask = MASKS[args.masks]  # what nsf's vector couplings call
    data = load_density_data("mnist", args.data_dir)
    dims = math.prod(data.event_shape)
    torch.manual_seed(0)
    model = flows.nsf(
        (dims,), transform="coupling", num_steps=4, hidden=args.hidden, bins=8, tail_bound=args.tail_bound
    )
    generator = torch.Generator().manual_seed(1)
    order = torch.randint(len(data.train), (args.iters, args.batch), generator=generator)
    noise = torch.rand(args.iters, args.batch, dims, generator=generator)

    def scaled(images: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return dvp.NSF_MNIST_SCALE * ((images.flatten(1) + u) / dvp.NUM_LEVELS - 0.5)

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(args.iters):
        loss = -model.log_prob(scaled(data.train[order[step]], noise[step])).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            print(step, f"{loss.item():.2f}", flush=True)
    test = data.test[: args.test_images]
    test = scaled(test, torch.rand(len(test), dims, generator=torch.Generator().manual_seed(2)))
    log_jacobian = dims * math.log(dvp.NSF_MNIST_SCALE) - dims * math.log(dvp.NUM_LEVELS)
    bpd = float(bits_per_dim(torch.tensor(dvp.mean_over(model.log_prob, test, 200) + log_jacobian), dims))
    print(args.masks, args.tail_bound, "bits/dim", f"{bpd:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
