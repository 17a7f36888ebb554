"""Time the peers on the workloads of benchmarks/README.md, in one process, interleaved.

    python -m benchmarks.peers.measure [--workloads W1,W2,W3,W4] [--repeats 5]
                                       [--peers numpy_minibatch,...] [--w3-samples 4096]
                                       [--idle 1.0] [--quiet 0.15] [--json results.json]

For each workload: one data set and one init (fixed seeds); for each available peer the data are
converted to its native form (``prepare``, untimed) and one warm-up epoch is run (it compiles
JAX, fills buffer caches); after the warm-up the parameters of every same_params peer are
compared with numpy_minibatch's on the same rows. Then interleaved rounds: in each round every
peer is reset to the init (``setup``, untimed), the process sleeps ``idle`` seconds so that the
previous peer's thread pool (OpenBLAS, PyTorch's OpenMP, XLA's Eigen pool) has gone quiet, and
keeps sleeping (at most 20 s) while /proc/stat shows the CPUs busier than ``quiet``; then one
epoch is timed with perf_counter (inference: enough passes to last >= 0.25 s, time per pass).

The 2 cores may be shared with other processes: a timing is "clean" when the others used at most
``quiet`` of the CPUs while it ran (/proc/stat busy ticks minus this process's own CPU time).
Rounds go on for the peers that lack ``repeats`` clean timings, up to 4 * repeats rounds.
Reported: the median over the clean timings (over all, flagged NOISY, when fewer than half of
``repeats`` are clean), and the best.

Slow peers (``slow = True``: nielsen) are timed on their first ``suggested_samples`` rows, and
not at all on W3 (per-sample 1024x1024 matrix-vector products).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

from . import PEER_NAMES, WORKLOADS, get_peer, init_params, make_data

SKIP = {("nielsen", "W3")}
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_NCPU = os.cpu_count() or 1


def _cpu_ticks():
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + vals[4]  # idle + iowait
    return sum(vals) - idle, sum(vals)


def wait_quiet(idle: float, threshold: float = 0.15, max_wait: float = 20.0) -> float:
    """Sleep ``idle`` s, then keep sleeping (up to ``max_wait`` s) while the machine's CPUs are
    busier than ``threshold`` (other processes: the 2 cores are shared). Returns the busy
    fraction of the last ``idle``-long window (NaN where /proc/stat is missing)."""
    deadline = time.monotonic() + max_wait
    while True:
        try:
            b0, t0 = _cpu_ticks()
            time.sleep(idle)
            b1, t1 = _cpu_ticks()
        except OSError:
            time.sleep(idle)
            return float("nan")
        busy = (b1 - b0) / max(t1 - t0, 1)
        if busy <= threshold or time.monotonic() > deadline:
            return busy


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


def measure_workload(wl, peer_names, repeats, idle, n_override=None, log=print, quiet=0.15):
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
        peers.append([p, n_p, Xn, Yn, [], [], []])

    def run(entry):
        p, n_p, Xn, Yn = entry[:4]
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
    # Interleaved rounds. A timing is "clean" when the other processes used at most ``quiet``
    # of the CPUs while it ran (/proc/stat ticks minus this process's own CPU time). Rounds go
    # on, for the peers that lack ``repeats`` clean timings, up to 4 * repeats rounds.
    inner = {}
    for entry in peers:  # inference: repeat the pass so that one timing lasts >= 0.25 s
        inner[entry[0].name] = 1
        if wl.inference_only:
            t0 = time.perf_counter()
            run(entry)
            inner[entry[0].name] = max(1, int(np.ceil(0.25 / (time.perf_counter() - t0))))
    for rnd in range(4 * repeats):
        pending = [e for e in peers if sum(o <= quiet for o in e[6]) < repeats]
        if not pending:
            break
        for entry in pending if rnd >= repeats else peers:
            p, n_p = entry[0], entry[1]
            p.setup(W0, b0, dt)
            gc.collect()
            entry[5].append(wait_quiet(idle, quiet))
            k = inner[p.name]
            b0_, _ = _cpu_ticks()
            c0 = sum(os.times()[:2])
            t0 = time.perf_counter()
            for _ in range(k):
                run(entry)
            t = time.perf_counter() - t0
            c1 = sum(os.times()[:2])
            b1_, _ = _cpu_ticks()
            others = ((b1_ - b0_) / _CLK_TCK - (c1 - c0)) / (t * _NCPU)
            entry[4].append(t / k)
            entry[6].append(max(0.0, others))
    results = {}
    for p, n_p, _, _, times, busy, others in peers:
        clean = [t for t, o in zip(times, others, strict=True) if o <= quiet]
        use = clean if len(clean) >= max(1, (repeats + 1) // 2) else times
        med = statistics.median(use)
        results[p.name] = {
            "samples": n_p,
            "median_s": med,
            "samples_per_s": n_p / med,
            "gflops": n_p * wl.flops_per_sample() / med / 1e9,
            "best_samples_per_s": n_p / min(times),
            "clean_timings": len(clean),
            "noisy": use is times,
            "times_s": times,
            "others_busy_during": others,
            "busy_before": busy,
            "passes_per_timing": inner[p.name],
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
    ap.add_argument(
        "--quiet",
        type=float,
        default=0.15,
        help="busy fraction of the CPUs used by other processes that makes a timing unclean",
    )
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
            wl,
            peer_names,
            args.repeats,
            args.idle,
            n_override,
            log=lambda s: print(s, flush=True),
            quiet=args.quiet,
        )
        all_results[wname] = res
        for name, r in res.items():
            err = r["max_rel_err_vs_numpy"]
            print(
                f"  {name:16s} {r['samples_per_s']:>10,.0f} samples/s  "
                f"{r['gflops']:6.1f} GFLOP/s  median {r['median_s']:.3f} s over "
                f"{r['samples']} samples, best {r['best_samples_per_s']:,.0f}/s, "
                f"clean {r['clean_timings']}/{len(r['times_s'])}"
                + (" NOISY" if r["noisy"] else "")
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
