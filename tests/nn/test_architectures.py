"""build_encoder_decoder over the architecture and likelihood registries, and its errors."""

import pytest
import torch

from vaeflows.nn import ARCHITECTURES, LIKELIHOODS, build_encoder_decoder, build_likelihood
from vaeflows.nn.gated import GatedConvDecoder

CASES = [("gated-conv", (1, 28, 28)), ("gated-conv", (1, 28, 20)), ("mlp", (1, 8, 8)), ("mlp", (3, 28, 20))]


@pytest.mark.parametrize("arch, image_shape", CASES)
@pytest.mark.parametrize("likelihood", list(LIKELIHOODS))
def test_encoder_decoder_likelihood_fit_together(arch, image_shape, likelihood):
    torch.manual_seed(0)
    enc, dec = build_encoder_decoder(arch, image_shape, 4, likelihood)
    lik = build_likelihood(likelihood)
    x = lik(torch.zeros(2, lik.channels_per_pixel * image_shape[0], *image_shape[1:])).sample()
    h = enc(x)
    assert h.shape == (2, enc.feature_dim)
    p = lik(dec(torch.randn(3, 2, 4)))
    assert p.batch_shape == (3, 2) and p.event_shape == image_shape
    assert p.log_prob(x).shape == (3, 2)


def test_registry_names():
    assert set(ARCHITECTURES) == {"mlp", "gated-conv"}


def test_categorical_gets_the_reference_head():
    _, dec = build_encoder_decoder("gated-conv", (1, 28, 20), 4, "categorical256")
    assert isinstance(dec, GatedConvDecoder) and dec.net[-2].out_channels == 256
    assert dec.net[-1].out_channels == 256


def test_mlp_options():
    enc, dec = build_encoder_decoder("mlp", (1, 8, 8), 2, "bernoulli", hidden_dims=(40, 30))
    assert enc.feature_dim == 30
    assert dec.net[0].out_features == 30 and dec.net[2].out_features == 40


def test_errors():
    with pytest.raises(ValueError, match="unknown architecture 'resnet'; known: mlp, gated-conv"):
        build_encoder_decoder("resnet", (1, 28, 28), 4, "bernoulli")
    with pytest.raises(ValueError, match="unknown likelihood 'gaussian'; known: bernoulli"):
        build_encoder_decoder("mlp", (1, 28, 28), 4, "gaussian")
    with pytest.raises(ValueError, match="use the 'mlp' architecture"):
        build_encoder_decoder("gated-conv", (1, 8, 8), 4, "bernoulli")
    with pytest.raises(TypeError, match="hidden_dims"):
        build_encoder_decoder("gated-conv", (1, 28, 28), 4, "bernoulli", hidden_dims=(10,))
