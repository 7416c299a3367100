"""VAE experiments as the flow papers run them: train, evaluate, sample, all kept in a run directory.

``RUN_DIR`` holds ``config.json`` (dataset, model and optimization settings, device, the changes
of settings made on resume), ``last.pt``/``best.pt``/``run.lock`` (see
:mod:`vaeflows.infer.training`), ``metrics.json`` and the PNGs of :mod:`vaeflows.report`.

``metrics.json`` holds the training's record (per-epoch train and validation -ELBO, seconds per
epoch, best epoch, changes of settings, device) and its test figures, computed when training ends
with seed ``eval_seed`` (0): ``test_elbo``, ``test_nll`` with ``nll_samples`` importance samples
(and bits/dim for 8-bit data). :func:`evaluate_run` (``vaeflows evaluate``) leaves all of that as
it is and appends its own figures to the list ``evaluations``, each with its seed, sample count,
device and the best epoch it evaluated: no recorded result is ever dropped. With the same seed,
samples and device it reproduces the training's figures.

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
from typing import Callable, Dict, Optional, Sequence, Tuple

import pyro
import torch
from pyro.poutine.util import is_validation_enabled

from vaeflows.checks import check_int
from vaeflows.data import VAEData, load_dataset
from vaeflows.infer import distributed
from vaeflows.infer.evaluation import (
    elbo_per_point,
    importance_sampled_log_likelihood,
    log_importance_weights,
    reparameterized_elbo,
)
from vaeflows.infer.run_log import RunLog
from vaeflows.infer.training import (
    TrainConfig,
    check_resumable,
    fit,
    kl_beta,
    load_best,
    load_checkpoint,
    run_changes,
    run_lock,
    write_json,
)
from vaeflows.models import VAE, build_vae
from vaeflows.transforms.ffjord import rnode_penalty

__all__ = [
    "OBJECTIVES",
    "RUN_KINDS",
    "resolve_device",
    "vae_loss",
    "train_vae",
    "read_run_config",
    "load_run",
    "evaluate_run",
]

OBJECTIVES = ("elbo", "iwae")


def resolve_device(device: str) -> torch.device:
    """``"auto"`` is CUDA when available, else the CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or
    ``"mps"`` otherwise. Raises a ValueError for another name or a device torch does not see."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        torch_device = torch.device(device)
    except (RuntimeError, TypeError):
        torch_device = None
    if torch_device is None or torch_device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {device!r} (--device): use auto, cpu, cuda, cuda:N or mps")
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    if torch_device.type == "cuda" and (torch_device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: torch sees {torch.cuda.device_count()} CUDA device(s), cuda:0 and on")
    if torch_device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps was asked for but torch sees no MPS device; use --device cpu")
    return torch_device


def vae_loss(
    vae: VAE, data: VAEData, warmup: int, objective: str = "elbo", iwae_samples: int = 1
) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """The minibatch loss ``loss(batch, epoch)``: minus the (warm-up weighted) bound per point,
    plus the RNODE penalty of an FFJORD posterior with ``kinetic_weight``/``jacobian_weight``
    (:func:`~vaeflows.transforms.ffjord.rnode_penalty`, the guide's last solve).

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
                bound = reparameterized_elbo(vae.model, vae.guide, batch, beta) * (-1.0 / batch.shape[0])
            else:
                log_w = log_importance_weights(
                    lambda x: vae.model(x, beta), lambda x: vae.guide(x, beta), batch, iwae_samples
                )
                bound = -(torch.logsumexp(log_w, 0) - math.log(iwae_samples)).mean()
            return bound + rnode_penalty(vae)  # after the guide's solves (FFJORD's RNODE; else 0)

    return loss


def _check_objective(objective: str, iwae_samples: int) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; known: {', '.join(OBJECTIVES)}")
    check_int("iwae_samples (--iwae-samples)", iwae_samples)
    if objective != "iwae" and iwae_samples != 1:
        raise ValueError(
            f"iwae_samples (--iwae-samples) applies to objective='iwae' (--objective iwae) only, "
            f"got {iwae_samples} with objective={objective!r}"
        )


def _signature(dataset: str, model: dict, objective: str, iwae_samples: int) -> dict:
    """What must match to resume a run (the IWAE sample count only matters for IWAE)."""
    signature: Dict[str, object] = {"dataset": dataset, "model": model, "objective": objective}
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
    allow_changes: bool = False,
    logs: Sequence[str] = (),
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
        allow_changes: resume even though ``config``'s settings differ from the run's (see
            :func:`vaeflows.infer.training.fit`); the change is recorded in ``config.json`` and
            ``metrics.json`` (``changes``).
        logs: experiment logs written beside ``metrics.json``: ``"tensorboard"`` and/or ``"csv"``
            (:class:`vaeflows.infer.run_log.RunLog`).

    Returns:
        The metrics written to ``run_dir/metrics.json``.

    Raises:
        RunLocked: another process is writing into ``run_dir``.
        CheckpointMismatch: ``run_dir`` holds a run that these settings cannot resume; nothing
            was written.
    """
    _check_objective(objective, iwae_samples)
    check_int("nll_samples (--nll-samples)", nll_samples, minimum=0)
    run_log = RunLog(Path(run_dir), logs)  # an unknown format or a missing package stops it here
    torch_device, joined = distributed.setup(resolve_device(device))
    try:
        return _train_vae(
            dataset,
            data_dir,
            model,
            config,
            Path(run_dir),
            torch_device,
            objective,
            iwae_samples,
            nll_samples,
            progress,
            log,
            allow_changes,
            run_log,
        )
    finally:
        run_log.close()
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
    allow_changes: bool,
    run_log: RunLog,
) -> dict:
    rank, size = distributed.world()
    main = rank == 0
    data = load_dataset(dataset, data_dir)
    torch.manual_seed(config.seed)  # the same initial weights on every process
    vae = build_vae(image_shape=data.image_shape, likelihood=data.likelihood, **model).to(torch_device)
    vae.register_params = False  # fit() steps vae.parameters() with a torch optimizer
    signature = _signature(dataset, model, objective, iwae_samples)
    with run_lock(run_dir):
        checkpoint = check_resumable(run_dir, signature, config, allow_changes)  # before config.json
        _read_metrics(run_dir)  # a metrics.json that cannot be updated stops the run before training
        if main:
            write_json(
                {
                    **signature,
                    "data_dir": data_dir,
                    "train": vars(config),
                    "changes": run_changes(checkpoint, config),
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
                allow_changes=allow_changes,
                run_log=run_log,
            )
            if not main:  # evaluation, metrics and pictures are rank 0's
                return {}
            # The data already in memory, not a second copy read from config.json's data set: a
            # second copy was the command's peak resident memory (benchmarks/memory.py).
            metrics = _record_training(run_dir, nll_samples, str(torch_device), progress, log, data)
            run_log.finish({key: value for key, value in metrics.items() if key.startswith("test_")})
            return metrics


#: Kind of run -> the command that makes it and the keys its ``config.json`` must hold.
RUN_KINDS = {
    "vae": ("vaeflows train", ("dataset", "data_dir", "model")),
    "density": (
        "vaeflows density train",
        ("dataset", "data_dir", "flow", "options", "num_train", "dequantization", "conditional", "train"),
    ),
}


def read_run_config(run_dir: Path, kind: str) -> dict:
    """``run_dir/config.json`` of a run of ``kind`` (a key of :data:`RUN_KINDS`).

    Raises:
        FileNotFoundError: there is no ``config.json``.
        ValueError: it is not readable JSON (cut short, edited), or lacks keys: the message says
            whether it is another kind of run, and which command reads that one.
    """
    command, keys = RUN_KINDS[kind]
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a vaeflows run directory (no config.json)")
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not readable JSON ({error}): was it cut short or edited?") from None
    missing = [key for key in keys if key not in config] if isinstance(config, dict) else list(keys)
    if missing:
        for other, (other_command, other_keys) in RUN_KINDS.items():
            if other != kind and isinstance(config, dict) and all(key in config for key in other_keys):
                raise ValueError(
                    f"{run_dir} is a run of `{other_command}`, not of `{command}`: "
                    + (
                        "load it with vaeflows.density.load_density_run"
                        if other == "density"
                        else "evaluate it with `vaeflows evaluate` or vaeflows.infer.load_run"
                    )
                )
        raise ValueError(f"{path} lacks {missing}: it is not a config.json written by `{command}`")
    edited = [key for key in ("model", "options", "train") if key in keys and not isinstance(config[key], dict)]
    if edited:
        raise ValueError(f"{path}: {edited[0]!r} is not a mapping: it is not a config.json written by `{command}`")
    return config


def load_run(run_dir: Path, device: str = "auto", data: Optional[VAEData] = None) -> Tuple[VAE, dict, VAEData]:
    """The best model of a run directory, its ``config.json`` and its data.

    ``data``: the run's data set if the caller holds it already (it is then not read again).
    """
    run_dir = Path(run_dir)
    config = read_run_config(run_dir, "vae")
    torch_device = resolve_device(device)
    if data is None:
        data = load_dataset(config["dataset"], config["data_dir"])
    vae = build_vae(image_shape=data.image_shape, likelihood=data.likelihood, **config["model"])
    load_best(vae, run_dir, map_location=str(torch_device))
    return vae.to(torch_device).eval(), config, data


def evaluate_run(
    run_dir: Path,
    nll_samples: int = 5000,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Test -ELBO (one sample per point, beta = 1) and importance-sampled NLL of a run's best model,
    their samples drawn from ``seed``; appended to ``run_dir/metrics.json``'s ``evaluations``,
    leaving the training's own figures and earlier evaluations as they are. Draws the run's PNGs.

    Args:
        run_dir: a run directory of :func:`train_vae`.
        nll_samples: importance samples per test point (>= 1).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        seed: seeds the samples of both figures (the caller's RNG state is kept); the training's
            own figures were drawn with seed 0.
        progress: a progress bar over the test set.
        log: called with the figures.

    Returns:
        The evaluation appended: ``seed``, ``nll_samples``, ``device``, ``best_epoch``,
        ``test_elbo``, ``test_nll`` (and ``test_bpd_elbo``/``test_bpd_nll`` for 8-bit data).

    Raises:
        ValueError: ``nll_samples`` or ``seed`` is not a valid integer.
        FileNotFoundError: ``run_dir`` is not a run directory.
        RunLocked: another process (a training) is writing into ``run_dir``.
    """
    nll_samples = check_int("nll_samples (--samples)", nll_samples, minimum=1)
    seed = check_int("seed (--seed)", seed, minimum=0)
    run_dir = Path(run_dir)
    vae, _, data = load_run(run_dir, device)
    with run_lock(run_dir), pyro.validation_enabled(False):  # the data were checked when loaded
        last, test = _run_state(run_dir, vae, data)
        evaluation = {
            "seed": seed,
            "device": _device_name(test.device),
            "best_epoch": last["state"]["best_epoch"],
            **_test_figures(vae, data, test, nll_samples, seed, progress, log),
        }
        metrics = _read_metrics(run_dir)
        metrics.setdefault("evaluations", []).append(evaluation)
        write_json(metrics, run_dir / "metrics.json")
        _draw(run_dir, vae, test, last, log)
    return evaluation


def _record_training(
    run_dir: Path, nll_samples: int, device: str, progress: bool, log: Callable[[str], None], data: VAEData
) -> dict:
    """Write the training's record and test figures (seed 0) into ``metrics.json``, keeping its
    ``evaluations``; ``data`` is the run's data set, as training loaded it."""
    vae, config, data = load_run(run_dir, device, data)
    last, test = _run_state(run_dir, vae, data)
    history = last["state"]["history"]
    metrics = {
        "dataset": config["dataset"],
        "model": config["model"],
        "device": _device_name(test.device),
        "best_epoch": last["state"]["best_epoch"],
        "epochs": history,
        "seconds_per_epoch": sum(h["seconds"] for h in history) / max(len(history), 1),
        "changes": last["state"].get("changes", []),
        "eval_seed": 0,
        **_test_figures(vae, data, test, nll_samples, 0, progress, log),
        "evaluations": _read_metrics(run_dir).get("evaluations", []),
    }
    write_json(metrics, run_dir / "metrics.json")
    _draw(run_dir, vae, test, last, log)
    return metrics


def _run_state(run_dir: Path, vae: VAE, data: VAEData) -> Tuple[dict, torch.Tensor]:
    """``last.pt`` and the test set on the model's device."""
    device = next(vae.parameters()).device
    return load_checkpoint(run_dir / "last.pt", map_location=str(device)), data.test.to(device)


def _device_name(device: torch.device) -> str:
    return str(device) if device.type == "cpu" else torch.cuda.get_device_name(device)


def _read_metrics(run_dir: Path) -> dict:
    """``run_dir/metrics.json``, ``{}`` if there is none."""
    path = run_dir / "metrics.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is not readable JSON ({error}): move it away (its figures would be lost if "
            "it were overwritten), then run again"
        ) from None


def _test_figures(
    vae: VAE,
    data: VAEData,
    test: torch.Tensor,
    nll_samples: int,
    seed: int,
    progress: bool,
    log: Callable[[str], None],
) -> dict:
    """``test_elbo`` and, if ``nll_samples > 0``, ``test_nll`` and ``nll_samples`` (bits/dim too for
    8-bit data), from samples drawn with ``seed``; the caller's RNG state is kept."""
    from tqdm.auto import tqdm

    with torch.random.fork_rng(devices=[test.device] if test.is_cuda else []):
        torch.manual_seed(seed)
        figures = {"test_elbo": -elbo_per_point(vae.model, vae.guide, test).mean().item()}
        log(f"test -ELBO {figures['test_elbo']:.3f} nats (seed {seed})")
        if nll_samples > 0:
            with tqdm(total=len(test), desc=f"NLL, {nll_samples} samples", disable=not progress, leave=False) as bar:
                nll = (
                    -importance_sampled_log_likelihood(vae.model, vae.guide, test, nll_samples, progress=bar.update)
                    .mean()
                    .item()
                )
            figures.update(test_nll=nll, nll_samples=nll_samples)
            log(f"test NLL {nll:.3f} nats ({nll_samples} importance samples)")
    if data.likelihood == "categorical256":
        pixels = math.prod(data.image_shape)
        for key in ("test_elbo", "test_nll"):
            if key in figures:
                figures[key.replace("test_", "test_bpd_")] = figures[key] / (pixels * math.log(2))
    return figures


def _draw(run_dir: Path, vae: VAE, test: torch.Tensor, last: dict, log: Callable[[str], None]) -> None:
    from vaeflows import report

    report.draw_run(run_dir, vae, test, last["state"]["history"], log)
