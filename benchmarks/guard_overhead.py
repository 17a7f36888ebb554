"""What the divergence guard costs: one training epoch with and without it.

Run ``python benchmarks/guard_overhead.py`` (add ``--samples 60000`` for a full
MNIST-sized epoch). Data are random, MNIST-shaped; the numbers are milliseconds per
epoch, the minimum (the least disturbed) and the median of ``--repeats`` runs,
interleaved so that machine noise hits every variant alike. Variants (all through
``Network.fit``, with its guard class swapped):

- ``none``: no guard at all, one compiled call per chunk (what ``fit`` did before).
- ``epoch`` / ``batch``: the shipped guard, ``divergence_check="epoch"``/``"batch"``:
  one snapshot per epoch and per compiled call, one finite-scan per call.
- ``per-batch call``: the alternative of one compiled call per mini-batch from
  Python, with a snapshot and a scan around each.
- ``per-batch copy+scan (compiled)``: the cost of a snapshot plus a scan of the
  parameters per mini-batch inside compiled code, measured on its own and added to
  ``none`` (the other alternative for exact per-batch restore).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from numba import njit

import nbbackprop as nb
from nbbackprop import _guards

WORKLOADS = {
    "W1 [784,30,10] b10 f64": ([784, 30, 10], 10, "float64"),
    "W2 [784,100,10] b32 f32": ([784, 100, 10], 32, "float32"),
}


class NoGuard(_guards.TrainingGuard):
    def start_epoch(self, epoch):
        self.epoch = epoch

    def run_chunk(self, run, first, last, batch_costs):
        if run(first, last) != last - first:
            raise FloatingPointError("diverged")
        return None


class PerBatchCallGuard(_guards.TrainingGuard):
    def run_chunk(self, run, first, last, batch_costs):
        for i in range(first, last):
            self._save(self._call_snap)
            if run(i, i + 1) != 1 or not self._finite():
                raise FloatingPointError("diverged")
        return None


@njit(cache=True)
def _copy_and_scan(params, state, step, snap_p, snap_s, snap_step, reps):
    ok = True
    for _ in range(reps):
        _guards._copy_state(params, state, step, snap_p, snap_s, snap_step)
        ok &= _guards._all_finite(params)
    return ok


def epoch_seconds(sizes, batch_size, dtype, X, y, guard_cls, check):
    net = nb.Network(sizes, dtype=dtype, seed=0)
    net.fit(X[:200], y[:200], epochs=1, batch_size=batch_size, eta=0.1)  # compile, warm
    saved = _guards.TrainingGuard
    _guards.TrainingGuard = guard_cls
    try:
        t0 = time.perf_counter()
        net.fit(X, y, epochs=1, batch_size=batch_size, eta=0.1, seed=0, divergence_check=check)
        return time.perf_counter() - t0
    finally:
        _guards.TrainingGuard = saved


def copy_scan_seconds(sizes, dtype, n_batches):
    net = nb.Network(sizes, dtype=dtype, seed=0)
    state = np.zeros((0, net.n_params), dtype=net.dtype)
    snap = (np.empty_like(net.params), np.empty_like(state), np.zeros(1, np.int64))
    _copy_and_scan(net.params, state, net.step, *snap, 1)
    t0 = time.perf_counter()
    _copy_and_scan(net.params, state, net.step, *snap, n_batches)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    X = rng.random((args.samples, 784))
    y = rng.integers(0, 10, args.samples)
    variants = {
        "none": (NoGuard, "epoch"),
        "epoch": (_guards.TrainingGuard, "epoch"),
        "batch": (_guards.TrainingGuard, "batch"),
        "per-batch call": (PerBatchCallGuard, "batch"),
    }
    for name, (sizes, batch_size, dtype) in WORKLOADS.items():
        times = {v: [] for v in variants}
        for _ in range(args.repeats):
            for v, (cls, check) in variants.items():
                times[v].append(epoch_seconds(sizes, batch_size, dtype, X, y, cls, check))
        best = {v: float(np.min(t)) for v, t in times.items()}
        med = {v: float(np.median(t)) for v, t in times.items()}
        n_batches = -(-args.samples // batch_size)
        extra = float(
            np.min([copy_scan_seconds(sizes, dtype, n_batches) for _ in range(args.repeats)])
        )
        print(f"{name}: {args.samples} samples, {n_batches} mini-batches per epoch")
        head = f"{'min ms':>8s} {'vs none':>8s} {'median ms':>10s} {'vs none':>8s}"
        print(f"  {'variant':32s} {head}")
        for v in best:
            print(
                f"  {v:32s} {best[v] * 1e3:8.1f} {100 * (best[v] / best['none'] - 1):+7.1f}% "
                f"{med[v] * 1e3:10.1f} {100 * (med[v] / med['none'] - 1):+7.1f}%"
            )
        print(
            f"  {'per-batch copy+scan (compiled)':32s} {(best['none'] + extra) * 1e3:8.1f} "
            f"{100 * extra / best['none']:+7.1f}%   ({extra / n_batches * 1e6:.1f} us per "
            "mini-batch, measured alone)"
        )


if __name__ == "__main__":
    main()
