"""Gated convolutions and the gated-conv encoder/decoder: the gate formula, shapes, leading dims, size."""

import pytest
import torch
from torch import nn

from vaeflows.nn.gated import GatedConv2d, GatedConvDecoder, GatedConvEncoder, GatedConvTranspose2d

IMAGE_SHAPES = [(1, 28, 28), (3, 28, 28), (1, 28, 20)]


def _set(layer: nn.Module, weight: float, bias: float) -> None:
    nn.init.constant_(layer.weight, weight)
    nn.init.constant_(layer.bias, bias)


@pytest.mark.parametrize("cls", [GatedConv2d, GatedConvTranspose2d])
def test_gate_is_h_times_sigmoid_g_by_hand(cls):
    # A 1x1, one-channel layer is pointwise: out = (2 x + 1) * sigmoid(-x + 0.5).
    layer = cls(1, 1, 1).double()
    _set(layer.h, 2.0, 1.0)
    _set(layer.g, -1.0, 0.5)
    x = torch.tensor([[[[-2.0, 0.0], [0.5, 3.0]]]], dtype=torch.float64)
    expected = (2 * x + 1) / (1 + torch.exp(x - 0.5))
    torch.testing.assert_close(layer(x), expected)


def test_gated_conv_matches_two_convolutions():
    torch.manual_seed(0)
    layer = GatedConv2d(2, 3, 3, stride=2, padding=1)
    x = torch.randn(4, 2, 7, 7)
    h = nn.functional.conv2d(x, layer.h.weight, layer.h.bias, stride=2, padding=1)
    g = nn.functional.conv2d(x, layer.g.weight, layer.g.bias, stride=2, padding=1)
    torch.testing.assert_close(layer(x), h * torch.sigmoid(g))


@pytest.mark.parametrize("image_shape", IMAGE_SHAPES)
def test_encoder_shapes_and_leading_dims(image_shape):
    torch.manual_seed(0)
    enc = GatedConvEncoder(image_shape)
    assert enc.feature_dim == 256
    x = torch.rand(2, 3, *image_shape)
    h = enc(x)
    assert h.shape == (2, 3, 256)
    torch.testing.assert_close(h[1], enc(x[1]), atol=1e-5, rtol=1e-5)
    assert enc(x[0, 0]).shape == (256,)


@pytest.mark.parametrize("image_shape", IMAGE_SHAPES)
@pytest.mark.parametrize("k, head", [(1, None), (2, None), (256, 256)])
def test_decoder_shapes_and_leading_dims(image_shape, k, head):
    torch.manual_seed(0)
    dec = GatedConvDecoder(8, image_shape, k, head_channels=head)
    c, height, width = image_shape
    z = torch.randn(2, 3, 8)
    out = dec(z)
    assert out.shape == (2, 3, k * c, height, width)
    torch.testing.assert_close(out[1], dec(z[1]), atol=1e-5, rtol=1e-5)


def _gated_params(c_in: int, c_out: int, kh: int, kw: int) -> int:
    return 2 * (c_in * c_out * kh * kw + c_out)  # two convolutions (h and g), each with a bias


@pytest.mark.parametrize("image_shape, last", [((1, 28, 28), (7, 7)), ((1, 28, 20), (7, 5)), ((3, 28, 28), (7, 7))])
def test_encoder_parameter_count_matches_reference(image_shape, last):
    # van den Berg et al. (2018)'s gated-conv encoder:
    # 1->32 (k5), 32->32 (k5), 32->64 (k5), 64->64 (k5), 64->64 (k5), 64->256 (k7 or k(7,5)).
    layers = [
        (image_shape[0], 32, 5, 5),
        (32, 32, 5, 5),
        (32, 64, 5, 5),
        (64, 64, 5, 5),
        (64, 64, 5, 5),
        (64, 256, *last),
    ]
    expected = sum(_gated_params(*layer) for layer in layers)
    assert sum(p.numel() for p in GatedConvEncoder(image_shape).parameters()) == expected


def test_decoder_parameter_count_matches_reference():
    z, c = 64, 1
    layers = [(z, 64, 7, 7), (64, 64, 5, 5), (64, 32, 5, 5), (32, 32, 5, 5), (32, 32, 5, 5), (32, 32, 5, 5)]
    gated = sum(_gated_params(*layer) for layer in layers)
    bernoulli_head = 32 * c + c
    categorical_head = (32 * 256 * 25 + 256) + (256 * 256 * c + 256 * c)
    assert sum(p.numel() for p in GatedConvDecoder(z, (c, 28, 28), 1).parameters()) == gated + bernoulli_head
    assert sum(p.numel() for p in GatedConvDecoder(z, (c, 28, 28), 256, 256).parameters()) == gated + categorical_head


@pytest.mark.parametrize("cls", [GatedConvEncoder, lambda shape: GatedConvDecoder(4, shape)])
def test_other_image_sizes_are_refused_with_a_pointer_to_mlp(cls):
    with pytest.raises(ValueError, match="28x28.*28x20.*mlp"):
        cls((1, 32, 32))


def test_wrong_input_shapes_are_refused():
    with pytest.raises(ValueError, match=r"images of shape \(\.\.\., 1, 28, 28\)"):
        GatedConvEncoder((1, 28, 28))(torch.rand(2, 1, 28, 20))
    with pytest.raises(ValueError, match=r"latents of shape \(\.\.\., 4\)"):
        GatedConvDecoder(4, (1, 28, 28))(torch.rand(2, 5))


def test_dtype_follows_the_module():
    enc = GatedConvEncoder((1, 28, 20)).double()
    dec = GatedConvDecoder(4, (1, 28, 20)).double()
    assert enc(torch.rand(2, 1, 28, 20, dtype=torch.float64)).dtype == torch.float64
    assert dec(torch.randn(2, 4, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():
    enc, dec = GatedConvEncoder((1, 28, 28)).cuda(), GatedConvDecoder(4, (1, 28, 28)).cuda()
    assert dec(torch.randn(3, 2, 4, device="cuda")).device.type == "cuda"
    assert enc(torch.rand(3, 2, 1, 28, 28, device="cuda")).shape == (3, 2, 256)
