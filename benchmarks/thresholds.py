"""Where the tiled kernels start to gain from a second thread: the measurement behind
``TILED_PARALLEL_MIN_MACS`` in ``nbbackprop/orchestration.py``.

    python -m benchmarks.thresholds [--repeats 5] [--dtype float32]

For layers of several shapes and mini-batch sizes, times one training step of a layer
(``weighted_sums_tiled`` then ``sgd_layer_update_tiled``, what the "auto" strategy runs
per layer and mini-batch with plain SGD) in its serial and its parallel compilation,
each called ``reps`` times in a compiled loop (no Python call overhead), and prints
the time per step, the ratio serial ÷ parallel and the layer's multiply-adds per
mini-batch. Run it on a quiet machine: a parallel region waits for every thread, and
one busy core costs it a scheduler time slice.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
from numba import njit

from nbbackprop.functions import SIGMOID
from nbbackprop.kernels import cpu_tiled as t

#: (batch, n_in, n_out): W1's and W2's layers, and shapes around the threshold.
SHAPES = (
    (10, 30, 10),
    (32, 100, 10),
    (10, 100, 30),
    (10, 100, 100),
    (32, 64, 64),
    (10, 784, 10),
    (32, 100, 100),
    (10, 784, 30),
    (10, 256, 256),
    (32, 784, 30),
    (32, 784, 100),
    (128, 784, 100),
    (256, 1024, 1024),
)


def _loop(forward, update):
    @njit
    def run(W, b, a_prev, z, a, delta, nabla_w, pack, reps):
        for _ in range(reps):
            forward(W, b, a_prev, z, a, SIGMOID)
            update(W, b, delta, a_prev, 1e-9, 1.0 / a_prev.shape[0], 0.0, nabla_w, pack)

    return run


def measure(shape, dtype, repeats, serial_run, parallel_run):
    m, n_in, n_out = shape
    rng = np.random.default_rng(0)
    W = (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(dtype)
    b = np.zeros(n_out, dtype)
    a_prev = rng.random((m, n_in)).astype(dtype)
    z = np.empty((m, n_out), dtype)
    a = np.empty_like(z)
    delta = (rng.standard_normal((m, n_out)) * 1e-3).astype(dtype)
    nabla_w = np.empty_like(W)
    pack = np.empty(t.pack_size(dtype), dtype)
    macs = m * n_in * n_out
    reps = max(20, int(1e9 / (2 * macs)))  # about 10-50 ms per timing
    args = (W, b, a_prev, z, a, delta, nabla_w, pack)
    out = {}
    for run in (serial_run, parallel_run):
        run(*args, 2)
    times = {"serial": [], "parallel": []}
    for _ in range(repeats):  # interleaved
        for name, run in (("serial", serial_run), ("parallel", parallel_run)):
            t0 = time.perf_counter()
            run(*args, reps)
            times[name].append((time.perf_counter() - t0) / reps)
    for name in times:
        out[name] = statistics.median(times[name])
    return macs, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    args = ap.parse_args(argv)
    serial = _loop(t.weighted_sums_tiled_serial, t.sgd_layer_update_tiled_serial)
    parallel = _loop(t.weighted_sums_tiled, t.sgd_layer_update_tiled)
    print(f"{'batch x n_in x n_out':>22} {'MACs/batch':>11} {'serial':>10} {'parallel':>10} ratio")
    for shape in sorted(SHAPES, key=lambda s: s[0] * s[1] * s[2]):
        macs, r = measure(shape, np.dtype(args.dtype), args.repeats, serial, parallel)
        label = " x ".join(map(str, shape))
        print(
            f"{label:>22} {macs:>11,} {r['serial'] * 1e6:>8.1f}µs {r['parallel'] * 1e6:>8.1f}µs "
            f"{r['serial'] / r['parallel']:.2f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
