"""VAE models: Pyro ``model``/``guide`` modules with flow posteriors."""

from .vae import VAE, build_vae

__all__ = ["VAE", "build_vae"]
