"""Objectives and training: KL warm-up, ELBO/IWAE losses, importance-sampled NLL, resumable loop."""

from .evaluation import (
    elbo_per_point,
    importance_sampled_log_likelihood,
    log_importance_weights,
    reparameterized_elbo,
)
from .experiment import OBJECTIVES, evaluate_run, load_run, resolve_device, train_vae, vae_loss
from .run_log import LOG_FORMATS, RunLog
from .training import CheckpointMismatch, TrainConfig, TrainingDiverged, fit, kl_beta

__all__ = [
    "reparameterized_elbo",
    "log_importance_weights",
    "elbo_per_point",
    "importance_sampled_log_likelihood",
    "OBJECTIVES",
    "train_vae",
    "evaluate_run",
    "load_run",
    "resolve_device",
    "vae_loss",
    "TrainConfig",
    "TrainingDiverged",
    "CheckpointMismatch",
    "fit",
    "kl_beta",
    "RunLog",
    "LOG_FORMATS",
]
