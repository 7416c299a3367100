"""VAE models: Pyro ``model``/``guide`` modules with flow posteriors and learnable priors."""

from .priors import PRIORS, FlowPrior, FlowPriorDistribution, VampPrior, VampPriorDistribution, build_prior
from .vae import VAE, build_vae

__all__ = [
    "VAE",
    "build_vae",
    "PRIORS",
    "build_prior",
    "VampPrior",
    "VampPriorDistribution",
    "FlowPrior",
    "FlowPriorDistribution",
]
