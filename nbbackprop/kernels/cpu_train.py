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
- ``par[l]`` selects layer l's kernels: :data:`SERIAL`, :data:`PARALLEL`
  (``prange``), :data:`TILED` or :data:`TILED_PARALLEL` (register-tiled); ``par[L]``
  is 1 for a parallel update and ``par[L+1]`` is 1 to fold the weight gradients into
  plain SGD's update. :mod:`nbbackprop.orchestration` fills it.
- The layer-0 inputs of a mini-batch are read straight from ``X`` when its samples
  are consecutive rows (no shuffling), else gathered into ``abuf``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import cpu as k
from . import cpu_tiled as t

SGD, MOMENTUM, NESTEROV, ADAM = 0, 1, 2, 3
#: Kernel variants of a layer (``par[l]``), as chosen by :mod:`nbbackprop.orchestration`.
SERIAL, PARALLEL, TILED, TILED_PARALLEL = 0, 1, 2, 3
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
def _layer_forward(W, b, a_prev, z, a, act, variant):
    if variant == TILED_PARALLEL:
        t.weighted_sums_tiled(W, b, a_prev, z, a, act)
    elif variant == TILED:
        t.weighted_sums_tiled_serial(W, b, a_prev, z, a, act)
    elif variant == PARALLEL:
        k.weighted_sums(W, b, a_prev, z, a, act)
    else:
        k.weighted_sums_serial(W, b, a_prev, z, a, act)


@njit(cache=True)
def _forward(params, sizes, acts, w_off, b_off, a_off, z_off, a0, abuf, zbuf, cap, m, par):
    """The forward pass of ``m`` samples whose inputs are the rows of ``a0``."""
    L = sizes.shape[0] - 1
    for l in range(L):
        W, b = _weights(params, sizes, w_off, b_off, l)
        a_prev = a0 if l == 0 else _rows(abuf, cap * a_off[l], m, sizes[l])
        z = _rows(zbuf, cap * z_off[l], m, sizes[l + 1])
        a = _rows(abuf, cap * a_off[l + 1], m, sizes[l + 1])
        _layer_forward(W, b, a_prev, z, a, acts[l], par[l])


@njit(cache=True)
def _output_error(a_L, y, delta_L, costs, act, cost, variant, m):
    """BP1 and Σ_x C_x."""
    if variant == PARALLEL or variant == TILED_PARALLEL:
        k.output_delta(a_L, y, delta_L, costs, act, cost)
    else:
        k.output_delta_serial(a_L, y, delta_L, costs, act, cost)
    total = 0.0
    for x in range(m):
        total += costs[x]
    return total


@njit(cache=True)
def _layer_hidden_delta(W, delta, a_prev, delta_prev, act, variant, pack):
    if variant == TILED_PARALLEL:
        t.hidden_delta_tiled(W, delta, a_prev, delta_prev, act, pack)
    elif variant == TILED:
        t.hidden_delta_tiled_serial(W, delta, a_prev, delta_prev, act, pack)
    elif variant == PARALLEL:
        k.hidden_delta(W, delta, a_prev, delta_prev, act)
    else:
        k.hidden_delta_serial(W, delta, a_prev, delta_prev, act)


@njit(cache=True)
def _layer_grads(delta, a_prev, nabla_w, nabla_b, variant, pack):
    if variant == TILED_PARALLEL:
        t.weight_grads_tiled(delta, a_prev, nabla_w, pack)
        k.bias_grads(delta, nabla_b)
    elif variant == TILED:
        t.weight_grads_tiled_serial(delta, a_prev, nabla_w, pack)
        k.bias_grads_serial(delta, nabla_b)
    elif variant == PARALLEL:
        k.weight_grads(delta, a_prev, nabla_w)
        k.bias_grads(delta, nabla_b)
    else:
        k.weight_grads_serial(delta, a_prev, nabla_w)
        k.bias_grads_serial(delta, nabla_b)


@njit(cache=True)
def _backward(
    params, grads, sizes, acts, cost, w_off, b_off, a_off, z_off, a0, abuf, dbuf, y, costs,
    cap, m, par, pack,
):  # fmt: skip
    """BP1, then BP2–BP4 layer by layer downwards into ``grads``; returns Σ_x C_x."""
    L = sizes.shape[0] - 1
    a_L = _rows(abuf, cap * a_off[L], m, sizes[L])
    delta_L = _rows(dbuf, cap * z_off[L - 1], m, sizes[L])
    total = _output_error(a_L, y, delta_L, costs, acts[L - 1], cost, par[L - 1], m)
    for l in range(L - 1, -1, -1):
        delta = _rows(dbuf, cap * z_off[l], m, sizes[l + 1])
        a_prev = a0 if l == 0 else _rows(abuf, cap * a_off[l], m, sizes[l])
        nabla_w, nabla_b = _weights(grads, sizes, w_off, b_off, l)
        _layer_grads(delta, a_prev, nabla_w, nabla_b, par[l], pack)
        if l > 0:
            W, _ = _weights(params, sizes, w_off, b_off, l)
            delta_prev = _rows(dbuf, cap * z_off[l - 1], m, sizes[l])
            _layer_hidden_delta(W, delta, a_prev, delta_prev, acts[l - 1], par[l - 1], pack)
    return total


@njit(cache=True)
def _backward_sgd(
    params, grads, sizes, acts, cost, w_off, b_off, a_off, z_off, a0, abuf, dbuf, y, costs,
    cap, m, par, eta, l2, pack,
):  # fmt: skip
    """BP1–BP4 and the SGD step fused layer by layer; returns Σ_x C_x.

    Layer l is updated as soon as BP2 has carried δ through its (old) weights; a
    tiled layer applies each tile of its gradient while the tile is in L1.
    Nothing is updated when the cost is not finite.
    """
    L = sizes.shape[0] - 1
    inv_m = 1.0 / m
    a_L = _rows(abuf, cap * a_off[L], m, sizes[L])
    delta_L = _rows(dbuf, cap * z_off[L - 1], m, sizes[L])
    total = _output_error(a_L, y, delta_L, costs, acts[L - 1], cost, par[L - 1], m)
    if not np.isfinite(total):
        return total
    for l in range(L - 1, -1, -1):
        delta = _rows(dbuf, cap * z_off[l], m, sizes[l + 1])
        a_prev = a0 if l == 0 else _rows(abuf, cap * a_off[l], m, sizes[l])
        W, b = _weights(params, sizes, w_off, b_off, l)
        if l > 0:
            delta_prev = _rows(dbuf, cap * z_off[l - 1], m, sizes[l])
            _layer_hidden_delta(W, delta, a_prev, delta_prev, acts[l - 1], par[l - 1], pack)
        nabla_w, nabla_b = _weights(grads, sizes, w_off, b_off, l)
        if par[l] == TILED_PARALLEL:
            t.sgd_layer_update_tiled(W, b, delta, a_prev, eta, inv_m, l2, nabla_w, pack)
        elif par[l] == TILED:
            t.sgd_layer_update_tiled_serial(W, b, delta, a_prev, eta, inv_m, l2, nabla_w, pack)
        else:
            _layer_grads(delta, a_prev, nabla_w, nabla_b, par[l], pack)
            W_flat = params[w_off[l] : w_off[l] + W.size]
            b_flat = params[b_off[l] : b_off[l] + b.size]
            nw_flat = grads[w_off[l] : w_off[l] + W.size]
            nb_flat = grads[b_off[l] : b_off[l] + b.size]
            if par[l] == PARALLEL:
                k.sgd_update(W_flat, nw_flat, eta, inv_m, l2, W.size)
                k.sgd_update(b_flat, nb_flat, eta, inv_m, l2, 0)
            else:
                k.sgd_update_serial(W_flat, nw_flat, eta, inv_m, l2, W.size)
                k.sgd_update_serial(b_flat, nb_flat, eta, inv_m, l2, 0)
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
def _batch_inputs(X, Y, order, start, m, abuf, ybuf, n_in, n_out):
    """The inputs and targets of a mini-batch: views of ``X`` and ``Y`` when its
    samples are consecutive rows, else copies gathered into the buffers."""
    consecutive = True
    for i in range(m):
        if order[start + i] != order[start] + i:
            consecutive = False
            break
    if consecutive:
        first = order[start]
        return X[first : first + m], Y[first : first + m]
    a0 = _rows(abuf, 0, m, n_in)
    y = _rows(ybuf, 0, m, n_out)
    for i in range(m):
        a0[i, :] = X[order[start + i]]
        y[i, :] = Y[order[start + i]]
    return a0, y


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
    number of mini-batches completed. With plain SGD and ``par[L+1]`` set, the weight
    gradients are folded into the update (:func:`_backward_sgd`).
    """
    n = order.shape[0]
    L = sizes.shape[0] - 1
    n_w = b_off[0]
    cap = min(batch_size, n)
    fused = opt == SGD and par[L + 1] != 0
    # Allocated once per call (a call runs many mini-batches), not per mini-batch.
    pack = np.empty(t.BLOCK_BYTES // params.itemsize, dtype=params.dtype)
    for i in range(first, last):
        start = i * batch_size
        m = min(batch_size, n - start)
        a0, y = _batch_inputs(X, Y, order, start, m, abuf, ybuf, sizes[0], sizes[L])
        _forward(params, sizes, acts, w_off, b_off, a_off, z_off, a0, abuf, zbuf, cap, m, par)
        if fused:
            total = _backward_sgd(
                params, grads, sizes, acts, cost, w_off, b_off, a_off, z_off, a0, abuf, dbuf,
                y, costs, cap, m, par, hyper[ETA], hyper[L2], pack,
            )  # fmt: skip
        else:
            total = _backward(
                params, grads, sizes, acts, cost, w_off, b_off, a_off, z_off, a0, abuf, dbuf,
                y, costs, cap, m, par, pack,
            )  # fmt: skip
        mean_cost = total / m
        batch_costs[i] = mean_cost
        if not np.isfinite(mean_cost):
            return i - first
        step[0] += 1
        if not fused:
            _update(params, grads, state, opt, hyper, m, n_w, step[0], par[L])
    return last - first


@njit(cache=True)
def forward_rows(params, sizes, acts, w_off, b_off, a_off, z_off, X, out, abuf, zbuf, cap, par):
    """Feed the rows of ``X`` forward, ``cap`` at a time, writing ``a^L`` into ``out``."""
    n = X.shape[0]
    L = sizes.shape[0] - 1
    for start in range(0, n, cap):
        m = min(cap, n - start)
        a0 = X[start : start + m]
        _forward(params, sizes, acts, w_off, b_off, a_off, z_off, a0, abuf, zbuf, cap, m, par)
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
    pack = np.empty(t.BLOCK_BYTES // params.itemsize, dtype=params.dtype)
    _forward(params, sizes, acts, w_off, b_off, a_off, z_off, X, abuf, zbuf, m, m, par)
    return _backward(
        params, grads, sizes, acts, cost, w_off, b_off, a_off, z_off, X, abuf, dbuf, Y, costs,
        m, m, par, pack,
    )  # fmt: skip
