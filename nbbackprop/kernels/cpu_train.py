"""Compiled drivers that string the CPU kernels together.

Per-call overhead, not arithmetic, is what small networks lose to Python, so the
loop over mini-batches runs inside compiled code: :func:`train_batches` carries a
run of mini-batches through the forward pass, BP1–BP4 and the update without
returning to Python. :func:`forward_rows` does inference in chunks and
:func:`batch_gradients` one batch's gradients (for ``Network.backprop``).

Layout (built by :class:`nbbackprop.network.Network`):

- ``params``: one flat buffer, all weights first (layer by layer, each ``W[l]``
  row-major with shape ``(sizes[l+1], sizes[l])``), then all biases; ``w_off[l]``
  and ``b_off[l]`` are where layer l's weights and biases start. ``grads`` has the
  same layout.
- ``abuf`` holds the activations ``a^0 .. a^L`` of up to ``cap`` samples, layer l
  starting at ``cap * a_off[l]``; ``zbuf`` and ``dbuf`` hold ``z`` and ``δ`` of the
  weight layers 0..L-1, layer l starting at ``cap * z_off[l]``.
- ``par[l]`` selects layer l's kernels: 0 serial, 1 parallel (``prange``);
  ``par[L]`` selects the update's. :mod:`nbbackprop.orchestration` fills it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import cpu as k

SGD, MOMENTUM, NESTEROV, ADAM = 0, 1, 2, 3
#: Indices into the ``hyper`` array of optimiser settings.
ETA, L2, MU, BETA1, BETA2, EPS = 0, 1, 2, 3, 4, 5


@njit(cache=True)
def _weights(params, sizes, w_off, b_off, l):
    n_in = sizes[l]
    n_out = sizes[l + 1]
    W = params[w_off[l] : w_off[l] + n_out * n_in].reshape((n_out, n_in))
    b = params[b_off[l] : b_off[l] + n_out]
    return W, b


@njit(cache=True)
def _rows(buf, start, m, n):
    return buf[start : start + m * n].reshape((m, n))


@njit(cache=True)
def _forward(params, sizes, acts, w_off, b_off, a_off, z_off, abuf, zbuf, cap, m, par):
    L = sizes.shape[0] - 1
    for l in range(L):
        W, b = _weights(params, sizes, w_off, b_off, l)
        a_prev = _rows(abuf, cap * a_off[l], m, sizes[l])
        z = _rows(zbuf, cap * z_off[l], m, sizes[l + 1])
        a = _rows(abuf, cap * a_off[l + 1], m, sizes[l + 1])
        if par[l]:
            k.weighted_sums(W, b, a_prev, z, a, acts[l])
        else:
            k.weighted_sums_serial(W, b, a_prev, z, a, acts[l])


@njit(cache=True)
def _backward(
    params, grads, sizes, acts, cost, w_off, b_off, a_off, z_off, abuf, dbuf, y, costs, cap, m, par
):
    """BP1, then BP2–BP4 layer by layer downwards; returns Σ_x C_x."""
    L = sizes.shape[0] - 1
    a_L = _rows(abuf, cap * a_off[L], m, sizes[L])
    delta_L = _rows(dbuf, cap * z_off[L - 1], m, sizes[L])
    if par[L - 1]:
        k.output_delta(a_L, y, delta_L, costs, acts[L - 1], cost)
    else:
        k.output_delta_serial(a_L, y, delta_L, costs, acts[L - 1], cost)
    for l in range(L - 1, -1, -1):
        delta = _rows(dbuf, cap * z_off[l], m, sizes[l + 1])
        a_prev = _rows(abuf, cap * a_off[l], m, sizes[l])
        nabla_w, nabla_b = _weights(grads, sizes, w_off, b_off, l)
        if par[l]:
            k.weight_grads(delta, a_prev, nabla_w)
            k.bias_grads(delta, nabla_b)
        else:
            k.weight_grads_serial(delta, a_prev, nabla_w)
            k.bias_grads_serial(delta, nabla_b)
        if l > 0:
            W, _ = _weights(params, sizes, w_off, b_off, l)
            delta_prev = _rows(dbuf, cap * z_off[l - 1], m, sizes[l])
            if par[l - 1]:
                k.hidden_delta(W, delta, a_prev, delta_prev, acts[l - 1])
            else:
                k.hidden_delta_serial(W, delta, a_prev, delta_prev, acts[l - 1])
    total = 0.0
    for x in range(m):
        total += costs[x]
    return total


@njit(cache=True)
def _update(params, grads, state, opt, hyper, m, n_w, t, parallel):
    eta = hyper[ETA]
    l2 = hyper[L2]
    inv_m = 1.0 / m
    if opt == SGD:
        if parallel:
            k.sgd_update(params, grads, eta, inv_m, l2, n_w)
        else:
            k.sgd_update_serial(params, grads, eta, inv_m, l2, n_w)
    elif opt == MOMENTUM or opt == NESTEROV:
        nesterov = opt == NESTEROV
        if parallel:
            k.momentum_update(params, grads, state[0], eta, inv_m, l2, n_w, hyper[MU], nesterov)
        else:
            k.momentum_update_serial(
                params, grads, state[0], eta, inv_m, l2, n_w, hyper[MU], nesterov
            )
    else:
        if parallel:
            k.adam_update(
                params, grads, state[0], state[1], eta, inv_m, l2, n_w,
                hyper[BETA1], hyper[BETA2], hyper[EPS], t,
            )  # fmt: skip
        else:
            k.adam_update_serial(
                params, grads, state[0], state[1], eta, inv_m, l2, n_w,
                hyper[BETA1], hyper[BETA2], hyper[EPS], t,
            )  # fmt: skip


@njit(cache=True)
def _gather(src, order, start, m, dst):
    for i in range(m):
        dst[i, :] = src[order[start + i]]


@njit(cache=True)
def train_batches(
    params, grads, state, sizes, acts, cost, w_off, b_off, a_off, z_off,
    X, Y, order, batch_size, first, last,
    abuf, zbuf, dbuf, ybuf, costs, batch_costs, opt, hyper, step, par,
):  # fmt: skip
    """Train on mini-batches ``first .. last-1`` of the epoch whose sample order is ``order``.

    Mini-batch ``i`` holds samples ``order[i*batch_size : (i+1)*batch_size]`` (the last
    one may be shorter). ``batch_costs[i]`` receives the mean cost of mini-batch i,
    computed in its forward pass before its update. ``step[0]`` counts updates (Adam's
    t). Stops before updating on a mini-batch whose cost is not finite; returns the
    number of mini-batches completed.
    """
    n = order.shape[0]
    L = sizes.shape[0] - 1
    n_w = b_off[0]
    cap = min(batch_size, n)
    for i in range(first, last):
        start = i * batch_size
        m = min(batch_size, n - start)
        _gather(X, order, start, m, _rows(abuf, 0, m, sizes[0]))
        y = _rows(ybuf, 0, m, sizes[L])
        _gather(Y, order, start, m, y)
        _forward(params, sizes, acts, w_off, b_off, a_off, z_off, abuf, zbuf, cap, m, par)
        total = _backward(
            params, grads, sizes, acts, cost, w_off, b_off, a_off, z_off, abuf, dbuf, y,
            costs, cap, m, par,
        )  # fmt: skip
        mean_cost = total / m
        batch_costs[i] = mean_cost
        if not np.isfinite(mean_cost):
            return i - first
        step[0] += 1
        _update(params, grads, state, opt, hyper, m, n_w, step[0], par[L])
    return last - first


@njit(cache=True)
def forward_rows(params, sizes, acts, w_off, b_off, a_off, z_off, X, out, abuf, zbuf, cap, par):
    """Feed the rows of ``X`` forward, ``cap`` at a time, writing ``a^L`` into ``out``."""
    n = X.shape[0]
    L = sizes.shape[0] - 1
    for start in range(0, n, cap):
        m = min(cap, n - start)
        _rows(abuf, 0, m, sizes[0])[:, :] = X[start : start + m]
        _forward(params, sizes, acts, w_off, b_off, a_off, z_off, abuf, zbuf, cap, m, par)
        out[start : start + m] = _rows(abuf, cap * a_off[L], m, sizes[L])


@njit(cache=True)
def batch_gradients(
    params, grads, sizes, acts, cost, w_off, b_off, a_off, z_off, X, Y, abuf, zbuf, dbuf,
    costs, par,
):  # fmt: skip
    """Forward and backward over all rows of ``X`` as one batch.

    ``grads`` receives the gradients summed over the rows, ``costs`` each row's C_x;
    returns Σ_x C_x.
    """
    m = X.shape[0]
    _rows(abuf, 0, m, sizes[0])[:, :] = X
    _forward(params, sizes, acts, w_off, b_off, a_off, z_off, abuf, zbuf, m, m, par)
    return _backward(
        params, grads, sizes, acts, cost, w_off, b_off, a_off, z_off, abuf, dbuf, Y, costs,
        m, m, par,
    )  # fmt: skip
