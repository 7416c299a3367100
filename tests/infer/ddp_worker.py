"""Run by tests/infer/test_distributed.py under torchrun (not collected by pytest).

    torchrun --standalone --nproc_per_node=N ddp_worker.py train OUT EPOCHS
    torchrun --standalone --nproc_per_node=N ddp_worker.py grad OUT

``train``: ``train_vae`` on digits into ``OUT/run``; every process saves the parameters it holds in
memory when ``fit`` returns to ``OUT/params_rank{r}.pt``. ``grad``: one ``fit`` step of a deterministic
loss on the first 100 digits (each process takes its shard of the batch); every process saves the gradients it holds.
"""

import os
import sys
from pathlib import Path

import torch

from vaeflows.data import load_dataset
from vaeflows.infer import TrainConfig, distributed, experiment, fit, train_vae
from vaeflows.models import build_vae

MODEL = {"arch": "mlp", "latent_dim": 4, "flow": "planar", "num_flows": 2, "hidden_dims": [32]}


def save_parameters(module, out, what):
    rank = int(os.environ.get("RANK", "0"))
    tensors = {n: (p.grad if what == "grad" else p).detach().clone() for n, p in module.named_parameters()}
    torch.save(tensors, Path(out) / f"{what}_rank{rank}.pt")


def deterministic_loss(vae):
    """-log p(x | decoder(mean of q(z|x))) plus a term in the scale head: no sampling, so that
    gradients can be compared across process counts."""

    def loss(batch, epoch):
        h = vae.encoder(batch)
        log_px = vae.likelihood(vae.decoder(vae.loc(h))).log_prob(batch)
        return (-log_px + vae.scale(h).log().sum(-1)).mean()

    return loss


def main(mode, out, epochs="2"):
    if mode == "train":

        def fit_and_save(module, *args, **kwargs):
            history = fit(module, *args, **kwargs)
            save_parameters(module, out, "params")  # this process's own copy, not the checkpoint
            return history

        experiment.fit = fit_and_save
        config = TrainConfig(epochs=int(epochs), batch_size=50, warmup=1, patience=0)
        train_vae("digits", None, MODEL, config, Path(out) / "run", device="cpu", nll_samples=0, progress=False)
    else:
        device, joined = distributed.setup(torch.device("cpu"))
        torch.manual_seed(0)
        vae = build_vae(image_shape=(1, 8, 8), likelihood="bernoulli", **{**MODEL, "flow": None})
        x = load_dataset("digits").train[:100]
        size = distributed.world()[1]
        config = TrainConfig(epochs=1, batch_size=100 // size, warmup=0, patience=0)
        fit(vae, deterministic_loss(vae), lambda: 0.0, x, config, Path(out) / "grad-run", {}, progress=False)
        save_parameters(vae, out, "grad")
        distributed.teardown(joined)


if __name__ == "__main__":
    main(*sys.argv[1:])
