"""Density estimation with normalizing flows: NICE, RealNVP, MAF, Glow, residual flows, FFJORD and
neural spline flows (NSF), dequantization, energies, flow matching; integer discrete flows for
lossless compression of 8-bit images.

Every model maps noise to data (the generative direction, as Pyro's ``TransformedDistribution``) and
scores data exactly through the inverse: ``log p(x) = log N(f^{-1}(x)) - log|det df/dz|``. Every
flow takes a learnable base (``density_flow(name, shape, base="mixture" | "made")``, :data:`BASES`).
The registry :data:`DENSITY_FLOWS` drives the builders, the CLI (``vaeflows density train``), the
tests and the benchmarks. Posterior flows without an inverse (planar, radial, Sylvester) fit
unnormalized 2-D energies by reverse KL instead (:func:`fit_energy`).

Example:
    >>> model = density_flow("glow", (1, 8, 8), num_steps=2, hidden=16, num_levels=2)
    >>> x = torch.rand(3, 1, 8, 8)
    >>> model.log_prob(x).shape, model.sample(2).shape
    (torch.Size([3]), torch.Size([2, 1, 8, 8]))
"""

from .bases import BASES, Base, MADEBase, MixtureBase, StandardNormalBase, build_base
from .codec import compress_images, decompress_images, model_bits
from .data import DENSITY_DATASETS, DensityData, load_density_data, load_mnist_8bit
from .dequantization import (
    DEQUANTIZERS,
    UniformDequantizer,
    VariationalDequantizer,
    bits_per_dim,
    dequantized_log_likelihood,
)
from .energy import EnergyFit, fit_energy, log_partition_on_box
from .flows import (
    DENSITY_FLOWS,
    FFJORD_FIELDS,
    NSF_CONDITIONERS,
    NSF_TRANSFORMS,
    FlowDensity,
    density_flow,
    ffjord,
    glow,
    maf,
    nice,
    nsf,
    realnvp,
    residual,
)
from .freeform import CNFBlock, ResidualBlock
from .integer import (
    INTEGER_FLOWS,
    ChannelPermutation,
    IntegerCoupling,
    IntegerDiscreteFlow,
    LogisticMixturePrior,
    discretized_logistic_mixture_log_pmf,
    discretized_logistic_mixture_pmf_table,
    idf,
    round_ste,
)
from .layers import (
    ActNorm,
    Bijection,
    Coupling,
    FactorOut,
    Flatten,
    FlowSequence,
    InvertibleLinear,
    Logit,
    MAFStep,
    Squeeze,
    Unsqueeze,
)
from .matching import (
    COUPLINGS,
    FlowMatching,
    cnf_blocks,
    cnf_velocity,
    conditional_path,
    flow_matching_loss,
    independent_coupling,
    ot_coupling,
    sample_nfe,
)
from .splines import SplineCoupling, SplineMAFStep
from .toy import ENERGIES, TOY_DATASETS, toy_data
from .training import DENSITY_OBJECTIVES, DensityModel, evaluate_density, load_density_run, train_density

__all__ = [
    "DENSITY_FLOWS",
    "FlowDensity",
    "density_flow",
    "nice",
    "realnvp",
    "maf",
    "glow",
    "residual",
    "ffjord",
    "nsf",
    "NSF_TRANSFORMS",
    "NSF_CONDITIONERS",
    "FFJORD_FIELDS",
    "BASES",
    "Base",
    "StandardNormalBase",
    "MixtureBase",
    "MADEBase",
    "build_base",
    "ResidualBlock",
    "CNFBlock",
    "Bijection",
    "FlowSequence",
    "Coupling",
    "MAFStep",
    "ActNorm",
    "InvertibleLinear",
    "Squeeze",
    "Unsqueeze",
    "FactorOut",
    "Flatten",
    "Logit",
    "SplineCoupling",
    "SplineMAFStep",
    "DEQUANTIZERS",
    "UniformDequantizer",
    "VariationalDequantizer",
    "dequantized_log_likelihood",
    "bits_per_dim",
    "DENSITY_DATASETS",
    "DensityData",
    "load_density_data",
    "load_mnist_8bit",
    "TOY_DATASETS",
    "ENERGIES",
    "toy_data",
    "EnergyFit",
    "fit_energy",
    "log_partition_on_box",
    "INTEGER_FLOWS",
    "IntegerDiscreteFlow",
    "IntegerCoupling",
    "ChannelPermutation",
    "LogisticMixturePrior",
    "idf",
    "round_ste",
    "discretized_logistic_mixture_log_pmf",
    "discretized_logistic_mixture_pmf_table",
    "compress_images",
    "decompress_images",
    "model_bits",
    "COUPLINGS",
    "FlowMatching",
    "flow_matching_loss",
    "conditional_path",
    "independent_coupling",
    "ot_coupling",
    "cnf_blocks",
    "cnf_velocity",
    "sample_nfe",
    "DENSITY_OBJECTIVES",
    "DensityModel",
    "train_density",
    "evaluate_density",
    "load_density_run",
]
