"""Common interface, workloads and synthetic data for the peer implementations.

Conventions shared by every peer (and by nbbackprop, so that parameters can be compared):

* ``weights[l]`` has shape ``(n_out, n_in)`` (Nielsen's convention), ``biases[l]`` shape
  ``(n_out,)``.
* ``X`` rows are samples, shape ``(n, n_in)``; ``Y`` one-hot rows, shape ``(n, n_out)``.
* Mini-batches are taken in order, no shuffling: rows ``[0:bs]``, ``[bs:2bs]``, ...; the last
  batch may be short (size ``m = n % bs``).
* Sigmoid on every layer, quadratic cost ``C_x = 1/2 ||y - a||^2``; per mini-batch of size ``m``:
  ``w -= (eta/m) * sum_x dC_x/dw`` and ``b -= (eta/m) * sum_x dC_x/db``.
* The dtype given to ``setup`` is kept throughout (float32 stays float32).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PeerBase", "Workload", "WORKLOADS", "make_data", "init_params", "as_dtype"]


def as_dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"only float32 and float64 are supported, got {dt}")
    return dt


class PeerBase:
    """The interface every peer module's ``Peer`` class implements.

    Life cycle: ``p = Peer(); if Peer.available(): p.setup(W, b, dtype); p.train_epoch(...)``.
    ``setup`` may be called again to reset the parameters (it copies its inputs, never aliases
    them). ``train_epoch`` and ``infer`` are synchronous: the work is finished when they return
    (asynchronous frameworks block inside them), so a wall clock around them is a fair timer.
    """

    #: short identifier, equal to the module name
    name: str = "base"
    #: True when the peer applies exactly the update rule above, so that its parameters after
    #: an epoch must agree with every other ``same_params`` peer (to rounding).
    same_params: bool = True
    #: True when the peer is too slow for full epochs; the comparison times
    #: ``X[:suggested_samples]`` and reports samples/s.
    slow: bool = False
    suggested_samples: int | None = None
    #: True when the first call for a given shape compiles (time it after a warm-up call with
    #: the same shapes, batch size and dtype).
    compiles: bool = False

    @classmethod
    def available(cls) -> bool:
        """Whether the peer's framework can be imported here."""
        return True

    def setup(self, weights, biases, dtype) -> None:
        """Copy the initial parameters (Nielsen's shapes) and fix the dtype."""
        raise NotImplementedError

    def prepare(self, X, Y=None):
        """Convert data to the peer's native form, outside any timed region.

        Returns ``(X_native, Y_native)`` (``Y_native`` is None when ``Y`` is None). The result
        may be passed to ``train_epoch``/``infer`` in place of NumPy arrays; they also accept
        NumPy arrays and convert them themselves (which is then timed).
        """
        dt = self.dtype
        Xn = np.ascontiguousarray(X, dtype=dt)
        Yn = None if Y is None else np.ascontiguousarray(Y, dtype=dt)
        return Xn, Yn

    def train_epoch(self, X, Y, batch_size: int, eta: float) -> None:
        """One pass over all rows of X/Y in order, mini-batches of ``batch_size``."""
        raise NotImplementedError

    def infer(self, X) -> np.ndarray:
        """Forward pass over all rows; returns the output activations, shape (n, n_out)."""
        raise NotImplementedError

    def params(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Copies of the current parameters as NumPy arrays, Nielsen's shapes, peer dtype."""
        raise NotImplementedError

    def close(self) -> None:
        """Release buffers (optional)."""

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return f"<peer {self.name}>"


@dataclass(frozen=True)
class Workload:
    name: str
    sizes: tuple[int, ...]
    batch_size: int | None  # None: inference only
    dtype: str
    n_samples: int
    eta: float = 3.0

    @property
    def inference_only(self) -> bool:
        return self.batch_size is None

    def flops_per_sample(self) -> int:
        macs = sum(a * b for a, b in zip(self.sizes[:-1], self.sizes[1:], strict=True))
        return (2 if self.inference_only else 6) * macs


WORKLOADS: dict[str, Workload] = {
    "W1": Workload("W1", (784, 30, 10), 10, "float64", 50_000, eta=3.0),
    "W2": Workload("W2", (784, 100, 10), 32, "float32", 50_000, eta=3.0),
    "W3": Workload("W3", (784, 1024, 1024, 10), 256, "float32", 16_384, eta=0.5),
    "W4": Workload("W4", (784, 100, 10), None, "float32", 50_000),
}


def make_data(n: int, n_in: int = 784, n_out: int = 10, dtype="float64", seed: int = 0):
    """Synthetic MNIST-shaped data: X in [0, 1) with ~80% of pixels zero, Y one-hot rows."""
    rng = np.random.default_rng(seed)
    X = rng.random((n, n_in), dtype=np.float64)
    X[X < 0.8] = 0.0  # MNIST-like sparsity; values of the rest spread over (0, 1)
    X = ((X - 0.8) / 0.2).clip(0.0, 1.0)
    labels = rng.integers(0, n_out, size=n)
    Y = np.zeros((n, n_out))
    Y[np.arange(n), labels] = 1.0
    dt = as_dtype(dtype)
    return np.ascontiguousarray(X, dtype=dt), np.ascontiguousarray(Y, dtype=dt)


def init_params(sizes, dtype="float64", seed: int = 1):
    """Gaussian init, weights scaled by 1/sqrt(n_in) (Nielsen's network2 default)."""
    rng = np.random.default_rng(seed)
    dt = as_dtype(dtype)
    weights = [
        (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(dt)
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    biases = [rng.standard_normal(n_out).astype(dt) for n_out in sizes[1:]]
    return weights, biases
