"""Reverse-KL fits of unnormalized 2-D targets with the posterior flows (planar, radial, Sylvester).

The model is ``q(z_K)``: ``z_0 ~ N(0, I)`` pushed through ``posterior_flow(name, 2, K)`` (the global
form of the very transforms the VAE posteriors use; direction ``z_0 -> z_K``). The objective, with
the annealed inverse temperature ``beta`` of Rezende & Mohamed (2015)::

    F(beta) = E_q0[ log q0(z_0) - sum_k log|det dz_k/dz_(k-1)| + beta * U(z_K) ]

equals ``KL(q || p) - log Z`` at ``beta = 1``. Training goes through
:func:`vaeflows.infer.training.fit`: each "data" batch is only a placeholder of the batch size
(fresh noise is drawn every step), ``beta = min(epoch / warmup, 1)``, the validation value is
``F(1)`` on fixed noise. Planar and radial flows have no inverse, so ``log q`` is only known at
``q``'s own samples: the plot of ``q`` is a histogram of its samples beside ``exp(-U)``.

Example:
    >>> _ = torch.manual_seed(0)
    >>> fitted = EnergyFit("planar", num_flows=4)
    >>> float(fitted.free_energy(ENERGIES["U1"], 100).detach()) > 0
    True

References:
    Rezende, Mohamed. Variational inference with normalizing flows. ICML 2015 (Table 1, Fig. 3).
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from vaeflows.checks import check_int
from vaeflows.infer.run_log import RunLog
from vaeflows.infer.training import TrainConfig, fit, kl_beta, load_checkpoint, run_lock, write_json
from vaeflows.transforms import POSTERIOR_FLOWS, posterior_flow

from .flows import standard_normal_log_prob
from .plots import density_on_grid, save_panels
from .toy import ENERGIES

__all__ = ["EnergyFit", "fit_energy", "log_partition_on_box"]

PLOT_BOUND = 4.0


class EnergyFit(nn.Module):
    """``q(z_K)``: a 2-D standard normal through ``num_flows`` global steps of a posterior flow.

    Direction: base noise ``z_0`` to ``z_K``.

    Args:
        flow: a name of :data:`vaeflows.transforms.POSTERIOR_FLOWS`.
        num_flows: ``K``.
        flow_options: options of the global flow (see :func:`vaeflows.transforms.posterior_flow`),
            e.g. ``{"count_bins": 8, "bound": 4.0}`` for the spline flows.
    """

    _reference: torch.Tensor  # a buffer: samples take its dtype and device

    def __init__(self, flow: str, num_flows: int, flow_options: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__()
        if flow not in POSTERIOR_FLOWS:
            raise ValueError(f"unknown posterior flow {flow!r}; known: {', '.join(POSTERIOR_FLOWS)}")
        try:
            self.flow = posterior_flow(flow, 2, num_flows, **dict(flow_options or {}))
        except TypeError as error:  # an option of another flow
            raise ValueError(f"options {dict(flow_options or {})} do not apply to the {flow} flow: {error}") from None
        self.register_buffer("_reference", torch.zeros(()))

    def sample_with_log_q(self, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """``n`` samples ``z_K`` ``(n, 2)`` and their ``log q(z_K)`` ``(n,)``, from one pass."""
        z0 = torch.randn(n, 2, dtype=self._reference.dtype, device=self._reference.device)
        zk = self.flow(z0)
        return zk, standard_normal_log_prob(z0, 1) - self.flow.log_abs_det_jacobian(z0, zk)

    def free_energy(self, energy: Callable[[torch.Tensor], torch.Tensor], n: int, beta: float = 1.0) -> torch.Tensor:
        """Monte Carlo ``F(beta) = E_q[log q(z) + beta U(z)]`` with ``n`` samples (a scalar)."""
        z, log_q = self.sample_with_log_q(n)
        return (log_q + beta * energy(z)).mean()


def log_partition_on_box(
    energy: Callable[[torch.Tensor], torch.Tensor], bound: float = PLOT_BOUND, size: int = 400
) -> float:
    """``log Z`` of ``exp(-U)`` restricted to ``[-bound, bound]^2`` (U2-U4 are not normalizable on
    the plane), by a Riemann sum on a ``size x size`` grid."""
    density = density_on_grid(lambda z: -energy(z), bound, size, torch.zeros((), dtype=torch.float64))
    return math.log(float(density.sum()) * (2 * bound / (size - 1)) ** 2)


def fit_energy(
    energy: str,
    flow: str,
    num_flows: int,
    config: TrainConfig,
    run_dir: Path,
    steps_per_epoch: int = 100,
    progress: bool = True,
    log: Callable[[str], None] = print,
    allow_changes: bool = False,
    logs: Sequence[str] = (),
    flow_options: Optional[Mapping[str, Any]] = None,
) -> dict:
    """Fit ``q`` to ``exp(-U)`` by reverse KL into ``run_dir`` (resumable); write ``metrics.json``
    and ``energy_fit.png`` (target beside ``q``).

    Args:
        energy: ``"U1"`` to ``"U4"``.
        flow: a posterior flow name (planar, radial, ``sylvester-*``, ...).
        num_flows: ``K``.
        config: ``batch_size`` is the number of samples per step, ``warmup`` the epochs of beta
            annealing (Rezende & Mohamed anneal from 0.01 to 1).
        run_dir: the run directory.
        steps_per_epoch: optimizer steps per epoch.
        allow_changes: resume even though ``config``'s settings differ from the run's (see
            :func:`vaeflows.infer.training.fit`).
        logs: experiment logs written beside ``metrics.json``: ``"tensorboard"`` and/or ``"csv"``
            (:class:`vaeflows.infer.run_log.RunLog`).
        flow_options: options of the flow (see :class:`EnergyFit`), recorded with the run.

    Returns:
        The metrics: ``free_energy`` (``KL - log Z``, nats), ``log_z_box`` and
        ``kl_box = free_energy + log_z_box`` (the KL divergence when q's mass lies in the box).
    """
    if energy not in ENERGIES:
        raise ValueError(f"unknown energy {energy!r}; known: {', '.join(ENERGIES)}")
    target = ENERGIES[energy]
    check_int("steps_per_epoch (--steps-per-epoch)", steps_per_epoch)
    run_log = RunLog(Path(run_dir), logs)  # an unknown format or a missing package stops it here
    torch.manual_seed(config.seed)
    model = EnergyFit(flow, num_flows, flow_options)
    signature = {"energy": energy, "flow": flow, "num_flows": num_flows, "steps_per_epoch": steps_per_epoch}
    if flow_options:  # runs without options keep the signature they were written with
        signature["flow_options"] = dict(flow_options)

    def validate(samples: int = 20000) -> float:
        with torch.random.fork_rng():
            torch.manual_seed(1)
            return float(model.free_energy(target, samples).detach())

    placeholder = torch.zeros(steps_per_epoch * config.batch_size, 0)
    with run_lock(run_dir), contextlib.closing(run_log):
        fit(
            model,
            lambda batch, epoch: model.free_energy(target, len(batch), max(kl_beta(epoch, config.warmup), 0.01)),
            validate,
            placeholder,
            config,
            run_dir,
            signature,
            progress=progress,
            log=log,
            allow_changes=allow_changes,
            run_log=run_log,
        )
        model.load_state_dict(load_checkpoint(Path(run_dir) / "best.pt")["module"])
        log_z = log_partition_on_box(target)
        free = validate(100000)
        metrics = {**signature, "free_energy": free, "log_z_box": log_z, "kl_box": free + log_z}
        write_json(metrics, Path(run_dir) / "metrics.json")
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(0)
            samples = model.sample_with_log_q(200000)[0]
        panels = [
            (f"target exp(-{energy})", "grid", density_on_grid(lambda z: -target(z), PLOT_BOUND, 200, samples)),
            (f"{flow}, K={num_flows}", "points", samples),
        ]
        if save_panels(panels, Path(run_dir) / "energy_fit.png", PLOT_BOUND):
            log(f"wrote {Path(run_dir) / 'energy_fit.png'}")
        run_log.finish({"free_energy": free, "kl_box": free + log_z})
        log(f"{energy} {flow} K={num_flows}: KL - log Z = {free:.4f} nats, KL (box) = {free + log_z:.4f}")
    return metrics
