"""nbbackprop side by side with its peers on the workloads W1–W4, in one process.

    python -m benchmarks.compare [--workloads W1,W2,W3,W4] [--repeats 5]
        [--strategies auto] [--peers numpy_minibatch,torch_cpu,torch_autograd,jax_jit,sklearn_mlp]
        [--w3-samples 16384] [--idle 1.0] [--quiet 0.15]
        [--json out.json] [--markdown out.md] [--plot out.png]

Run it from the repository root with an environment that has the peers' frameworks
(``/work/venv-bench`` on the reference machine; see ``docs/performance.md``). Peers
that are not installed are skipped, except the NumPy reference, which always runs.

For each workload (``benchmarks/peers/_base.py``: synthetic MNIST-shaped data and
one initialisation, fixed seeds; mini-batches in order, no shuffling) every
implementation converts the data to its own form outside the timer (``prepare``),
runs one warm-up epoch (compiles JAX, loads Numba's cache, fills buffers), and its
parameters after that epoch are compared with the NumPy reference's: an
implementation that did not train to the same parameters gets no ratio. Then
interleaved rounds: each implementation is reset to the initial parameters, the
process sleeps ``--idle`` seconds so that the previous implementation's thread pool
is idle and waits (up to 20 s) until the machine's CPUs are quieter than
``--quiet`` (the cores are shared), then one epoch, or one inference pass, is timed.
A timing is *clean* when other processes used at most ``--quiet`` of the machine while
it ran (``/proc/stat`` busy ticks minus this process's CPU time); rounds go on until each
implementation has ``--repeats`` clean timings (at most 3 × repeats rounds), and the
medians are over the clean timings (over all of them, flagged NOISY, when fewer than
half are clean). A parallel implementation that shares its cores with another process
waits for it at every parallel region, so one busy neighbour can cost it 100×.

nbbackprop appears twice:

- ``nbbackprop[<strategy>]``: an epoch of the compiled driver on data validated in
  ``prepare`` (the counterpart of JAX's ``device_put`` there): the same work as the
  peers' ``train_epoch``, in the compiled calls ``fit`` makes, each at the thread
  count ``fit``'s tuner picks (``nbbackprop/_threads.py``; its choices are printed
  after each workload);
- ``nbbackprop.fit``: the public ``Network.fit(epochs=1)`` / ``feedforward``, with
  its input validation (a finiteness scan of X) and divergence guard, for reference.

Printed: samples/s, GFLOP/s (6·Σ n_in·n_out FLOPs per trained sample, 2·Σ per
inferred one), the ratio of nbbackprop to every peer, the issue's targets with
their ratios, and the machine's GEMM ceiling (NumPy ``matmul``).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

from .peers import PEER_NAMES, WORKLOADS, get_peer, init_params, make_data
from .peers._base import PeerBase, as_dtype
from .peers.measure import versions, wait_quiet

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _ticks():
    """(busy, total) CPU ticks of the whole machine, and this process's own CPU ticks."""
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    t = os.times()
    return sum(vals) - vals[3] - vals[4], sum(vals), (t.user + t.system) * _CLK_TCK


def _others(before, after) -> float:
    """Fraction of the machine's CPU time that other processes used between two _ticks()."""
    if before is None or after is None:
        return 0.0
    busy = after[0] - before[0] - (after[2] - before[2])
    return max(0.0, busy / max(after[1] - before[1], 1))


#: The issue's targets: (workload, peer or "fastest", least ratio nbbackprop ÷ peer).
#: "PyTorch CPU" has two rows: the hand-written ``torch_cpu`` (no autograd, fused updates,
#: the harder peer) and ``torch_autograd`` (``nn.Sequential`` + ``optim.SGD``, the loop
#: the issue's figure of ~15k samples/s on W1 describes).
TARGETS = (
    ("W1", "jax_jit", 2.0),
    ("W1", "torch_cpu", 15.0),
    ("W1", "torch_autograd", 15.0),
    ("W2", "jax_jit", 1.2),
    ("W3", "numpy_minibatch", 0.75),
    ("W4", "fastest", 1.2),
)
#: Largest relative parameter difference (|p - q| / (|q| + max|q|)) from the NumPy
#: reference after one epoch that still counts as "the same parameters".
AGREE = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 2e-4}
DEFAULT_PEERS = ("numpy_minibatch", "torch_cpu", "torch_autograd", "jax_jit", "sklearn_mlp")


class NbPeer(PeerBase):
    """nbbackprop behind the peers' interface (see the module docstring)."""

    same_params = True

    def __init__(self, strategy: str = "auto", through_fit: bool = False):
        self.strategy = strategy
        self.through_fit = through_fit
        self.name = "nbbackprop.fit" if through_fit else f"nbbackprop[{strategy}]"

    def setup(self, weights, biases, dtype) -> None:
        import nbbackprop as nb

        self.dtype = as_dtype(dtype)
        sizes = [weights[0].shape[1]] + [w.shape[0] for w in weights]
        self.net = nb.Network(
            sizes, dtype=self.dtype.name, seed=0, strategy=self.strategy, device="cpu"
        )
        for W, b, w0, b0 in zip(self.net.weights, self.net.biases, weights, biases, strict=True):
            W[...] = w0
            b[...] = np.reshape(b0, -1)

    def prepare(self, X, Y=None):
        from nbbackprop import _validation as v

        if self.through_fit:
            return super().prepare(X, Y)
        X = v.check_inputs(X, self.net.sizes[0], self.dtype)
        if Y is not None:
            Y = v.check_targets(Y, X.shape[0], self.net.sizes[-1], self.dtype)
        return X, Y

    def train_epoch(self, X, Y, batch_size: int, eta: float) -> None:
        net = self.net
        if self.through_fit:
            net.fit(X, Y, epochs=1, batch_size=batch_size, eta=eta, shuffle=False)
            return
        from nbbackprop import _threads
        from nbbackprop import functions as fn
        from nbbackprop.kernels import cpu_train
        from nbbackprop.network import chunk_batches

        n = X.shape[0]
        cap = min(batch_size, n)
        ws = net._workspace(cap)
        net._set_optimizer("sgd")
        n_batches = -(-n // batch_size)
        order, costs = np.arange(n, dtype=np.int64), np.zeros(n_batches)
        hyper = np.array([eta, 0.0, 0.0, 0.9, 0.999, 1e-8])
        plan = net.plan(cap)

        def run(first, last):
            done = cpu_train.train_batches(
                net.params, ws.grads, net.opt_state, net._sizes, net._acts,
                fn.COSTS[net.cost_name], net._w_off, net._b_off, net._a_off, net._z_off,
                X, Y, order, batch_size, first, last, ws.abuf, ws.zbuf, ws.dbuf, ws.ybuf,
                ws.costs, costs, cpu_train.SGD, hyper, net.step, plan.flags,
            )  # fmt: skip
            return None if done == last - first else "diverged"

        # in compiled calls of fit's size, each at the thread count fit's tuner picks
        key = ("compare", net.sizes, cap, net.dtype.str, tuple(plan.flags))
        tuner = _threads.tuner(key, plan.threads)
        if _threads.run_chunks(run, n_batches, chunk_batches(net.sizes, cap), tuner):
            raise FloatingPointError("nbbackprop diverged")

    def infer(self, X) -> np.ndarray:
        net = self.net
        if self.through_fit:
            return net.feedforward(X)
        from nbbackprop.kernels import cpu_train

        cap = min(X.shape[0], 256)  # as Network.feedforward
        ws = net._workspace(cap)
        out = np.empty((X.shape[0], net.sizes[-1]), dtype=net.dtype)
        cpu_train.forward_rows(
            net.params, net._sizes, net._acts, net._w_off, net._b_off, net._a_off,
            net._z_off, X, out, ws.abuf, ws.zbuf, cap, net.plan(cap).flags,
        )  # fmt: skip
        return out

    def params(self):
        return [W.copy() for W in self.net.weights], [b.copy() for b in self.net.biases]


def _maxerr(p, q):
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    scale = np.abs(q) + np.abs(q).max()
    return float(np.max(np.abs(p - q) / np.where(scale > 0, scale, 1.0)))


def _param_err(pa, pb):
    return max(_maxerr(x, y) for x, y in zip(pa[0] + pa[1], pb[0] + pb[1], strict=True))


def gemm_ceiling(repeats: int = 5) -> dict:
    """GFLOP/s of NumPy's matmul (the BLAS it links) at two shapes and both dtypes."""
    out = {}
    rng = np.random.default_rng(0)
    for dt in ("float32", "float64"):
        for m, k, n in ((256, 784, 1024), (1024, 1024, 1024)):
            A = rng.random((m, k)).astype(dt)
            B = rng.random((k, n)).astype(dt)
            C = np.empty((m, n), dtype=dt)
            np.matmul(A, B, out=C)
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                np.matmul(A, B, out=C)
                best = min(best, time.perf_counter() - t0)
            out[f"{dt} {m}x{k}x{n}"] = 2 * m * k * n / best / 1e9
    return out


def _implementations(peer_names, strategies, with_fit):
    impls = [NbPeer(s) for s in strategies]
    if with_fit:
        impls.append(NbPeer(strategies[0], through_fit=True))
    for name in peer_names:
        cls = get_peer(name)
        if cls.available():
            impls.append(cls())
        elif name == "numpy_minibatch":
            raise RuntimeError("the NumPy reference peer must be available")
    return impls


def measure(wl, impls, repeats, idle, quiet, n, log=print) -> dict:
    """Time every implementation on workload ``wl`` (``n`` samples); see the module docstring."""
    dt = np.dtype(wl.dtype)
    X, Y = make_data(n, wl.sizes[0], wl.sizes[-1], dtype=dt, seed=0)
    W0, b0 = init_params(wl.sizes, dtype=dt, seed=1)
    ref = get_peer("numpy_minibatch")()
    ref.setup(W0, b0, dt)
    if not wl.inference_only:
        ref.train_epoch(X, Y, wl.batch_size, wl.eta)
    ref_params = ref.params()
    ref_out = ref.infer(X[:1000]) if wl.inference_only else None
    entries = []
    for p in impls:
        if p.name == "nielsen":
            continue
        p.setup(W0, b0, dt)
        Xn, Yn = p.prepare(X, None if wl.inference_only else Y)
        entries.append({"peer": p, "X": Xn, "Y": Yn, "times": [], "busy": [], "clean": []})

    def run(e):
        p = e["peer"]
        if wl.inference_only:
            return p.infer(e["X"])
        p.train_epoch(e["X"], e["Y"], wl.batch_size, wl.eta)
        return None

    for e in entries:
        p = e["peer"]
        t0 = time.perf_counter()
        out = run(e)
        log(f"  warm-up {p.name}: {time.perf_counter() - t0:.2f} s")
        if wl.inference_only:
            e["err"] = _maxerr(np.asarray(out)[:1000], ref_out) if p.same_params else None
        else:
            e["err"] = _param_err(p.params(), ref_params) if p.same_params else None
        e["agrees"] = e["err"] is None or e["err"] <= AGREE[dt]
    # Rounds until every implementation has `repeats` clean timings (other processes used
    # at most `quiet` of the machine while it ran), at most 3 * repeats rounds.
    for _ in range(3 * repeats):
        pending = [e for e in entries if len(e["clean"]) < repeats]
        if not pending:
            break
        for e in pending:
            p = e["peer"]
            p.setup(W0, b0, dt)
            gc.collect()
            wait_quiet(idle, quiet)
            before = _ticks()
            t0 = time.perf_counter()
            run(e)
            elapsed = time.perf_counter() - t0
            others = _others(before, _ticks())
            e["times"].append(elapsed)
            e["busy"].append(others)
            if others <= quiet:
                e["clean"].append(elapsed)
    results = {}
    flops = wl.flops_per_sample()
    for e in entries:
        clean = len(e["clean"]) >= max(1, repeats // 2)
        times = e["clean"] if clean else e["times"]
        med = statistics.median(times)
        results[e["peer"].name] = {
            "samples": n,
            "median_s": med,
            "best_s": min(times),
            "samples_per_s": n / med,
            "gflops": n * flops / med / 1e9,
            "times_s": e["times"],
            "others_busy": e["busy"],
            "clean_runs": len(e["clean"]),
            "noisy": not clean,
            "max_rel_err_vs_numpy": e["err"],
            "same_params": e["agrees"],
        }
    return results


def ratios(results: dict, nb_name: str) -> dict:
    """nbbackprop's samples/s over each peer's (None where a peer disagrees)."""
    nb = results[nb_name]["samples_per_s"]
    out = {}
    for name, r in results.items():
        if name.startswith("nbbackprop"):
            continue
        out[name] = nb / r["samples_per_s"] if r["same_params"] else None
    return out


def check_targets(all_results: dict, nb_name: str) -> list[dict]:
    rows = []
    for wname, peer, least in TARGETS:
        res = all_results.get(wname)
        if res is None or nb_name not in res:
            continue
        peers = {k: v for k, v in res.items() if not k.startswith("nbbackprop")}
        if peer == "fastest":
            peer = max(peers, key=lambda k: peers[k]["samples_per_s"])
        if peer not in peers:
            rows.append({"work": wname, "peer": peer, "target": least, "ratio": None})
            continue
        ratio = res[nb_name]["samples_per_s"] / peers[peer]["samples_per_s"]
        rows.append(
            {"work": wname, "peer": peer, "target": least, "ratio": ratio, "met": ratio >= least}
            | paired_ratios(res[nb_name], peers[peer])
        )
    return rows


def paired_ratios(nb: dict, peer: dict) -> dict:
    """Two readings of nbbackprop ÷ peer that a change of the machine's speed in the middle
    of a run (seen here: every implementation ~1.7× slower for a few rounds, with no other
    process on the guest) moves less than the ratio of medians: the median of the per-round
    ratios (round i of both ran back to back) and the ratio of the best times."""
    pairs = [p / n for n, p in zip(nb["times_s"], peer["times_s"], strict=False)]
    return {
        "paired": statistics.median(pairs) if pairs else None,
        "best": peer["best_s"] / nb["best_s"],
    }


def markdown(all_results, targets, ceiling, info, nb_name) -> str:
    lines = [
        f"Measured {info['date']} on {info.get('cpu', '?')} ({info.get('ncpu', '?')} CPUs), "
        f"Python {info['python']}, NumPy {info['numpy']}, Numba {info.get('numba', '-')}, "
        f"PyTorch {info.get('torch', '-')}, JAX {info.get('jax', '-')}, "
        f"scikit-learn {info.get('sklearn', '-')}. Medians of {info['repeats']} interleaved "
        "runs.",
        "",
        "| work | implementation | samples/s | GFLOP/s | nbbackprop ÷ it | params vs NumPy |",
        "|---|---|---:|---:|---:|---|",
    ]
    for wname, res in all_results.items():
        nb = res[nb_name]["samples_per_s"]
        for name, r in res.items():
            err = r["max_rel_err_vs_numpy"]
            agree = "–" if err is None else f"{err:.1e}" + ("" if r["same_params"] else " ✗")
            ratio = "" if name == nb_name else f"{nb / r['samples_per_s']:.2f}×"
            lines.append(
                f"| {wname} | {name} | {r['samples_per_s']:,.0f} | {r['gflops']:.1f} | "
                f"{ratio} | {agree} |"
            )
    lines += [
        "",
        "| target | ratio of medians | met | median of per-round ratios | ratio of best times |",
        "|---|---:|---|---:|---:|",
    ]
    for t in targets:
        ratio = "–" if t["ratio"] is None else f"{t['ratio']:.2f}×"
        met = "–" if t["ratio"] is None else ("yes" if t["met"] else "**no**")
        paired = "–" if t.get("paired") is None else f"{t['paired']:.2f}×"
        best = "–" if t.get("best") is None else f"{t['best']:.2f}×"
        lines.append(
            f"| {t['work']}: ≥ {t['target']:g}× {t['peer']} | {ratio} | {met} | {paired} | {best} |"
        )
    lines += ["", "GEMM ceiling (NumPy matmul): " + ", ".join(
        f"{k} {v:.0f} GFLOP/s" for k, v in ceiling.items()
    )]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(all_results, path, nb_name) -> bool:
    """Bar chart of samples/s relative to the NumPy reference; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    works = list(all_results)
    names = list(dict.fromkeys(n for r in all_results.values() for n in r))
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        vals = [
            all_results[w][name]["samples_per_s"]
            / all_results[w]["numpy_minibatch"]["samples_per_s"]
            if name in all_results[w]
            else 0
            for w in works
        ]
        ax.bar(np.arange(len(works)) + i * width, vals, width, label=name)
    ax.set_xticks(np.arange(len(works)) + 0.4 - width / 2, works)
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_ylabel("samples/s ÷ NumPy mini-batch")
    ax.legend(fontsize=8, ncol=2)
    ax.set_title(f"{nb_name} and peers, one process, medians")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def _thread_choices() -> list:
    """What the thread tuners (of fit and of nbbackprop[...]) ran since the last call."""
    import nbbackprop._threads as threads

    seen = [t.summary() for t in threads._tuners.values() if sum(t.chunks.values())]
    threads._tuners.clear()
    return seen


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="W1,W2,W3,W4")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--strategies", default="auto", help="nbbackprop strategies, comma-separated")
    ap.add_argument("--peers", default=",".join(DEFAULT_PEERS))
    ap.add_argument("--no-fit", action="store_true", help="skip the nbbackprop.fit row")
    ap.add_argument("--w3-samples", type=int, default=None, help="default: the workload's 16,384")
    ap.add_argument("--samples", type=int, default=None, help="override every workload's n")
    ap.add_argument("--idle", type=float, default=1.0)
    ap.add_argument("--quiet", type=float, default=0.15)
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", default=None)
    ap.add_argument("--plot", default=None)
    ap.add_argument(
        "--from-json", default=None, help="re-render --markdown/--plot from an earlier --json"
    )
    args = ap.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        nb_name = f"nbbackprop[{saved['args']['strategies'].split(',')[0]}]"
        targets = check_targets(saved["results"], nb_name)
        md = markdown(saved["results"], targets, saved["gemm_ceiling"], saved["env"], nb_name)
        print(md)
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(md)
        if args.plot and not plot(saved["results"], args.plot, nb_name):
            print("matplotlib is not installed: no plot")
        return 0

    strategies = [s for s in args.strategies.split(",") if s]
    peer_names = [p for p in args.peers.split(",") if p]
    if "numpy_minibatch" not in peer_names:
        peer_names.insert(0, "numpy_minibatch")
    unknown = [p for p in peer_names if p not in PEER_NAMES]
    if unknown:
        ap.error(f"unknown peers {unknown}; known: {', '.join(PEER_NAMES)}")
    info = versions()
    info.update(
        date=datetime.datetime.now().isoformat(timespec="minutes"),
        ncpu=__import__("os").cpu_count(),
        machine=platform.machine(),
        repeats=args.repeats,
    )
    nb_name = f"nbbackprop[{strategies[0]}]"
    print(json.dumps({k: v for k, v in info.items() if k != "threadpools"}), flush=True)
    wait_quiet(args.idle, args.quiet)
    ceiling = gemm_ceiling()
    print("GEMM ceiling:", {k: round(v, 1) for k, v in ceiling.items()}, flush=True)
    impls = _implementations(peer_names, strategies, not args.no_fit)
    all_results = {}
    for wname in args.workloads.split(","):
        wl = WORKLOADS[wname]
        n = args.samples or (args.w3_samples if wname == "W3" else None) or wl.n_samples
        print(f"{wname}: sizes {list(wl.sizes)} batch {wl.batch_size} {wl.dtype} n={n}", flush=True)
        res = measure(wl, impls, args.repeats, args.idle, args.quiet, n)
        all_results[wname] = res
        rat = ratios(res, nb_name)
        for name, r in res.items():
            err = r["max_rel_err_vs_numpy"]
            tail = "" if err is None else f"  params vs numpy {err:.1e}"
            if not r["same_params"]:
                tail += "  DIFFERENT PARAMETERS: no ratio"
            if r["noisy"]:
                tail += f"  NOISY ({r['clean_runs']} clean runs)"
            ratio = rat.get(name)
            print(
                f"  {name:22s} {r['samples_per_s']:>11,.0f} samples/s {r['gflops']:7.1f} GFLOP/s"
                + ("" if ratio is None else f"  {nb_name} = {ratio:5.2f}x this")
                + tail,
                flush=True,
            )
        print(f"  threads chosen: {_thread_choices()}", flush=True)
    targets = check_targets(all_results, nb_name)
    print("\nTargets:")
    for t in targets:
        if t["ratio"] is None:
            print(f"  {t['work']} >= {t['target']}x {t['peer']}: peer not available")
        else:
            print(
                f"  {t['work']} >= {t['target']}x {t['peer']}: {t['ratio']:.2f}x "
                + ("met" if t["met"] else f"MISSED by {t['target'] / t['ratio']:.2f}x")
                + f" (per-round median {t['paired']:.2f}x, best times {t['best']:.2f}x)"
            )
    md = markdown(all_results, targets, ceiling, info, nb_name)
    print("\n" + md)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(md)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"env": info, "args": vars(args), "gemm_ceiling": ceiling,
                 "results": all_results, "targets": targets},
                f, indent=1, default=str,
            )  # fmt: skip
    if args.plot and not plot(all_results, args.plot, nb_name):
        print("matplotlib is not installed: no plot (rerun with --from-json in an "
              "environment that has it)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
