"""Maximum-likelihood training of density flows through the VAE's loop, :func:`vaeflows.infer.training.fit`.

``RUN_DIR`` holds ``config.json``, ``last.pt``/``best.pt`` (resumable, early stopping on the
validation NLL), ``metrics.json`` (per-epoch history, seconds per step, test NLL in nats and, for
8-bit data, bits/dim) and PNGs: for 2-D data ``density.png`` (test data, learned density on a grid,
samples); for images ``samples.png``.

Class-conditional training (``conditional=True``, data with labels) passes one-hot labels as the
flow's context; the labels travel with the data as one extra column, since ``fit`` batches one
tensor.

Example:
    >>> import tempfile
    >>> from vaeflows.infer.training import TrainConfig
    >>> metrics = train_density("moons", "realnvp", {"hidden": 16}, TrainConfig(epochs=1, warmup=0),
    ...                         tempfile.mkdtemp(), num_train=500, progress=False, log=lambda s: None)
    >>> sorted(k for k in metrics if k.startswith("test"))
    ['test_nll']
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from vaeflows.infer.experiment import read_run_config, resolve_device
from vaeflows.infer.run_log import RunLog
from vaeflows.infer.training import (
    TrainConfig,
    check_resumable,
    fit,
    load_best,
    load_checkpoint,
    run_changes,
    run_lock,
    write_json,
)
from vaeflows.report import save_images
from vaeflows.transforms.ffjord import rnode_penalty

from .data import DensityData, load_density_data
from .dequantization import DEQUANTIZERS, bits_per_dim, dequantized_log_likelihood
from .flows import FlowDensity, density_flow
from .freeform import EXACT_UP_TO_DIM
from .integer import INTEGER_FLOWS, IntegerDiscreteFlow
from .matching import FlowMatching, cnf_blocks, sample_nfe
from .plots import density_on_grid, save_panels

__all__ = [
    "DENSITY_OBJECTIVES",
    "DensityModel",
    "train_density",
    "evaluate_density",
    "load_density_run",
    "mean_nll",
]

#: The training objectives of :func:`train_density`: maximum likelihood (every flow) and flow
#: matching (continuous flows, :mod:`.matching`).
DENSITY_OBJECTIVES = ("likelihood", "flow-matching")


class DensityModel(nn.Module):
    """What is trained: a flow density and, for 8-bit data, its dequantizer.

    ``log_likelihood(batch)`` unpacks a training row (data, then the label column when
    conditional) and returns ``log p(x)`` (continuous data) or the dequantization bound of
    ``log P(x)`` (8-bit data), in nats, shape ``(B,)``; an integer flow
    (:data:`~.integer.INTEGER_FLOWS`) scores 8-bit data exactly, without a dequantizer.

    Args:
        flow: the density.
        dequantizer: a module of :data:`DEQUANTIZERS`, or ``None`` for continuous data and
            integer flows.
        num_classes: for a class-conditional flow (context = one-hot label), else 0.
    """

    def __init__(
        self, flow: Union[FlowDensity, IntegerDiscreteFlow], dequantizer: Optional[nn.Module], num_classes: int = 0
    ) -> None:
        super().__init__()
        self.flow = flow
        self.dequantizer = dequantizer
        self.num_classes = num_classes

    def unpack(self, rows: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(B, D [+ 1])`` rows -> data ``(B, *event_shape)`` and one-hot context or ``None``."""
        if not self.num_classes:
            return rows.reshape(-1, *self.flow.event_shape), None
        context = F.one_hot(rows[:, -1].long(), self.num_classes).to(rows)
        return rows[:, :-1].reshape(-1, *self.flow.event_shape), context

    def log_likelihood(self, rows: torch.Tensor) -> torch.Tensor:
        x, context = self.unpack(rows)
        if self.dequantizer is None or isinstance(self.flow, IntegerDiscreteFlow):
            return self.flow.log_prob(x, context)
        return dequantized_log_likelihood(self.flow, x, self.dequantizer, context)

    def flow_matching_loss(self, rows: torch.Tensor, options: FlowMatching) -> torch.Tensor:
        """The flow-matching loss (:meth:`.matching.FlowMatching.loss`) of a batch of training rows;
        8-bit data are dequantized first (uniform dequantization only)."""
        x, context = self.unpack(rows)
        if self.dequantizer is not None:
            x = self.dequantizer(x)[0]
        return options.loss(self.flow, x, context)


def _training_loss(model: DensityModel, rows: torch.Tensor) -> torch.Tensor:
    """The mean NLL of a batch plus the RNODE penalty its solves recorded (FFJORD with
    ``kinetic_weight``/``jacobian_weight``; 0 otherwise)."""
    nll = -model.log_likelihood(rows).mean()
    return nll + rnode_penalty(model)


def _rows(data: DensityData, split: str, conditional: bool) -> torch.Tensor:
    """A split as ``(N, D)`` rows, with the label as a last column when conditional."""
    x = getattr(data, split)
    flat = x.reshape(len(x), -1)
    if not conditional:
        return flat
    if data.labels is None:
        raise ValueError(f"{data.name}: a class-conditional flow needs labels, and the data set has none")
    return torch.cat([flat, data.labels[split][:, None].float()], 1)


@torch.no_grad()
def mean_nll(model: DensityModel, rows: torch.Tensor, batch_size: int = 1000, seed: int = 0) -> float:
    """Mean ``-log p`` (nats) over ``rows``; dequantization noise drawn from ``seed`` (repeatable)."""
    devices = [rows.device] if rows.is_cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        total = sum(model.log_likelihood(chunk).sum() for chunk in rows.split(batch_size))
    return -float(total) / len(rows)


def _build(signature: dict, data: DensityData) -> DensityModel:
    context_dim = data.num_classes if signature["conditional"] else None
    if signature["flow"] in INTEGER_FLOWS:
        if not data.discrete:
            raise ValueError(f"{signature['flow']} models 8-bit images (mnist); {data.name} is continuous")
        model = INTEGER_FLOWS[signature["flow"]](data.event_shape, context_dim=context_dim, **signature["options"])
        model.check_values = False  # the data were checked once when loaded
        return DensityModel(model, None, 0)
    flow = density_flow(signature["flow"], data.event_shape, context_dim=context_dim, **signature["options"])
    flow.check_values = False  # the data were checked once when loaded
    deq = DEQUANTIZERS[signature["dequantization"]](data.event_shape) if data.discrete else None
    return DensityModel(flow, deq, data.num_classes if signature["conditional"] else 0)


def train_density(
    dataset: str,
    flow: str,
    options: dict,
    config: TrainConfig,
    run_dir: Path,
    data_dir: Optional[str] = None,
    num_train: Optional[int] = None,
    dequantization: str = "uniform",
    conditional: bool = False,
    device: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] = print,
    allow_changes: bool = False,
    logs: Sequence[str] = (),
    objective: str = "likelihood",
    flow_matching: Optional[FlowMatching] = None,
) -> dict:
    """Fit ``flow`` to ``dataset`` by maximum likelihood or flow matching into ``run_dir``
    (resumed if it holds the same run), then evaluate the best model on the test set.

    Flow matching (``objective="flow-matching"``, :mod:`.matching`) regresses an ``ffjord``
    model's vector field on the conditional paths from noise to the training data, with no ODE
    solve in training; validation (early stopping, ``best.pt``) and the test figures are the
    exact likelihood by the model's ODE either way, and ``metrics.json`` also records the
    function evaluations of sampling (``sample_nfe``) and the trace of the ODE's log-det
    (``trace``: exact for ``D <= 16``, else Hutchinson's estimate).

    Args:
        dataset: a name of :data:`vaeflows.density.data.DENSITY_DATASETS`.
        flow: a name of :data:`vaeflows.density.DENSITY_FLOWS`.
        options: builder options, e.g. ``{"num_steps": 4, "hidden": 64}``.
        config: optimization settings (``warmup`` is ignored: there is no KL term).
        run_dir: the run directory.
        data_dir: MNIST's folder.
        num_train: training set size (toy sets: generated; MNIST: the first ones).
        dequantization: ``"uniform"`` or ``"variational"`` (8-bit data only; integer flows
            need none and record ``None``).
        conditional: class-conditional flow (data with labels).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        progress: progress bars.
        log: called with progress lines.
        allow_changes: resume even though ``config``'s settings differ from the run's (see
            :func:`vaeflows.infer.training.fit`); recorded in ``config.json`` and ``metrics.json``.
        logs: experiment logs written beside ``metrics.json``: ``"tensorboard"`` and/or ``"csv"``
            (:class:`vaeflows.infer.run_log.RunLog`).
        objective: a name of :data:`DENSITY_OBJECTIVES`.
        flow_matching: the options of ``objective="flow-matching"`` (default ``FlowMatching()``:
            independent coupling, ``sigma_min = 0``).

    Returns:
        The metrics written to ``run_dir/metrics.json``.

    Raises:
        RunLocked: another process is writing into ``run_dir``.
        CheckpointMismatch: ``run_dir`` holds a run that these settings cannot resume; nothing
            was written.
    """
    if dequantization not in DEQUANTIZERS:
        raise ValueError(f"unknown dequantization {dequantization!r}; known: {', '.join(DEQUANTIZERS)}")
    matching = _check_objective(objective, flow_matching, flow, dequantization)
    if matching is not None and any(options.get(key) for key in ("kinetic_weight", "jacobian_weight")):
        raise ValueError(
            "the RNODE penalties (kinetic_weight, jacobian_weight; --kinetic, --jacobian-frobenius) regularize "
            "the ODE solves of maximum likelihood; flow matching trains without a solve: drop them, or use "
            "--objective likelihood"
        )
    run_log = RunLog(Path(run_dir), logs)  # an unknown format or a missing package stops it here
    data = load_density_data(dataset, data_dir, num_train, config.seed)
    if conditional and data.labels is None:
        raise ValueError(f"{dataset} has no class labels: a class-conditional flow needs them (mnist)")
    signature = {
        "dataset": dataset,
        "flow": flow,
        "options": dict(options),
        "num_train": len(data.train),
        "dequantization": dequantization if data.discrete and flow not in INTEGER_FLOWS else None,
        "conditional": conditional,
    }
    if matching is not None:  # only then: the runs of maximum likelihood keep their signature
        signature["objective"] = {"name": objective, **vars(matching)}
    torch_device = resolve_device(device)
    torch.manual_seed(config.seed)
    model = _build(signature, data).to(torch_device)
    if matching is not None:
        cnf_blocks(model.flow)  # a flow of other layers stops here, before the run directory is written

    def loss(batch: torch.Tensor, epoch: int) -> torch.Tensor:
        if matching is None:
            return _training_loss(model, batch)
        return model.flow_matching_loss(batch, matching)

    run_dir = Path(run_dir)
    config = TrainConfig(**{**vars(config), "warmup": 0})  # no KL term: as fit records it
    with run_lock(run_dir), contextlib.closing(run_log):
        checkpoint = check_resumable(run_dir, signature, config, allow_changes)  # before config.json
        write_json(
            {
                **signature,
                "data_dir": data_dir,
                "train": vars(config),
                "changes": run_changes(checkpoint, config),
                "device": str(torch_device),
            },
            run_dir / "config.json",
        )
        train, valid = (_rows(data, s, conditional).to(torch_device) for s in ("train", "valid"))
        log(
            f"{dataset}: {len(data.train)} train / {len(data.valid)} valid / {len(data.test)} test, "
            f"event shape {data.event_shape}; flow {flow}; device {torch_device}"
            + (f"; flow matching, {matching.coupling} coupling, sigma_min {matching.sigma_min:g}" if matching else "")
        )
        fit(
            model,
            loss,
            lambda: mean_nll(model, valid, config.batch_size),
            train,
            config,
            run_dir,
            signature,
            progress=progress,
            log=log,
            allow_changes=allow_changes,
            run_log=run_log,
            train_label="fm loss" if matching else "train nll",
            show_beta=False,
        )
        metrics = evaluate_density(run_dir, data, device, log)
        run_log.finish({key: value for key, value in metrics.items() if key.startswith("test_")})
        return metrics


def _check_objective(
    objective: str, flow_matching: Optional[FlowMatching], flow: str, dequantization: str
) -> Optional[FlowMatching]:
    """The flow-matching options of a run, ``None`` for maximum likelihood; one clear error for a
    combination that cannot train."""
    if objective not in DENSITY_OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; known: {', '.join(DENSITY_OBJECTIVES)}")
    if objective == "likelihood":
        if flow_matching is not None:
            raise ValueError(
                "flow-matching options (coupling, sigma_min; --coupling, --sigma-min) apply to "
                "objective='flow-matching' (--objective flow-matching) only"
            )
        return None
    if flow != "ffjord":
        raise ValueError(
            f"flow matching trains continuous flows only: use flow 'ffjord' (--flow ffjord), or train "
            f"{flow!r} by maximum likelihood (--objective likelihood)"
        )
    if dequantization == "variational":
        raise ValueError(
            "variational dequantization is trained by the likelihood bound, which flow matching does not "
            "compute: use uniform dequantization (--dequantization uniform) with --objective flow-matching"
        )
    return flow_matching if flow_matching is not None else FlowMatching()


_SIGNATURE = ("dataset", "flow", "options", "num_train", "dequantization", "conditional")


def load_density_run(
    run_dir: Path, device: str = "auto", data: Optional[DensityData] = None
) -> Tuple[DensityModel, dict, DensityData]:
    """The best model of a ``vaeflows density train`` run directory (in eval mode), its
    ``config.json`` and its data (loaded again unless given).

    Example:
        >>> model, config, data = load_density_run("runs/moons")  # doctest: +SKIP
        >>> model.flow.log_prob(data.test[:5])  # doctest: +SKIP

    Raises:
        FileNotFoundError: ``run_dir`` holds no ``config.json``.
        ValueError: its ``config.json`` is unreadable, or is a VAE run's.
        CheckpointMismatch: ``best.pt`` does not fit the model the config describes.
    """
    run_dir = Path(run_dir)
    config = read_run_config(run_dir, "density")
    if data is None:
        data = load_density_data(config["dataset"], config["data_dir"], config["num_train"], config["train"]["seed"])
    torch_device = resolve_device(device)
    model = _build({k: config[k] for k in _SIGNATURE}, data).to(torch_device)
    load_best(model, run_dir, str(torch_device))
    return model.eval(), config, data


def evaluate_density(
    run_dir: Path, data: Optional[DensityData] = None, device: str = "auto", log: Callable[[str], None] = print
) -> dict:
    """Test NLL (nats; bits/dim for 8-bit data) of a run's best model; writes ``metrics.json``
    and the PNGs (raising :class:`~vaeflows.infer.training.RunLocked` while another process
    writes into ``run_dir``)."""
    run_dir = Path(run_dir)
    model, config, data = load_density_run(run_dir, device, data)
    with run_lock(run_dir):
        signature = {k: config[k] for k in _SIGNATURE}
        torch_device = next(model.parameters()).device
        state = load_checkpoint(run_dir / "last.pt", "cpu")["state"]
        history = state["history"]
        steps = math.ceil(signature["num_train"] / config["train"]["batch_size"])
        seconds = sum(h["seconds"] for h in history)
        test = _rows(data, "test", signature["conditional"]).to(torch_device)
        metrics = {
            **signature,
            "device": str(torch_device),
            "epochs": history,
            "steps": steps * len(history),
            "seconds_per_step": seconds / max(steps * len(history), 1),
            "changes": state.get("changes", []),
            "test_nll": mean_nll(model, test),
        }
        dims = math.prod(data.event_shape)
        if "objective" in config:
            metrics["objective"] = config["objective"]
        if signature["flow"] == "ffjord":  # the continuous flows: how the figures were computed
            metrics["trace"] = cnf_blocks(model.flow)[0].eval_trace
            n = 1000 if dims <= EXACT_UP_TO_DIM else 100
            with torch.random.fork_rng(devices=[torch_device] if torch_device.type == "cuda" else []):
                torch.manual_seed(0)
                metrics["sample_nfe"] = sample_nfe(model.flow, n, _class_context(model, n, like=test))
            metrics["sample_nfe_batch"] = n
        if data.discrete:
            metrics["test_bpd"] = float(bits_per_dim(torch.tensor(-metrics["test_nll"]), dims))
            log(f"test NLL {metrics['test_nll']:.2f} nats, {metrics['test_bpd']:.4f} bits/dim")
        else:
            log(f"test NLL {metrics['test_nll']:.4f} nats")
        write_json(metrics, run_dir / "metrics.json")
        _draw(run_dir, model, data, log)
        return metrics


@torch.no_grad()
def _draw(run_dir: Path, model: DensityModel, data: DensityData, log: Callable[[str], None]) -> None:
    flow = model.flow
    like = next(model.parameters())
    with torch.random.fork_rng(devices=[like.device] if like.is_cuda else []):
        torch.manual_seed(0)
        if len(data.event_shape) == 1:
            bound = 4.5
            density = density_on_grid(flow.log_prob, bound, 200, like)
            panels = [
                ("test data", "points", data.test),
                (f"{flow.name} density", "grid", density),
                (f"{flow.name} samples", "points", flow.sample(len(data.test))),
            ]
            drawn, name = save_panels(panels, run_dir / "density.png", bound, data.name), "density.png"
        else:
            samples = flow.sample(64, _class_context(model, 64, like))
            if model.dequantizer is None and data.discrete:
                samples = samples / 255  # an integer flow samples 8-bit values
            drawn, name = save_images(samples, run_dir / "samples.png", f"{flow.name} samples"), "samples.png"
    log(f"wrote {run_dir / name}" if drawn else "matplotlib is not installed: no PNGs (pip install 'vaeflows[data]')")


def _class_context(model: DensityModel, n: int, like: torch.Tensor) -> Optional[torch.Tensor]:
    """One-hot labels ``0, 1, ..., 0, 1, ...`` for ``n`` samples of a class-conditional model, else ``None``."""
    if not model.num_classes:
        return None
    return F.one_hot(torch.arange(n, device=like.device) % model.num_classes, model.num_classes).to(like)
