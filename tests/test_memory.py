"""The compiled training loop allocates nothing per mini-batch.

Numba's runtime counts its allocations when ``NUMBA_NRT_STATS=1`` is set before numba is
imported, so the check runs in a fresh process: one call of the driver over 5 and over 20
mini-batches must make the same number of allocations (the per-call ones: unboxed
arguments).
"""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from numba.core.runtime import rtsys

    import nbbackprop as nb
    from nbbackprop import functions as fn
    from nbbackprop.kernels import cpu_train

    def allocations(sizes, m, n_batches, strategy, dtype, optimizer):
        rng = np.random.default_rng(0)
        n = m * n_batches
        X = rng.random((n, sizes[0])).astype(dtype)
        Y = np.eye(sizes[-1], dtype=dtype)[rng.integers(0, sizes[-1], n)]
        net = nb.Network(sizes, dtype=dtype, seed=0, strategy=strategy, device="cpu")
        net._set_optimizer(optimizer)
        ws = net._workspace(m)
        order = rng.permutation(n).astype(np.int64)
        hyper = np.array([0.01, 0.0, 0.9, 0.9, 0.999, 1e-8])

        def run():
            return cpu_train.train_batches(
                net.params, ws.grads, net.opt_state, net._sizes, net._acts,
                fn.COSTS[net.cost_name], net._w_off, net._b_off, net._a_off, net._z_off,
                X, Y, order, m, 0, n_batches, ws.abuf, ws.zbuf, ws.dbuf, ws.ybuf, ws.costs,
                np.zeros(n_batches), nb.network.OPTIMIZERS[optimizer], hyper, net.step,
                net.plan(m).flags,
            )

        run()  # compile or load
        before = rtsys.get_allocation_stats().alloc
        assert run() == n_batches
        return rtsys.get_allocation_stats().alloc - before

    for sizes, m in (([13, 7, 3], 5), ([70, 90, 5], 66)):
        for strategy in ("auto", "serial", "parallel"):
            for optimizer in ("sgd", "adam"):
                for dtype in ("float64", "float32"):
                    counts = [
                        allocations(sizes, m, k, strategy, dtype, optimizer) for k in (5, 20)
                    ]
                    print(sizes, m, strategy, optimizer, dtype, counts)
                    assert counts[0] == counts[1], counts
    print("ok")
    """
)


def test_training_loop_allocates_nothing_per_mini_batch():
    env = dict(os.environ, NUMBA_NRT_STATS="1")
    run = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.strip().endswith("ok")
