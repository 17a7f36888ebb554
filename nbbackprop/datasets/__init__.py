"""Data sets for training and testing the networks.

* :func:`load_digits` -- the 8x8 UCI handwritten digits (1797 images) that
  ship with the package, split into a training and a test set.
* :func:`load_mnist` -- MNIST (28x28, 60000 + 10000 images) from IDX files
  that the user has downloaded into a local directory.
* :func:`read_idx` -- a generic, hostile-input safe IDX file reader.

All loaders return new arrays on every call; nothing is cached.
"""

from __future__ import annotations

import gzip
import io
import math
import numbers
import os
import pathlib
import warnings
import zlib
from importlib import resources
from importlib.resources.abc import Traversable

import numpy as np

from ._idx import DEFAULT_MAX_BYTES, read_idx

__all__ = ["DEFAULT_MAX_BYTES", "load_digits", "load_mnist", "read_idx"]

Split = tuple[np.ndarray, np.ndarray]

_DIGITS_FILE = "digits.csv.gz"
_DIGITS_SHAPE = (1797, 65)
_DIGITS_MAX_PIXEL = 16
_N_CLASSES = 10

_MNIST_SIDE = 28
_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_MNIST_SOURCES = (
    "http://yann.lecun.com/exdb/mnist/ or a mirror such as "
    "https://ossci-datasets.s3.amazonaws.com/mnist/"
)


# --------------------------------------------------------------------------- helpers


def _check_dtype(dtype: object) -> np.dtype:
    """Return ``np.dtype(dtype)`` if it is float32 or float64, else raise ValueError."""
    dt = None
    if dtype is not None:  # np.dtype(None) would silently mean float64
        try:
            dt = np.dtype(dtype)
        except (TypeError, ValueError):
            dt = None
    if dt is None or dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
    return dt


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


# --------------------------------------------------------------------------- digits


def _digits_resource() -> Traversable:
    return resources.files(__name__) / "data" / _DIGITS_FILE


def _read_digits_table(source: Traversable | str | os.PathLike[str] | None = None) -> np.ndarray:
    """Read and validate the digits CSV (gzip); return a float64 ``(1797, 65)`` table.

    `source` defaults to the file bundled with the package; tests pass other files.
    """
    if source is None:
        source = _digits_resource()
    elif isinstance(source, str | os.PathLike):
        source = pathlib.Path(source)
    name = str(source)
    hint = "the installation is damaged; reinstall nbbackprop"
    try:
        with (
            source.open("rb") as raw,
            gzip.GzipFile(fileobj=raw, mode="rb") as unzipped,
            io.TextIOWrapper(unzipped, encoding="ascii") as text,
        ):
            with warnings.catch_warnings():  # an empty file is reported below
                warnings.filterwarnings("ignore", "loadtxt: input contained no data")
                table = np.loadtxt(text, delimiter=",", dtype=np.float64, ndmin=2)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"digits data file {name} is missing: {hint}") from exc
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise ValueError(f"digits data file {name} is damaged ({exc}): {hint}") from exc

    problem = None
    if table.shape != _DIGITS_SHAPE:
        problem = f"expected shape {_DIGITS_SHAPE}, got {table.shape}"
    elif not np.all(np.isfinite(table)) or not np.array_equal(table, np.round(table)):
        problem = "it contains values that are not integers"
    elif table[:, :-1].min() < 0 or table[:, :-1].max() > _DIGITS_MAX_PIXEL:
        problem = f"pixel values outside 0..{_DIGITS_MAX_PIXEL}"
    elif table[:, -1].min() < 0 or table[:, -1].max() > _N_CLASSES - 1:
        problem = f"labels outside 0..{_N_CLASSES - 1}"
    if problem is not None:
        raise ValueError(f"digits data file {name} is damaged ({problem}): {hint}")
    return table


def load_digits(
    test_size: float = 0.2, seed: int = 0, dtype: str | np.dtype | type = "float64"
) -> tuple[Split, Split]:
    """Load the bundled UCI 8x8 handwritten digits, shuffled and split.

    Parameters
    ----------
    test_size : float, optional
        Fraction of the 1797 images that goes to the test set, strictly
        between 0 and 1. The test set gets ``ceil(test_size * 1797)`` images.
    seed : int, optional
        Non-negative seed of the shuffle. The split is
        ``numpy.random.default_rng(seed).permutation(1797)``: its first
        ``n_train`` entries index the training set, the rest the test set.
        The same seed always gives the same split.
    dtype : {"float32", "float64"}, optional
        Floating-point type of the images.

    Returns
    -------
    (X_train, y_train), (X_test, y_test) : tuple of tuple of numpy.ndarray
        ``X_*`` has shape ``(n, 64)``, the given `dtype`, is C-contiguous and
        holds the pixels scaled to [0, 1] (divided by 16). ``y_*`` has shape
        ``(n,)``, dtype ``int64`` and holds labels 0..9. All arrays are new on
        every call.

    Raises
    ------
    ValueError
        If an argument is invalid, or if the bundled data file is damaged.

    Notes
    -----
    The data are the test set of E. Alpaydin and C. Kaynak, "Optical
    Recognition of Handwritten Digits", UCI Machine Learning Repository, 1998,
    https://doi.org/10.24432/C50P49 (CC BY 4.0), in the copy distributed with
    scikit-learn. See ``nbbackprop/datasets/data/DIGITS-LICENSE.txt``.

    Examples
    --------
    >>> (X_train, y_train), (X_test, y_test) = load_digits()
    >>> X_train.shape, X_test.shape
    ((1437, 64), (360, 64))
    """
    if (
        isinstance(test_size, bool)
        or not isinstance(test_size, numbers.Real)
        or not 0.0 < test_size < 1.0
    ):
        raise ValueError(
            f"test_size: expected a number strictly between 0 and 1, got {test_size!r}"
        )
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    dt = _check_dtype(dtype)

    table = _read_digits_table()
    n = table.shape[0]
    n_test = math.ceil(float(test_size) * n)
    n_train = n - n_test
    if n_train < 1:
        raise ValueError(
            f"test_size: expected a value that leaves at least one of the {n} images for "
            f"training, got {test_size!r}"
        )
    order = np.random.default_rng(int(seed)).permutation(n)
    X = table[:, :-1].astype(dt)
    X /= _DIGITS_MAX_PIXEL
    y = table[:, -1].astype(np.int64)
    train, test = order[:n_train], order[n_train:]
    return (X[train], y[train]), (X[test], y[test])


# --------------------------------------------------------------------------- MNIST


def _mnist_candidates(canonical: str) -> list[str]:
    """File names accepted for one MNIST file, most preferred first."""
    stem, sep, rest = canonical.rpartition("-idx")
    names = [canonical, f"{stem}.idx{rest}"]
    return [n + ext for n in names for ext in ("", ".gz")]


def _find_mnist_files(directory: str | os.PathLike[str]) -> dict[str, str]:
    dirname = os.fsdecode(os.fspath(directory))
    if not os.path.isdir(dirname):
        raise FileNotFoundError(
            f"MNIST directory {dirname!r} does not exist or is not a directory. Download "
            f"{', '.join(_MNIST_FILES.values())} (optionally .gz) from {_MNIST_SOURCES}"
        )
    found: dict[str, str] = {}
    missing: list[str] = []
    for key, canonical in _MNIST_FILES.items():
        for candidate in _mnist_candidates(canonical):
            path = os.path.join(dirname, candidate)
            if os.path.isfile(path):
                found[key] = path
                break
        else:
            missing.append(canonical)
    if missing:
        raise FileNotFoundError(
            f"MNIST file(s) {', '.join(missing)} not found in directory {dirname!r} "
            "(also looked for '.gz' and '.idx' variants of the names, e.g. "
            f"{_mnist_candidates(missing[0])[-1]}). Download the four MNIST IDX files from "
            f"{_MNIST_SOURCES} and put them in that directory"
        )
    return found


def _load_mnist_pair(images_path: str, labels_path: str, dtype: np.dtype) -> Split:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    side = _MNIST_SIDE
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (side, side):
        raise ValueError(
            f"{images_path}: expected MNIST images, an unsigned-byte IDX array of shape "
            f"(n, {side}, {side}), got {images.dtype} of shape {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(
            f"{labels_path}: expected MNIST labels, a 1-d unsigned-byte IDX array, "
            f"got {labels.dtype} of shape {labels.shape}"
        )
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels"
        )
    if labels.max() >= _N_CLASSES:
        bad = int(np.argmax(labels >= _N_CLASSES))
        raise ValueError(
            f"{labels_path}: labels must be 0..{_N_CLASSES - 1}, found {int(labels[bad])} "
            f"at index {bad}"
        )
    X = images.reshape(images.shape[0], side * side).astype(dtype)
    X /= 255
    return X, labels.astype(np.int64)


def load_mnist(
    directory: str | os.PathLike[str],
    dtype: str | np.dtype | type = "float64",
    validation_size: int = 0,
) -> tuple[Split, Split] | tuple[Split, Split, Split]:
    """Load MNIST from the standard IDX files in a local directory.

    Parameters
    ----------
    directory : str or os.PathLike
        Directory holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``. Each may also
        be gzip-compressed with a ``.gz`` suffix, and ``.idx`` may replace
        ``-idx`` in the name (``train-images.idx3-ubyte``). Plain files are
        preferred when several variants are present.
    dtype : {"float32", "float64"}, optional
        Floating-point type of the images.
    validation_size : int, optional
        If positive, this many images are split off the *end* of the training
        set into a validation set (Nielsen's 50000/10000 split is
        ``validation_size=10000``). Must leave at least one training image.

    Returns
    -------
    (X_train, y_train), (X_test, y_test) : tuple of tuple of numpy.ndarray
        If `validation_size` is 0. ``X_*`` has shape ``(n, 784)``, the given
        `dtype`, is C-contiguous and holds the pixels scaled to [0, 1]
        (divided by 255); ``y_*`` is ``int64`` with labels 0..9.
    (X_train, y_train), (X_val, y_val), (X_test, y_test) : tuple of tuple of numpy.ndarray
        If `validation_size` is positive.

    Raises
    ------
    FileNotFoundError
        If the directory or any of the four files is missing; the message
        names the missing files, the directory and where to download MNIST.
    ValueError
        If an argument is invalid or a file is not valid MNIST data (see
        :func:`read_idx`; also wrong image size, image and label counts that
        differ, or labels outside 0..9).

    Notes
    -----
    MNIST can be downloaded from http://yann.lecun.com/exdb/mnist/ or from
    mirrors such as https://ossci-datasets.s3.amazonaws.com/mnist/.
    """
    dt = _check_dtype(dtype)
    if not _is_int(validation_size) or validation_size < 0:
        raise ValueError(
            f"validation_size: expected a non-negative integer, got {validation_size!r}"
        )
    files = _find_mnist_files(directory)
    X_train, y_train = _load_mnist_pair(files["train_images"], files["train_labels"], dt)
    X_test, y_test = _load_mnist_pair(files["test_images"], files["test_labels"], dt)
    if validation_size == 0:
        return (X_train, y_train), (X_test, y_test)
    n_train = X_train.shape[0] - int(validation_size)
    if n_train < 1:
        raise ValueError(
            f"validation_size: expected fewer than the {X_train.shape[0]} training images, "
            f"got {validation_size!r}"
        )
    # Row slices of a C-contiguous array are C-contiguous and do not overlap.
    return (
        (X_train[:n_train], y_train[:n_train]),
        (X_train[n_train:], y_train[n_train:]),
        (X_test, y_test),
    )
