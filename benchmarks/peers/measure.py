"""Time the peers on the workloads of benchmarks/README.md, in one process, interleaved.

    python -m benchmarks.peers.measure [--workloads W1,W2,W3,W4] [--repeats 5]
                                       [--peers numpy_minibatch,...] [--w3-samples 4096]
                                       [--idle 1.0] [--json results.json]

For each workload: one data set and one init (fixed seeds); for each available peer the data are
converted to its native form (``prepare``, untimed) and one warm-up epoch is run (it compiles
JAX, fills buffer caches); after the warm-up the parameters of every same_params peer are
compared with numpy_minibatch's on the same rows. Then ``repeats`` rounds: in each round every
peer is reset to the init (``setup``, untimed), the process sleeps ``idle`` seconds so that the
previous peer's thread pool (OpenBLAS, PyTorch's OpenMP, XLA's Eigen pool) has gone quiet, and
one epoch (or one inference pass) is timed with perf_counter. Reported: median samples/s.

Slow peers (``slow = True``: nielsen) are timed on their first ``suggested_samples`` rows, and
not at all on W3 (per-sample 1024x1024 matrix-vector products).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time

import numpy as np

from . import PEER_NAMES, WORKLOADS, get_peer, init_params, make_data

SKIP = {("nielsen", "W3")}


def _maxerr(p, q):
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    scale = np.abs(q) + np.abs(q).max()
    return float(np.max(np.abs(p - q) / np.where(scale > 0, scale, 1.0)))


def _param_err(pa, pb):
    (Wa, ba), (Wb, bb) = pa, pb
    return max(
        max(_maxerr(x, y) for x, y in zip(Wa, Wb, strict=True)),
        max(_maxerr(x, y) for x, y in zip(ba, bb, strict=True)),
    )


def versions() -> dict:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("numba", "torch", "jax", "jaxlib", "sklearn", "threadpoolctl"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            pass
    try:
        from threadpoolctl import threadpool_info

        out["threadpools"] = [
            {k: d.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
            for d in threadpool_info()
        ]
    except Exception:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    out["cpu"] = line.split(":", 1)[1].strip()
                    break
        flags = open("/proc/cpuinfo").read()
        out["avx512"] = "avx512f" in flags
    except OSError:
        pass
    return out


def measure_workload(wl, peer_names, repeats, idle, n_override=None, log=print):
    n = n_override or wl.n_samples
    dt = np.dtype(wl.dtype)
    X, Y = make_data(n, wl.sizes[0], wl.sizes[-1], dtype=dt, seed=0)
    W0, b0 = init_params(wl.sizes, dtype=dt, seed=1)
    peers = []
    for name in peer_names:
        if (name, wl.name) in SKIP:
            continue
        cls = get_peer(name)
        if not cls.available():
            log(f"  {name}: not available")
            continue
        p = cls()
        p.setup(W0, b0, dt)
        n_p = min(n, cls.suggested_samples) if cls.slow and cls.suggested_samples else n
        Xn, Yn = p.prepare(X[:n_p], None if wl.inference_only else Y[:n_p])
        peers.append([p, n_p, Xn, Yn, []])

    def run(entry):
        p, n_p, Xn, Yn, _ = entry
        if wl.inference_only:
            p.infer(Xn)
        else:
            p.train_epoch(Xn, Yn, wl.batch_size, wl.eta)

    # warm-up, and agreement after one epoch with numpy_minibatch on the same rows
    agree = {}
    ref_cache = {}
    for entry in peers:
        p, n_p = entry[0], entry[1]
        t0 = time.perf_counter()
        run(entry)
        log(f"  warm-up {p.name}: {time.perf_counter() - t0:.2f} s ({n_p} samples)")
        if not wl.inference_only and p.same_params and p.name != "numpy_minibatch":
            if n_p not in ref_cache:
                ref = get_peer("numpy_minibatch")()
                ref.setup(W0, b0, dt)
                ref.train_epoch(X[:n_p], Y[:n_p], wl.batch_size, wl.eta)
                ref_cache[n_p] = ref.params()
            agree[p.name] = _param_err(p.params(), ref_cache[n_p])
    for _ in range(repeats):
        for entry in peers:
            p, n_p = entry[0], entry[1]
            p.setup(W0, b0, dt)
            gc.collect()
            time.sleep(idle)
            t0 = time.perf_counter()
            run(entry)
            entry[4].append(time.perf_counter() - t0)
    results = {}
    for p, n_p, _, _, times in peers:
        med = statistics.median(times)
        results[p.name] = {
            "samples": n_p,
            "median_s": med,
            "samples_per_s": n_p / med,
            "gflops": n_p * wl.flops_per_sample() / med / 1e9,
            "times_s": times,
            "max_rel_err_vs_numpy": agree.get(p.name),
        }
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="W1,W2,W3,W4")
    ap.add_argument("--peers", default=",".join(PEER_NAMES))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--w3-samples", type=int, default=4096)
    ap.add_argument("--idle", type=float, default=1.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    info = versions()
    print(json.dumps(info, indent=1))
    peer_names = [s for s in args.peers.split(",") if s]
    all_results = {}
    for wname in args.workloads.split(","):
        wl = WORKLOADS[wname]
        n_override = args.w3_samples if wname == "W3" else None
        print(
            f"{wname}: sizes {list(wl.sizes)} batch {wl.batch_size} {wl.dtype} "
            f"n={n_override or wl.n_samples}",
            flush=True,
        )
        res = measure_workload(
            wl, peer_names, args.repeats, args.idle, n_override, log=lambda s: print(s, flush=True)
        )
        all_results[wname] = res
        for name, r in res.items():
            err = r["max_rel_err_vs_numpy"]
            print(
                f"  {name:16s} {r['samples_per_s']:>10,.0f} samples/s  "
                f"{r['gflops']:6.1f} GFLOP/s  median {r['median_s']:.3f} s over "
                f"{r['samples']} samples"
                + ("" if err is None else f"  params vs numpy: {err:.1e}"),
                flush=True,
            )

    print("\n| work | " + " | ".join(peer_names) + " |")
    print("|---|" + "---|" * len(peer_names))
    for wname, res in all_results.items():
        cells = []
        for name in peer_names:
            r = res.get(name)
            cells.append("–" if r is None else f"{r['samples_per_s'] / 1e3:.1f}k")
        print(f"| {wname} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": info, "args": vars(args), "results": all_results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
