"""A resumable training loop for any objective: epochs, validation, early stopping, checkpoints.

The loop knows nothing of VAEs: it takes a module, a differentiable ``loss(batch, epoch)`` (a mean
over the batch) and a ``validate()`` giving a number to minimize. Its state lives in ``RUN_DIR``:

* ``last.pt``: module, optimizer, Pyro's param store, epoch, history, early-stopping state and every
  RNG state, written atomically after each finished epoch; ``fit`` resumes from it, and a run
  stopped and resumed gives the same losses as one that was not stopped;
* ``best.pt``: the module's weights at the best validation value so far.

Launched by ``torchrun`` with several processes, the same loop trains data-parallel (see
:mod:`vaeflows.infer.distributed`); a run can resume on another number of processes.

A NaN or infinite loss stops training with :class:`TrainingDiverged`; ``last.pt`` is then the
last good epoch. Losses are summed on the device and read once per epoch (no sync per step).
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import pyro
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from vaeflows.checks import check_int, check_real
from vaeflows.infer.distributed import LossModule, all_sum, barrier, from_rank0, gather, world

__all__ = [
    "TrainConfig",
    "TrainingDiverged",
    "CheckpointMismatch",
    "check_resumable",
    "fit",
    "kl_beta",
    "load_best",
    "load_checkpoint",
    "make_optimizer",
]


@dataclass
class TrainConfig:
    """Optimization settings; defaults are van den Berg et al. (2018)'s protocol.

    Attributes:
        epochs: maximum number of epochs (the paper: 2000).
        batch_size: minibatch size (100).
        lr: learning rate (5e-4).
        optimizer: ``"adamax"`` (the paper, eps 1e-7) or ``"adam"``.
        warmup: KL warm-up epochs, ``beta = min(epoch / warmup, 1)`` (100; 0 disables it).
        patience: early-stopping patience in epochs, counted after the warm-up (100).
        clip_norm: clip the gradients' global norm to this value (``None``: no clipping).
        seed: seeds torch, numpy and Python's RNGs.
    """

    epochs: int = 2000
    batch_size: int = 100
    lr: float = 5e-4
    optimizer: str = "adamax"
    warmup: int = 100
    patience: int = 100
    clip_norm: Optional[float] = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("warmup", 0), ("patience", 0), ("seed", 0)):
            setattr(self, name, check_int(name, getattr(self, name), minimum))
        self.lr = check_real("lr", self.lr, above=0)
        if self.clip_norm is not None:
            self.clip_norm = check_real("clip_norm", self.clip_norm, above=0)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; known: {', '.join(OPTIMIZERS)}")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class CheckpointMismatch(ValueError):
    """A run directory holds a checkpoint of another configuration, or an unreadable one."""


OPTIMIZERS: Dict[str, Callable] = {
    "adamax": lambda params, lr: torch.optim.Adamax(params, lr=lr, eps=1e-7),
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
}


def make_optimizer(module: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    return OPTIMIZERS[config.optimizer](module.parameters(), config.lr)


def kl_beta(epoch: int, warmup: int) -> float:
    """KL warm-up weight of (1-based) ``epoch``: ``min(epoch / warmup, 1)``; 1 when ``warmup = 0``."""
    return 1.0 if warmup == 0 else min(epoch / warmup, 1.0)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, map_location: Optional[str] = None) -> dict:
    """Load a checkpoint written by :func:`fit`, with a clear error if it is missing or corrupt."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: train a model into that directory first")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise CheckpointMismatch(
            f"{path} is not a readable vaeflows checkpoint ({type(error).__name__}: {error}); "
            "delete it to start afresh"
        ) from None


def load_best(module: nn.Module, run_dir: Path, map_location: Optional[str] = None) -> None:
    """Load ``run_dir/best.pt``'s weights into ``module``.

    Raises:
        CheckpointMismatch: they do not fit ``module`` (the run's ``config.json`` describes another).
    """
    path = Path(run_dir) / "best.pt"
    try:
        module.load_state_dict(load_checkpoint(path, map_location)["module"])
    except (KeyError, RuntimeError) as error:
        first_line = str(error).strip().splitlines()[0]
        raise CheckpointMismatch(
            f"{path} does not fit the model of {Path(run_dir) / 'config.json'} ({first_line}); "
            "was the run directory reused for another model?"
        ) from None


def check_resumable(run_dir: Path, signature: dict) -> Optional[dict]:
    """The checkpoint ``run_dir/last.pt`` if it exists and was made with ``signature``; ``None``
    if there is none.

    Raises:
        CheckpointMismatch: the checkpoint is unreadable or was made with other settings.
    """
    last = Path(run_dir) / "last.pt"
    if not last.exists():
        return None
    checkpoint = load_checkpoint(last, map_location="cpu")
    if checkpoint.get("signature") != signature:
        raise CheckpointMismatch(
            f"{run_dir} holds a run with settings {checkpoint.get('signature')}, "
            f"not {signature}: resume it with the same settings, or train into another --out"
        )
    return checkpoint


@dataclass
class _State:
    epoch: int = 0
    best_valid: float = float("inf")
    best_epoch: int = 0
    bad_epochs: int = 0
    history: List[dict] = field(default_factory=list)


def fit(
    module: nn.Module,
    loss: Callable[[torch.Tensor, int], torch.Tensor],
    validate: Callable[[], float],
    train_data: torch.Tensor,
    config: TrainConfig,
    run_dir: Path,
    signature: dict,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> List[dict]:
    """Train ``module`` by minimizing ``loss`` over minibatches of ``train_data``; resumable.

    Args:
        module: holds every trained parameter; saved in the checkpoints.
        loss: ``loss(batch, epoch)``, a differentiable scalar (mean per data point).
        validate: the number early stopping minimizes, computed after each epoch.
        train_data: ``(N, ...)`` tensor on the training device, shuffled every epoch.
        config: the optimization settings.
        run_dir: where ``last.pt``/``best.pt`` live; an existing ``last.pt`` is resumed.
        signature: what must match to resume (model and data settings); a ``last.pt`` with another
            signature raises :class:`CheckpointMismatch`.
        progress: show a progress bar per epoch.
        log: called with one summary line per epoch.

    Returns:
        The per-epoch history: dicts with ``epoch``, ``train_loss``, ``valid``, ``beta``,
        ``seconds``.
    """
    rank, size = world()
    main = rank == 0
    log = log if main else (lambda line: None)
    run_dir = Path(run_dir)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    last, best = run_dir / "last.pt", run_dir / "best.pt"
    optimizer = make_optimizer(module, config)
    state = _State()
    checkpoint = check_resumable(run_dir, signature)
    pyro.clear_param_store()
    if checkpoint is not None:
        module.load_state_dict(checkpoint["module"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        # The saved param store holds the module's parameters (registered by pyro.module); it is
        # rebuilt from the loaded module at the next model call, so that it refers to them again.
        state = _State(**checkpoint["state"])
        saved = checkpoint.get("rng_per_rank") or [checkpoint["rng"]]
        _set_rng_state(saved[rank] if len(saved) == size else saved[0])
        if len(saved) != size and rank > 0:  # resumed on another number of processes
            pyro.set_rng_seed(config.seed + 7919 * rank + state.epoch)
        log(f"resumed {run_dir} after epoch {state.epoch}" + (f" on {size} processes" if size > 1 else ""))
    else:
        pyro.set_rng_seed(config.seed + 7919 * rank)  # other noise on every process

    step_loss = loss
    if size > 1:
        cuda = train_data.device.type == "cuda"
        step_loss = DistributedDataParallel(
            LossModule(module, loss), device_ids=[train_data.device] if cuda else None
        )
    per_process = train_data.shape[0] // size
    while state.epoch < config.epochs:
        epoch = state.epoch + 1
        if config.patience and state.bad_epochs >= config.patience:
            log(f"early stop: no validation improvement for {config.patience} epochs")
            break
        start = time.perf_counter()
        module.train()
        # One permutation per epoch, the same on every process (and after a resume); process r
        # takes its elements r, r + size, ... (a distributed sampler).
        shuffle = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
        order = torch.randperm(train_data.shape[0], generator=shuffle)
        order = order[rank : per_process * size : size].to(train_data.device)
        total = torch.zeros((), device=train_data.device)
        bar = tqdm(
            range(0, per_process, config.batch_size),
            desc=f"epoch {epoch}/{config.epochs}",
            leave=False,
            disable=not (progress and main),
        )
        for begin in bar:
            batch = train_data[order[begin : begin + config.batch_size]]
            value = step_loss(batch, epoch)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            if config.clip_norm is not None:
                nn.utils.clip_grad_norm_(module.parameters(), config.clip_norm)
            optimizer.step()
            total = total + value.detach() * batch.shape[0]
        train_loss = all_sum(total).item() / (per_process * size)
        if not np.isfinite(train_loss):
            raise TrainingDiverged(
                f"the training loss became {train_loss} in epoch {epoch}; {last} holds the last "
                "good epoch. Lower the learning rate (--lr) or clip gradients (--clip-norm)."
            )
        module.eval()
        valid = from_rank0(validate() if main else None)
        seconds = time.perf_counter() - start
        beta = kl_beta(epoch, config.warmup)
        state.history.append(
            {"epoch": epoch, "train_loss": train_loss, "valid": valid, "beta": beta, "seconds": seconds}
        )
        state.epoch = epoch
        improved = valid < state.best_valid
        if improved:
            state.best_valid, state.best_epoch, state.bad_epochs = valid, epoch, 0
        elif epoch > config.warmup:
            state.bad_epochs += 1
        rng_per_rank = gather(_rng_state())
        if main:
            if improved:
                _save({"module": module.state_dict(), "signature": signature, "epoch": epoch}, best)
            _save(
                {
                    "module": module.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "param_store": pyro.get_param_store().get_state(),
                    "state": asdict(state),
                    "rng": rng_per_rank[0],
                    "rng_per_rank": rng_per_rank,
                    "signature": signature,
                    "config": asdict(config),
                    "world_size": size,
                },
                last,
            )
        log(
            f"epoch {epoch:4d}  train {train_loss:9.3f}  valid {valid:9.3f}  beta {beta:.2f}  "
            f"{seconds:6.2f}s" + ("  *best*" if improved else "")
        )
    barrier()  # rank 0's checkpoints are on disk when any process returns
    return state.history


def write_json(obj: dict, path: Path) -> None:
    Path(path).write_text(json.dumps(obj, indent=2) + "\n")
