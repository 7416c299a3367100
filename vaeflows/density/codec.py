"""Lossless compression of 8-bit images with an integer discrete flow and an ANS entropy coder.

An :class:`~.integer.IntegerDiscreteFlow` maps images to integer latents bijectively and gives
each latent a discretized logistic mixture pmf; ``constriction``'s ANS coder (a stack, Duda 2009;
Bamler 2022) stores every latent under its pmf, about ``-log2 P(x)`` bits per image in all. The
decoder runs the flow the other way, deepest level first: a level's pmfs depend only on the
levels already decoded, so it can rebuild them before it reads that level's latents.

Encoder and decoder must compute **the same quantized probabilities**, or the decoder reads
garbage. Both run the model in float64 on the CPU, on the same batches of ``batch_size`` images
(recorded in the file), and build each table from the prior's parameters with elementwise maths
only (:func:`~.integer.discretized_logistic_mixture_pmf_table`); the parameters come from the
same integer inputs through the same layers in the same layout, so they agree bit for bit (the
tests check the tables themselves, not only the round trip). The latents' alphabet is the range
of integers they take at each level, recorded in the file. A file decodes with the same model
(its weights' SHA-256 is recorded and checked) on a machine whose float64 CPU kernels give the
same results: the same torch build, as a rule.

File layout: the magic ``VFIDF1``, a 4-byte little-endian header length, a JSON header (image
shape, batch size, the levels' ranges, the model's fingerprint, the run it came from), then the
ANS stream as little-endian 32-bit words.

Needs ``constriction`` (``pip install 'vaeflows[codec]'``).

Example:
    >>> from vaeflows.density import idf
    >>> model = idf((1, 4, 4), num_steps=1, hidden=4, num_levels=1)
    >>> images = torch.randint(0, 256, (5, 1, 4, 4), dtype=torch.uint8)
    >>> blob = compress_images(model, images)  # doctest: +SKIP
    >>> torch.equal(decompress_images(model, blob), images)  # doctest: +SKIP
    True

References:
    Hoogeboom, Peters, van den Berg, Welling. Integer discrete flows and lossless compression.
    NeurIPS 2019.
    Bamler. Understanding entropy coding with asymmetric numeral systems (ANS): a statistician's
    perspective (constriction). 2022.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import struct
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from .integer import IntegerDiscreteFlow, MixtureParams, discretized_logistic_mixture_pmf_table

__all__ = [
    "compress_images",
    "decompress_images",
    "read_header",
    "model_fingerprint",
    "model_bits",
    "compress_run",
    "decompress_file",
    "write_idx",
]

MAGIC = b"VFIDF1"
#: Symbols per pmf table handed to the coder at a time (memory: ``CHUNK * alphabet`` floats).
CHUNK = 8192
#: ``on_table(batch, level, chunk, table)``: sees every pmf table the coder uses (for tests).
TableHook = Callable[[int, int, int, torch.Tensor], None]


def _constriction() -> Any:
    try:
        import constriction
    except ImportError:
        raise ImportError(
            "the lossless codec needs constriction, an optional dependency: pip install 'vaeflows[codec]' "
            "(or pip install constriction)"
        ) from None
    return constriction


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of a model's state (names, shapes, dtypes and values): a file records it, and
    decoding with any other model is refused."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(value.shape)}:{value.dtype};".encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def _coding_model(model: IntegerDiscreteFlow) -> IntegerDiscreteFlow:
    if not isinstance(model, IntegerDiscreteFlow):
        raise TypeError(
            f"the lossless codec needs an integer discrete flow (vaeflows density train --flow idf), "
            f"got {type(model).__name__}"
        )
    coder = copy.deepcopy(model).to(device="cpu", dtype=torch.float64).eval()
    coder.check_values = False  # checked once, here or by the decoder's own construction
    return coder


def _check_images(model: IntegerDiscreteFlow, images: torch.Tensor) -> None:
    if not torch.is_tensor(images) or images.dtype != torch.uint8 or tuple(images.shape[1:]) != model.event_shape:
        found = f"{images.dtype} {tuple(images.shape)}" if torch.is_tensor(images) else type(images).__name__
        raise ValueError(
            f"the codec compresses 8-bit images: a uint8 tensor of shape (N, "
            f"{', '.join(map(str, model.event_shape))}), got {found}"
        )


def _batches(n: int, batch_size: int) -> List[Tuple[int, int]]:
    return [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def _flat(params: MixtureParams) -> MixtureParams:
    logits, loc, log_scale = params
    m = logits.shape[-1]
    return logits.reshape(-1, m), loc.reshape(-1, m), log_scale.reshape(-1, m)


def _tables(params: MixtureParams, low: int, high: int) -> List[torch.Tensor]:
    """The pmf tables of a level's latents (flattened in C order), ``CHUNK`` rows at a time."""
    logits, loc, log_scale = _flat(params)
    return [
        discretized_logistic_mixture_pmf_table(logits[start:end], loc[start:end], log_scale[start:end], low, high)
        for start, end in _batches(len(loc), CHUNK)
    ]


@torch.no_grad()
def model_bits(model: IntegerDiscreteFlow, images: torch.Tensor, batch_size: int = 100) -> torch.Tensor:
    """``-log2 P(x)`` of each image under the model in float64, as the codec computes it:
    ``(N,)`` bits, the code length an ideal entropy coder reaches."""
    _check_images(model, images)
    coder = _coding_model(model)
    return torch.cat(
        [
            -coder.log_prob(images[start:end].to(torch.float64)) / math.log(2)
            for start, end in _batches(len(images), batch_size)
        ]
    )


@torch.no_grad()
def compress_images(
    model: IntegerDiscreteFlow,
    images: torch.Tensor,
    batch_size: int = 100,
    info: Optional[Dict[str, Any]] = None,
    on_table: Optional[TableHook] = None,
) -> bytes:
    """Encode ``images`` losslessly under ``model``; see the module docstring for the format.

    Args:
        model: a trained :class:`~.integer.IntegerDiscreteFlow` (any dtype or device: the codec
            runs a float64 CPU copy).
        images: ``(N, C, H, W)`` uint8.
        batch_size: images per batch (the decoder uses the same batches).
        info: extra JSON-able fields for the header (e.g. the run directory).
        on_table: called with every pmf table used (tests).

    Returns:
        The file's bytes.
    """
    constriction = _constriction()
    _check_images(model, images)
    coder = _coding_model(model)
    batches = _batches(len(images), batch_size)
    as_float = lambda start, end: images[start:end].to(torch.float64)  # noqa: E731
    lows: List[int] = []
    highs: List[int] = []
    for start, end in batches:  # pass 1: each level's range of latents
        for index, z in enumerate(coder.encode(as_float(start, end))[0]):
            low, high = int(z.min()), int(z.max())
            if index == len(lows):
                lows.append(low)
                highs.append(high)
            lows[index], highs[index] = min(lows[index], low), max(highs[index], high)
    family = constriction.stream.model.Categorical(perfect=False)
    ans = constriction.stream.stack.AnsCoder()
    # A stack: the decoder reads batch 0 first and, in a batch, the deepest level first, so the
    # encoder pushes the last batch first and, in a batch, the data-side level first; in a level,
    # the last chunk first.
    for number in reversed(range(len(batches))):
        latents, params = coder.encode(as_float(*batches[number]))
        for index, (z, p) in enumerate(zip(latents, params)):
            symbols = (z.reshape(-1) - lows[index]).to(torch.int32).numpy()
            tables = _tables(p, lows[index], highs[index])
            for chunk in reversed(range(len(tables))):
                if on_table is not None:
                    on_table(number, index, chunk, tables[chunk])
                rows = symbols[chunk * CHUNK : chunk * CHUNK + len(tables[chunk])]
                ans.encode_reverse(rows, family, tables[chunk].numpy())
    words = np.asarray(ans.get_compressed(), dtype="<u4")
    header = {
        "format": 1,
        "shape": list(images.shape),
        "batch_size": batch_size,
        "ranges": [[low, high] for low, high in zip(lows, highs)],
        "model": model_fingerprint(model),
        "words": len(words),
        **(info or {}),
    }
    text = json.dumps(header, sort_keys=True).encode()
    return MAGIC + struct.pack("<I", len(text)) + text + words.tobytes()


def read_header(blob: bytes) -> Tuple[Dict[str, Any], np.ndarray]:
    """The JSON header and the ANS words of a compressed file's bytes.

    Raises:
        ValueError: the bytes are not a complete file of this codec.
    """
    size = struct.unpack("<I", blob[len(MAGIC) : len(MAGIC) + 4])[0] if len(blob) >= len(MAGIC) + 4 else 0
    start = len(MAGIC) + 4 + size
    try:
        if not blob.startswith(MAGIC):
            raise ValueError
        header = json.loads(blob[len(MAGIC) + 4 : start])
        words = np.frombuffer(blob, dtype="<u4", offset=start)
        if header.get("format") != 1 or len(words) != header["words"]:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise ValueError(
            "not a complete vaeflows idf codec file (vaeflows density compress writes them): it is "
            "truncated or another file"
        ) from None
    return header, words


@torch.no_grad()
def decompress_images(model: IntegerDiscreteFlow, blob: bytes, on_table: Optional[TableHook] = None) -> torch.Tensor:
    """Decode the images of :func:`compress_images`'s ``blob``: ``(N, C, H, W)`` uint8, bit-exact.

    Raises:
        ValueError: ``blob`` is not such a file, or was compressed with another model, or the
            stream does not decode to 8-bit images (a corrupt file or another machine's floats).
    """
    constriction = _constriction()
    header, words = read_header(blob)
    if header["model"] != model_fingerprint(model):
        raise ValueError(
            "this file was compressed with another model (its weights' fingerprint differs): decode it "
            "with the run it was compressed with" + (f" ({header['run_dir']})" if header.get("run_dir") else "")
        )
    n, *shape = header["shape"]
    if tuple(shape) != model.event_shape:
        raise ValueError(f"the file holds images of shape {tuple(shape)}, the model's are {model.event_shape}")
    coder = _coding_model(model)
    family = constriction.stream.model.Categorical(perfect=False)
    ans = constriction.stream.stack.AnsCoder(words.astype(np.uint32))
    ranges = header["ranges"]
    out = []
    for number, (start, end) in enumerate(_batches(n, header["batch_size"])):

        def draw(index: int, params: MixtureParams, number: int = number) -> torch.Tensor:
            low, high = ranges[index]
            parts = []
            for chunk, table in enumerate(_tables(params, low, high)):
                if on_table is not None:
                    on_table(number, index, chunk, table)
                parts.append(torch.from_numpy(np.asarray(ans.decode(family, table.numpy()), dtype=np.int64)))
            return (torch.cat(parts).to(torch.float64) + low).reshape(params[0].shape[:-1])

        x = coder.generate(draw, end - start)
        if not ((x >= 0) & (x <= 255)).all():
            raise ValueError("the stream does not decode to 8-bit images: the file is corrupt")
        out.append(x.to(torch.uint8))
    if not ans.is_empty():
        raise ValueError("the stream holds more than the images it decoded: the file is corrupt")
    return torch.cat(out) if out else torch.zeros(0, *shape, dtype=torch.uint8)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (MNIST's format, as :func:`vaeflows.data.files.read_idx`
    reads it)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = b"\x00\x00\x08" + bytes([array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    Path(path).write_bytes(header + array.tobytes())


def _split_images(data: Any, split: str, num: Optional[int]) -> torch.Tensor:
    if split not in ("train", "valid", "test"):
        raise ValueError(f"unknown split {split!r}; known: train, valid, test")
    x = getattr(data, split)
    if num is not None:
        x = x[:num]
    return x.round().to(torch.uint8)


def compress_run(
    run_dir: Path,
    out: Path,
    split: str = "test",
    num: Optional[int] = None,
    batch_size: int = 100,
    log: Callable[[str], None] = print,
) -> Dict[str, float]:
    """``vaeflows density compress``: encode a split of a trained idf run's data set into ``out``.

    Returns:
        ``{"images", "bytes", "file_bpd", "model_bpd"}``: the file's size (header included) and
        the model's ``-log2 P(x)`` in bits per dimension on the same images.

    Raises:
        TypeError: the run is not an integer flow's.
        ImportError: constriction is not installed.
    """
    from .training import load_density_run

    _constriction()  # before the data are loaded
    model, config, data = load_density_run(Path(run_dir), "cpu")
    flow = model.flow
    if not isinstance(flow, IntegerDiscreteFlow):
        raise TypeError(
            f"{run_dir} is a {config['flow']} run: the codec needs an integer discrete flow "
            "(vaeflows density train --flow idf)"
        )
    images = _split_images(data, split, num)
    info = {"run_dir": str(Path(run_dir).resolve()), "split": split}
    blob = compress_images(flow, images, batch_size, info)
    Path(out).write_bytes(blob)
    dims = images.numel()
    stats = {
        "images": len(images),
        "bytes": len(blob),
        "file_bpd": 8 * len(blob) / dims,
        "model_bpd": float(model_bits(flow, images, batch_size).sum()) / dims,
    }
    log(
        f"wrote {out}: {len(images)} {split} images in {len(blob)} bytes, {stats['file_bpd']:.4f} bits/dim "
        f"(the model: {stats['model_bpd']:.4f} bits/dim; raw 8 bits/dim)"
    )
    return stats


def decompress_file(
    path: Path, out: Path, run_dir: Optional[Path] = None, log: Callable[[str], None] = print
) -> torch.Tensor:
    """``vaeflows density decompress``: decode ``path`` with its run (or ``run_dir``) and write the
    images to ``out`` as an IDX file (``(N, H, W)`` for one channel, MNIST's own layout, so that a
    whole test set decodes to a byte copy of ``t10k-images-idx3-ubyte``).

    Returns:
        The decoded images ``(N, C, H, W)`` uint8.
    """
    from .training import load_density_run

    _constriction()
    blob = Path(path).read_bytes()
    header, _ = read_header(blob)
    source = run_dir or header.get("run_dir")
    if source is None:
        raise ValueError(f"{path} names no run: pass the run it was compressed with (--run RUN_DIR)")
    model, _, _ = load_density_run(Path(source), "cpu")
    if not isinstance(model.flow, IntegerDiscreteFlow):
        raise TypeError(f"{source} is not an integer discrete flow's run: pass the run {path} was compressed with")
    images = decompress_images(model.flow, blob)
    write_idx(out, images[:, 0].numpy() if images.shape[1] == 1 else images.numpy())
    log(f"wrote {out}: {len(images)} images decoded from {path}")
    return images
