"""Mini-batch backpropagation in matrix form with NumPy (BLAS through np.matmul).

Rows are samples, so a layer is ``Z = A_prev @ W.T + b`` (W.T is a free transposed view: BLAS
gets a transpose flag, no copy). Every per-batch array is preallocated once per batch size and
written with ``out=``; the dtype given to ``setup`` is kept (float32 stays float32: Python
scalars do not promote under NEP 50).

Per mini-batch of size m (layer l = 0..L-1, A_{-1} = X_batch):
  forward  A_l = sigmoid(A_{l-1} @ W_l.T + b_l)
  output   D_L = (A_L - Y) * A_L * (1 - A_L)
  backward D_{l-1} = (D_l @ W_l) * A_{l-1} * (1 - A_{l-1})   (with the OLD W_l)
  update   D_l *= -eta/m;  W_l += D_l.T @ A_{l-1};  b_l += sum_rows(D_l)
Scaling D (m x n_out) instead of the gradient (n_out x n_in) is the cheaper place for eta/m.
"""

from __future__ import annotations

import numpy as np

from ._base import PeerBase, as_dtype


def _sigmoid_inplace(Z: np.ndarray) -> np.ndarray:
    np.negative(Z, out=Z)
    np.exp(Z, out=Z)  # may overflow to inf for very negative z: 1/(1+inf) = 0, as intended
    Z += 1
    np.reciprocal(Z, out=Z)
    return Z


class Peer(PeerBase):
    name = "numpy_minibatch"

    def setup(self, weights, biases, dtype) -> None:
        self.dtype = as_dtype(dtype)
        self.W = [np.array(w, dtype=self.dtype, order="C", copy=True) for w in weights]
        self.b = [np.array(b, dtype=self.dtype, copy=True).reshape(-1) for b in biases]
        for w, b in zip(self.W, self.b, strict=True):
            if w.shape[0] != b.shape[0]:
                raise ValueError("weights[l] must be (n_out, n_in) and biases[l] (n_out,)")
        self.sizes = [self.W[0].shape[1]] + [w.shape[0] for w in self.W]
        # gradient-of-weight buffers do not depend on the batch size
        self._G = [np.empty_like(w) for w in self.W]
        self._gb = [np.empty_like(b) for b in self.b]
        self._bufs: dict[int, tuple] = {}

    def _buffers(self, m: int):
        bufs = self._bufs.get(m)
        if bufs is None:
            dt = self.dtype
            A = [np.empty((m, n), dtype=dt) for n in self.sizes[1:]]
            D = [np.empty((m, n), dtype=dt) for n in self.sizes[1:]]
            T = [np.empty((m, n), dtype=dt) for n in self.sizes[1:]]
            bufs = self._bufs[m] = (A, D, T)
        return bufs

    def _step(self, xb: np.ndarray, yb: np.ndarray, eta: float) -> None:
        m = xb.shape[0]
        A, D, T = self._buffers(m)
        W, b, G, gb = self.W, self.b, self._G, self._gb
        L = len(W) - 1

        a = xb
        for l in range(L + 1):
            np.matmul(a, W[l].T, out=A[l])
            A[l] += b[l]
            a = _sigmoid_inplace(A[l])

        d = D[L]
        np.subtract(A[L], yb, out=d)
        d *= A[L]
        np.subtract(1, A[L], out=T[L])
        d *= T[L]

        scale = self.dtype.type(-eta / m)
        for l in range(L, -1, -1):
            if l > 0:
                dp = D[l - 1]
                np.matmul(D[l], W[l], out=dp)  # uses W_l before its update
                dp *= A[l - 1]
                np.subtract(1, A[l - 1], out=T[l - 1])
                dp *= T[l - 1]
                a_prev = A[l - 1]
            else:
                a_prev = xb
            D[l] *= scale
            np.matmul(D[l].T, a_prev, out=G[l])
            W[l] += G[l]
            np.add.reduce(D[l], axis=0, out=gb[l])
            b[l] += gb[l]

    def train_epoch(self, X, Y, batch_size: int, eta: float) -> None:
        X, Y = self.prepare(X, Y)
        n = X.shape[0]
        bs = int(batch_size)
        with np.errstate(over="ignore"):
            for start in range(0, n, bs):
                stop = start + bs
                self._step(X[start:stop], Y[start:stop], eta)

    def infer(self, X) -> np.ndarray:
        X, _ = self.prepare(X)
        a = X
        with np.errstate(over="ignore"):
            for w, b in zip(self.W, self.b, strict=True):
                z = a @ w.T
                z += b
                a = _sigmoid_inplace(z)
        return a

    def params(self):
        return [w.copy() for w in self.W], [b.copy() for b in self.b]

    def close(self) -> None:
        self._bufs.clear()
