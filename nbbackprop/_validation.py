"""Argument checks for the public API.

Numba kernels do not bounds-check, so every shape, dtype, finiteness and range
check happens here, before any kernel runs. Messages name the argument, what was
expected and what was given.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ._guards import all_finite

DTYPES = {"float32": np.float32, "float64": np.float64}


def check_dtype(dtype) -> np.dtype:
    """Return the numpy dtype for ``"float32"``/``"float64"`` (or the numpy types)."""
    try:
        name = None if dtype is None else np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in DTYPES:
        raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
    return np.dtype(DTYPES[name])


def check_choice(value, name: str, choices) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected a string, one of {sorted(choices)}, got {value!r}")
    if value not in choices:
        raise ValueError(f"{name}: expected one of {sorted(choices)}, got {value!r}")
    return value


def check_int(value, name: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return value


def check_float(
    value, name: str, *, positive: bool = False, nonnegative: bool = False, below=None
) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name}: expected a number > 0, got {value}")
    if nonnegative and value < 0:
        raise ValueError(f"{name}: expected a number >= 0, got {value}")
    if below is not None and value >= below:
        raise ValueError(f"{name}: expected a number < {below}, got {value}")
    return value


def check_seed(seed, name: str = "seed"):
    if seed is None:
        return None
    return check_int(seed, name, minimum=0)


#: Networks with more parameters than this are refused before anything is allocated
#: (2**40 float64 parameters would take 8 TiB).
MAX_PARAMS = 2**40


def check_sizes(sizes) -> tuple[int, ...]:
    if isinstance(sizes, (str, bytes)):
        raise TypeError(f"sizes: expected a sequence of layer widths, got {sizes!r}")
    try:
        items = list(sizes)
    except TypeError:
        raise TypeError(f"sizes: expected a sequence of layer widths, got {sizes!r}") from None
    if len(items) < 2:
        raise ValueError(
            f"sizes: expected at least two layers (input and output), got {len(items)}: {items!r}"
        )
    out = []
    for i, s in enumerate(items):
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise TypeError(f"sizes[{i}]: expected an integer layer width, got {s!r}")
        if s < 1:
            raise ValueError(f"sizes[{i}]: expected a layer width >= 1, got {s}")
        out.append(int(s))
    n_params = sum(out[l + 1] * (out[l] + 1) for l in range(len(out) - 1))
    if n_params > MAX_PARAMS:
        raise ValueError(
            f"sizes: {out!r} would have {n_params:.3g} parameters, more than the "
            f"{MAX_PARAMS:.3g} this library will allocate"
        )
    return tuple(out)


def _as_numeric_array(value, name: str) -> np.ndarray:
    if isinstance(value, np.ma.MaskedArray) and np.ma.is_masked(value):
        # np.asarray would drop the mask and read whatever the masked slots hold.
        raise ValueError(f"{name}: expected an array without masked entries")
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name}: expected a numeric array, could not convert: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    return arr


def check_inputs(X, n_features: int, dtype: np.dtype, name: str = "X") -> np.ndarray:
    """Return ``X`` as a C-contiguous, native-endian ``dtype`` array of shape (m, n_features)."""
    arr = _as_numeric_array(X, name)
    if arr.ndim != 2:
        raise ValueError(
            f"{name}: expected a 2-D array of shape (m, {n_features}), samples as rows, "
            f"got {arr.ndim}-D with shape {arr.shape}"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one sample (row), got shape {arr.shape}")
    if arr.shape[1] != n_features:
        raise ValueError(
            f"{name}: expected {n_features} features per row (sizes[0]), got shape {arr.shape}"
        )
    out = _convert(arr, dtype)
    if not all_finite(out):  # a compiled scan: np.isfinite made a boolean copy of X
        bad = int(np.count_nonzero(~np.isfinite(out)))
        raise ValueError(
            f"{name}: expected finite values, got {bad} NaN/inf entries "
            f"(or values too large for {dtype.name})"
        )
    return out


def check_targets(
    y, m: int, n_out: int, dtype: np.dtype, name: str = "y", cost: str | None = None
) -> np.ndarray:
    """Return targets as (m, n_out) rows: integer labels become one-hot rows.

    With ``cost``, the targets must also lie in the range that cost is defined for.
    """
    arr = _as_numeric_array(y, name)
    if arr.ndim == 1 and n_out > 1:
        if arr.shape[0] != m:
            raise ValueError(f"{name}: expected {m} labels (one per row of X), got {arr.shape[0]}")
        labels = check_labels(arr, n_out, name)
        out = np.zeros((m, n_out), dtype=dtype)
        out[np.arange(m), labels] = 1
        return out
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise ValueError(
            f"{name}: expected integer labels of shape ({m},) or target rows of shape "
            f"({m}, {n_out}), got shape {arr.shape}"
        )
    if arr.shape != (m, n_out):
        raise ValueError(
            f"{name}: expected target rows of shape ({m}, {n_out}) (one row per row of X, "
            f"sizes[-1] columns), got shape {arr.shape}"
        )
    out = _convert(arr, dtype)
    if not all_finite(out):
        raise ValueError(
            f"{name}: expected finite target values, got NaN/inf (or values too large "
            f"for {np.dtype(dtype).name})"
        )
    check_target_range(out, cost, name)
    return out


def check_target_range(Y: np.ndarray, cost: str | None, name: str = "y") -> None:
    """Targets the cost is defined for: in [0, 1] for cross-entropy, >= 0 for log-likelihood.

    Outside those ranges the cross-entropy and the log-likelihood are unbounded below,
    so gradient descent would drive the outputs to saturation and diverge.
    """
    if cost == "cross_entropy" and (Y.min() < 0 or Y.max() > 1):
        raise ValueError(
            f"{name}: cost='cross_entropy' needs targets in [0, 1], got values from "
            f"{Y.min():g} to {Y.max():g}"
        )
    if cost == "log_likelihood" and Y.min() < 0:
        raise ValueError(
            f"{name}: cost='log_likelihood' needs non-negative targets, got a minimum of "
            f"{Y.min():g}"
        )


def _convert(arr: np.ndarray, dtype) -> np.ndarray:
    """A C-contiguous, aligned, native-endian copy of ``arr`` in ``dtype`` (or ``arr`` itself).

    Values too large for ``dtype`` become inf (and are then refused by the caller with
    a message that says so) instead of raising NumPy's overflow warning.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        return np.require(arr, dtype=dtype, requirements=["C", "A"])


def check_labels(arr: np.ndarray, n_classes: int, name: str = "y") -> np.ndarray:
    """Integer class labels in [0, n_classes) as int64."""
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name}: expected integer class labels, got non-integer values")
    elif arr.dtype.kind == "b":
        raise TypeError(f"{name}: expected integer class labels, got booleans")
    # Range first, in the labels' own dtype: a cast of 1e20 or of a huge uint64 to
    # int64 would wrap around and report nonsense.
    if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        raise ValueError(
            f"{name}: expected labels in [0, {n_classes - 1}] (sizes[-1] = {n_classes} classes), "
            f"got values from {arr.min()} to {arr.max()}"
        )
    return arr.astype(np.int64)
