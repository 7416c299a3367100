"""vaeflows: normalizing-flow posteriors for Pyro guides, flow-posterior VAEs and density flows."""

__version__ = "0.1.0"
__all__ = ["__version__"]
