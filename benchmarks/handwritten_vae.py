"""A hand-written, plain-PyTorch flow-posterior VAE: the reference that vaeflows is measured against.

No Pyro and no vaeflows here: the model, the planar flow, the ELBO and the training loop are written
out by hand, as a user who did not want a library would write them. It is the same model as
``vaeflows train --arch mlp`` (see ``vaeflows/nn/mlp.py``, ``vaeflows/models/vae.py``):

* encoder ``h = relu(W2 relu(W1 x + b1) + b2)``, 784 -> 300 -> 300 (the last layer activated too);
* ``q0(z_0 | x) = N(mu, diag(sigma^2))``, ``mu = Linear(300, z)(h)``,
  ``sigma = softplus(Linear(300, z)(h))``;
* optional amortized planar flow (Rezende & Mohamed 2015), ``K`` steps
  ``z_k = z_(k-1) + u_hat_k tanh(w_k^T z_(k-1) + b_k)`` with
  ``u_hat = u + (softplus(w^T u) - 1 - w^T u) w / |w|^2`` (so that ``w^T u_hat >= -1``) and
  ``log|det| = log|1 + u_hat^T (1 - tanh^2(w^T z + b)) w|``; all ``u, w, b`` of all steps come from
  one ``Linear(300, K * (2 z + 1))`` of ``h``, split as ``u`` (K*z), ``w`` (K*z), ``b`` (K), as
  vaeflows' ``Hypernet``;
* decoder z -> 300 -> 300 -> 784 (ReLU), Bernoulli logits; prior ``N(0, I)``.

Objective: the one-sample flow ELBO with KL warm-up,
``log p(x | z_K) + beta (log p(z_K) - log q0(z_0 | x) + sum_k log|det_k|)``, averaged over the
batch. Training: batch 100, Adamax (lr 5e-4, eps 1e-7), ``beta = min(epoch / warmup, 1)``,
validation -ELBO (one sample, beta 1) after each epoch, the best epoch's weights for the test
-ELBO. Modules are created in the order vaeflows creates them (encoder, decoder, flow, loc, scale),
the minibatch order is drawn as vaeflows' ``fit`` draws it (a generator seeded with
``seed * 1_000_003 + epoch``) and the noise from torch's global stream seeded with ``seed``, so
with one seed both start from the same weights and see the same minibatches and noise.

Run alone:
    python benchmarks/handwritten_vae.py --data-dir ../shared/data --flow planar --epochs 3 --warmup 2

References:
    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
    Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
    van den Berg et al., "Sylvester Normalizing Flows for Variational Inference", UAI 2018 (protocol).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "planar_step",
    "HandwrittenVAE",
    "HandwrittenRun",
    "train_handwritten",
    "load_binarized_mnist_npz",
    "main",
]

FLOWS = ("none", "planar")
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def planar_step(
    z: torch.Tensor, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One planar step ``z' = z + u_hat tanh(w^T z + b)`` and ``log|det dz'/dz|``.

    Shapes: ``z, u, w``: ``(B, D)``; ``b``: ``(B, 1)``. Returns ``(B, D)`` and ``(B,)``.
    """
    wu = (w * u).sum(-1, keepdim=True)
    u_hat = u + (F.softplus(wu) - 1.0 - wu) * w / (w * w).sum(-1, keepdim=True)
    act = torch.tanh((w * z).sum(-1, keepdim=True) + b)
    z_out = z + u_hat * act
    psi = (1.0 - act * act) * w
    ladj = torch.log(torch.abs(1.0 + (psi * u_hat).sum(-1)))
    return z_out, ladj


class HandwrittenVAE(nn.Module):
    """The MLP VAE with a diagonal Gaussian (``flow="none"``) or amortized planar posterior.

    Args:
        latent_dim: size of ``z``.
        flow: ``"none"`` or ``"planar"``.
        num_flows: planar steps ``K``.
        image_dim: pixels per image (784).
        hidden: hidden sizes of the encoder (the decoder mirrors them).
    """

    def __init__(
        self,
        latent_dim: int = 40,
        flow: str = "none",
        num_flows: int = 4,
        image_dim: int = 784,
        hidden: Sequence[int] = (300, 300),
    ) -> None:
        super().__init__()
        if flow not in FLOWS:
            raise ValueError(f"unknown flow {flow!r}; this hand-written VAE has {FLOWS}")
        h1, h2 = hidden
        self.latent_dim, self.flow, self.num_flows = latent_dim, flow, num_flows
        # Creation order = vaeflows' (encoder, decoder, flow hypernet, loc, scale): same init per seed.
        self.encoder = nn.Sequential(nn.Linear(image_dim, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU())
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, h2), nn.ReLU(), nn.Linear(h2, h1), nn.ReLU(), nn.Linear(h1, image_dim)
        )
        self.hypernet = nn.Linear(h2, num_flows * (2 * latent_dim + 1)) if flow == "planar" else None
        self.loc = nn.Linear(h2, latent_dim)
        self.scale = nn.Linear(h2, latent_dim)

    def elbo_terms(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """For flattened binary images ``x`` ``(B, 784)``: ``log p(x | z_K)`` and
        ``log p(z_K) - log q(z_K | x)``, each ``(B,)``, at one sample ``z_K ~ q``."""
        h = self.encoder(x)
        mu, sigma = self.loc(h), F.softplus(self.scale(h))
        eps = torch.empty_like(mu).normal_()
        z = mu + sigma * eps
        log_q = (-0.5 * eps * eps - torch.log(sigma) - HALF_LOG_2PI).sum(-1)
        if self.hypernet is not None:
            k, d = self.num_flows, self.latent_dim
            u, w, b = self.hypernet(h).split([k * d, k * d, k], dim=-1)
            u, w, b = u.reshape(-1, k, d), w.reshape(-1, k, d), b.reshape(-1, k, 1)
            for step in range(k):
                z, ladj = planar_step(z, u[:, step], w[:, step], b[:, step])
                log_q = log_q - ladj
        log_prior = (-0.5 * z * z - HALF_LOG_2PI).sum(-1)
        logits = self.decoder(z)
        log_lik = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        return log_lik, log_prior - log_q

    def loss(self, x: torch.Tensor, beta: float) -> torch.Tensor:
        """Minus the warm-up weighted one-sample ELBO, averaged over the batch."""
        log_lik, neg_kl = self.elbo_terms(x)
        return -(log_lik + beta * neg_kl).mean()

    @torch.no_grad()
    def elbo(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """One-sample ELBO (beta = 1) of every row of ``x``: shape ``(N,)``."""
        out = []
        for start in range(0, x.shape[0], batch_size):
            log_lik, neg_kl = self.elbo_terms(x[start : start + batch_size])
            out.append(log_lik + neg_kl)
        return torch.cat(out)


class HandwrittenRun:
    """Training of :class:`HandwrittenVAE` one epoch at a time (so a benchmark can interleave epochs).

    Args:
        train, valid, test: flattened binary images ``(N, 784)``.
        latent_dim, flow, num_flows: the model.
        warmup: KL warm-up epochs, ``beta = min(epoch / warmup, 1)`` (0: none).
        batch_size, lr: batch 100 and Adamax lr 5e-4 (eps 1e-7) by default.
        seed: seeds the weights, then the minibatch order and the noise.
        log: called with one line per epoch.
    """

    def __init__(
        self,
        train: torch.Tensor,
        valid: torch.Tensor,
        test: torch.Tensor,
        latent_dim: int = 40,
        flow: str = "none",
        num_flows: int = 4,
        warmup: int = 2,
        batch_size: int = 100,
        lr: float = 5e-4,
        seed: int = 0,
        log: Callable[[str], None] = print,
    ) -> None:
        self.train_data, self.valid_data, self.test_data = train, valid, test
        self.warmup, self.batch_size, self.seed, self.log = warmup, batch_size, seed, log
        torch.manual_seed(seed)
        self.vae = HandwrittenVAE(latent_dim, flow, num_flows, image_dim=train.shape[1])
        self.optimizer = torch.optim.Adamax(self.vae.parameters(), lr=lr, eps=1e-7)
        torch.manual_seed(seed)
        self.rng_state = torch.get_rng_state()
        self.history: List[dict] = []
        self.best_valid, self.best_epoch, self.best_state = float("inf"), 0, None

    def epoch(self) -> dict:
        """Train one epoch and validate; ``seconds`` (wall) and ``cpu_seconds`` (this process's CPU
        time) cover both, as vaeflows' ``fit`` measures an epoch.

        The module's own random stream is restored and saved around the epoch, so interleaving
        other work between epochs does not change its minibatches or noise.
        """
        vae, optimizer, train = self.vae, self.optimizer, self.train_data
        epoch = len(self.history) + 1
        beta = 1.0 if self.warmup == 0 else min(epoch / self.warmup, 1.0)
        torch.set_rng_state(self.rng_state)
        start, cpu_start = time.perf_counter(), time.process_time()
        vae.train()
        num = train.shape[0]
        # The minibatch order of vaeflows' fit (since commit 6923f6c): one permutation per epoch from
        # its own generator, so that it does not depend on the noise drawn before it.
        order = torch.randperm(num, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        total = torch.zeros(())
        for begin in range(0, num, self.batch_size):
            batch = train[order[begin : begin + self.batch_size]]
            loss = vae.loss(batch, beta)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total = total + loss.detach() * batch.shape[0]
        train_loss = total.item() / num
        if not math.isfinite(train_loss):
            raise RuntimeError(f"hand-written VAE: training loss {train_loss} in epoch {epoch}")
        vae.eval()
        valid_nelbo = -vae.elbo(self.valid_data).mean().item()
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        self.rng_state = torch.get_rng_state()
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "valid": valid_nelbo,
            "beta": beta,
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
        }
        self.history.append(row)
        if valid_nelbo < self.best_valid:
            self.best_valid, self.best_epoch = valid_nelbo, epoch
            self.best_state = copy.deepcopy(vae.state_dict())
        self.log(
            f"[hand-written] epoch {epoch:3d}  train {train_loss:9.3f}  valid {valid_nelbo:9.3f}  "
            f"beta {beta:.2f}  {seconds:6.2f}s" + ("  *best*" if self.best_epoch == epoch else "")
        )
        return row

    def finish(self) -> Dict:
        """Test -ELBO (one sample per point, beta 1) of the best epoch's weights, and the summary.

        Returns:
            ``{"history", "best_epoch", "test_elbo", "seconds_median", "cpu_seconds_median"}``.
        """
        self.vae.load_state_dict(self.best_state)
        self.vae.eval()
        torch.set_rng_state(self.rng_state)
        test_elbo = -self.vae.elbo(self.test_data).mean().item()
        self.log(f"[hand-written] test -ELBO {test_elbo:.3f} nats (best epoch {self.best_epoch})")
        return {
            "history": self.history,
            "best_epoch": self.best_epoch,
            "test_elbo": test_elbo,
            "seconds_median": statistics.median(h["seconds"] for h in self.history),
            "cpu_seconds_median": statistics.median(h["cpu_seconds"] for h in self.history),
        }


def train_handwritten(
    train: torch.Tensor,
    valid: torch.Tensor,
    test: torch.Tensor,
    latent_dim: int = 40,
    flow: str = "none",
    num_flows: int = 4,
    epochs: int = 3,
    warmup: int = 2,
    batch_size: int = 100,
    lr: float = 5e-4,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> Dict:
    """Train :class:`HandwrittenVAE` for ``epochs`` epochs and evaluate the best one
    (see :class:`HandwrittenRun` for the arguments and :meth:`HandwrittenRun.finish` for the result)."""
    run = HandwrittenRun(train, valid, test, latent_dim, flow, num_flows, warmup, batch_size, lr, seed, log)
    for _ in range(epochs):
        run.epoch()
    return run.finish()


def load_binarized_mnist_npz(data_dir: str) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``train, valid, test`` float32 ``(N, 784)`` from ``DATA_DIR/binarized_mnist/binarized_mnist.npz``."""
    path = Path(data_dir) / "binarized_mnist" / "binarized_mnist.npz"
    if not path.exists():
        raise FileNotFoundError(f"no {path}: give --data-dir, the folder holding binarized_mnist/")
    with np.load(path) as arrays:
        return tuple(
            torch.from_numpy(arrays[split].astype(np.float32)).reshape(-1, 784) for split in ("train", "valid", "test")
        )


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="train the hand-written plain-PyTorch flow VAE")
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("VAEFLOWS_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data")),
        help="default: $VAEFLOWS_DATA_DIR or ../shared/data (this script imports nothing of the project)",
    )
    parser.add_argument("--flow", default="none", choices=FLOWS)
    parser.add_argument("--num-flows", type=int, default=4)
    parser.add_argument("--latent-dim", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--train-subset", type=int, help="train on the first N training images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    train, valid, test = load_binarized_mnist_npz(args.data_dir)
    if args.train_subset:
        train = train[: args.train_subset]
    result = train_handwritten(
        train, valid, test, args.latent_dim, args.flow, args.num_flows, args.epochs, args.warmup, seed=args.seed
    )
    print(f"median seconds/epoch {result['seconds_median']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
