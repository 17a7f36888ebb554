"""Peak memory of one epoch of W1–W3 against the buffers it should need.

    python -m benchmarks.memory [--workloads W1,W2,W3] [--strategy auto]

In a fresh process per workload: the data are generated, a network is built and
trained for one epoch (compiling or loading the kernels), the kernel's peak-RSS mark is
reset (``/proc/self/clear_refs``), and a second epoch is trained. Reported: the peak
RSS above the resident size before that epoch, the peak of what NumPy and Python
allocated during it (``tracemalloc``; Numba's own allocations are counted per
mini-batch by ``tests/test_memory.py`` instead), and the prediction:

- the per-batch buffers of ``Network._workspace`` (a, z, δ, targets, costs) and the
  gradient buffer (tiled BP2 transposes large weights into it),
- what ``fit`` itself allocates per epoch: the divergence guard's parameter snapshot,
  the sample order and the per-batch costs (the finiteness scan of X and Y is a
  compiled loop and allocates nothing).

Parameters, optimiser state and the data are already resident before the epoch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys
import numpy as np
import nbbackprop as nb
from benchmarks.peers import WORKLOADS, make_data, init_params

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)

wl = WORKLOADS[sys.argv[1]]
n = wl.n_samples
X, Y = make_data(n, wl.sizes[0], wl.sizes[-1], dtype=wl.dtype)
net = nb.Network(wl.sizes, dtype=wl.dtype, seed=0, strategy=sys.argv[2], device="cpu")
net.fit(X, Y, epochs=1, batch_size=wl.batch_size, eta=wl.eta, shuffle=False)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS")
import tracemalloc
tracemalloc.start()
net.fit(X, Y, epochs=1, batch_size=wl.batch_size, eta=wl.eta, shuffle=False)
traced = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
peak = status("VmHWM")
ws = net._workspace(min(wl.batch_size, n))
pred = {
    "workspace": ws.nbytes,
    "fit_per_epoch": net.params.nbytes + 16 * n + 8 * (n // wl.batch_size + 1),
}
print(json.dumps({"work": sys.argv[1], "strategy": sys.argv[2], "rss_before": before,
                  "peak_increase": peak - before, "traced_peak": traced, "predicted": pred,
                  "params": net.params.nbytes, "data": X.nbytes + Y.nbytes}))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="W1,W2,W3")
    ap.add_argument("--strategy", default="auto")
    args = ap.parse_args(argv)
    rows = []
    for w in args.workloads.split(","):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, w, args.strategy], capture_output=True, text=True
        )
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-3000:])
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    mib = 2**20
    print("| work | data | parameters | peak RSS increase in an epoch | NumPy/Python "
          "allocations in the epoch (tracemalloc peak) | predicted: buffers + fit's "
          "per-epoch arrays |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        p = r["predicted"]
        print(
            f"| {r['work']} | {r['data'] / mib:.1f} MiB | {r['params'] / mib:.2f} MiB | "
            f"{r['peak_increase'] / mib:.1f} MiB | {r['traced_peak'] / mib:.2f} MiB | "
            f"{sum(p.values()) / mib:.1f} MiB = "
            f"{p['workspace'] / mib:.2f} + "
            f"{p['fit_per_epoch'] / mib:.1f} |"
        )
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
