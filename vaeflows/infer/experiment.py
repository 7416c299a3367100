"""VAE experiments as the flow papers run them: train, evaluate, sample, all kept in a run directory.

``RUN_DIR`` holds ``config.json`` (dataset, model and optimization settings, device),
``last.pt``/``best.pt`` (see :mod:`vaeflows.infer.training`), ``metrics.json`` (per-epoch train and
validation -ELBO, seconds per epoch, test -ELBO and NLL, device) and the PNGs of
:mod:`vaeflows.report`.

Objectives: the flow-modified ELBO as Pyro's ``Trace_ELBO`` computes it
(:func:`~vaeflows.infer.evaluation.reparameterized_elbo`, ``objective="elbo"``), or the
importance-weighted bound of Burda et al. 2016 with ``iwae_samples`` samples (``"iwae"``); both with
KL warm-up ``beta`` on the latent site.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Callable, Optional, Tuple

import pyro
import torch
from pyro.poutine.util import is_validation_enabled

from vaeflows.data import VAEData, load_dataset
from vaeflows.infer import distributed
from vaeflows.infer.evaluation import (
    elbo_per_point,
    reparameterized_elbo,
    importance_sampled_log_likelihood,
    log_importance_weights,
)
from vaeflows.infer.training import (
    TrainConfig,
    check_resumable,
    fit,
    kl_beta,
    load_best,
    load_checkpoint,
    write_json,
)
from vaeflows.models import VAE, build_vae

__all__ = ["OBJECTIVES", "resolve_device", "vae_loss", "train_vae", "load_run", "evaluate_run"]

OBJECTIVES = ("elbo", "iwae")


def resolve_device(device: str) -> torch.device:
    """``"auto"`` is CUDA when available, else the CPU; asking for CUDA without it is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    return torch.device(device)


def vae_loss(
    vae: VAE, data: VAEData, warmup: int, objective: str = "elbo", iwae_samples: int = 1
) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """The minibatch loss ``loss(batch, epoch)``: minus the (warm-up weighted) bound per point.

    Dynamically binarized data sets are Bernoulli-sampled here, batch by batch.
    """
    _check_objective(objective, iwae_samples)

    def loss(batch: torch.Tensor, epoch: int) -> torch.Tensor:
        batch = data.binarize(batch)
        beta = kl_beta(epoch, warmup)
        # The data were checked once when loaded; train_vae turns the checks off for the whole run.
        checks_off = pyro.validation_enabled(False) if is_validation_enabled() else contextlib.nullcontext()
        with checks_off:
            if objective == "elbo":
                return reparameterized_elbo(vae.model, vae.guide, batch, beta) * (-1.0 / batch.shape[0])
            log_w = log_importance_weights(
                lambda x: vae.model(x, beta), lambda x: vae.guide(x, beta), batch, iwae_samples
            )
            return -(torch.logsumexp(log_w, 0) - math.log(iwae_samples)).mean()

    return loss


def _check_objective(objective: str, iwae_samples: int) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; known: {', '.join(OBJECTIVES)}")
    if objective == "iwae" and (not isinstance(iwae_samples, int) or iwae_samples < 1):
        raise ValueError(f"iwae_samples (--iwae-samples) must be an integer >= 1, got {iwae_samples!r}")


def _signature(dataset: str, model: dict, objective: str, iwae_samples: int) -> dict:
    """What must match to resume a run (the IWAE sample count only matters for IWAE)."""
    signature = {"dataset": dataset, "model": model, "objective": objective}
    if objective == "iwae":
        signature["iwae_samples"] = iwae_samples
    return signature


def train_vae(
    dataset: str,
    data_dir: Optional[str],
    model: dict,
    config: TrainConfig,
    run_dir: Path,
    device: str = "auto",
    objective: str = "elbo",
    iwae_samples: int = 1,
    nll_samples: int = 5000,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Train a VAE on ``dataset`` into ``run_dir`` (resuming it if it holds a run), then evaluate.

    Args:
        dataset: a name of :data:`vaeflows.data.DATASETS`.
        data_dir: where its files are (not needed for ``digits``).
        model: keyword arguments of :func:`vaeflows.models.build_vae` other than the image shape
            and likelihood, which come from the data, e.g. ``{"arch": "mlp", "flow": "planar"}``.
        config: optimization settings.
        run_dir: the run directory.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        objective: ``"elbo"`` or ``"iwae"``.
        iwae_samples: samples of the IWAE bound.
        nll_samples: importance samples of the test NLL (0 skips it).
        progress: progress bars.
        log: called with progress lines.

    Returns:
        The metrics written to ``run_dir/metrics.json``.
    """
    _check_objective(objective, iwae_samples)
    torch_device, joined = distributed.setup(resolve_device(device))
    try:
        return _train_vae(
            dataset, data_dir, model, config, Path(run_dir), torch_device,
            objective, iwae_samples, nll_samples, progress, log,
        )
    finally:
        distributed.teardown(joined)


def _train_vae(
    dataset: str,
    data_dir: Optional[str],
    model: dict,
    config: TrainConfig,
    run_dir: Path,
    torch_device: torch.device,
    objective: str,
    iwae_samples: int,
    nll_samples: int,
    progress: bool,
    log: Callable[[str], None],
) -> dict:
    rank, size = distributed.world()
    main = rank == 0
    data = load_dataset(dataset, data_dir)
    torch.manual_seed(config.seed)  # the same initial weights on every process
    vae = build_vae(image_shape=data.image_shape, likelihood=data.likelihood, **model).to(torch_device)
    vae.register_params = False  # fit() steps vae.parameters() with a torch optimizer
    signature = _signature(dataset, model, objective, iwae_samples)
    check_resumable(run_dir, signature)  # before config.json is rewritten
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(
            {
                **signature,
                "data_dir": data_dir,
                "train": vars(config),
                "device": str(torch_device),
                "processes": size,
                "effective_batch_size": size * config.batch_size,
            },
            run_dir / "config.json",
        )
        log(
            f"{dataset}: {len(data.train)} train / {len(data.valid)} valid / {len(data.test)} test "
            f"images {data.image_shape}; flow {model.get('flow') or 'none'}; device {torch_device}"
            + (f"; {size} processes, effective batch {size * config.batch_size}" if size > 1 else "")
        )
    train, valid = data.train.to(torch_device), data.valid.to(torch_device)
    with pyro.validation_enabled(False):  # the data were checked once, when loaded
        fit(
            vae,
            vae_loss(vae, data, config.warmup, objective, iwae_samples),
            lambda: -elbo_per_point(vae.model, vae.guide, valid).mean().item(),
            train,
            config,
            run_dir,
            signature,
            progress=progress,
            log=log,
        )
    if not main:  # evaluation, metrics and pictures are rank 0's
        return {}
    return evaluate_run(run_dir, nll_samples, str(torch_device), progress=progress, log=log)


def load_run(run_dir: Path, device: str = "auto") -> Tuple[VAE, dict, VAEData]:
    """The best model of a run directory, its ``config.json`` and its data."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a vaeflows run directory (no config.json)")
    config = json.loads(config_path.read_text())
    torch_device = resolve_device(device)
    data = load_dataset(config["dataset"], config["data_dir"])
    vae = build_vae(image_shape=data.image_shape, likelihood=data.likelihood, **config["model"])
    load_best(vae, run_dir, map_location=str(torch_device))
    return vae.to(torch_device).eval(), config, data


def evaluate_run(
    run_dir: Path,
    nll_samples: int = 5000,
    device: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Test -ELBO (one sample per point, beta = 1) and importance-sampled NLL of a run's best model.

    Updates ``run_dir/metrics.json`` and draws the run's PNGs.
    """
    with pyro.validation_enabled(False):  # the data were checked when loaded
        return _evaluate_run(Path(run_dir), nll_samples, device, progress, log)


def _evaluate_run(
    run_dir: Path, nll_samples: int, device: str, progress: bool, log: Callable[[str], None]
) -> dict:
    from tqdm.auto import tqdm

    from vaeflows import report

    vae, config, data = load_run(run_dir, device)
    device_of = next(vae.parameters()).device
    test = data.test.to(device_of)
    last = load_checkpoint(run_dir / "last.pt", map_location=str(device_of))
    history = last["state"]["history"]
    metrics = {
        "dataset": config["dataset"],
        "model": config["model"],
        "device": str(device_of) if device_of.type == "cpu" else torch.cuda.get_device_name(device_of),
        "best_epoch": last["state"]["best_epoch"],
        "epochs": history,
        "seconds_per_epoch": sum(h["seconds"] for h in history) / max(len(history), 1),
        "test_elbo": -elbo_per_point(vae.model, vae.guide, test).mean().item(),
    }
    log(f"test -ELBO {metrics['test_elbo']:.3f} nats (best epoch {metrics['best_epoch']})")
    if nll_samples > 0:
        with tqdm(total=len(test), desc=f"NLL, {nll_samples} samples", disable=not progress, leave=False) as bar:
            nll = -importance_sampled_log_likelihood(
                vae.model, vae.guide, test, nll_samples, progress=bar.update
            ).mean().item()
        metrics.update(test_nll=nll, nll_samples=nll_samples)
        log(f"test NLL {nll:.3f} nats ({nll_samples} importance samples)")
    if data.likelihood == "categorical256":
        pixels = math.prod(data.image_shape)
        for key in ("test_elbo", "test_nll"):
            if key in metrics:
                metrics[key.replace("test_", "test_bpd_")] = metrics[key] / (pixels * math.log(2))
    write_json(metrics, run_dir / "metrics.json")
    report.draw_run(run_dir, vae, test, history, log)
    return metrics
