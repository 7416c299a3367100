"""Networks of the VAEs: gated-conv and MLP encoders/decoders, and the likelihood heads."""

from vaeflows.nn.architectures import ARCHITECTURES, build_encoder_decoder
from vaeflows.nn.gated import GatedConv2d, GatedConvDecoder, GatedConvEncoder, GatedConvTranspose2d
from vaeflows.nn.likelihoods import (
    LIKELIHOODS,
    BernoulliLikelihood,
    Categorical256,
    Categorical256Likelihood,
    DiscretizedLogistic,
    DiscretizedLogisticLikelihood,
    Likelihood,
    build_likelihood,
)
from vaeflows.nn.mlp import MLP, MLPDecoder, MLPEncoder

__all__ = [
    "ARCHITECTURES",
    "build_encoder_decoder",
    "GatedConv2d",
    "GatedConvTranspose2d",
    "GatedConvEncoder",
    "GatedConvDecoder",
    "MLP",
    "MLPEncoder",
    "MLPDecoder",
    "LIKELIHOODS",
    "build_likelihood",
    "Likelihood",
    "BernoulliLikelihood",
    "Categorical256Likelihood",
    "DiscretizedLogisticLikelihood",
    "Categorical256",
    "DiscretizedLogistic",
]
