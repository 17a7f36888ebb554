"""Where one W1 mini-batch's time goes: each kernel of the "auto" plan in a compiled loop.

    python -m benchmarks.batch_profile [--repeats 5]

W1 is ``[784, 30, 10]``, float64, mini-batches of 10, plain SGD: per mini-batch the
driver runs the forward pass of layer 0 (parallel: 235,200 multiply-adds) and layer 1,
BP1, BP2 into layer 0, and the fused SGD update of layer 1 and of layer 0 (parallel).
Each is timed alone in a compiled loop, then all six in one loop on the same rows
(``all_kernels``) and on a new mini-batch of a 50,000-row X each time
(``streaming_X``), and last the driver's own epoch per mini-batch
(``Network.fit``, 50,000 samples). The difference between the last two is what the
driver adds per mini-batch. Run on a quiet machine, and compare rows of one run only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
from numba import njit

from nbbackprop import functions as fn
from nbbackprop.kernels import cpu as k
from nbbackprop.kernels import cpu_tiled as t

NAMES = ("fwd0_parallel", "fwd1", "bp1", "bp2", "upd1", "upd0_parallel", "all_kernels",
         "streaming_X")  # fmt: skip


def _loop(which: int):
    @njit
    def run(reps, W0, b0, W1, b1, XB, z0, a0, z1, a1, y, d1, d0, costs, scratch):
        sig, cost = fn.SIGMOID, fn.QUADRATIC
        for i in range(reps):
            j = (i % (XB.shape[0] // 10)) * 10 if which == 7 else 0
            X = XB[j : j + 10]
            if which == 0 or which >= 6:
                t.weighted_sums_tiled(W0, b0, X, z0, a0, sig)
            if which == 1 or which >= 6:
                t.weighted_sums_tiled_serial(W1, b1, a0, z1, a1, sig)
            if which == 2 or which >= 6:
                k.output_delta_serial(a1, y, d1, costs, sig, cost)
            if which == 3 or which >= 6:
                t.hidden_delta_tiled_serial(W1, d1, a0, d0, sig, scratch)
            if which == 4 or which >= 6:
                t.sgd_layer_update_tiled_serial(W1, b1, d1, a0, 1e-9, 0.1, 0.0)
            if which == 5 or which >= 6:
                t.sgd_layer_update_tiled(W0, b0, d0, X, 1e-9, 0.1, 0.0)

    return run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    import nbbackprop as nb

    rng = np.random.default_rng(0)
    m = 10
    XB = rng.random((50_000, 784))
    XB[XB < 0.8] = 0.0
    W0 = rng.standard_normal((30, 784)) / 28
    W1 = rng.standard_normal((10, 30)) / np.sqrt(30)
    y = np.eye(10)[rng.integers(0, 10, m)]
    arrays = (
        W0, np.zeros(30), W1, np.zeros(10), XB, np.empty((m, 30)), np.empty((m, 30)),
        np.empty((m, 10)), np.empty((m, 10)), y, np.empty((m, 10)), np.empty((m, 30)),
        np.empty(m), np.empty(W1.size),
    )  # fmt: skip
    runs = {name: _loop(i) for i, name in enumerate(NAMES)}
    for run in runs.values():
        run(2, *arrays)
    reps = 20_000
    times = {name: [] for name in runs}
    times["driver (Network.fit)"] = []
    Y = np.eye(10)[rng.integers(0, 10, XB.shape[0])]
    net = nb.Network([784, 30, 10], dtype="float64", seed=1, device="cpu")
    net.fit(XB, Y, epochs=1, batch_size=m, eta=3.0, shuffle=False)
    for _ in range(args.repeats):  # interleaved
        for name, run in runs.items():
            t0 = time.perf_counter()
            run(reps, *arrays)
            times[name].append((time.perf_counter() - t0) / reps * 1e6)
        t0 = time.perf_counter()
        net.fit(XB, Y, epochs=1, batch_size=m, eta=3.0, shuffle=False)
        times["driver (Network.fit)"].append((time.perf_counter() - t0) / (XB.shape[0] / m) * 1e6)
    for name, v in times.items():
        print(f"{name:>22} {min(v):7.2f} µs per mini-batch (median {statistics.median(v):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
