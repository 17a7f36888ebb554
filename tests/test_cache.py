"""Numba's on-disk cache: a fresh process that only loads the cached driver runs it.

It calls a driver directly, before anything in the process has started Numba's thread
pool (``Network`` starts it through ``numba.get_num_threads()``). With a cache left by
earlier sessions we saw exactly this crash the interpreter (numba 0.68); starting the
pool when ``nbbackprop.kernels`` is imported cured it. A clean cache, as made here, did
not reproduce the crash, so this test guards the cached path in general, not that
particular crash.
"""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from nbbackprop.kernels import cpu_train

    sizes = np.array([7, 5, 3], dtype=np.int64)
    w_off, b_off = np.array([0, 35], dtype=np.int64), np.array([50, 55], dtype=np.int64)
    a_off, z_off = np.array([0, 7, 12], dtype=np.int64), np.array([0, 5], dtype=np.int64)
    m = 4
    rng = np.random.default_rng(0)
    params, grads = rng.standard_normal(58), np.zeros(58)
    X, Y = rng.random((m, 7)), np.eye(3)[[0, 1, 2, 0]]
    total = cpu_train.batch_gradients(
        params, grads, sizes, np.array([1, 0], dtype=np.int64), 0, w_off, b_off, a_off, z_off,
        X, Y, np.zeros(m * 15), np.zeros(m * 8), np.zeros(m * 8), np.zeros(m),
        np.zeros(3, dtype=np.int64),
    )
    print(repr(float(total)))
    """
)


def test_fresh_process_calls_cached_driver(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    runs = [
        subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True)
        for _ in range(2)  # the first compiles and caches, the second only loads
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    assert runs[0].stdout == runs[1].stdout
    assert any(tmp_path.rglob("*.nbc"))
