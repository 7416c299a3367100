"""Flow guides for any Pyro model.

* :class:`AutoFlow`: an autoguide (as Pyro's ``AutoContinuous``) whose posterior on the model's
  unconstrained latent vector is a learned affine map of ``N(0, I)`` followed by any flow of
  :data:`vaeflows.transforms.POSTERIOR_FLOWS`;
* :class:`LowRankAffine`: its diagonal-plus-low-rank affine layer, a Pyro/torch transform.

For an amortized flow guide (a latent per data point, flow parameters from an encoder), use
:func:`vaeflows.transforms.posterior_flow` with ``context_dim`` inside your own guide; the README's
"A flow guide for your own model" shows both.
"""

from .auto import BASES, AutoFlow, LowRankAffine

__all__ = ["AutoFlow", "LowRankAffine", "BASES"]
