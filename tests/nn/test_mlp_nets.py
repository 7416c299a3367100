"""The MLP and the MLP encoder/decoder: shapes for any image size, leading dims, errors."""

import pytest
import torch
from torch import nn

from vaeflows.nn.mlp import MLP, MLPDecoder, MLPEncoder


def test_mlp_layers_and_shapes():
    net = MLP(4, (16, 8), 3, activation=nn.Tanh)
    assert [type(m) for m in net] == [nn.Linear, nn.Tanh, nn.Linear, nn.Tanh, nn.Linear]
    assert net(torch.randn(7, 2, 4)).shape == (7, 2, 3)
    linear = MLP(4, (), 3)
    assert len(linear) == 1 and linear(torch.randn(5, 4)).shape == (5, 3)


@pytest.mark.parametrize("image_shape", [(1, 8, 8), (1, 28, 28), (1, 28, 20), (3, 8, 8)])
def test_encoder_decoder_shapes_and_leading_dims(image_shape):
    torch.manual_seed(0)
    enc = MLPEncoder(image_shape)
    dec = MLPDecoder(2, image_shape, out_channels_per_pixel=2)
    assert enc.feature_dim == 300
    x = torch.rand(4, 3, *image_shape)
    h = enc(x)
    assert h.shape == (4, 3, 300)
    assert (h >= 0).all()  # the features are the activated last hidden layer
    torch.testing.assert_close(h[1], enc(x[1]))
    out = dec(torch.randn(4, 3, 2))
    c, height, width = image_shape
    assert out.shape == (4, 3, 2 * c, height, width)


def test_feature_dim_is_last_hidden_size():
    assert MLPEncoder((1, 8, 8), hidden_dims=(50, 20)).feature_dim == 20
    with pytest.raises(ValueError, match="at least one hidden layer"):
        MLPEncoder((1, 8, 8), hidden_dims=())


def test_wrong_input_shapes_are_refused():
    with pytest.raises(ValueError, match=r"images of shape \(\.\.\., 1, 8, 8\)"):
        MLPEncoder((1, 8, 8))(torch.rand(2, 64))
    with pytest.raises(ValueError, match=r"latents of shape \(\.\.\., 2\)"):
        MLPDecoder(2, (1, 8, 8))(torch.rand(2, 3))
