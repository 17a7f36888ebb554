"""Where kernels start to gain from a second thread: the measurements behind the
thresholds in ``nbbackprop/orchestration.py``.

    python -m benchmarks.thresholds [--repeats 5] [--dtype float32] [--kind tiled|plain|update]

``--kind tiled`` (``TILED_PARALLEL_MIN_MACS``): for layers of several shapes and
mini-batch sizes, one training step of a layer (``weighted_sums_tiled`` then
``sgd_layer_update_tiled``, what the "auto" strategy runs per layer and mini-batch with
plain SGD). ``--kind plain``: the same step with the per-equation kernels of
``cpu.py`` (``weighted_sums``, ``weight_grads``, ``bias_grads``), i.e. where
``strategy="parallel"`` beats ``strategy="serial"`` ("auto" does not pick them).
``--kind update`` (``PARALLEL_MIN_PARAMS``): the optimiser step ``adam_update`` (the
most work per parameter; momentum and SGD follow the same split) over flat buffers of
several sizes.

Each is timed in its serial and its parallel compilation, called ``reps`` times in a
compiled loop (no Python call overhead), interleaved, and the script prints the median
time per step, the ratio serial ÷ parallel (> 1: the parallel copy is faster) and the
size the threshold is expressed in. Run it on a quiet machine: a parallel region waits
for every thread, and one busy core costs it a scheduler time slice.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
from numba import njit

from nbbackprop.functions import SIGMOID
from nbbackprop.kernels import cpu as k
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


#: Parameter counts for ``--kind update``: W1's (23,860), W2's (79,510) and around.
PARAM_COUNTS = (5_000, 23_860, 50_000, 79_510, 120_000, 200_000, 400_000, 1_000_000, 1_863_690)


def _loop(forward, update):
    @njit
    def run(W, b, a_prev, z, a, delta, nabla_w, nabla_b, reps):
        for _ in range(reps):
            forward(W, b, a_prev, z, a, SIGMOID)
            update(W, b, delta, a_prev, 1e-9, 1.0 / a_prev.shape[0], 0.0)

    return run


def _plain_loop(forward, weight_grads, bias_grads):
    @njit
    def run(W, b, a_prev, z, a, delta, nabla_w, nabla_b, reps):
        for _ in range(reps):
            forward(W, b, a_prev, z, a, SIGMOID)
            weight_grads(delta, a_prev, nabla_w)
            bias_grads(delta, nabla_b)

    return run


def _update_loop(adam):
    @njit
    def run(params, grads, m1, m2, reps):
        for i in range(reps):
            adam(params, grads, m1, m2, 1e-9, 0.1, 0.0, params.shape[0], 0.9, 0.999, 1e-8, i + 1)

    return run


def _timed(args, reps, repeats, serial_run, parallel_run):
    for run in (serial_run, parallel_run):
        run(*args, 2)
    times = {"serial": [], "parallel": []}
    for _ in range(repeats):  # interleaved
        for name, run in (("serial", serial_run), ("parallel", parallel_run)):
            t0 = time.perf_counter()
            run(*args, reps)
            times[name].append((time.perf_counter() - t0) / reps)
    return {name: statistics.median(v) for name, v in times.items()}


def measure_update(n, dtype, repeats, serial_run, parallel_run):
    rng = np.random.default_rng(0)
    params = rng.standard_normal(n).astype(dtype)
    grads = (rng.standard_normal(n) * 1e-3).astype(dtype)
    m1 = np.zeros(n, dtype)
    m2 = np.zeros(n, dtype)
    reps = max(20, int(2e8 / n))
    return n, _timed((params, grads, m1, m2), reps, repeats, serial_run, parallel_run)


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
    nabla_b = np.empty(n_out, dtype)
    macs = m * n_in * n_out
    reps = max(20, int(1e9 / (2 * macs)))  # about 10-50 ms per timing
    args = (W, b, a_prev, z, a, delta, nabla_w, nabla_b)
    return macs, _timed(args, reps, repeats, serial_run, parallel_run)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--kind", default="tiled", choices=("tiled", "plain", "update"))
    args = ap.parse_args(argv)
    dtype = np.dtype(args.dtype)
    if args.kind == "update":
        serial = _update_loop(k.adam_update_serial)
        parallel = _update_loop(k.adam_update)
        print(f"{'parameters':>22} {'serial':>10} {'parallel':>10} ratio")
        for n in PARAM_COUNTS:
            _, r = measure_update(n, dtype, args.repeats, serial, parallel)
            print(
                f"{n:>22,} {r['serial'] * 1e6:>8.1f}µs {r['parallel'] * 1e6:>8.1f}µs "
                f"{r['serial'] / r['parallel']:.2f}",
                flush=True,
            )
        return 0
    if args.kind == "plain":
        serial = _plain_loop(k.weighted_sums_serial, k.weight_grads_serial, k.bias_grads_serial)
        parallel = _plain_loop(k.weighted_sums, k.weight_grads, k.bias_grads)
    else:
        serial = _loop(t.weighted_sums_tiled_serial, t.sgd_layer_update_tiled_serial)
        parallel = _loop(t.weighted_sums_tiled, t.sgd_layer_update_tiled)
    print(f"{'batch x n_in x n_out':>22} {'MACs/batch':>11} {'serial':>10} {'parallel':>10} ratio")
    for shape in sorted(SHAPES, key=lambda s: s[0] * s[1] * s[2]):
        macs, r = measure(shape, dtype, args.repeats, serial, parallel)
        label = " x ".join(map(str, shape))
        print(
            f"{label:>22} {macs:>11,} {r['serial'] * 1e6:>8.1f}µs {r['parallel'] * 1e6:>8.1f}µs "
            f"{r['serial'] / r['parallel']:.2f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
