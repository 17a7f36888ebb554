"""Synthetic MNIST-shaped data and networks for the benchmarks (fixed seeds)."""

import numpy as np

import nbbackprop as nb

#: The issue's workloads: (sizes, batch size, dtype, samples).
WORKLOADS = {
    "W1": ([784, 30, 10], 10, "float64", 50_000),
    "W2": ([784, 100, 10], 32, "float32", 50_000),
    "W3": ([784, 1024, 1024, 10], 256, "float32", 16_384),
    "W4": ([784, 100, 10], None, "float32", 50_000),
}


def data(n, n_in, n_out, dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, n_in), dtype=np.float64).astype(dtype)
    Y = np.eye(n_out, dtype=dtype)[rng.integers(0, n_out, n)]
    return X, Y


def network(sizes, dtype, strategy="auto"):
    return nb.Network(sizes, dtype=dtype, seed=0, strategy=strategy, device="cpu")
