"""Argument checks shared by the Python entry points and the ``vaeflows`` command.

Each check returns the value it accepted (normalized: ``int``, ``float``, a tuple of sizes) or
raises one ``ValueError`` that names the argument, says what it must be and shows what it got,
e.g. ``num_flows must be an integer >= 1, got 0``. The command line wraps the same checks as
argparse types (:mod:`vaeflows.cli`), so a flag and its Python keyword share one rule and one
message.

Example:
    >>> check_int("num_flows", 4), check_real("lr", 1e-3, above=0), check_dims("hidden_dims", [8, 8])
    (4, 0.001, (8, 8))
    >>> check_real("lr", float("nan"), above=0)
    Traceback (most recent call last):
    ...
    ValueError: lr must be a finite number > 0, got nan
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Optional, Sequence, Tuple

__all__ = ["check_int", "check_real", "check_dims", "check_writable_dir"]


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer (not a bool) ``>= minimum``.

    Args:
        name: the argument's name, for the message.
        value: what was passed.
        minimum: the smallest value allowed.

    Raises:
        ValueError: ``value`` is not an integer, is a bool, or is below ``minimum``.
    """
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_real(name: str, value: object, above: Optional[float] = None, below: Optional[float] = None) -> float:
    """``value`` as a ``float`` if it is a finite real number with ``above < value < below``.

    Args:
        name: the argument's name, for the message.
        value: what was passed.
        above: an exclusive lower bound (``None``: none).
        below: an exclusive upper bound (``None``: none).

    Raises:
        ValueError: ``value`` is not a real number (bools included), is NaN or infinite, or is
            outside the bounds.
    """
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
        number = float(value)
        if (above is None or number > above) and (below is None or number < below):
            return number
    if above is not None and below is not None:
        wanted = f" in ({above:g}, {below:g})"
    elif above is not None:
        wanted = f" > {above:g}"
    elif below is not None:
        wanted = f" < {below:g}"
    else:
        wanted = ""
    raise ValueError(f"{name} must be a finite number{wanted}, got {value!r}")


def check_dims(name: str, value: object, allow_empty: bool = False) -> Tuple[int, ...]:
    """``value`` as a tuple of layer sizes, each an integer ``>= 1``.

    Args:
        name: the argument's name, for the message.
        value: a sequence of sizes, e.g. ``(320, 320)``.
        allow_empty: whether ``()`` (no hidden layer) is allowed.

    Raises:
        ValueError: ``value`` is not a sequence of integers ``>= 1`` (a string, a bare integer), or
            is empty where at least one size is needed.
    """
    sizes = tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
    if sizes is None or not all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) and int(s) >= 1 for s in sizes
    ):
        raise ValueError(f"{name} must be a sequence of integers >= 1, got {value!r}")
    if not sizes and not allow_empty:
        raise ValueError(f"{name} needs at least one hidden layer, e.g. (64,), got {value!r}")
    return tuple(int(s) for s in sizes)


def check_writable_dir(path: os.PathLike, name: str) -> Path:
    """``path`` as a ``Path`` if it is a folder that can be written, or can be created as one.

    The nearest existing folder on the way must have write permission in its mode bits (honoured
    even for root, who could otherwise write into a folder marked read-only).

    Args:
        path: a folder that may not exist yet.
        name: what it is, for the message, e.g. ``"--out"``.

    Raises:
        NotADirectoryError: ``path``, or a parent of it, is a file.
        PermissionError: the folder, or the nearest existing parent, is read-only.
    """
    path = Path(path).expanduser()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == path else f" (its parent {existing} is a file)"
        raise NotADirectoryError(f"{name} {path} is not a folder{where}: pass a folder path")
    if not (os.access(existing, os.W_OK) and existing.stat().st_mode & 0o222):
        if existing == path:
            raise PermissionError(f"{name} {path} is read-only: pass a writable folder")
        raise PermissionError(
            f"{name} {path} cannot be written: its nearest existing parent {existing} is read-only; "
            "pass a writable folder"
        )
    return path
