"""Input checks shared by the ``alzmri.evaluation.stats`` modules.

Every check raises :class:`~alzmri.utils.errors.AlzmriError` with a one-line message
naming the offending argument, so a mistake in a call reaches the user as such
rather than as a numpy broadcasting error deep inside a formula.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from alzmri.utils.errors import AlzmriError


def check_level(level: float, name: str = "level") -> float:
    """A coverage / credibility level strictly between 0 and 1.

    Args:
        level: the value to check, e.g. 0.95.
        name: argument name used in the error message.

    Returns:
        ``level`` as a float.
    """
    try:
        value = float(level)
    except (TypeError, ValueError):
        raise AlzmriError(f"{name} must be a number in (0, 1), got {level!r}") from None
    if not 0.0 < value < 1.0:
        raise AlzmriError(f"{name} must be in (0, 1), got {level!r}")
    return value


def as_vector(values: Any, name: str, *, finite: bool = True, min_len: int = 1) -> np.ndarray:
    """A 1-D float array, optionally required to be finite and of a minimum length.

    Args:
        values: anything ``np.asarray`` accepts.
        name: argument name used in error messages.
        finite: reject NaN and +-inf.
        min_len: smallest accepted number of elements.

    Returns:
        The values as a 1-D ``float64`` array (a copy when conversion was needed).
    """
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise AlzmriError(f"{name} must be numeric") from None
    if arr.ndim != 1:
        raise AlzmriError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size < min_len:
        raise AlzmriError(f"{name} needs at least {min_len} value(s), got {arr.size}")
    if finite and not np.all(np.isfinite(arr)):
        raise AlzmriError(f"{name} contains NaN or infinite values")
    return arr


def as_bool_vector(values: Any, name: str) -> np.ndarray:
    """A 1-D boolean array from booleans or 0/1 numbers.

    Args:
        values: booleans, or numbers that are all 0 or 1.
        name: argument name used in error messages.

    Returns:
        A 1-D ``bool`` array.
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise AlzmriError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise AlzmriError(f"{name} is empty")
    if arr.dtype == bool:
        return arr
    try:
        num = arr.astype(float)
    except (TypeError, ValueError):
        raise AlzmriError(f"{name} must be boolean (or 0/1), got dtype {arr.dtype}") from None
    if not np.all((num == 0) | (num == 1)):
        raise AlzmriError(f"{name} must be boolean (or 0/1); found other values")
    return num.astype(bool)


def check_same_length(**arrays: np.ndarray) -> int:
    """All arrays have the same length.

    Args:
        **arrays: name -> array.

    Returns:
        The common length.
    """
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise AlzmriError(f"inputs must have the same length, got {detail}")
    return next(iter(lengths.values()))


def check_number(value: Any, name: str, *, positive: bool = False) -> float:
    """A finite number that is ``>= 0`` (or ``> 0`` with ``positive=True``).

    Args:
        value: the number (a count, a weight, a tolerance ...).
        name: argument name used in error messages.
        positive: require strictly positive.

    Returns:
        The value as a float.
    """
    bound = "> 0" if positive else ">= 0"
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise AlzmriError(f"{name} must be a number {bound}, got {value!r}") from None
    if not np.isfinite(v) or v < 0 or (positive and v == 0):
        raise AlzmriError(f"{name} must be a finite number {bound}, got {value!r}")
    return v


def check_count(value: Any, name: str) -> float:
    """A finite, non-negative count (integers expected; fractional weights are accepted)."""
    return check_number(value, name)


def check_positive(value: Any, name: str) -> float:
    """A finite, strictly positive number."""
    return check_number(value, name, positive=True)
