#!/usr/bin/env python
"""Check and time nbbackprop's CUDA kernels on a real NVIDIA GPU (docs/cuda.md).

Three parts, a short table each:

1. *kernels*: compiles every CUDA kernel (both dtypes) and compares it with its CPU
   twin on small odd shapes;
2. *strategies*: trains a few epochs with every GPU strategy ("layered", "fused")
   and compares parameters and costs with the CPU run;
3. *timing* (real GPU only): one epoch of a small, a medium and a wide network,
   each GPU strategy against the CPU and against PyTorch CUDA when installed,
   plus the per-step overhead figure that sets ``AUTO_CUDA_MIN_MACS``.

Sized to finish in under 5 minutes on one GPU. ``--simulate`` runs parts 1 and 2
under NVIDIA's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) on tiny sizes, so the
script can be checked on a machine without a GPU; timing is skipped there.
``--ptx`` compiles every kernel to PTX with NVVM for the argument types the
drivers pass, which needs NVVM and NVRTC (``pip install nvidia-nvvm
nvidia-cuda-nvrtc``, with their ``lib`` folder on ``LD_LIBRARY_PATH``) but no GPU:
the simulator checks no types, this does.

    python benchmarks/gpu_check.py              # on a GPU machine
    python benchmarks/gpu_check.py --simulate   # anywhere, correctness only
    python benchmarks/gpu_check.py --ptx        # anywhere with NVVM: does it compile?

Exit status: 0 when every check passes, 1 when one fails, 2 when no GPU is usable.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

#: (name, sizes, batch size, samples) of the timed workloads (PERFORMANCE-NOTES W1-W3).
WORKLOADS = [
    ("small", [784, 30, 10], 10, 10_000),
    ("medium", [784, 100, 10], 32, 20_000),
    ("wide", [784, 1024, 1024, 10], 256, 10_000),
]
RTOL = {"float64": 1e-9, "float32": 1e-4}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--simulate",
        action="store_true",
        help="run the correctness parts under NUMBA_ENABLE_CUDASIM=1 on tiny sizes",
    )
    p.add_argument("--no-timing", action="store_true", help="skip part 3")
    p.add_argument(
        "--ptx",
        action="store_true",
        help="only compile every kernel to PTX (needs NVVM and NVRTC, no GPU)",
    )
    p.add_argument("--cc", default="8.0", help="compute capability for --ptx (default 8.0)")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per measurement")
    return p.parse_args(argv)  # fmt: skip


def rel_err(a, b):
    """max |a - b| / (1 + |b|): relative for large values, absolute near zero."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / (1.0 + np.abs(b)))) if a.size else 0.0


def check_kernels(rng, simulate: bool) -> list[tuple]:
    """Every twin against its CPU twin; returns (kernel, dtype, max rel err, ok, seconds)."""
    shape = (5, 7, 4) if simulate else (37, 53, 29)
    rows: list[tuple] = []
    for dtype in ("float64", "float32"):
        _check_kernels_of(rng, dtype, *shape, rows)
    return rows


def _check_kernels_of(rng, dtype: str, m: int, n_in: int, n_out: int, rows: list) -> None:
    import numpy as np
    from numba import cuda

    from nbbackprop import functions as fn
    from nbbackprop.kernels import cpu
    from nbbackprop.kernels import cuda as kc

    dt = np.dtype(dtype)
    d = cuda.to_device
    W = rng.standard_normal((n_out, n_in)).astype(dt)
    b = rng.standard_normal(n_out).astype(dt)
    A = rng.random((m, n_in)).astype(dt)
    Y = np.eye(n_out, dtype=dt)[rng.integers(0, n_out, m)]
    D = rng.standard_normal((m, n_out)).astype(dt)
    P = 41
    p0, g0 = rng.standard_normal(P).astype(dt), rng.standard_normal(P).astype(dt)

    def run(name, cpu_fn, gpu_fn, outs):
        """Run both twins on fresh copies of ``outs`` and compare every output."""
        t = time.perf_counter()
        host = [o.copy() for o in outs]
        cpu_fn(*host)
        dev = [d(o) for o in outs]
        gpu_fn(*dev)
        got = [x.copy_to_host() for x in dev]
        err = max(rel_err(g, h) for g, h in zip(got, host, strict=True))
        rows.append((name, dtype, err, err <= 10 * RTOL[dtype], time.perf_counter() - t))

    zz = [np.zeros((m, n_out), dt), np.zeros((m, n_out), dt)]
    for act, code in fn.ACTIVATIONS.items():
        run(f"weighted_sums[{act}]",
            lambda z, a, c=code: cpu.weighted_sums_serial(W, b, A, z, a, c),
            lambda z, a, c=code: kc.weighted_sums(d(W), d(b), d(A), z, a, c), zz)  # fmt: skip
    a_out = np.zeros((m, n_out), dt)
    cpu.weighted_sums_serial(W, b, A, np.zeros((m, n_out), dt), a_out, fn.SIGMOID)
    for cost, code in fn.COSTS.items():
        act = fn.ACTIVATIONS[fn.COST_OUTPUTS[cost][0]]
        run(f"output_delta[{cost}]",
            lambda dl, c, k=code, s=act: cpu.output_delta_serial(a_out, Y, dl, c, s, k),
            lambda dl, c, k=code, s=act: kc.output_delta(d(a_out), d(Y), dl, c, s, k),
            [np.zeros((m, n_out), dt), np.zeros(m)])  # fmt: skip
    run("hidden_delta", lambda o: cpu.hidden_delta_serial(W, D, A, o, fn.TANH),
        lambda o: kc.hidden_delta(d(W), d(D), d(A), o, fn.TANH),
        [np.zeros((m, n_in), dt)])  # fmt: skip
    run("weight_grads", lambda o: cpu.weight_grads_serial(D, A, o),
        lambda o: kc.weight_grads(d(D), d(A), o), [np.zeros((n_out, n_in), dt)])  # fmt: skip
    run("bias_grads", lambda o: cpu.bias_grads_serial(D, o),
        lambda o: kc.bias_grads(d(D), o), [np.zeros(n_out, dt)])  # fmt: skip
    state = [p0, g0 * 0.5, np.abs(g0)]  # parameters, first and second moments
    h = (0.3, 0.25, 0.01, 30)  # eta, 1/m, l2, n_w
    run("sgd_update", lambda p, v, s: cpu.sgd_update_serial(p, g0, *h),
        lambda p, v, s: kc.sgd_update(p, d(g0), *h), state)  # fmt: skip
    run("momentum_update",
        lambda p, v, s: cpu.momentum_update_serial(p, g0, v, *h, 0.9, True),
        lambda p, v, s: kc.momentum_update(p, d(g0), v, *h, 0.9, True), state)  # fmt: skip
    run("adam_update",
        lambda p, v, s: cpu.adam_update_serial(p, g0, v, s, *h, 0.9, 0.999, 1e-8, 3),
        lambda p, v, s: kc.adam_update(p, d(g0), v, s, *h, 0.9, 0.999, 1e-8, 3), state)  # fmt: skip


def ptx_signatures(dtype: str) -> list[tuple[str, object, tuple]]:
    """(name, kernel dispatcher, argument types) for every kernel, as the drivers launch them."""
    import numpy as np
    from numba import from_dtype, types

    from nbbackprop.kernels import cuda as kc

    f = from_dtype(np.dtype(dtype))
    A1, A2 = types.Array(f, 1, "C"), types.Array(f, 2, "C")
    F1, I1 = types.Array(types.float64, 1, "C"), types.Array(types.int64, 1, "C")
    i, x, b = types.int64, types.float64, types.boolean
    ws, hd, wg, fused = kc._build(dtype, kc.TILE)
    return [
        ("weighted_sums", ws, (A2, A1, A2, A2, A2, i)),
        ("hidden_delta", hd, (A2, A2, A2, A2, i)),
        ("weight_grads", wg, (A2, A2, A2)),
        ("fused_backprop", fused, (A1, I1, I1, I1, I1, I1, A2, A2, I1, i, i, i, i, A2, F1)),
        ("softmax_rows", kc._softmax_rows, (A2, A2)),
        ("output_delta", kc._output_delta, (A2, A2, A2, F1, i, i)),
        ("bias_grads", kc._bias_grads, (A2, A1)),
        ("sgd_update", kc._sgd_update, (A1, A1, x, x, x, i, I1)),
        ("momentum_update", kc._momentum_update, (A1, A1, A1, x, x, x, i, x, b, I1)),
        ("adam_update", kc._adam_update, (A1, A1, A1, A1, x, x, x, i, x, x, x, i, I1)),
        ("gather_rows", kc._gather_rows, (A2, I1, i, A2)),
        ("record_cost", kc._record_cost, (F1, i, F1, i, I1)),
        ("fused_update", kc.fused_update,
         (A1, A2, i, F1, i, F1, i, I1, A1, A1, i, x, x, i, x, x, x, x, i)),
    ]  # fmt: skip


def check_ptx(cc: tuple[int, int]) -> list[tuple]:
    """Compile every kernel to PTX for ``cc``; returns (kernel, dtype, PTX lines, ok, s)."""
    import types as pytypes

    from numba import cuda
    from numba.cuda import dispatcher

    # Device functions (σ, σ', the optimiser steps...) compile for the "current device";
    # without a GPU, tell them the compute capability asked for. Nothing is launched.
    fake = pytypes.SimpleNamespace(compute_capability=cc)
    dispatcher.get_current_device = lambda: fake
    rows = []
    for dtype in ("float64", "float32"):
        for name, kernel, sig in ptx_signatures(dtype):
            t = time.perf_counter()
            try:
                ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=cc)
                rows.append((name, dtype, str(ptx.count("\n")), True, time.perf_counter() - t))
            except Exception as exc:  # report every failure, not only the first
                msg = " ".join(str(exc).split())[:300]
                rows.append((name, dtype, f"{type(exc).__name__}: {msg}", False, 0.0))
    return rows


def check_strategies(rng, simulate: bool) -> list[tuple]:
    """A short fit per GPU strategy against the CPU; returns (case, strategy, err, ok, s)."""
    import nbbackprop as nb

    cases = [
        ("sigmoid quadratic sgd", dict(), "sgd"),
        ("relu softmax log-likelihood adam",
         dict(activation="relu", cost="log_likelihood"), "adam"),
        ("tanh sigmoid cross-entropy nesterov",
         dict(activation="tanh", output_activation="sigmoid", cost="cross_entropy"), "nesterov"),
    ]  # fmt: skip
    sizes, n, batch, epochs = ([5, 4, 3], 7, 3, 1) if simulate else ([20, 33, 17, 10], 300, 16, 3)
    X = rng.random((n, sizes[0]))
    labels = rng.integers(0, sizes[-1], n)
    rows = []
    for dtype in ("float64", "float32"):
        for label, kw, opt in cases:
            eta = 0.05 if opt == "adam" else 0.5
            fit = dict(epochs=epochs, batch_size=batch, eta=eta, seed=0, optimizer=opt)
            cpu_net = nb.Network(sizes, dtype=dtype, seed=1, device="cpu", **kw)
            h_cpu = cpu_net.fit(X, labels, **fit)
            out_cpu = cpu_net.feedforward(X)
            for strategy in ("layered", "fused"):
                t = time.perf_counter()
                net = nb.Network(sizes, dtype=dtype, seed=1, device="cuda", **kw)
                h = net.fit(X, labels, strategy=strategy, **fit)
                err = max(rel_err(net.params, cpu_net.params),
                          rel_err(h["train_cost"], h_cpu["train_cost"]),
                          rel_err(net.feedforward(X), out_cpu))  # fmt: skip
                ok = err <= 100 * RTOL[dtype]  # a few epochs of training amplify rounding
                rows.append((f"{label} {dtype}", strategy, err, ok, time.perf_counter() - t))
    return rows


def torch_epoch_seconds(sizes, X, labels, batch, eta, epochs):
    """Seconds per epoch of the same network in PyTorch CUDA (float32), or None."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    dev = torch.device("cuda")
    layers = []
    for i in range(len(sizes) - 1):
        layers += [torch.nn.Linear(sizes[i], sizes[i + 1]), torch.nn.Sigmoid()]
    model = torch.nn.Sequential(*layers).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=eta)
    Xt = torch.as_tensor(X, dtype=torch.float32, device=dev)
    Yt = torch.nn.functional.one_hot(torch.as_tensor(labels, device=dev), sizes[-1]).float()
    n = Xt.shape[0]

    def epoch():
        perm = torch.randperm(n, device=dev)
        for s in range(0, n, batch):
            idx = perm[s : s + batch]
            out = model(Xt[idx])
            loss = 0.5 * ((out - Yt[idx]) ** 2).sum() / idx.shape[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    epoch()  # warm-up
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(epochs):
        epoch()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / epochs


def timing(rng, epochs: int) -> list[tuple]:
    """Seconds per epoch per workload and implementation."""
    import nbbackprop as nb
    from nbbackprop import orchestration

    rows = []
    for name, sizes, batch, n in WORKLOADS:
        X = rng.random((n, sizes[0])).astype("float32")
        labels = rng.integers(0, sizes[-1], n)
        results = {}
        strategies = ["layered"]
        if orchestration.fused_samples(sizes, 4, batch)[0]:
            strategies.append("fused")
        for strategy in strategies:
            net = nb.Network(sizes, dtype="float32", seed=0, device="cuda")
            net.fit(X[:batch * 4], labels[:batch * 4], epochs=1, batch_size=batch,
                    strategy=strategy)  # fmt: skip  # compile outside the timer
            t = time.perf_counter()
            net.fit(X, labels, epochs=epochs, batch_size=batch, eta=0.5, strategy=strategy)
            results[f"cuda {strategy}"] = (time.perf_counter() - t) / epochs
        auto = nb.Network(sizes, dtype="float32", device="cpu").plan(batch).layers[0].variant
        cpu_net = nb.Network(sizes, dtype="float32", seed=0, device="cpu")
        cpu_net.fit(X[: batch * 4], labels[: batch * 4], epochs=1, batch_size=batch)
        cpu_epochs = 1 if name == "wide" else epochs
        t = time.perf_counter()
        cpu_net.fit(X, labels, epochs=cpu_epochs, batch_size=batch, eta=0.5)
        results[f"cpu ({auto})"] = (time.perf_counter() - t) / cpu_epochs
        torch_s = torch_epoch_seconds(sizes, X, labels, batch, 0.5, epochs)
        if torch_s is not None:
            results["pytorch cuda"] = torch_s
        for impl, s in results.items():
            rows.append((name, f"{sizes} b{batch}", impl, s, n / s, torch_s))
    return rows


def per_step_overhead(rng) -> tuple[float, float]:
    """Seconds per mini-batch step of a [2, 2] network: launch overhead, not arithmetic."""
    import nbbackprop as nb

    X = rng.random((2000, 2)).astype("float32")
    labels = rng.integers(0, 2, 2000)
    out = []
    for strategy in ("layered", "fused"):
        net = nb.Network([2, 2], seed=0, device="cuda")
        net.fit(X[:20], labels[:20], epochs=1, batch_size=2, strategy=strategy)
        t = time.perf_counter()
        net.fit(X, labels, epochs=1, batch_size=2, strategy=strategy)
        out.append((time.perf_counter() - t) / 1000)
    return out[0], out[1]


def table(title, header, rows, fmt):
    print(f"\n## {title}")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for r in rows:
        print(" | ".join(f(x) for f, x in zip(fmt, r, strict=True)))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.ptx:
        cc = tuple(int(c) for c in args.cc.split("."))
        rows = check_ptx(cc)
        table(f"PTX for compute capability {args.cc}", ["kernel", "dtype", "PTX lines", "ok", "s"],
              rows, [str, str, str, str, "{:.2f}".format])  # fmt: skip
        ok = all(r[3] for r in rows)
        print(f"\n{'every kernel compiles' if ok else 'SOME KERNELS DO NOT COMPILE'}")
        return 0 if ok else 1
    if args.simulate:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"  # before numba is imported
    import numpy as np

    from nbbackprop import devices

    status = devices.cuda_status()
    print(f"gpu_check: {status}")
    if not status.usable:
        print("no usable CUDA device; run with --simulate to check the kernels without one")
        return 2
    if status.simulated != args.simulate:
        print("the simulator is on (NUMBA_ENABLE_CUDASIM) without --simulate, or the reverse")
        return 2
    if args.simulate:
        from nbbackprop import orchestration
        from nbbackprop.kernels import cuda as kc

        # Tiny blocks so the tiny arrays span several of them, as in tests/cuda.
        kc.THREADS_PER_BLOCK, kc.TILE, kc.MAX_BLOCKS, kc.FUSED_THREADS = 4, 3, 2, 8
        orchestration.FUSED_MAX_SAMPLES = 2
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    s = str
    k_rows = check_kernels(rng, args.simulate)
    table("kernels: CUDA vs CPU twin", ["kernel", "dtype", "max err", "ok", "s"], k_rows,
          [s, s, "{:.1e}".format, s, "{:.2f}".format])  # fmt: skip
    s_rows = check_strategies(rng, args.simulate)
    table("strategies: fit on the GPU vs the CPU", ["case", "strategy", "max err", "ok", "s"],
          s_rows, [s, s, "{:.1e}".format, s, "{:.2f}".format])  # fmt: skip
    ok = all(r[3] for r in k_rows + s_rows)
    if args.simulate or args.no_timing:
        print("\ntiming skipped" + (" (simulator)" if args.simulate else ""))
    else:
        layered, fused = per_step_overhead(rng)
        print(f"\nper-step overhead ([2, 2] network, batch 2): layered {layered * 1e6:.0f} us, "
              f"fused {fused * 1e6:.0f} us")  # fmt: skip
        t_rows = timing(rng, args.epochs)

        def vs(x):
            return "-" if x is None else f"{x:.3g}"

        rows = [(a, b, c, d, e, None if f is None else f / d) for a, b, c, d, e, f in t_rows]
        table("timing: seconds per epoch (float32)",
              ["workload", "network", "implementation", "s/epoch", "samples/s", "speed vs pytorch"],
              rows, [s, s, s, "{:.3f}".format, "{:,.0f}".format, vs])  # fmt: skip
    print(f"\n{'all checks passed' if ok else 'SOME CHECKS FAILED'} "
          f"in {time.perf_counter() - t0:.0f} s")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
