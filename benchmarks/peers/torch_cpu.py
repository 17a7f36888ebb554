"""PyTorch eager on the CPU, explicit forward/backward matmuls (no autograd graph).

``torch.set_num_threads(2)`` (the machine has 2 cores; set ``NUM_THREADS`` before ``setup`` to
change it). Inference mode, no autograd graph. Data given as NumPy arrays are wrapped zero-copy
(torch.from_numpy).

Weight update: for layers with >= ``FUSE_MIN`` (4096) weights it is fused into the gradient GEMM,
``W.addmm_(D.T, A, alpha=-eta/m)`` (beta = 1, no gradient materialised: 40 vs 66-74 us per W2
hidden-layer step here). For the small layers it is ``W.add_(torch.mm(D.T, A, out=G), alpha)``:
on small shapes torch's addmm_ adds the products into W with a larger rounding error (5x
NumPy's on the 10x100 output layer of W2 in float32), and over a 50,000-sample W2 epoch at
eta = 3 the fused-everywhere version drifted 1e-4 (relative to each layer's largest parameter)
from NumPy's, against 1.4e-6 with this rule (NumPy itself is 1.4e-6 from a float64 run).
"""

from __future__ import annotations

import numpy as np

from ._base import PeerBase, as_dtype

NUM_THREADS = 2
#: layers with at least this many weights get the fused update ``W.addmm_(D.T, A, alpha)``
FUSE_MIN = 4096


def _torch():
    import torch

    return torch


class Peer(PeerBase):
    name = "torch_cpu"

    @classmethod
    def available(cls) -> bool:
        try:
            _torch()
        except Exception:
            return False
        return True

    def _init_torch(self, dtype) -> None:
        """torch's thread count and this peer's NumPy and torch dtypes."""
        torch = _torch()
        torch.set_num_threads(NUM_THREADS)
        self.torch = torch
        self.dtype = as_dtype(dtype)
        self.tdtype = torch.float32 if self.dtype == np.float32 else torch.float64

    def setup(self, weights, biases, dtype) -> None:
        self._init_torch(dtype)
        torch = self.torch
        self.W = [torch.tensor(np.asarray(w), dtype=self.tdtype).contiguous() for w in weights]
        self.b = [torch.tensor(np.asarray(b).reshape(-1), dtype=self.tdtype) for b in biases]
        # weight-gradient buffers, only for the small layers that are not updated fused
        self.G = [None if w.numel() >= FUSE_MIN else torch.empty_like(w) for w in self.W]

    def prepare(self, X, Y=None):
        torch = self.torch

        def conv(A):
            if A is None:
                return None
            if isinstance(A, torch.Tensor):
                return A.to(self.tdtype).contiguous()
            return torch.from_numpy(np.ascontiguousarray(A, dtype=self.dtype))

        return conv(X), conv(Y)

    def _step(self, xb, yb, eta: float) -> None:
        torch = self.torch
        W, b, G = self.W, self.b, self.G
        L = len(W) - 1
        acts = [xb]
        a = xb
        for l in range(L + 1):
            a = torch.addmm(b[l], a, W[l].t()).sigmoid_()
            acts.append(a)
        aL = acts[-1]
        d = (aL - yb).mul_(aL).mul_(1 - aL)
        alpha = -eta / xb.shape[0]
        for l in range(L, -1, -1):
            if l > 0:
                ap = acts[l]
                dp = (d @ W[l]).mul_(ap).mul_(1 - ap)  # uses W_l before its update
            if G[l] is None:  # fused: W += alpha * D.T @ A in one GEMM (beta = 1)
                W[l].addmm_(d.t(), acts[l], alpha=alpha)
            else:
                W[l].add_(torch.mm(d.t(), acts[l], out=G[l]), alpha=alpha)
            b[l].add_(d.sum(0), alpha=alpha)
            if l > 0:
                d = dp

    def train_epoch(self, X, Y, batch_size: int, eta: float) -> None:
        torch = self.torch
        Xt, Yt = self.prepare(X, Y)
        n = Xt.shape[0]
        bs = int(batch_size)
        eta = float(eta)
        with torch.inference_mode():
            for start in range(0, n, bs):
                self._step(Xt[start : start + bs], Yt[start : start + bs], eta)

    def infer(self, X) -> np.ndarray:
        torch = self.torch
        Xt, _ = self.prepare(X)
        with torch.inference_mode():
            a = Xt
            for w, b in zip(self.W, self.b, strict=True):
                a = torch.addmm(b, a, w.t()).sigmoid_()
        return a.numpy()

    def params(self):
        return ([w.numpy().copy() for w in self.W], [b.numpy().copy() for b in self.b])
