"""The likelihoods: normalization over each pixel's support, hand formulas, shapes, support, Pyro use."""

import pyro
import pytest
import torch

from vaeflows.nn.likelihoods import (
    LIKELIHOODS,
    BernoulliLikelihood,
    Categorical256,
    Categorical256Likelihood,
    DiscretizedLogistic,
    DiscretizedLogisticLikelihood,
    build_likelihood,
    pixel_levels,
)

LEVELS = torch.arange(256, dtype=torch.float64) / 255


def _decoder_output(name: str, lead=(3, 2), image_shape=(2, 4, 5), dtype=torch.float64):
    torch.manual_seed(0)
    k = LIKELIHOODS[name].channels_per_pixel
    return torch.randn(*lead, k * image_shape[0], *image_shape[1:], dtype=dtype)


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_shapes_support_and_mean(name):
    lik = build_likelihood(name)
    assert lik.channels_per_pixel == {"bernoulli": 1, "categorical256": 256, "discretized-logistic": 2}[name]
    p = lik(_decoder_output(name))
    assert p.batch_shape == (3, 2) and p.event_shape == (2, 4, 5)
    x = p.sample()
    assert x.shape == (3, 2, 2, 4, 5) and x.dtype == torch.float64
    assert p.support.check(x).all()
    assert p.log_prob(x).shape == (3, 2)
    assert p.log_prob(x.expand(7, 3, 2, 2, 4, 5)).shape == (7, 3, 2)
    mean = lik.mean(_decoder_output(name))
    assert mean.shape == (3, 2, 2, 4, 5) and ((mean >= 0) & (mean <= 1)).all()


def test_bernoulli_matches_hand_formula():
    out = _decoder_output("bernoulli")
    x = torch.bernoulli(torch.full_like(out, 0.5))
    q = torch.sigmoid(out)
    expected = (x * q.log() + (1 - x) * (1 - q).log()).sum((-3, -2, -1))
    torch.testing.assert_close(BernoulliLikelihood()(out).log_prob(x), expected)
    total = BernoulliLikelihood()(out[..., :1, :1, :1])
    torch.testing.assert_close(
        total.log_prob(torch.zeros(3, 2, 1, 1, 1, dtype=torch.float64)).exp()
        + total.log_prob(torch.ones(3, 2, 1, 1, 1, dtype=torch.float64)).exp(),
        torch.ones(3, 2, dtype=torch.float64),
    )
    torch.testing.assert_close(BernoulliLikelihood().mean(out), q)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_categorical_scores_round_255x_and_sums_to_one(dtype):
    torch.manual_seed(0)
    logits = 3 * torch.randn(256, dtype=dtype)
    d = Categorical256(logits)
    # x = k * (1/255) in float64 gives 255 * x just below k for k = 33, 37, ...: int() would pick k - 1.
    x = torch.arange(256, dtype=dtype) * (1 / 255)
    assert (x * 255).long().ne(torch.arange(256)).any() or dtype == torch.float32
    torch.testing.assert_close(d.log_prob(x), torch.log_softmax(logits, -1))
    torch.testing.assert_close(d.log_prob(x).exp().sum(), torch.tensor(1.0, dtype=dtype))
    torch.testing.assert_close(d.mean, (torch.softmax(logits, -1) * x).sum())


def test_categorical_likelihood_layout_is_parameter_major():
    # Output channel k * C + c holds logit k of image channel c (the reference's (B, 256, C, H, W) view).
    out = torch.randn(2, 256 * 3, 4, 5, dtype=torch.float64)
    x = torch.randint(0, 256, (2, 3, 4, 5)).double() / 255
    logp = torch.log_softmax(out.view(2, 256, 3, 4, 5), dim=1)
    expected = logp.gather(1, (x * 255).round().long().unsqueeze(1)).squeeze(1).sum((-3, -2, -1))
    torch.testing.assert_close(Categorical256Likelihood()(out).log_prob(x), expected)


def _logistic_cdf(x, loc, log_scale):
    return torch.sigmoid((x - loc) / log_scale.exp())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("loc", [-0.7, 0.0, 0.3, 0.5, 0.998, 1.0, 1.6])
@pytest.mark.parametrize("log_scale", [-12.0, -7.0, -4.0, -1.0, 0.0, 2.0])
def test_discretized_logistic_sums_to_one(dtype, loc, log_scale):
    d = DiscretizedLogistic(torch.tensor(loc, dtype=dtype), torch.tensor(log_scale, dtype=dtype))
    log_p = d.log_prob(LEVELS.to(dtype))
    assert torch.isfinite(log_p).any() and not torch.isnan(log_p).any()
    assert abs(log_p.exp().sum().item() - 1) < 1e-5


def test_discretized_logistic_matches_cdf_differences():
    loc = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)[:, None]
    log_scale = torch.tensor([-3.0, -1.0, -5.0], dtype=torch.float64)[:, None]
    upper = torch.where(
        LEVELS == 1, torch.tensor(1.0, dtype=torch.float64), _logistic_cdf(LEVELS + 0.5 / 255, loc, log_scale)
    )
    lower = torch.where(
        LEVELS == 0, torch.tensor(0.0, dtype=torch.float64), _logistic_cdf(LEVELS - 0.5 / 255, loc, log_scale)
    )
    d = DiscretizedLogistic(loc, log_scale)
    torch.testing.assert_close(d.log_prob(LEVELS).exp(), upper - lower)
    torch.testing.assert_close(d.mean, ((upper - lower) * LEVELS).sum(-1, keepdim=True))


def test_discretized_logistic_is_stable_for_tiny_scales():
    # The bin around the mean holds all the mass; far bins have tiny but finite log-probabilities.
    loc = torch.tensor(100 / 255, requires_grad=True)
    log_scale = torch.tensor(-9.0, requires_grad=True)
    d = DiscretizedLogistic(loc, log_scale)
    log_p = d.log_prob(LEVELS.float())
    assert abs(log_p[100].item()) < 1e-6
    assert torch.isfinite(log_p[99]) and log_p[99] < -5
    log_p[[0, 99, 100, 101, 255]].sum().backward()
    assert torch.isfinite(loc.grad) and torch.isfinite(log_scale.grad)


def test_discretized_logistic_layout_and_samples():
    # Channels 0..C-1 are the means, C..2C-1 the log-scales.
    out = torch.zeros(2, 4, 3, 3, dtype=torch.float64)
    out[:, 0], out[:, 1], out[:, 2:] = 0.25, 0.75, -20.0
    p = DiscretizedLogisticLikelihood()(out)
    x = p.sample()
    assert (x[:, 0] == round(0.25 * 255) / 255).all() and (x[:, 1] == round(0.75 * 255) / 255).all()
    torch.testing.assert_close(p.log_prob(x), torch.zeros(2, dtype=torch.float64))


def test_discretized_logistic_samples_follow_the_probabilities():
    torch.manual_seed(0)
    d = DiscretizedLogistic(torch.tensor(0.98, dtype=torch.float64), torch.tensor(-4.0, dtype=torch.float64))
    x = d.sample((20000,))
    assert pixel_levels.check(x).all()
    freq = torch.bincount((x * 255).round().long(), minlength=256).double() / x.numel()
    probs = d.log_prob(LEVELS).exp()
    assert (freq - probs).abs().max() < 0.01
    assert abs(x.mean() - d.mean) < 0.003


@pytest.mark.parametrize("name", ["categorical256", "discretized-logistic"])
@pytest.mark.parametrize("bad", [0.5 / 255, 1.2, -1 / 255, 3.0])
def test_values_off_the_pixel_levels_are_refused(name, bad):
    p = build_likelihood(name)(_decoder_output(name, lead=(1,), image_shape=(1, 1, 1)))
    with pytest.raises(ValueError, match="PixelLevels"):
        p.log_prob(torch.full((1, 1, 1, 1), bad, dtype=torch.float64))


def test_bernoulli_refuses_non_binary_values():
    p = BernoulliLikelihood()(torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="support"):
        p.log_prob(torch.full((1, 1, 2, 2), 0.5))


def test_wrong_channel_count_is_refused():
    with pytest.raises(ValueError, match="out_channels_per_pixel=2"):
        DiscretizedLogisticLikelihood()(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="out_channels_per_pixel=256"):
        Categorical256Likelihood()(torch.zeros(4, 4))


def test_unknown_name():
    with pytest.raises(
        ValueError, match="unknown likelihood 'poisson'; known: bernoulli, categorical256, discretized-logistic"
    ):
        build_likelihood("poisson")


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_in_a_pyro_model_with_plates(name):
    # Plates broadcast (expand) the distribution: the trace's log-prob is that of the data.
    lik = build_likelihood(name)
    out = _decoder_output(name, lead=(1,))
    x = lik(_decoder_output(name, lead=(4,))).sample()

    def model():
        with pyro.plate("data", 4):
            pyro.sample("x", lik(out), obs=x)

    trace = pyro.poutine.trace(model).get_trace()
    torch.testing.assert_close(trace.log_prob_sum(), lik(out).log_prob(x).sum())


@pytest.mark.parametrize(
    "cls, args", [(Categorical256, (torch.zeros(3, 256),)), (DiscretizedLogistic, (torch.zeros(3), torch.zeros(3)))]
)
def test_expand(cls, args):
    d = cls(*args).expand(torch.Size([5, 3]))
    assert d.batch_shape == (5, 3) and d.sample().shape == (5, 3)
    assert d.log_prob(torch.zeros(5, 3)).shape == (5, 3)
