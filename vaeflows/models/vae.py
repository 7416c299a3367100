"""A VAE as Pyro ``model``/``guide`` methods, with an optional flow posterior.

Generative model: ``z ~ N(0, I)``, ``x ~ p(x | decoder(z))``. Guide: ``q0(z_0 | x) =
N(mu(h), diag(sigma(h)^2))`` with ``h = encoder(x)``, ``mu`` a linear head and ``sigma`` a linear head
followed by Softplus, then ``z_K = f_K(...f_1(z_0))`` by an amortized flow conditioned on ``h``.
Pyro's ``Trace_ELBO`` scores the flow posterior (a ``TransformedDistribution``) at its own sample, which gives the
flow-modified ELBO ``E_q0[log p(x, z_K) - log q0(z_0) + sum_k log|det dz_k/dz_(k-1)|]``.

The three sites use :mod:`vaeflows.distributions` (a diagonal Normal that scores its own sample from
its noise, the flow posterior around it, a standard Normal prior and, for binary images, Bernoulli
pixels with the event dims built in): Pyro distributions with the densities of
``Normal(...).to_event(1)``, ``TransformedDistribution`` and ``Bernoulli(...).to_event(3)`` in fewer
tensor operations.

KL warm-up multiplies the ``z`` site of model and guide by ``beta`` (``poutine.scale``), so the
objective is ``E[log p(x | z_K)] - beta (E[log q(z_K | x)] - E[log p(z_K)])``.

References:
    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014; van den Berg et al.,
    "Sylvester Normalizing Flows for Variational Inference", UAI 2018.
"""

from __future__ import annotations

import contextlib
from typing import Any, Mapping, Optional, Sequence, Tuple, cast

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from vaeflows.checks import check_dims, check_int
from vaeflows.distributions import DiagonalNormal, FlowPosterior, StandardNormal
from vaeflows.nn import build_encoder_decoder, build_likelihood
from vaeflows.nn.likelihoods import Likelihood
from vaeflows.transforms import AmortizedFlow, posterior_flow

from .priors import FlowPrior, VampPrior, build_prior

__all__ = ["VAE", "build_vae"]


def _kl_weight(beta: float):
    """``poutine.scale(beta)`` for the latent site during KL warm-up; nothing once ``beta = 1``
    (a messenger on every sample site costs Python time in every step)."""
    return contextlib.nullcontext() if beta == 1.0 else poutine.scale(scale=beta)


class VAE(nn.Module):
    """A VAE with Pyro ``model(x, beta)`` and ``guide(x, beta)``; images ``x`` of shape ``(B, C, H, W)``.

    Args:
        encoder: images ``(..., C, H, W)`` to features ``(..., encoder.feature_dim)``.
        decoder: latents ``(..., latent_dim)`` to the likelihood's parameters.
        likelihood: turns decoder output into ``p(x | z)`` with event shape ``(C, H, W)``.
        latent_dim: size of ``z``.
        flow: an amortized posterior flow with ``context_dim == encoder.feature_dim``, or ``None``
            for a diagonal Gaussian posterior.
        prior: a learned prior (:class:`~vaeflows.models.VampPrior` or
            :class:`~vaeflows.models.FlowPrior`, kept as ``latent_prior``), or ``None`` for
            ``p(z) = N(0, I)``.

    Attributes:
        register_params: ``model`` and ``guide`` call ``pyro.module`` so that ``pyro.infer.SVI``
            finds the parameters (default). A loop that optimizes ``vae.parameters()`` itself with
            a torch optimizer on ``Trace_ELBO().differentiable_loss``, as
            :func:`vaeflows.infer.train_vae` does, sets it to False: the registration costs about
            0.5 ms per call on a CPU and changes nothing there.

    Example:
        >>> vae = build_vae("mlp", (1, 8, 8), "bernoulli", latent_dim=4, flow="planar", num_flows=2)
        >>> svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}),
        ...                      pyro.infer.Trace_ELBO())
        >>> loss = svi.step(torch.randint(0, 2, (10, 1, 8, 8)).float())  # doctest: +SKIP
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: Likelihood,
        latent_dim: int,
        flow: Optional[AmortizedFlow] = None,
        prior: Optional[nn.Module] = None,
    ) -> None:
        super().__init__()
        check_int("latent_dim", latent_dim)
        feature_dim = cast(int, encoder.feature_dim)  # every encoder says its feature size (see Args)
        if flow is not None and flow.context_dim != feature_dim:
            raise ValueError(
                f"the flow's context_dim={flow.context_dim} differs from the encoder's feature_dim={feature_dim}"
            )
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.latent_dim = latent_dim
        self.loc = nn.Linear(feature_dim, latent_dim)
        self.scale = nn.Sequential(nn.Linear(feature_dim, latent_dim), nn.Softplus())
        self.flow = flow
        if prior is not None and not isinstance(prior, (VampPrior, FlowPrior)):
            raise ValueError(f"prior must be a VampPrior, a FlowPrior or None, got {type(prior).__name__}")
        if isinstance(prior, FlowPrior) and prior.density.event_shape != (latent_dim,):
            raise ValueError(
                f"the flow prior's event shape {prior.density.event_shape} is not (latent_dim,) = ({latent_dim},)"
            )
        self.latent_prior = prior
        self.register_params = True

    def prior(self, like: torch.Tensor) -> dist.TorchDistribution:
        """``p(z)``, event shape ``(latent_dim,)``: ``N(0, I)`` on ``like``'s device and dtype, or the
        learned prior (the VampPrior through this VAE's encoder and Gaussian heads)."""
        if self.latent_prior is None:
            return StandardNormal(self.latent_dim, like)
        if isinstance(self.latent_prior, VampPrior):
            return self.latent_prior.distribution(self.gaussian_params)
        return self.latent_prior.distribution()

    def gaussian_params(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(mu(h), sigma(h))`` of ``q0(z_0 | x)``, ``h = encoder(x)``: each ``x.shape[:-3] + (latent_dim,)``."""
        h = self.encoder(x)
        return self.loc(h), self.scale(h)

    def check_dtype(self, x: torch.Tensor) -> None:
        """Raise a ValueError unless ``x`` is a tensor of the parameters' floating dtype."""
        dtype = self.loc.weight.dtype
        if not torch.is_tensor(x) or x.dtype != dtype:
            found = x.dtype if torch.is_tensor(x) else type(x).__name__
            raise ValueError(
                f"images x of dtype {found} for a {dtype} model: pass x.to({dtype}) (uint8 pixels: "
                "divide by 255 first) or convert the model (vae.double())"
            )

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        """``q(z_K | x)``: batch shape ``x.shape[:-3]``, event shape ``(latent_dim,)``.

        Every call conditions the flow afresh (``flow.condition(h)``), so each sample site gets a
        transform of its own. Planar, radial and Sylvester flows have no analytic inverse: their
        transforms score a value only if it came out of them (they remember their own outputs),
        so a posterior must score the samples it drew, never data from elsewhere.
        """
        self.check_dtype(x)
        h = self.encoder(x)
        base = DiagonalNormal(self.loc(h), self.scale(h))
        if self.flow is None:
            return base
        return FlowPosterior(base, self.flow.condition(h))

    def _register(self) -> None:
        if self.register_params:
            pyro.module("vae", self)

    def model(self, x: torch.Tensor, beta: float = 1.0) -> None:
        self.check_dtype(x)
        self._register()
        # Pyro annotates plate's device as a str; it hands it to torch, which takes a torch.device.
        with pyro.plate("data", x.shape[0], device=x.device):  # type: ignore[arg-type]
            with _kl_weight(beta):
                z = pyro.sample("z", self.prior(x))
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)

    def guide(self, x: torch.Tensor, beta: float = 1.0) -> None:
        self._register()
        with pyro.plate("data", x.shape[0], device=x.device):  # type: ignore[arg-type]  # as in model
            with _kl_weight(beta):
                pyro.sample("z", self.posterior(x))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of ``p(x | z)`` at one posterior sample ``z ~ q(z | x)``."""
        return self.likelihood.mean(self.decoder(self.posterior(x).sample()))

    @torch.no_grad()
    def sample_images(self, num: int, like: torch.Tensor) -> torch.Tensor:
        """Means of ``p(x | z)`` for ``num`` prior samples ``z``, on ``like``'s device."""
        check_int("num", num, minimum=0)
        z = self.prior(like).sample((num,))
        return self.likelihood.mean(self.decoder(z))


def build_vae(
    arch: str,
    image_shape: Tuple[int, int, int],
    likelihood: str,
    latent_dim: int = 64,
    flow: Optional[str] = None,
    num_flows: int = 4,
    hidden_dims: Optional[Sequence[int]] = None,
    flow_hidden_dims: Optional[Sequence[int]] = None,
    prior: str = "standard",
    prior_options: Optional[Mapping[str, Any]] = None,
    **flow_options,
) -> VAE:
    """A :class:`VAE` from names.

    Args:
        arch: ``"mlp"`` or ``"gated-conv"`` (see :func:`vaeflows.nn.build_encoder_decoder`).
        image_shape: ``(C, H, W)``.
        likelihood: ``"bernoulli"``, ``"categorical256"`` or ``"discretized-logistic"``.
        latent_dim: size of ``z`` (the paper: 64).
        flow: a name of :data:`vaeflows.transforms.POSTERIOR_FLOWS`, or ``None``/``"none"`` for a
            diagonal Gaussian posterior.
        num_flows: number of flow steps (the paper: 4).
        hidden_dims: the MLP's hidden sizes (``mlp`` only; default ``(300, 300)``).
        flow_hidden_dims: the hidden sizes of the flow's own networks, passed to
            :func:`~vaeflows.transforms.posterior_flow` as its ``hidden_dims`` (the MADEs of
            ``iaf``, the nets of ``residual`` and ``ffjord``).
        prior: ``"standard"`` (``N(0, I)``), ``"vamp"`` or ``"flow"``: a name of
            :data:`vaeflows.models.PRIORS`.
        prior_options: the prior's options, passed to :func:`~vaeflows.models.build_prior`
            (``vamp``: ``num_components``, ...; ``flow``: ``flow``, ``num_steps``, ``hidden``).
        **flow_options: the flow's other options (e.g. ``num_ortho_vecs``), passed to
            :func:`~vaeflows.transforms.posterior_flow`.

    Raises:
        TypeError: an option the architecture or the flow does not have, or flow options without
            a flow.
        ValueError: bad sizes or names.
    """
    check_int("latent_dim", latent_dim)
    if flow_hidden_dims is not None:
        flow_options["hidden_dims"] = flow_hidden_dims
    if flow in (None, "none") and flow_options:
        names = ", ".join(map(repr, flow_options))
        raise TypeError(f"build_vae() got unexpected keyword argument(s) {names} (flow options need a flow=)")
    options = {} if hidden_dims is None else {"hidden_dims": check_dims("hidden_dims", hidden_dims)}
    encoder, decoder = build_encoder_decoder(arch, image_shape, latent_dim, likelihood, **options)
    posterior = None
    if flow not in (None, "none"):
        posterior = posterior_flow(flow, latent_dim, num_flows, cast(int, encoder.feature_dim), **flow_options)
    latent_prior = build_prior(prior, latent_dim, image_shape, **dict(prior_options or {}))
    return VAE(encoder, decoder, build_likelihood(likelihood), latent_dim, posterior, latent_prior)
