"""PyTorch as its users write it: ``nn.Sequential``, autograd and ``torch.optim.SGD``.

This is the textbook PyTorch training loop (``zero_grad``, forward, loss, ``backward``,
``step``) on the CPU, eager mode, ``torch.set_num_threads(2)``. The loss of a mini-batch of
``m`` samples is ``0.5 * ||Y - A||^2 / m`` (Nielsen's quadratic cost averaged over the
mini-batch), so ``SGD(lr=eta)`` applies ``w -= (eta/m) * sum_x dC_x/dw``: the same parameters
as every other peer, to rounding.

Beside it, ``torch_cpu`` is a hand-written PyTorch version (explicit matmuls, no autograd,
fused updates) that runs W1 about three times faster than this one. This peer is the one the
issue's W1 figure for PyTorch (about 15k samples/s) describes; both are reported.
"""

from __future__ import annotations

import numpy as np

from . import torch_cpu


class Peer(torch_cpu.Peer):
    """``available`` and ``prepare`` (tensors from NumPy arrays, zero-copy) are
    ``torch_cpu``'s; the model, the step and the parameters are autograd's."""

    name = "torch_autograd"

    def setup(self, weights, biases, dtype) -> None:
        self._init_torch(dtype)
        torch = self.torch
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
