"""Tests of vaeflows.data: the real files of ../shared/data, small generated files, and the errors."""

import gzip
import shutil
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vaeflows.data import (
    DATASETS,
    VAEData,
    binarize,
    check_images,
    load_dataset,
)
from vaeflows.data.files import read_idx

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"the shared data folder {SHARED} is missing (see its README)"
)
scipy_io = pytest.importorskip("scipy.io")


def _binary(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


def _write_npz(folder: Path, **arrays) -> Path:
    np.savez(folder / "binarized_mnist.npz", **arrays)
    return folder


def _binary_rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 2, (n, 784)).astype(np.uint8)


# --- registry and common errors ------------------------------------------------------------------


def test_registry_names():
    assert set(DATASETS) == {
        "binarized-mnist",
        "dynamic-mnist",
        "frey-faces",
        "caltech-silhouettes",
        "omniglot",
        "digits",
    }


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown data set 'mnist'.*binarized-mnist.*digits"):
        load_dataset("mnist")


@pytest.mark.parametrize("name", sorted(set(DATASETS) - {"digits"}))
def test_no_data_dir_asks_for_it(name):
    with pytest.raises(ValueError, match="--data-dir"):
        load_dataset(name)


@pytest.mark.parametrize(
    "name, files, url",
    [
        ("binarized-mnist", ["binarized_mnist.npz", "binarized_mnist_train.amat"], "larocheh"),
        ("frey-faces", ["frey_rawface.mat"], "roweis"),
        ("caltech-silhouettes", ["caltech101_silhouettes_28_split1.mat"], "marlin"),
        ("omniglot", ["chardata.mat"], "yburda/iwae"),
        ("dynamic-mnist", ["train-images-idx3-ubyte"], "download=True"),
    ],
)
def test_missing_files_message(tmp_path, name, files, url):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(name, str(tmp_path))
    message = str(info.value)
    assert str(tmp_path) in message and url in message
    for file in files:
        assert file in message


# --- check_images, binarize, VAEData -------------------------------------------------------------


def test_check_images_accepts_supports():
    check_images(torch.tensor([0.0, 1.0, 1.0]), "bernoulli", "b")
    check_images(torch.tensor([0.3, 1.0]), "bernoulli", "b", dynamic=True)
    check_images(torch.arange(256.0) / 255, "categorical256", "c")


@pytest.mark.parametrize(
    "values, likelihood, match",
    [
        (
            [0.0, 0.5],
            "bernoulli",
            r"my batch: 1 of 2 values are outside \{0, 1\}.*0\.5 at index \(1,\)",
        ),
        ([0.0, float("nan")], "bernoulli", "NaN or infinite"),
        ([float("inf")], "categorical256", "NaN or infinite"),
        ([0.0, 255.0], "categorical256", r"outside \[0, 1\].*divide uint8 images by 255"),
        ([0.5 / 255], "categorical256", "not a multiple of 1/255"),
        ([1.5], "bernoulli-dynamic", r"outside \[0, 1\]"),
        ([0.0], "gaussian", "unknown likelihood 'gaussian'"),
    ],
)
def test_check_images_rejects(values, likelihood, match):
    dynamic = likelihood.endswith("-dynamic")
    with pytest.raises(ValueError, match=match):
        check_images(torch.tensor(values), likelihood.replace("-dynamic", ""), "my batch", dynamic=dynamic)


def test_binarize_is_binary_and_reproducible():
    grey = torch.rand(50, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    a = binarize(grey, torch.Generator().manual_seed(1))
    b = binarize(grey, torch.Generator().manual_seed(1))
    assert _binary(a) and torch.equal(a, b) and a.shape == grey.shape


def test_vaedata_checks_shapes_and_binarize_method():
    x = torch.zeros(4, 1, 2, 2)
    with pytest.raises(ValueError, match=r"valid: found torch.float32 \(4, 1, 3, 2\), expected .*\(N, 1, 2, 2\)"):
        VAEData(x, torch.zeros(4, 1, 3, 2), x, (1, 2, 2), "bernoulli", False, "toy")
    static = VAEData(x, x, x, (1, 2, 2), "bernoulli", False, "toy")
    assert static.binarize(x) is x
    dynamic = VAEData(x + 0.5, x, x, (1, 2, 2), "bernoulli", True, "toy")
    assert _binary(dynamic.binarize(dynamic.train))
    with pytest.raises(ValueError, match="outside"):  # grey values only in a dynamic train split
        VAEData(x, x + 0.5, x, (1, 2, 2), "bernoulli", True, "toy")


# --- binarized MNIST -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bmnist():
    if not SHARED.is_dir():
        pytest.skip(f"the shared data folder {SHARED} is missing")
    return load_dataset("binarized-mnist", str(SHARED))


@needs_shared
def test_binarized_mnist_real(bmnist):
    assert [len(x) for x in (bmnist.train, bmnist.valid, bmnist.test)] == [50000, 10000, 10000]
    assert bmnist.image_shape == (1, 28, 28) and bmnist.train.shape[1:] == (1, 28, 28)
    assert bmnist.likelihood == "bernoulli" and not bmnist.dynamic_binarization
    assert all(x.dtype == torch.float32 and _binary(x) for x in (bmnist.train, bmnist.valid, bmnist.test))
    assert 0.1 < bmnist.train.mean() < 0.2  # digits are white strokes on black


@needs_shared
def test_binarized_mnist_mat_agrees_with_npz(bmnist, tmp_path):
    for split in ("train", "valid", "test"):  # only the .mat files, so the loader must read them
        (tmp_path / f"binarized_mnist_{split}.mat").symlink_to(
            SHARED / "binarized_mnist" / f"binarized_mnist_{split}.mat"
        )
    from_mat = load_dataset("binarized-mnist", str(tmp_path))
    assert from_mat.source.count(".mat") == 3
    for split in ("train", "valid", "test"):
        assert torch.equal(getattr(from_mat, split), getattr(bmnist, split))


def test_binarized_mnist_amat(tmp_path):
    rows = {split: _binary_rows(n, seed) for seed, (split, n) in enumerate([("train", 7), ("valid", 3), ("test", 2)])}
    for split, x in rows.items():
        np.savetxt(tmp_path / f"binarized_mnist_{split}.amat", x, fmt="%d")
    data = load_dataset("binarized-mnist", str(tmp_path))
    for split, x in rows.items():
        assert torch.equal(getattr(data, split), torch.from_numpy(x).float().reshape(-1, 1, 28, 28))


def test_binarized_mnist_wrong_shape(tmp_path):
    _write_npz(tmp_path, train=np.zeros((10, 783), np.uint8), valid=_binary_rows(2), test=_binary_rows(2))
    with pytest.raises(
        ValueError,
        match=r"binarized_mnist.npz' key 'train': found an array of shape \(10, 783\), expected \(N, 784\)",
    ):
        load_dataset("binarized-mnist", str(tmp_path))


def test_binarized_mnist_non_binary_and_nan(tmp_path):
    train = _binary_rows(10)
    train[3, 5] = 255
    _write_npz(tmp_path, train=train, valid=_binary_rows(2), test=_binary_rows(2))
    with pytest.raises(ValueError, match=r"binarized_mnist.npz.* train: 1 of 7840 values are outside \{0, 1\}"):
        load_dataset("binarized-mnist", str(tmp_path))
    valid = _binary_rows(2).astype(np.float32)
    valid[0, 0] = np.nan
    _write_npz(tmp_path, train=_binary_rows(10), valid=valid, test=_binary_rows(2))
    with pytest.raises(ValueError, match="valid: 1 of 1568 values are NaN or infinite"):
        load_dataset("binarized-mnist", str(tmp_path))


def test_missing_key(tmp_path):
    _write_npz(tmp_path, train=_binary_rows(2), valid=_binary_rows(2))
    with pytest.raises(ValueError, match=r"lacks the arrays \['test'\]; it holds \['train', 'valid'\]"):
        load_dataset("binarized-mnist", str(tmp_path))


# --- Frey faces and Caltech silhouettes (real files) ---------------------------------------------


@needs_shared
def test_frey_faces_real():
    data = load_dataset("frey-faces", str(SHARED))
    assert [len(x) for x in (data.train, data.valid, data.test)] == [1565, 200, 200]
    assert data.image_shape == (1, 28, 20) and data.likelihood == "categorical256"
    # the reference code's preprocessing: one image per column, rows of 20, shuffled with seed 123
    ff = scipy_io.loadmat(str(SHARED / "frey_faces" / "frey_rawface.mat"))["ff"]
    expected = ff.T.reshape(-1, 1, 28, 20)[np.random.RandomState(123).permutation(1965)] / 255.0
    got = torch.cat([data.train, data.valid, data.test])
    assert torch.equal(got, torch.from_numpy(expected).float())
    other = load_dataset("frey-faces", str(SHARED), seed=1)
    assert not torch.equal(other.test, data.test)


@needs_shared
def test_caltech_silhouettes_real():
    data = load_dataset("caltech-silhouettes", str(SHARED))
    assert [len(x) for x in (data.train, data.valid, data.test)] == [4100, 2264, 2307]
    assert all(_binary(x) for x in (data.train, data.valid, data.test))
    # the reference code: reshape (28, 28) then flatten column-major, then 1 - x
    raw = scipy_io.loadmat(str(SHARED / "caltech101_silhouettes" / "caltech101_silhouettes_28_split1.mat"))
    reference = 1.0 - raw["test_data"].reshape(-1, 28, 28).reshape(-1, 784, order="F")
    assert torch.equal(data.test.reshape(-1, 784), torch.from_numpy(reference).float())
    border = torch.cat([data.train[..., 0, :], data.train[..., -1, :]], -1)
    assert border.mean() < 0.2  # silhouettes are 1 on a 0 background


def test_frey_faces_wrong_shape(tmp_path):
    scipy_io.savemat(str(tmp_path / "frey_rawface.mat"), {"ff": np.zeros((784, 10), np.uint8)})
    with pytest.raises(
        ValueError,
        match=r"frey_rawface.mat' key 'ff'.*found an array of shape \(10, 784\), expected \(N, 560\)",
    ):
        load_dataset("frey-faces", str(tmp_path))


def test_missing_scipy_is_a_clear_import_error(tmp_path, monkeypatch):
    (tmp_path / "frey_rawface.mat").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(ImportError, match="pip install scipy"):
        load_dataset("frey-faces", str(tmp_path))


# --- dynamic MNIST (a writable copy of the shared raw files) -------------------------------------


@needs_shared
def test_dynamic_mnist_from_copy(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(SHARED / "MNIST" / "raw", raw)
    raw.chmod(0o555)  # a read-only folder of .gz files: read as it is, nothing extracted
    try:
        data = load_dataset("dynamic-mnist", str(tmp_path))
    finally:
        raw.chmod(stat.S_IRWXU)
    assert sorted(p.name for p in raw.iterdir()) == sorted(p.name for p in (SHARED / "MNIST" / "raw").iterdir())
    assert [len(x) for x in (data.train, data.valid, data.test)] == [50000, 10000, 10000]
    assert data.dynamic_binarization and data.likelihood == "bernoulli"
    assert not _binary(data.train) and 0 <= data.train.min() and data.train.max() == 1
    assert _binary(data.valid) and _binary(data.test)
    # valid: the last 10000 training images, binarized once with seed 777 (then test, same stream)
    with gzip.open(raw / "train-images-idx3-ubyte.gz") as handle:  # IDX: a 16-byte header, then pixels
        grey = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)[50000:] / 255.0
    expected = np.random.RandomState(777).binomial(1, grey.astype(np.float32))
    assert torch.equal(data.valid[:, 0], torch.from_numpy(expected).float())
    assert _binary(data.binarize(data.train[:100]))


# --- Omniglot (a small fake chardata.mat) --------------------------------------------------------


def _fake_omniglot(folder: Path, n_train: int, n_test: int):
    rng = np.random.RandomState(0)
    upright = rng.rand(n_train + n_test, 28, 28)
    upright[:, :14, :] *= 0.1  # dark top half: an orientation a transpose would break
    # chardata.mat stores one column-major image per column
    columns = np.stack([img.flatten(order="F") for img in upright], axis=1)
    scipy_io.savemat(
        str(folder / "chardata.mat"),
        {"data": columns[:, :n_train], "testdata": columns[:, n_train:]},
    )
    return upright


def test_omniglot_fake(tmp_path):
    upright = _fake_omniglot(tmp_path, n_train=1345 + 20, n_test=7)
    data = load_dataset("omniglot", str(tmp_path))
    assert [len(x) for x in (data.train, data.valid, data.test)] == [20, 1345, 7]
    assert data.dynamic_binarization and data.likelihood == "bernoulli"
    assert not _binary(data.train) and _binary(data.valid) and _binary(data.test)
    # train: the first 20 after a RandomState(123) shuffle, upright (as the IWAE loader orients them)
    perm = np.random.RandomState(123).permutation(1345 + 20)
    assert torch.allclose(data.train[:, 0].double(), torch.from_numpy(upright[perm[:20]]), atol=1e-6)
    assert data.test[:, :, :14].mean() < data.test[:, :, 14:].mean()
    again = load_dataset("omniglot", str(tmp_path))
    assert torch.equal(again.valid, data.valid) and torch.equal(again.test, data.test)


def test_omniglot_too_few_images(tmp_path):
    _fake_omniglot(tmp_path, n_train=100, n_test=3)
    with pytest.raises(ValueError, match="chardata.mat' key 'data': found 100 images, expected 1345"):
        load_dataset("omniglot", str(tmp_path))


# --- digits (embedded in scikit-learn) -----------------------------------------------------------


def test_digits():
    pytest.importorskip("sklearn")
    data = load_dataset("digits", data_dir="/ignored")
    assert [len(x) for x in (data.train, data.valid, data.test)] == [1437, 180, 180]
    assert data.image_shape == (1, 8, 8) and data.likelihood == "bernoulli"
    assert all(_binary(x) for x in (data.train, data.valid, data.test))
    assert torch.equal(load_dataset("digits").test, data.test)
    assert not torch.equal(load_dataset("digits", seed=0).test, data.test)


def test_digits_without_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        load_dataset("digits")


# --- IDX files (MNIST's format) ------------------------------------------------------------------


def _write_idx(path: Path, images: np.ndarray, cut: int = 0) -> None:
    header = bytes([0, 0, 8, images.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in images.shape)
    raw = header + images.tobytes()
    raw = raw[: len(raw) - cut]
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(raw)
    else:
        path.write_bytes(raw)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx(tmp_path, suffix):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / f"x-idx3-ubyte{suffix}"
    _write_idx(path, images)
    assert np.array_equal(read_idx(path), images)


def test_read_idx_refuses_a_truncated_file(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    _write_idx(path, np.zeros((2, 3, 4), np.uint8), cut=5)
    with pytest.raises(ValueError, match="x-idx3-ubyte' is not a complete IDX file.*download it again"):
        read_idx(path)
    gz = tmp_path / "x-idx3-ubyte.gz"
    _write_idx(gz, np.zeros((2, 3, 4), np.uint8))
    gz.write_bytes(gz.read_bytes()[:-12])  # the gzip stream cut short
    with pytest.raises(ValueError, match="x-idx3-ubyte.gz' cannot be read.*download it again"):
        read_idx(gz)
