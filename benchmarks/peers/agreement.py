"""Self check: the same_params peers agree after one epoch from the same init.

``check_agreement()`` runs every available peer on tiny networks (both dtypes, a short last
mini-batch included) and compares its parameters and inference output with an independent,
deliberately plain float64 reference (``reference_epoch``) and with ``numpy_minibatch``. It
raises AssertionError on a mismatch and returns a report of the largest differences.

Tolerance: ``|p - q| <= rtol * (|q| + max|q_layer|)`` elementwise, rtol 1e-5 for float32 and
1e-10 for float64; the ``max|q_layer|`` term keeps parameters that happen to be near zero from
failing a pure relative test.

sklearn_mlp (``same_params = False``) is checked, in both of its output modes, against the
reference run with the rule it really computes (``peer.reference_output``: "logistic_ce" =
sigmoid output with output error ``a - y``; "identity" = linear output, error ``a - y``); that
checks the way its parameters are installed and read back, not equality with the others.

Run: ``python -m benchmarks.peers.agreement`` from the repository root.
"""

from __future__ import annotations

import numpy as np

from . import PEER_NAMES, get_peer, init_params, make_data

RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}


def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def reference_epoch(weights, biases, X, Y, batch_size, eta, output="sigmoid"):
    """One epoch in float64, loops over samples, written for clarity, not speed.

    output="sigmoid": our update rule (sigmoid output, error (a - y) * a * (1 - a)).
    output="identity": scikit-learn's MLPRegressor (linear output, error a - y).
    output="logistic_ce": sigmoid output, error a - y (cross-entropy gradient).
    """
    W = [np.array(w, dtype=np.float64) for w in weights]
    b = [np.array(v, dtype=np.float64).reshape(-1) for v in biases]
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    n = X.shape[0]
    L = len(W)
    for start in range(0, n, batch_size):
        idx = range(start, min(start + batch_size, n))
        m = len(idx)
        gW = [np.zeros_like(w) for w in W]
        gb = [np.zeros_like(v) for v in b]
        for i in idx:
            acts = [X[i]]
            for l in range(L):
                z = W[l] @ acts[-1] + b[l]
                last = l == L - 1
                acts.append(z if (last and output == "identity") else _sig(z))
            aL = acts[-1]
            d = (aL - Y[i]) * aL * (1 - aL) if output == "sigmoid" else aL - Y[i]
            for l in range(L - 1, -1, -1):
                gW[l] += np.outer(d, acts[l])
                gb[l] += d
                if l > 0:
                    d = (W[l].T @ d) * acts[l] * (1 - acts[l])
        for l in range(L):
            W[l] -= (eta / m) * gW[l]
            b[l] -= (eta / m) * gb[l]
    return W, b


def reference_infer(weights, biases, X, output="sigmoid"):
    a = np.asarray(X, dtype=np.float64)
    for l, (w, v) in enumerate(zip(weights, biases, strict=True)):
        z = a @ np.asarray(w, dtype=np.float64).T + np.asarray(v, dtype=np.float64)
        a = z if (output == "identity" and l == len(weights) - 1) else _sig(z)
    return a


def _maxerr(p, q):
    """Largest |p - q| / (|q| + max|q|) over the array."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise AssertionError(f"shape {p.shape} != {q.shape}")
    scale = np.abs(q) + np.abs(q).max()
    return float(np.max(np.abs(p - q) / np.where(scale > 0, scale, 1.0)))


#: (peer name, constructor kwargs) checked by default
VARIANTS = tuple((n, {}) for n in PEER_NAMES) + (("sklearn_mlp", {"output": "identity"}),)

OUTPUTS = ("sigmoid", "identity", "logistic_ce")

CASES = (
    # sizes, n, batch_size, eta
    ((7, 5, 4, 3), 23, 4, 3.0),  # two hidden layers, last batch short (3)
    ((12, 6, 10), 40, 10, 3.0),  # one hidden layer, exact batches
    ((9, 4), 11, 5, 0.5),  # no hidden layer, last batch of 1
)


def check_agreement(names=None, verbose: bool = True) -> dict:
    """Returns {(peer, dtype, case): max error}; raises AssertionError on a disagreement.

    ``names``: peer names to check (default: all, plus sklearn_mlp's identity mode)."""
    variants = VARIANTS if names is None else tuple((n, {}) for n in names)
    report = {}
    failures = []
    skipped = []
    for dtype in (np.float64, np.float32):
        dt = np.dtype(dtype)
        rtol = RTOL[dt]
        for ci, (sizes, n, bs, eta) in enumerate(CASES):
            X, Y = make_data(n, sizes[0], sizes[-1], dtype=dt, seed=10 + ci)
            W0, b0 = init_params(sizes, dtype=dt, seed=20 + ci)
            # The reference starts from the dtype-rounded init, so only the arithmetic differs.
            ref = {o: reference_epoch(W0, b0, X, Y, bs, eta, output=o) for o in OUTPUTS}
            ref_inf = {}
            base = None
            for name, kwargs in variants:
                cls = get_peer(name)
                if not cls.available():
                    skipped.append(name)
                    continue
                peer = cls(**kwargs)
                peer.setup(W0, b0, dt)
                output = getattr(peer, "reference_output", "sigmoid")
                label = name + "".join(f"[{k}={v}]" for k, v in kwargs.items())
                # inference before training (both are checked)
                inf0 = peer.infer(X)
                if output not in ref_inf:
                    ref_inf[output] = reference_infer(
                        W0, b0, X, "identity" if output == "identity" else "sigmoid"
                    )
                peer.train_epoch(X, Y, bs, eta)
                Wp, bp = peer.params()
                Wr, br = ref[output]
                errs = [_maxerr(inf0, ref_inf[output])]
                for l in range(len(Wr)):
                    if Wp[l].dtype != dt or bp[l].dtype != dt:
                        failures.append(
                            f"{label} {dt} case {ci}: parameters came back as "
                            f"{Wp[l].dtype}/{bp[l].dtype}"
                        )
                    errs += [_maxerr(Wp[l], Wr[l]), _maxerr(bp[l], br[l])]
                if inf0.dtype != dt:
                    failures.append(f"{label} {dt} case {ci}: infer returned {inf0.dtype}")
                if cls.same_params:
                    if base is None:
                        base = (Wp, bp)
                    else:
                        for l in range(len(Wr)):
                            errs += [_maxerr(Wp[l], base[0][l]), _maxerr(bp[l], base[1][l])]
                err = max(errs)
                report[(label, dt.name, ci)] = err
                if not err <= rtol:
                    failures.append(
                        f"{label} {dt} case {ci} {sizes}: max error {err:.3g} > "
                        f"{rtol:g} (vs {output} reference)"
                    )
    if verbose:
        for (name, dtn, ci), err in report.items():
            print(f"  {name:32s} {dtn:8s} case {ci}: max rel err {err:.2e}")
        if skipped:
            print("  not available:", ", ".join(sorted(set(skipped))))
    if failures:
        raise AssertionError("peers disagree:\n  " + "\n  ".join(failures))
    if verbose:
        print("agreement: OK")
    return report


if __name__ == "__main__":
    check_agreement()
