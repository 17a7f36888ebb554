"""Host-side drivers that string the CUDA kernels together.

The GPU twin of :mod:`nbbackprop.kernels.cpu_train`, with the same buffer layout
(``params`` flat, all weights then all biases; ``abuf``/``zbuf``/``dbuf`` holding
layer l's rows at ``cap * a_off[l]`` / ``cap * z_off[l]``). The driver is Python
that launches kernels; kernel launches are asynchronous, so the host runs ahead
and only waits where it copies something back.

:class:`Trainer` keeps everything of a ``fit`` on the device: the parameters,
the optimiser state, the buffers and the whole data set are copied in once; each
epoch uploads its sample order (n int64) and downloads the mini-batch costs and a
divergence flag, nothing per mini-batch. Two strategies (chosen by
:func:`nbbackprop.orchestration.plan_cuda`):

``layered``
    per mini-batch: :func:`~nbbackprop.kernels.cuda.gather_rows` of inputs and
    targets, then the per-layer twins (tiled ``weighted_sums``, ``output_delta``,
    tiled ``weight_grads``, ``bias_grads``, tiled ``hidden_delta``),
    ``record_cost`` and the update twin;
``fused``
    per mini-batch: ``fused_backprop`` (one block per tile of samples, activations
    in shared memory, gather folded in) and ``fused_update`` (sums the tiles'
    gradients and updates).

A mini-batch whose cost is not finite sets a flag on the device that makes every
later update a no-op, so the parameters are those from before it, as on the CPU;
the host sees the flag at the end of the epoch and ``fit`` raises.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from .. import functions as fn
from .. import orchestration
from . import cuda as k

SGD, MOMENTUM, NESTEROV, ADAM = k.SGD, k.MOMENTUM, k.NESTEROV, k.ADAM


def _layers(flat, sizes, w_off, b_off):
    """Views ``W[l]``, ``b[l]`` into a flat device buffer of parameters (or gradients)."""
    W, b = [], []
    for l in range(len(sizes) - 1):
        n_in, n_out = sizes[l], sizes[l + 1]
        o = int(w_off[l])
        W.append(flat[o : o + n_out * n_in].reshape(n_out, n_in))
        o = int(b_off[l])
        b.append(flat[o : o + n_out])
    return W, b


class Rows:
    """Views of ``m`` rows of each layer's a, z and δ in a :class:`DeviceBuffers`."""

    def __init__(self, buf: DeviceBuffers, m: int):
        sizes, cap = buf.sizes, buf.cap
        a_off = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        z_off = np.concatenate([[0], np.cumsum(sizes[1:])[:-1]])

        def rows(flat, start, n):
            return flat[start : start + m * n].reshape(m, n)

        self.a = [rows(buf.abuf, cap * int(a_off[l]), n) for l, n in enumerate(sizes)]
        self.z = [rows(buf.zbuf, cap * int(z_off[l]), n) for l, n in enumerate(sizes[1:])]
        self.d = [rows(buf.dbuf, cap * int(z_off[l]), n) for l, n in enumerate(sizes[1:])]
        self.y = rows(buf.ybuf, 0, sizes[-1])
        self.costs = buf.costs[:m]


class DeviceBuffers:
    """a, z, δ, targets, costs and gradients for mini-batches of up to ``cap`` rows, on the GPU."""

    def __init__(self, net, cap: int):
        sizes = tuple(int(s) for s in net.sizes)
        self.sizes, self.cap = sizes, cap
        dt = net.dtype
        self.abuf = cuda.device_array(cap * sum(sizes), dtype=dt)
        self.zbuf = cuda.device_array(cap * sum(sizes[1:]), dtype=dt)
        self.dbuf = cuda.device_array(cap * sum(sizes[1:]), dtype=dt)
        self.ybuf = cuda.device_array(cap * sizes[-1], dtype=dt)
        self.costs = cuda.device_array(cap, dtype=np.float64)
        self.grads = cuda.device_array(net.n_params, dtype=dt)
        self._rows: dict[int, Rows] = {}

    def rows(self, m: int) -> Rows:
        r = self._rows.get(m)
        if r is None:
            r = self._rows[m] = Rows(self, m)
        return r


def forward(W, b, acts, r: Rows) -> None:
    """Equations (1)–(3) for every layer; ``r.a[0]`` holds the inputs."""
    for l in range(len(W)):
        k.weighted_sums(W[l], b[l], r.a[l], r.z[l], r.a[l + 1], acts[l])


def backward(W, nabla_w, nabla_b, acts, cost, r: Rows) -> None:
    """BP1, then BP2–BP4 layer by layer downwards (the order of ``cpu_train._backward``)."""
    L = len(W)
    k.output_delta(r.a[L], r.y, r.d[L - 1], r.costs, acts[L - 1], cost)
    for l in range(L - 1, -1, -1):
        k.weight_grads(r.d[l], r.a[l], nabla_w[l])
        k.bias_grads(r.d[l], nabla_b[l])
        if l > 0:
            k.hidden_delta(W[l], r.d[l], r.a[l], r.d[l - 1], acts[l - 1])


def _layout(net):
    return tuple(int(s) for s in net.sizes), [int(a) for a in net._acts]


def feedforward(net, X: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Output activations for the rows of ``X``, computed on the GPU ``chunk`` rows at a time."""
    sizes, acts = _layout(net)
    n = X.shape[0]
    cap = min(n, chunk)
    d_params = cuda.to_device(net.params)
    W, b = _layers(d_params, sizes, net._w_off, net._b_off)
    buf = DeviceBuffers(net, cap)
    out = np.empty((n, sizes[-1]), dtype=net.dtype)
    for start in range(0, n, cap):
        m = min(cap, n - start)
        r = buf.rows(m)
        r.a[0].copy_to_device(np.ascontiguousarray(X[start : start + m]))
        forward(W, b, acts, r)
        out[start : start + m] = r.a[-1].copy_to_host()
    return out


def batch_gradients(net, X: np.ndarray, Y: np.ndarray, grads: np.ndarray) -> float:
    """Forward and backward over all rows of ``X`` as one batch on the GPU.

    ``grads`` (host, layout of ``params``) receives the gradients summed over the
    rows; returns Σ_x C_x.
    """
    sizes, acts = _layout(net)
    m = X.shape[0]
    d_params = cuda.to_device(net.params)
    W, b = _layers(d_params, sizes, net._w_off, net._b_off)
    buf = DeviceBuffers(net, m)
    nabla_w, nabla_b = _layers(buf.grads, sizes, net._w_off, net._b_off)
    r = buf.rows(m)
    r.a[0].copy_to_device(X)
    r.y.copy_to_device(Y)
    forward(W, b, acts, r)
    backward(W, nabla_w, nabla_b, acts, fn.COSTS[net.cost_name], r)
    buf.grads.copy_to_host(grads)
    costs = r.costs.copy_to_host()
    total = 0.0
    for c in costs:  # in sample order, as the CPU driver sums
        total += float(c)
    return total


class Trainer:
    """One ``fit`` on the GPU: device copies of everything, one epoch per :meth:`epoch` call.

    Parameters
    ----------
    net : Network
        Its ``params``, ``opt_state`` and ``step`` are read now and written back by
        :meth:`sync` (parameters) and :meth:`close` (everything), in place, so the
        ``weights``/``biases`` views stay valid.
    X, Y : ndarray
        The training set, C-contiguous in the network's dtype.
    batch_size : int
    opt : int
        Optimiser code (``SGD``, ``MOMENTUM``, ``NESTEROV``, ``ADAM``).
    fused : bool
        Run the fused kernel (else the per-layer kernels).
    """

    def __init__(self, net, X, Y, batch_size: int, opt: int, fused: bool):
        self.net = net
        self.sizes, self.acts = _layout(net)
        self.n = X.shape[0]
        self.batch_size = batch_size
        self.cap = min(batch_size, self.n)
        self.n_batches = -(-self.n // batch_size)
        self.opt = opt
        self.hyper = (0.0,) * 6
        self.cost = fn.COSTS[net.cost_name]
        self.n_w = int(net.n_weights)
        dt = net.dtype
        self.params = cuda.to_device(net.params)
        rows = net.opt_state.shape[0]
        self.state = cuda.to_device(net.opt_state) if rows else None
        dummy = cuda.device_array(1, dtype=dt)
        self.m1 = self.state[0] if rows >= 1 else dummy
        self.m2 = self.state[1] if rows >= 2 else dummy
        self.X = cuda.to_device(X)
        self.Y = cuda.to_device(Y)
        self.order = cuda.device_array(self.n, dtype=np.int64)
        self.batch_costs = cuda.device_array(self.n_batches, dtype=np.float64)
        self.status = cuda.to_device(np.zeros(1, dtype=np.int64))
        self.costs = cuda.device_array(self.cap, dtype=np.float64)
        self.fused = fused
        if fused:
            S, why = orchestration.fused_samples(self.sizes, dt.itemsize, self.cap)
            if not S:
                raise ValueError(f"the fused kernel cannot run this network: {why}")
            self.S = S
            self.partials = cuda.device_array((-(-self.cap // S), net.n_params), dtype=dt)
            self.d_sizes = cuda.to_device(np.asarray(self.sizes, dtype=np.int64))
            self.d_acts = cuda.to_device(np.asarray(self.acts, dtype=np.int64))
            self.d_w_off = cuda.to_device(np.asarray(net._w_off, dtype=np.int64))
            self.d_b_off = cuda.to_device(np.asarray(net._b_off, dtype=np.int64))
            self.d_s_off = cuda.to_device(np.asarray(net._z_off, dtype=np.int64))
        else:
            self.buf = DeviceBuffers(net, self.cap)
            self.W, self.b = _layers(self.params, self.sizes, net._w_off, net._b_off)
            self.nabla_w, self.nabla_b = _layers(self.buf.grads, self.sizes, net._w_off, net._b_off)

    def _step_layered(self, i: int, start: int, m: int, t: int) -> None:
        r = self.buf.rows(m)
        k.gather_rows(self.X, self.order, start, r.a[0])
        k.gather_rows(self.Y, self.order, start, r.y)
        forward(self.W, self.b, self.acts, r)
        backward(self.W, self.nabla_w, self.nabla_b, self.acts, self.cost, r)
        # record_cost reads the costs output_delta wrote into the buffer's first m slots.
        k.record_cost(r.costs, m, self.batch_costs, i, self.status)
        eta, l2, mu, beta1, beta2, eps = self.hyper
        g = self.buf.grads
        if self.opt == SGD:
            k.sgd_update(self.params, g, eta, 1.0 / m, l2, self.n_w, self.status)
        elif self.opt == ADAM:
            k.adam_update(
                self.params, g, self.m1, self.m2, eta, 1.0 / m, l2, self.n_w, beta1, beta2, eps,
                t, self.status,
            )  # fmt: skip
        else:
            k.momentum_update(
                self.params, g, self.m1, eta, 1.0 / m, l2, self.n_w, mu, self.opt == NESTEROV,
                self.status,
            )  # fmt: skip

    def _step_fused(self, i: int, start: int, m: int, t: int) -> None:
        k.fused_backprop(
            self.params, self.d_sizes, self.d_acts, self.d_w_off, self.d_b_off, self.d_s_off,
            self.X, self.Y, self.order, start, m, self.cost, self.S, self.partials, self.costs,
            self.sizes,
        )  # fmt: skip
        k.fused_step_update(
            self.params, self.partials, -(-m // self.S), self.costs, m, self.batch_costs, i,
            self.status, self.m1, self.m2, self.opt, self.hyper, self.n_w, t,
        )  # fmt: skip

    def epoch(self, order: np.ndarray, batch_costs: np.ndarray, hyper) -> int:
        """Train one epoch in the sample ``order``; fills ``batch_costs`` (host).

        ``hyper`` is (eta, λ/n, momentum, beta1, beta2, epsilon) for this epoch, as
        for ``cpu_train`` (a schedule changes η from epoch to epoch).

        Returns the number of mini-batches whose update was applied: all of them,
        or the index of the first whose cost was not finite.
        """
        self.hyper = tuple(float(h) for h in hyper)
        self.order.copy_to_device(order)
        step = self._step_fused if self.fused else self._step_layered
        t0 = int(self.net.step[0])
        for i in range(self.n_batches):
            start = i * self.batch_size
            step(i, start, min(self.batch_size, self.n - start), t0 + i + 1)
        self.batch_costs.copy_to_host(batch_costs)
        status = int(self.status.copy_to_host()[0])
        done = self.n_batches if status == 0 else status - 1
        self.net.step[0] += done
        return done

    def sync(self) -> None:
        """Copy parameters and optimiser state back into the network (in place)."""
        self.params.copy_to_host(self.net.params)
        if self.state is not None:
            self.state.copy_to_host(self.net.opt_state)

    def close(self) -> None:
        """The end of the run: everything back into the network."""
        self.sync()
