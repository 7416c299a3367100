"""Four Pyro models, each a plain function with its data bound: three that nobody here wrote, one multimodal.

* ``banana``: the banana-shaped ("warped Gaussian") target of Pyro's NeuTra example, 2 latents;
* ``eight_schools``: Rubin's eight schools, non-centered as in Pyro's ``examples/eight_schools``,
  10 latents;
* ``logistic``: Bayesian logistic regression on scikit-learn's breast-cancer data, 11 latents;
* ``folded``: Gaussian latents seen only through their absolute values, so that the posterior has
  four well-separated modes (2 latents), with its evidence ``log Z`` in closed form
  (:func:`folded_log_z`): the target where a monotone spline's bimodal marginals beat an affine flow.

Each is registered in :data:`MODELS` as a :class:`PyroModel` (the model function, its plate
nesting, its latent dimension, the two latents to draw against each other and, where known
exactly, ``log Z``), which ``examples/flow_guides.py`` and ``benchmarks/pyro_guides.py`` iterate
(notebook 07 shows the first three, :data:`NOTEBOOK_MODELS`)::

    from pyro_models import MODELS
    spec = MODELS["banana"]
    guide = AutoFlow(spec.model, "iaf", num_flows=2)

The models take no arguments: every guide, ELBO, ``Predictive`` and ``NUTS`` call is ``f()``.
The helpers below (:func:`make_svi`, :func:`elbo_estimate`, :func:`guide_samples`,
:func:`nuts_samples`) are the protocol the example, the benchmark and the notebook share.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO
from pyro.infer.importance import vectorized_importance_weights
from pyro.optim.clipped_adam import ClippedAdam

__all__ = [
    "PyroModel",
    "MODELS",
    "banana",
    "eight_schools",
    "logistic",
    "folded",
    "folded_log_z",
    "folded_posterior",
    "NOTEBOOK_MODELS",
    "breast_cancer",
    "pair",
    "ANNEAL",
    "ScheduledSVI",
    "make_svi",
    "elbo_estimate",
    "guide_samples",
    "nuts_samples",
]

#: Parameters of the banana: Pyro's ``examples/neutra.py`` defaults (``--param-a``, ``--param-b``, ``rho``).
BANANA_A, BANANA_B, BANANA_RHO = 1.15, 1.0, 0.9

#: The eight schools' estimated effects and their standard errors
#: (Rubin 1981; Pyro's ``examples/eight_schools/data.py``).
SCHOOLS_Y = (28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0)
SCHOOLS_SIGMA = (15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0)

#: How many of the breast-cancer features the logistic regression uses (the ten "mean ..." ones).
LOGISTIC_FEATURES = 10
#: Scale of the Normal prior on the logistic regression's intercept and weights.
LOGISTIC_PRIOR_SCALE = 1.0

#: The folded model's observations ``x_d``, prior scale ``s`` and noise ``sigma`` (see :func:`folded`).
FOLDED_X = (2.0, 1.5)
FOLDED_PRIOR_SCALE, FOLDED_NOISE = 2.0, 0.5


def banana() -> None:
    """The banana of Pyro's NeuTra example, as a two-site Pyro model.

    Pyro's ``BananaShaped(a, b, rho)`` draws ``u ~ N(0, [[1, rho], [rho, 1]])`` and returns
    ``x1 = a u_0``, ``x2 = u_1 / a + b (u_0^2 + a^2)``; the map has unit Jacobian, so the density
    of ``(x1, x2)`` is the Gaussian's at ``u``. Written as a model, with ``u_0 = x1 / a``::

        x1 ~ N(0, a^2),    x2 | x1 ~ N(rho u_0 / a + b (u_0^2 + a^2), (1 - rho^2) / a^2)

    with ``a = 1.15, b = 1, rho = 0.9`` (the example's defaults). No data; latent dimension 2.
    The density is normalized, so ``log Z = 0`` and a guide's ELBO is exactly ``-KL(q || p)``.

    References:
        Pyro, ``examples/neutra.py``; Hoffman et al., "NeuTra-lizing Bad Geometry in Hamiltonian
        Monte Carlo Using Neural Transport", 2019; Wang, Broccardo & Song, "Hamiltonian Monte
        Carlo Methods for Subset Simulation in Reliability Analysis", 2018.
    """
    a, b, rho = BANANA_A, BANANA_B, BANANA_RHO
    x1 = pyro.sample("x1", dist.Normal(torch.tensor(0.0), a))
    u0 = x1 / a
    pyro.sample("x2", dist.Normal(rho * u0 / a + b * (u0**2 + a**2), (1 - rho**2) ** 0.5 / a))


def eight_schools() -> None:
    """Rubin's eight schools, non-centered, with the priors of Pyro's ``examples/eight_schools``::

        mu ~ N(0, 10^2),  tau ~ HalfCauchy(25),  eta_j ~ N(0, 1),
        y_j ~ N(mu + tau eta_j, sigma_j^2),  j = 1..8

    Data: ``y = [28, 8, -3, 7, -1, 1, 18, 12]``, ``sigma = [15, 10, 16, 11, 9, 11, 10, 18]``.
    Latent dimension 10 (``mu``, ``tau`` as ``log tau`` in unconstrained space, ``eta``). The
    non-centered form removes most of the centered form's funnel; what is left is the
    correlation of ``log tau`` with ``eta`` and a skewed ``log tau``.

    References:
        Rubin, "Estimation in Parallel Randomized Experiments", J. Educ. Stat. 1981; Gelman et al.,
        Bayesian Data Analysis, 5.5; Pyro, ``examples/eight_schools/mcmc.py``.
    """
    y, sigma = torch.tensor(SCHOOLS_Y), torch.tensor(SCHOOLS_SIGMA)
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0), 10.0))
    tau = pyro.sample("tau", dist.HalfCauchy(torch.tensor(25.0)))
    with pyro.plate("schools", len(y)):
        eta = pyro.sample("eta", dist.Normal(torch.tensor(0.0), 1.0))
        pyro.sample("y", dist.Normal(mu + tau * eta, sigma), obs=y)


@functools.lru_cache(maxsize=1)
def breast_cancer() -> Tuple[torch.Tensor, torch.Tensor]:
    """The logistic regression's data: scikit-learn's breast-cancer set, standardized.

    Returns:
        ``(x, y)``: features ``(569, 10)`` (the ten "mean ..." features, each standardized to
        mean 0 and standard deviation 1) and labels ``(569,)`` in ``{0, 1}`` (1 = benign).

    Raises:
        ImportError: without scikit-learn, with the command that installs it.
    """
    try:
        from sklearn.datasets import load_breast_cancer
    except ImportError as error:  # pragma: no cover - scikit-learn is in the data and test extras
        raise ImportError("the logistic model needs scikit-learn: pip install -e '.[data]'") from error
    data = load_breast_cancer()
    x = torch.as_tensor(data.data[:, :LOGISTIC_FEATURES], dtype=torch.get_default_dtype())
    x = (x - x.mean(0)) / x.std(0)
    return x, torch.as_tensor(data.target, dtype=x.dtype)


def logistic() -> None:
    """Bayesian logistic regression on scikit-learn's breast-cancer data (Wisconsin diagnostic)::

        w_0 ~ N(0, 1),  w ~ N(0, I_10),  y_n ~ Bernoulli(sigmoid(w_0 + x_n . w)),  n = 1..569

    ``x_n``: the ten "mean ..." features (radius, texture, perimeter, area, smoothness,
    compactness, concavity, concave points, symmetry, fractal dimension), standardized. Radius,
    perimeter and area are nearly collinear, so the posterior is strongly correlated: what a
    mean-field guide cannot represent. Latent dimension 11.

    References:
        Street, Wolberg & Mangasarian, "Nuclear feature extraction for breast tumor diagnosis",
        1993 (the data); ``sklearn.datasets.load_breast_cancer``.
    """
    x, y = breast_cancer()
    scale = LOGISTIC_PRIOR_SCALE
    intercept = pyro.sample("intercept", dist.Normal(torch.tensor(0.0), scale))
    weights = pyro.sample("weights", dist.Normal(torch.zeros(x.shape[-1]), scale).to_event(1))
    # under a particle plate (dim -2), intercept is (P, 1) and weights (P, 1, 10): the 1 is the data dim
    logits = intercept + (weights * x).sum(-1)
    with pyro.plate("data", len(y), dim=-1):
        pyro.sample("y", dist.Bernoulli(logits=logits), obs=y)


def folded() -> None:
    """Two Gaussian latents observed only through their absolute values: a four-mode posterior::

        z_d ~ N(0, s^2),    x_d ~ N(|z_d|, sigma^2),    d = 1, 2

    with ``s = 2``, ``sigma = 0.5`` and data ``x = (2, 1.5)``. The sign of each ``z_d`` is not
    identified, so the posterior is the product of two symmetric bimodal marginals,
    ``p(z_d | x_d) = N(|z_d|; m_d, v^2) / (2 Phi(m_d / v))`` with ``m_d = s^2 x_d / (s^2 + sigma^2)``
    and ``v^2 = s^2 sigma^2 / (s^2 + sigma^2)``: modes at ``z = (+-1.88, +-1.41)``, each ``0.49``
    wide, ``3.9`` and ``2.9`` widths from zero. Latent dimension 2.

    The evidence is in closed form (:func:`folded_log_z`), so a guide's ELBO is ``log Z - KL(q || p)``
    exactly. A Gaussian guide can hold one mode: ``KL >= 2 log 2 - eps`` (``log 2`` per folded
    latent, less the small overlap of the two halves), 1.386 nats below ``log Z``. An affine
    autoregressive flow's first coordinate is an affine map of a Gaussian, unimodal, at every step;
    a monotone spline can put a gap of low density in a coordinate's marginal.

    References:
        Leone, Nelson & Nottingham, "The Folded Normal Distribution", Technometrics 1961 (the
        ``|z|`` likelihood); Durkan et al., "Neural Spline Flows", NeurIPS 2019 (the guides it tests).
    """
    x = torch.tensor(FOLDED_X)
    with pyro.plate("coordinates", len(x)):
        z = pyro.sample("z", dist.Normal(torch.tensor(0.0), FOLDED_PRIOR_SCALE))
        pyro.sample("x", dist.Normal(z.abs(), FOLDED_NOISE), obs=x)


def _folded_halves() -> Tuple[torch.Tensor, float]:
    """``(m, v)`` of :func:`folded`: each coordinate's posterior is ``N(m_d, v^2)`` folded to ``|z_d|``."""
    s2, n2 = FOLDED_PRIOR_SCALE**2, FOLDED_NOISE**2
    x = torch.tensor(FOLDED_X, dtype=torch.float64)
    return s2 * x / (s2 + n2), (s2 * n2 / (s2 + n2)) ** 0.5


def folded_log_z() -> float:
    """The folded model's evidence ``log p(x)``, exactly.

    For each coordinate, splitting the integral at ``z = 0`` and completing the square::

        p(x_d) = int N(z; 0, s^2) N(x_d; |z|, sigma^2) dz = 2 N(x_d; 0, s^2 + sigma^2) Phi(m_d / v)

    (``m_d``, ``v`` as in :func:`folded`), and ``log Z`` is the sum over the coordinates.

    Example:
        >>> round(folded_log_z(), 4)
        -2.6357
    """
    mean, sd = _folded_halves()
    x, scale = torch.tensor(FOLDED_X, dtype=torch.float64), (FOLDED_PRIOR_SCALE**2 + FOLDED_NOISE**2) ** 0.5
    evidence = dist.Normal(0.0, scale).log_prob(x) + torch.special.log_ndtr(mean / sd) + math.log(2.0)
    return evidence.sum().item()


def folded_posterior(num_samples: int) -> Dict[str, torch.Tensor]:
    """Exact draws from the folded model's posterior, the reference of its pictures.

    Not a NUTS chain: one chain stays in one mode of ``z_1`` (:func:`nuts_samples` with 300
    warm-up steps and 600 draws, seed 0: no draw of ``z_1 > 0``, a quarter of ``z_2 > 0``).

    Each coordinate independently: ``|z_d|`` from ``N(m_d, v^2)`` truncated to ``(0, inf)`` by the
    inverse CDF, ``u ~ U(Phi(-m_d / v), 1)``, ``|z_d| = m_d + v Phi^-1(u)``; then a fair random sign.

    Returns:
        ``{"z": (num_samples, 2)}``, in the default dtype, as :func:`nuts_samples` returns.

    Example:
        >>> folded_posterior(5)["z"].shape
        torch.Size([5, 2])
    """
    mean, sd = _folded_halves()
    low = torch.special.ndtr(-mean / sd)
    u = low + (1 - low) * torch.rand(num_samples, len(mean), dtype=torch.float64)
    size = mean + sd * torch.special.ndtri(u)
    sign = torch.randint(0, 2, size.shape) * 2 - 1
    return {"z": (sign * size).to(torch.get_default_dtype())}


@dataclass(frozen=True)
class PyroModel:
    """A model of :data:`MODELS` and what the examples need to know about it.

    Attributes:
        name: its key in :data:`MODELS`.
        model: the Pyro model, a function of no arguments.
        max_plate_nesting: how many plates it nests (for vectorized particles).
        latent_dim: size of its unconstrained latent vector.
        pair: two ``(site, index)`` latents to draw against each other, ``index`` ``None`` for a
            scalar site; the value drawn is the unconstrained one (see :func:`pair`).
        labels: axis labels of the pair.
        description: one line.
        log_z: the evidence ``log p(data)`` where it is known exactly (``None`` where not): a
            guide's ``KL(q || p)`` is then ``log_z - ELBO``.
        exact_posterior: ``S -> {site: (S, *shape)}``, exact constrained posterior draws where they
            can be had (``None`` where not): the reference of the pictures instead of a NUTS chain.
    """

    name: str
    model: Callable[[], None]
    max_plate_nesting: int
    latent_dim: int
    pair: Tuple[Tuple[str, object], Tuple[str, object]]
    labels: Tuple[str, str]
    description: str
    log_z: Optional[float] = None
    exact_posterior: Optional[Callable[[int], Dict[str, torch.Tensor]]] = None


#: Model name -> :class:`PyroModel`.
MODELS: Dict[str, PyroModel] = {
    "banana": PyroModel(
        "banana",
        banana,
        0,
        2,
        (("x1", None), ("x2", None)),
        ("x1", "x2"),
        "banana of Pyro's NeuTra example (a=1.15, b=1, rho=0.9), log Z = 0",
        0.0,
    ),
    "eight_schools": PyroModel(
        "eight_schools",
        eight_schools,
        1,
        10,
        (("mu", None), ("tau", None)),
        ("mu", "log tau"),
        "eight schools, non-centered (Pyro's priors)",
    ),
    "logistic": PyroModel(
        "logistic",
        logistic,
        1,
        11,
        (("weights", 0), ("weights", 2)),
        ("w radius", "w perimeter"),
        "logistic regression, breast cancer (569 x 10 standardized features, N(0, 1) prior)",
    ),
    "folded": PyroModel(
        "folded",
        folded,
        1,
        2,
        (("z", 0), ("z", 1)),
        ("z_1", "z_2"),
        f"folded: z ~ N(0, 2^2 I_2), x ~ N(|z|, 0.5^2), x = (2, 1.5); four modes, log Z = {folded_log_z():.4f}",
        folded_log_z(),
        folded_posterior,
    ),
}

#: The models notebook 07 trains and draws (the folded model is the spline guides' case, in
#: ``examples/flow_guides.py`` and ``benchmarks/pyro_guides.py``).
NOTEBOOK_MODELS = ("banana", "eight_schools", "logistic")


def pair(spec: PyroModel, samples: Dict[str, torch.Tensor]) -> torch.Tensor:
    """The two plotted latents of ``spec`` from constrained ``samples`` (site -> ``(S, *shape)``).

    Positive sites (``tau``) are drawn on the log scale, where their posterior lives for the guides.

    Returns:
        ``(S, 2)``.
    """
    columns = []
    for site, index in spec.pair:
        value = samples[site].detach().reshape(len(samples[site]), -1)
        value = value[:, 0] if index is None else value[:, index]
        columns.append(value.log() if site == "tau" else value)
    return torch.stack(columns, -1)


#: Fraction of the steps, at the end, trained at a tenth of the learning rate (see :func:`make_svi`).
ANNEAL = 0.2


class ScheduledSVI(SVI):
    """``SVI`` whose optimizer is a Pyro learning-rate scheduler, stepped after every SVI step."""

    def step(self, *args, **kwargs) -> float:
        loss = super().step(*args, **kwargs)
        self.optim.step()
        return loss


def make_svi(
    spec: PyroModel,
    guide: Callable,
    lr: float,
    particles: int,
    clip_norm: float = 10.0,
    steps: Optional[int] = None,
    anneal: float = ANNEAL,
) -> SVI:
    """SVI on ``spec.model`` with ``guide``: ``ClippedAdam(lr, clip_norm)``, ``particles`` vectorized particles.

    The same optimizer and ELBO for every guide (``Trace_ELBO``, reparameterized gradients). With
    ``steps`` (the length of the run), the learning rate drops to ``lr / 10`` for the last
    ``anneal`` fraction of the steps (``pyro.optim.MultiStepLR``), so that the final parameters are
    not the last of a noisy walk: at ``lr = 0.01`` and 8 particles, the step-to-step jitter of the
    parameters costs a flow guide 0.1-0.3 nats of ELBO on the logistic regression (AutoFlow iaf
    on the full base: -93.01 at a constant rate, -92.67 with the drop; AutoMultivariateNormal
    -92.72 and -92.65; 3 seeds, 1000 steps).
    """
    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=spec.max_plate_nesting)
    if steps is None:
        return SVI(spec.model, guide, pyro.optim.ClippedAdam({"lr": lr, "clip_norm": clip_norm}), elbo)
    if not 0 <= anneal < 1:
        raise ValueError(f"anneal must be in [0, 1), got {anneal!r}")
    scheduler = pyro.optim.MultiStepLR(
        {
            "optimizer": ClippedAdam,
            "optim_args": {"lr": lr, "clip_norm": clip_norm},
            "milestones": [round(steps * (1 - anneal))],
            "gamma": 0.1,
        }
    )
    return ScheduledSVI(spec.model, guide, scheduler, elbo)


def elbo_estimate(spec: PyroModel, guide: Callable, num_samples: int = 10000, chunk: int = 2000) -> Tuple[float, float]:
    """The ELBO ``E_q[log p(z, data) - log q(z)]`` of a trained guide, and its standard error.

    ``num_samples`` draws from the guide in chunks of ``chunk`` (Pyro's
    ``vectorized_importance_weights``), with the guide in ``eval()`` mode, so that flows with an
    estimated log-det score with their exact one where they offer it (``eval_ladj``,
    ``eval_trace``). On the banana, ``log Z = 0`` and the ELBO is ``-KL(q || p)``.

    Returns:
        ``(mean, standard error)`` in nats.
    """
    was_training = getattr(guide, "training", False)
    if hasattr(guide, "eval"):
        guide.eval()
    try:
        weights = []
        for start in range(0, num_samples, chunk):
            size = min(chunk, num_samples - start)
            log_w, _, _ = vectorized_importance_weights(
                spec.model, guide, num_samples=size, max_plate_nesting=spec.max_plate_nesting
            )
            weights.append(log_w.detach().reshape(size))
    finally:
        if was_training:
            guide.train()
    log_w = torch.cat(weights)
    return log_w.mean().item(), (log_w.std() / num_samples**0.5).item()


@torch.no_grad()
def guide_samples(spec: PyroModel, guide: Callable, num_samples: int) -> Dict[str, torch.Tensor]:
    """``num_samples`` draws of every latent site from the guide, constrained (``Predictive``)."""
    sites = [name for name, _ in spec.pair]
    samples = Predictive(spec.model, guide=guide, num_samples=num_samples, parallel=True, return_sites=sites)()
    return samples


def nuts_samples(spec: PyroModel, warmup: int, num_samples: int, seed: int = 0) -> Dict[str, torch.Tensor]:
    """A NUTS reference: ``num_samples`` draws after ``warmup`` steps, one chain (site -> ``(S, *shape)``)."""
    pyro.set_rng_seed(seed)
    mcmc = MCMC(NUTS(spec.model), warmup_steps=warmup, num_samples=num_samples, disable_progbar=True)
    mcmc.run()
    return mcmc.get_samples()
