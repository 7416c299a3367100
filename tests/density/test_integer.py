"""Integer discrete flows: exact integer inverse, the discretized logistic pmf, straight-through
gradients, batch shapes, save/load, training through the density CLI and the lossless codec."""

import io
import json
import sys

import numpy as np
import pytest
import torch

from vaeflows.cli import main
from vaeflows.density import (
    DENSITY_DATASETS,
    IntegerCoupling,
    IntegerDiscreteFlow,
    discretized_logistic_mixture_log_pmf,
    discretized_logistic_mixture_pmf_table,
    idf,
    round_ste,
)


def _kicked(model, scale=0.3, seed=0):
    """Parameters moved away from their initialization (the couplings start as the identity)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return model


def _images(n, shape=(1, 8, 8), seed=0):
    return torch.randint(0, 256, (n, *shape), generator=torch.Generator().manual_seed(seed)).float()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("levels,shape", [(1, (1, 4, 4)), (2, (1, 8, 8)), (2, (3, 4, 8))])
def test_the_inverse_is_exact_on_integer_images(levels, shape, dtype):
    torch.manual_seed(0)
    model = _kicked(idf(shape, num_steps=3, hidden=8, num_levels=levels, num_mixtures=3)).to(dtype)
    # big translations: the couplings move the latents well away from the pixels
    with torch.no_grad():
        for coupling in model.modules():
            if isinstance(coupling, IntegerCoupling):
                coupling.net.net[-1].weight.mul_(50)
    x = _images(6, shape).to(dtype)
    latents, params = model.encode(x)
    assert all(torch.equal(z, torch.round(z)) for z in latents)
    assert sum(z[0].numel() for z in latents) == x[0].numel()  # a bijection: as many latents as pixels
    assert any(((z < 0) | (z > 255)).any() for z in latents)
    assert torch.equal(model.decode(latents), x)
    assert [p[0].shape[:-1] for p in params] == [z.shape for z in latents]


def test_log_pmf_sums_to_one_over_the_integers_and_matches_the_table():
    generator = torch.Generator().manual_seed(1)
    logits, loc = torch.randn(5, 4, generator=generator), 300 * torch.rand(5, 4, generator=generator) - 50
    log_scale = torch.empty(5, 4).uniform_(-3, 4, generator=generator)
    params = [t.double() for t in (logits, loc, log_scale)]
    k = torch.arange(-20000, 20000, dtype=torch.float64)[:, None]
    log_pmf = discretized_logistic_mixture_log_pmf(k, *params)  # (K, 5)
    assert log_pmf.shape == (40000, 5) and torch.isfinite(log_pmf).all()
    torch.testing.assert_close(log_pmf.exp().sum(0), torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-10)
    # against the definition: sum_m pi_m [sigmoid((k + 1/2 - mu) / s) - sigmoid((k - 1/2 - mu) / s)]
    ks = torch.arange(-60, 320, dtype=torch.float64)[:, None, None]
    pi, s = torch.softmax(params[0], -1), params[2].exp()
    direct = (pi * (torch.sigmoid((ks + 0.5 - params[1]) / s) - torch.sigmoid((ks - 0.5 - params[1]) / s))).sum(-1)
    torch.testing.assert_close(
        discretized_logistic_mixture_log_pmf(ks[..., 0], *params).exp(), direct, rtol=1e-9, atol=1e-15
    )
    table = discretized_logistic_mixture_pmf_table(*params, -60, 319)
    torch.testing.assert_close(table, direct.T, rtol=1e-7, atol=1e-15)
    # far tails stay finite in log space (where sigmoid differences underflow)
    assert torch.isfinite(discretized_logistic_mixture_log_pmf(torch.tensor([1e5]).double(), *[p[0] for p in params]))


def test_round_ste_rounds_and_passes_the_gradient_through():
    t = torch.tensor([-1.5, -0.4, 0.5, 2.49, 7.6], requires_grad=True)
    y = round_ste(t)
    assert torch.equal(y, torch.round(t.detach()))
    (y * torch.arange(5.0)).sum().backward()
    assert torch.equal(t.grad, torch.arange(5.0))


def test_straight_through_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = _kicked(idf((1, 8, 8), num_steps=2, hidden=8, num_mixtures=2), 0.1)
    (-model.log_prob(_images(4)).mean()).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_batch_shapes_including_none():
    torch.manual_seed(0)
    model = _kicked(idf((1, 4, 4), num_steps=1, hidden=4, num_levels=2)).double()
    x = _images(6, (1, 4, 4)).double()
    flat = model.log_prob(x)
    assert flat.shape == (6,)
    torch.testing.assert_close(model.log_prob(x.reshape(2, 3, 1, 4, 4)), flat.reshape(2, 3))
    torch.testing.assert_close(model.log_prob(x[0]), flat[0])
    samples = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, 1, 4, 4) and torch.equal(samples, samples.round())
    assert model.sample(0).shape == (0, 1, 4, 4)


def test_save_and_load_round_trip():
    torch.manual_seed(0)
    model = _kicked(idf((1, 8, 8), num_steps=2, hidden=8))
    x = _images(3)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1)
    other = idf((1, 8, 8), num_steps=2, hidden=8)
    other.load_state_dict(torch.load(buffer))
    assert torch.equal(other.log_prob(x), model.log_prob(x))
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    assert torch.equal(torch.load(buffer, weights_only=False).log_prob(x), model.log_prob(x))


def test_bad_inputs_get_one_clear_message():
    model = idf((1, 4, 4), num_steps=1, hidden=4)
    with pytest.raises(ValueError, match="integers"):
        model.log_prob(_images(2, (1, 4, 4)) / 255)
    with pytest.raises(ValueError, match="event shape"):
        model.log_prob(torch.zeros(2, 1, 5, 4))
    with pytest.raises(ValueError, match="dtype"):
        model.log_prob(torch.zeros(2, 1, 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="unconditional"):
        model.log_prob(torch.zeros(2, 1, 4, 4), torch.zeros(2, 10))
    with pytest.raises(ValueError, match="images"):
        idf((16,))
    with pytest.raises(ValueError, match="squeezed"):
        idf((1, 6, 6), num_levels=2)
    with pytest.raises(ValueError, match="unconditional"):
        idf((1, 4, 4), context_dim=10)


# --- the lossless codec ---

codec = pytest.importorskip("vaeflows.density.codec")
pytest.importorskip("constriction")


def _trained_like(shape=(1, 8, 8), seed=0):
    torch.manual_seed(seed)
    return _kicked(idf(shape, num_steps=2, hidden=8, num_mixtures=3), 0.2, seed)


def _digits(n, shape=(1, 8, 8), seed=0):
    """Images with structure (mostly 0 or 255, as MNIST), which a prior can learn to like."""
    generator = torch.Generator().manual_seed(seed)
    on = torch.rand(n, *shape, generator=generator) < 0.3
    noise = torch.randint(0, 256, (n, *shape), generator=generator)
    return torch.where(
        on, torch.full_like(noise, 255), torch.where(torch.rand(n, *shape, generator=generator) < 0.1, noise, 0)
    ).to(torch.uint8)


def test_codec_round_trips_bit_exactly_with_the_same_tables_both_ways():
    model = _trained_like()
    images = _digits(23)
    seen = {"encode": {}, "decode": {}}
    blob = codec.compress_images(model, images, batch_size=5, on_table=lambda *a: seen["encode"].update({a[:3]: a[3]}))
    decoded = codec.decompress_images(model, blob, on_table=lambda *a: seen["decode"].update({a[:3]: a[3]}))
    assert decoded.dtype == torch.uint8 and torch.equal(decoded, images)
    assert seen["encode"].keys() == seen["decode"].keys() and len(seen["encode"]) == 5 * 2  # 5 batches, 2 levels
    for key, table in seen["encode"].items():
        assert table.dtype == torch.float64 and torch.equal(table, seen["decode"][key])  # bit for bit
    header, words = codec.read_header(blob)
    assert header["shape"] == [23, 1, 8, 8] and header["batch_size"] == 5 and len(words) == header["words"]


def test_codec_size_is_the_model_code_length():
    """The ANS payload is at most 1% (plus a few words) over sum(-log2 P(x)), the model's bits/dim
    (it can be below: the alphabet, the latents' range, is in the header, and the pmfs are
    renormalized to it)."""
    model = _trained_like()
    images = _digits(200, seed=3)
    blob = codec.compress_images(model, images, batch_size=50)
    header, words = codec.read_header(blob)
    ideal = float(codec.model_bits(model, images).sum())
    assert 32 * len(words) <= 1.01 * ideal + 64
    assert torch.equal(codec.decompress_images(model, blob), images)


def test_codec_refuses_another_model_and_corrupt_files():
    model = _trained_like()
    images = _digits(4)
    blob = codec.compress_images(model, images)
    with pytest.raises(ValueError, match="another model"):
        codec.decompress_images(_trained_like(seed=1), blob)
    with pytest.raises(ValueError, match="truncated"):
        codec.decompress_images(model, blob[:-5])
    with pytest.raises(ValueError, match="truncated"):
        codec.decompress_images(model, b"PNG" + blob)
    with pytest.raises(ValueError, match="uint8"):
        codec.compress_images(model, images.float())


def test_codec_without_constriction_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "constriction", None)
    with pytest.raises(ImportError, match=r"vaeflows\[codec\]"):
        codec.compress_images(_trained_like(), _digits(2))


def fake_mnist(data_dir=None, num_train=64, seed=0):
    from vaeflows.density import DensityData

    split = lambda n, s: _digits(n, (1, 4, 4), seed + s).float()  # noqa: E731
    labels = {s: torch.arange(n) % 10 for s, n in (("train", num_train), ("valid", 32), ("test", 40))}
    return DensityData(split(num_train, 0), split(32, 1), split(40, 2), (1, 4, 4), True, "mnist", labels, 10)


def test_cli_trains_idf_then_compresses_and_decompresses_the_test_set(tmp_path, monkeypatch, capsys):
    from vaeflows.data.files import read_idx

    monkeypatch.setitem(DENSITY_DATASETS, "mnist", fake_mnist)
    run = tmp_path / "run"
    train = ["density", "train", "--flow", "idf", "--dataset", "mnist", "--epochs", "2", "--batch-size", "16"]
    train += ["--num-steps", "1", "--hidden", "8", "--out", str(run), "--no-progress"]
    assert main(train) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dequantization"] is None and 0 < metrics["test_bpd"] < 20
    assert main(train) == 0  # resumes: nothing left to do
    packed, unpacked = tmp_path / "test.idf", tmp_path / "test.idx"
    assert main(["density", "compress", str(run), "--out", str(packed), "--batch-size", "16"]) == 0
    assert "bits/dim" in capsys.readouterr().out
    assert main(["density", "decompress", str(packed), "--out", str(unpacked)]) == 0
    decoded = read_idx(unpacked)
    assert decoded.shape == (40, 4, 4)
    assert np.array_equal(decoded, fake_mnist().test[:, 0].numpy().astype(np.uint8))


def test_cli_codec_and_idf_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(DENSITY_DATASETS, "mnist", fake_mnist)
    base = ["density", "train", "--flow", "idf", "--out", str(tmp_path / "r"), "--no-progress"]
    assert main([*base, "--dataset", "mnist", "--dequantization", "uniform"]) == 2
    assert "does not apply to --flow idf" in capsys.readouterr().err
    assert main([*base, "--dataset", "moons"]) == 2
    assert "8-bit images" in capsys.readouterr().err
    assert main(["density", "decompress", str(tmp_path / "missing.idf"), "--out", str(tmp_path / "x.idx")]) == 2
    assert "missing.idf" in capsys.readouterr().err
    assert main(["density", "compress", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_idf_is_an_integer_discrete_flow():
    assert isinstance(idf((1, 4, 4)), IntegerDiscreteFlow)
