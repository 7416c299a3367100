"""A resumable training loop for any objective: epochs, validation, early stopping, checkpoints.

The loop knows nothing of VAEs: it takes a module, a differentiable ``loss(batch, epoch)`` (a mean
over the batch) and a ``validate()`` giving a number to minimize. Its state lives in ``RUN_DIR``:

* ``last.pt``: module, optimizer, the values of Pyro's param store, epoch, history (with the
  changes of settings), early-stopping state and every RNG state, written after each finished
  epoch; ``fit`` resumes from it, and a run stopped and resumed gives the same losses as one
  that was not stopped;
* ``best.pt``: the module's weights at the best validation value so far;
* ``run.lock``: held (``fcntl.flock``) by the one process writing into ``RUN_DIR``, see
  :func:`run_lock`.

Every file is written through :func:`atomic_write` (a temporary file beside it, flushed to disk,
then renamed over it), so a kill at any moment leaves the old file or the new one. Checkpoints hold
only tensors, containers, numbers and strings, and are read with ``torch.load(weights_only=True)``:
loading one never runs code (:class:`UnsafeCheckpoint`).

A resume must be given the run's own training settings (:class:`TrainConfig`; ``epochs`` aside,
which may be raised to train on): a changed one is refused with :class:`CheckpointMismatch`
naming it, unless ``allow_changes=True``, which applies the new settings from the next epoch
(a new optimizer starts with fresh state) and records the change in the run's history
(:func:`run_changes`).

Launched by ``torchrun`` with several processes, the same loop trains data-parallel (see
:mod:`vaeflows.infer.distributed`); a run can resume on another number of processes.

A NaN or infinite training or validation value stops training with :class:`TrainingDiverged`;
``last.pt`` is then the last good epoch, if one finished. Losses are summed on the device and read
once per epoch (no sync per step).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import random
import re
import socket
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Dict, Iterator, List, Optional

import numpy as np
import pyro
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from vaeflows.checks import check_int, check_real
from vaeflows.infer.distributed import LossModule, all_sum, barrier, from_rank0, gather, world

if TYPE_CHECKING:
    from vaeflows.infer.run_log import RunLog

__all__ = [
    "TrainConfig",
    "TrainingDiverged",
    "CheckpointMismatch",
    "UnsafeCheckpoint",
    "RunLocked",
    "atomic_write",
    "check_resumable",
    "fit",
    "kl_beta",
    "load_best",
    "load_checkpoint",
    "make_optimizer",
    "run_changes",
    "run_lock",
    "write_json",
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


class UnsafeCheckpoint(CheckpointMismatch):
    """A checkpoint pickles an object other than tensors, containers, numbers and strings; it was
    not loaded, so nothing it pickles ran."""


class RunLocked(RuntimeError):
    """Another process is writing into the run directory."""


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
    """Every global RNG's state, as tensors, lists and numbers (what ``weights_only`` loads)."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()  # np.random.set_state takes it back
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` at once: ``write(file)`` fills ``PATH.tmp`` beside it, which is flushed to disk
    and renamed over ``path``. A reader, or a kill at any moment, sees the old file or the new one.

    ``PATH.tmp`` is private to the run directory's one writer (:func:`run_lock`); one left by a kill
    is overwritten by the next write.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def write_json(obj: dict, path: Path) -> None:
    """Write ``obj`` to ``path`` as indented JSON, through :func:`atomic_write`."""
    text = json.dumps(obj, indent=2) + "\n"
    atomic_write(path, lambda file: file.write(text.encode()))


def _save(obj: dict, path: Path) -> None:
    atomic_write(path, lambda file: torch.save(obj, file))


def load_checkpoint(path: Path, map_location: Optional[str] = None) -> dict:
    """Load a checkpoint written by :func:`fit` with ``torch.load(weights_only=True)``.

    A vaeflows checkpoint holds only tensors, dicts, lists, tuples, numbers, strings and ``None``,
    which is what ``weights_only`` loads without any extra allow-listed type; anything else in
    the file is refused before it is built, so nothing the file pickles runs.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        UnsafeCheckpoint: the file pickles another object (named in the message).
        CheckpointMismatch: the file is truncated, foreign or not a vaeflows checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: train a model into that directory first")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        unsafe = re.search(r"GLOBAL ([\w.]+)", str(error)) if isinstance(error, pickle.UnpicklingError) else None
        if unsafe:
            raise UnsafeCheckpoint(
                f"{path} pickles {unsafe.group(1)}, which vaeflows checkpoints do not hold: it was "
                "not loaded, since loading it could run code (older vaeflows checkpoints, which "
                "pickled numpy arrays, are refused too). Delete it to start afresh, or use another "
                "run directory"
            ) from None
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise CheckpointMismatch(
            f"{path} is not a readable vaeflows checkpoint ({type(error).__name__}: {first_line}); "
            "delete it to start afresh"
        ) from None
    if not isinstance(checkpoint, dict) or "module" not in checkpoint:
        raise CheckpointMismatch(f"{path} is not a vaeflows checkpoint (it holds no module weights)")
    return checkpoint


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


def _differences(old: dict, new: dict, prefix: str = "") -> Dict[str, list]:
    """``{name: [old value, new value]}`` for every key whose values differ; nested dicts give
    dotted names (``model.flow``) and a key missing on one side has the value ``None`` there."""
    changed = {}
    for key in [*new, *(key for key in old if key not in new)]:
        before, after = old.get(key), new.get(key)
        if isinstance(before, dict) and isinstance(after, dict):
            changed.update(_differences(before, after, f"{prefix}{key}."))
        elif before != after:
            changed[f"{prefix}{key}"] = [before, after]
    return changed


def _listed(changed: Dict[str, list]) -> str:
    return ", ".join(f"{name} {before!r} -> {after!r}" for name, (before, after) in changed.items())


def _changed_settings(checkpoint: dict, config: TrainConfig) -> Dict[str, list]:
    """The training settings of ``config`` other than those ``checkpoint`` was trained with;
    ``epochs`` is not one (raising it trains on)."""
    saved = {k: v for k, v in checkpoint["config"].items() if k != "epochs"}
    return _differences(saved, {k: v for k, v in asdict(config).items() if k != "epochs"})


def check_resumable(
    run_dir: Path, signature: dict, config: Optional[TrainConfig] = None, allow_changes: bool = False
) -> Optional[dict]:
    """The checkpoint ``run_dir/last.pt`` if it exists and may be resumed with ``signature`` and
    ``config``; ``None`` if there is none.

    Args:
        run_dir: the run directory.
        signature: the model and data settings; they must be the checkpoint's.
        config: the training settings (``None``: not checked); they must be the checkpoint's,
            ``epochs`` aside, unless ``allow_changes``.
        allow_changes: accept changed training settings (:func:`fit` applies them).

    Raises:
        CheckpointMismatch: the checkpoint is unreadable, or was made with another signature, or
            with other training settings and ``allow_changes`` is false; the message names every
            differing setting, old -> new.
    """
    last = Path(run_dir) / "last.pt"
    if not last.exists():
        return None
    checkpoint = load_checkpoint(last, map_location="cpu")
    missing = [key for key in ("optimizer", "state", "config", "signature", "rng") if key not in checkpoint]
    if missing:
        raise CheckpointMismatch(f"{last} lacks {missing}: it is not a last.pt of vaeflows; delete it to start afresh")
    saved = checkpoint["signature"]
    if saved != signature:
        changed = _differences(saved, signature) if isinstance(saved, dict) else {"signature": [saved, signature]}
        raise CheckpointMismatch(
            f"{run_dir} holds a run of another model or data set ({_listed(changed)}): "
            "resume it with its own settings, or train into another --out"
        )
    changed = {} if config is None else _changed_settings(checkpoint, config)
    if changed and not allow_changes:
        raise CheckpointMismatch(
            f"{run_dir} was trained with other settings ({_listed(changed)}): resume it with its "
            "own settings, train into another --out, or add --allow-changes (allow_changes=True) "
            f"to apply the new ones from epoch {checkpoint['state']['epoch'] + 1} on, recorded in "
            "the run's history"
        )
    return checkpoint


def run_changes(checkpoint: Optional[dict], config: TrainConfig) -> List[dict]:
    """The run's history of changed training settings, including the change that resuming
    ``checkpoint`` with ``config`` makes (``[]`` for a fresh run).

    Each entry is ``{"from_epoch": 3, "changed": {"lr": [0.24, 0.0001]}}``: the first epoch trained
    with the new settings, and each changed setting's old and new value.
    """
    if checkpoint is None:
        return []
    history = list(checkpoint["state"].get("changes", []))
    changed = _changed_settings(checkpoint, config)
    if changed:
        history.append({"from_epoch": checkpoint["state"]["epoch"] + 1, "changed": changed})
    return history


try:  # POSIX; elsewhere (Windows) runs go unlocked, with a warning
    import fcntl
except ImportError:  # pragma: no cover - no Windows machine in CI
    fcntl = None  # type: ignore[assignment]

_HELD: Dict[str, list] = {}  # run directory -> [its open run.lock, nesting depth], in this process


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/run.lock`` (creating ``run_dir``) while writing into ``run_dir``: one writer
    per run directory.

    The lock is ``fcntl.flock`` on that file, which the kernel releases however the holder ends
    (SIGKILL included): a killed run leaves no stale lock, and nothing has to judge whether a
    recorded process is still alive. The file stays; its holder writes its pid, host and start
    time into it for the message. Re-entrant within a process. Under ``torchrun`` rank 0, the one
    writer, takes the lock and tells the other ranks whether it could, so that all of them stop
    together. On a file system without ``flock`` it warns and goes on unlocked.

    Raises:
        RunLocked: another process holds the lock (on every rank).
    """
    run_dir = Path(run_dir)
    key = os.path.realpath(run_dir)
    failure = None
    if world()[0] == 0 and key not in _HELD:
        run_dir.mkdir(parents=True, exist_ok=True)
        file = open(run_dir / "run.lock", "a+")
        try:
            if fcntl is None:
                raise OSError("this platform has no fcntl.flock")
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "another process"
            file.close()
            failure = (
                f"{run_dir} is in use by {holder} (its run.lock is held): wait for that run to "
                "finish, or use another run directory (--out)"
            )
        except OSError as error:
            file.close()
            warnings.warn(f"cannot lock {run_dir / 'run.lock'} ({error}): nothing stops a second writer")
        else:
            file.truncate(0)
            file.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            file.flush()
            _HELD[key] = [file, 0]
    failure = from_rank0(failure)
    if failure is not None:
        raise RunLocked(failure)
    held = _HELD.get(key)
    if held is not None:
        held[1] += 1
    try:
        yield
    finally:
        if held is not None:
            held[1] -= 1
            if held[1] == 0:
                del _HELD[key]
                held[0].truncate(0)
                held[0].close()  # releases the lock


@dataclass
class _State:
    epoch: int = 0
    best_valid: float = float("inf")
    best_epoch: int = 0
    bad_epochs: int = 0
    history: List[dict] = field(default_factory=list)
    changes: List[dict] = field(default_factory=list)  # see run_changes


def _diverged(what: str, value: float, epoch: int, good_epoch: int, last: Path) -> TrainingDiverged:
    """The error for a non-finite ``what`` in ``epoch``, saying what ``last`` holds (epoch
    ``good_epoch``, or nothing when no epoch finished)."""
    if good_epoch:
        kept = (
            f"{last} holds epoch {good_epoch}, the last good one. Lower the learning rate (--lr) or "
            "clip gradients (--clip-norm), with --allow-changes to resume from it"
        )
    else:
        kept = (
            f"no epoch finished, so there is no checkpoint ({last} was not written). Lower the "
            "learning rate (--lr) or clip gradients (--clip-norm) and train again"
        )
    return TrainingDiverged(f"the {what} became {value} in epoch {epoch}; {kept}.")


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
    allow_changes: bool = False,
    run_log: Optional[RunLog] = None,
    train_label: str = "train",
    show_beta: bool = True,
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
        allow_changes: resume even though ``config`` differs from the run's settings (``epochs``
            may differ anyway): the new ones apply from the next epoch, a new optimizer with fresh
            state, and the change is recorded in ``last.pt``'s history (:func:`run_changes`).
            Without it such a resume raises :class:`CheckpointMismatch`.
        run_log: copies every checkpointed epoch into TensorBoard/CSV
            (:class:`vaeflows.infer.run_log.RunLog`; written by rank 0 only). The caller finishes it.
        train_label: what the epoch line calls the training loss (e.g. ``"fm loss"`` when it is
            not the number ``validate`` computes).
        show_beta: print the KL weight in the epoch line (off where the loss has no KL term).

    Returns:
        The per-epoch history: dicts with ``epoch``, ``train_loss``, ``valid``, ``beta``,
        ``seconds``.

    Raises:
        RunLocked: another process is writing into ``run_dir``.
        CheckpointMismatch: ``last.pt`` cannot be resumed with these settings.
        TrainingDiverged: the training or validation value became NaN or infinite.
    """
    run_dir = Path(run_dir)
    with run_lock(run_dir):
        rank, size = world()
        main = rank == 0
        log = log if main else (lambda line: None)
        last, best = run_dir / "last.pt", run_dir / "best.pt"
        optimizer = make_optimizer(module, config)
        state = _State()
        checkpoint = check_resumable(run_dir, signature, config, allow_changes)
        pyro.clear_param_store()
        if checkpoint is not None:
            module.load_state_dict(checkpoint["module"])
            if checkpoint["config"]["optimizer"] == config.optimizer:  # else a new one, fresh state
                optimizer.load_state_dict(checkpoint["optimizer"])
                for group in optimizer.param_groups:
                    group["lr"] = config.lr  # the saved one, unless allow_changes changed it
            # The module's parameters reach Pyro's param store (registered by pyro.module) at the
            # next model call, from the loaded module.
            state = _State(**checkpoint["state"])
            state.changes = run_changes(checkpoint, config)
            saved = checkpoint.get("rng_per_rank") or [checkpoint["rng"]]
            _set_rng_state(saved[rank] if len(saved) == size else saved[0])
            if len(saved) != size and rank > 0:  # resumed on another number of processes
                pyro.set_rng_seed(config.seed + 7919 * rank + state.epoch)
            log(f"resumed {run_dir} after epoch {state.epoch}" + (f" on {size} processes" if size > 1 else ""))
            changed = _changed_settings(checkpoint, config)
            if changed:
                log(f"applying changed settings from epoch {state.epoch + 1}: {_listed(changed)}")
        else:
            pyro.set_rng_seed(config.seed + 7919 * rank)  # other noise on every process
        run_log = run_log if main else None
        if run_log is not None:
            run_log.start(state.history)

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
                raise _diverged("training loss", train_loss, epoch, state.epoch, last)
            module.eval()
            valid = from_rank0(validate() if main else None)
            if not np.isfinite(valid):
                raise _diverged("validation value", valid, epoch, state.epoch, last)
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
                        "param_store": {"params": pyro.get_param_store().get_state()["params"]},
                        "state": asdict(state),
                        "rng": rng_per_rank[0],
                        "rng_per_rank": rng_per_rank,
                        "signature": signature,
                        "config": asdict(config),
                        "world_size": size,
                    },
                    last,
                )
                if run_log is not None:
                    run_log.epoch(state.history)
            log(
                f"epoch {epoch:4d}  {train_label} {train_loss:9.3f}  valid {valid:9.3f}  "
                + (f"beta {beta:.2f}  " if show_beta else "")
                + f"{seconds:6.2f}s"
                + ("  *best*" if improved else "")
            )
        barrier()  # rank 0's checkpoints are on disk when any process returns
        return state.history
