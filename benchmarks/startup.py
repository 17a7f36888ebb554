"""Start-up cost: import plus the first W1 epoch in a fresh process, cold and warm.

    python -m benchmarks.startup [--cache-dir DIR] [--samples 50000]

Runs two fresh interpreters on W1 (``[784, 30, 10]``, float64, mini-batches of 10)
with ``NUMBA_CACHE_DIR`` pointing at an empty directory: the first compiles every
kernel it uses and writes Numba's on-disk cache (cold), the second only loads it
(warm). Each reports the import time, the first epoch, a second epoch, and the
difference of the two epochs: the time spent compiling or loading compiled code.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import nbbackprop as nb
t1 = time.perf_counter()
n = int(sys.argv[1])
rng = np.random.default_rng(0)
X = rng.random((n, 784))
X[X < 0.8] = 0.0
Y = np.eye(10)[rng.integers(0, 10, n)]
net = nb.Network([784, 30, 10], dtype="float64", seed=1, device="cpu")
times = []
for _ in range(2):
    t = time.perf_counter()
    net.fit(X, Y, epochs=1, batch_size=10, eta=3.0, shuffle=False)
    times.append(time.perf_counter() - t)
print(json.dumps({"import_s": t1 - t0, "first_epoch_s": times[0], "second_epoch_s": times[1],
                  "compile_or_load_s": times[0] - times[1]}))
"""


def run(cache_dir: str, samples: int) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(samples)], env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache-dir", default=None, help="default: a fresh temporary directory")
    ap.add_argument("--samples", type=int, default=50_000)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or tmp
        results = {"cold": run(cache, args.samples), "warm": run(cache, args.samples)}
    for name, r in results.items():
        print(
            f"{name}: import {r['import_s']:.2f} s, first epoch {r['first_epoch_s']:.2f} s, "
            f"second {r['second_epoch_s']:.2f} s -> compiling/loading "
            f"{r['compile_or_load_s']:.2f} s"
        )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
