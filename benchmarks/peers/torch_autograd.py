"""PyTorch as its users write it: ``nn.Sequential``, autograd and ``torch.optim.SGD``.

This is the textbook PyTorch training loop (``zero_grad``, forward, loss, ``backward``,
``step``) on the CPU, eager mode, ``torch.set_num_threads(2)``. The loss of a mini-batch of
``m`` samples is ``0.5 * ||Y - A||^2 / m`` (Nielsen's quadratic cost averaged over the
mini-batch), so ``SGD(lr=eta)`` applies ``w -= (eta/m) * sum_x dC_x/dw``: the same parameters
as every other peer, to rounding.

Beside it, ``torch_cpu`` is a hand-written PyTorch version (explicit matmuls, no autograd,
fused updates) that runs W1 about ten times faster than this one. This peer is the one the
issue's W1 figure for PyTorch (about 15k samples/s) describes; both are reported.
"""

from __future__ import annotations

import numpy as np

from ._base import PeerBase, as_dtype

NUM_THREADS = 2


def _torch():
    import torch

    return torch


class Peer(PeerBase):
    name = "torch_autograd"

    @classmethod
    def available(cls) -> bool:
        try:
            _torch()
        except Exception:
            return False
        return True

    def setup(self, weights, biases, dtype) -> None:
        torch = _torch()
        torch.set_num_threads(NUM_THREADS)
        self.torch = torch
        self.dtype = as_dtype(dtype)
        self.tdtype = torch.float32 if self.dtype == np.float32 else torch.float64
        layers = []
        for w, b in zip(weights, biases, strict=True):
            w = np.asarray(w)
            lin = torch.nn.Linear(w.shape[1], w.shape[0], dtype=self.tdtype)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.array(w, dtype=self.dtype)))
                lin.bias.copy_(torch.from_numpy(np.array(b, dtype=self.dtype).reshape(-1)))
            layers += [lin, torch.nn.Sigmoid()]
        self.model = torch.nn.Sequential(*layers)
        self.linears = layers[0::2]
        self.opt = None  # made by train_epoch, which knows eta

    def prepare(self, X, Y=None):
        torch = self.torch

        def conv(A):
            if A is None:
                return None
            if isinstance(A, torch.Tensor):
                return A.to(self.tdtype).contiguous()
            return torch.from_numpy(np.ascontiguousarray(A, dtype=self.dtype))

        return conv(X), conv(Y)

    def train_epoch(self, X, Y, batch_size: int, eta: float) -> None:
        torch = self.torch
        Xt, Yt = self.prepare(X, Y)
        n = Xt.shape[0]
        bs = int(batch_size)
        model = self.model
        if self.opt is None or self.opt.param_groups[0]["lr"] != float(eta):
            self.opt = torch.optim.SGD(model.parameters(), lr=float(eta))
        opt = self.opt
        for start in range(0, n, bs):
            xb, yb = Xt[start : start + bs], Yt[start : start + bs]
            opt.zero_grad()
            loss = 0.5 * ((yb - model(xb)) ** 2).sum() / xb.shape[0]
            loss.backward()
            opt.step()

    def infer(self, X) -> np.ndarray:
        torch = self.torch
        Xt, _ = self.prepare(X)
        with torch.inference_mode():
            return self.model(Xt).numpy()

    def params(self):
        return (
            [lin.weight.detach().numpy().copy() for lin in self.linears],
            [lin.bias.detach().numpy().copy() for lin in self.linears],
        )
