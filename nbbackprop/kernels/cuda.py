"""CUDA kernels: the twins of :mod:`nbbackprop.kernels.cpu`, and a fused narrow-network step.

Every function of :mod:`nbbackprop.kernels.cpu` has a twin here with the same
name and argument order (``weighted_sums``, ``output_delta``, ``hidden_delta``,
``bias_grads``, ``weight_grads``, ``sgd_update``, ``momentum_update``,
``adam_update``). A twin is a host function that takes *device* arrays (from
``numba.cuda.to_device`` or ``device_array``), picks a launch configuration from
the shapes and launches the kernel that computes the equation; it returns
without waiting for the GPU. The equations, shapes and notation are those of
the CPU module, whose docstrings this module does not repeat.

The scalar formulas (σ, σ', x·ln y) are the plain-Python functions of
:mod:`nbbackprop.functions` compiled with ``cuda.jit(device=True)``, so the CPU
and the GPU evaluate the same source.

Kernels that need typed constants or shared memory are built by a factory for
each (dtype, tile) pair, so that shared-array shapes and dtypes are compile-time
constants as the CUDA target requires and float32 accumulates in float32. The
launch configuration is read from the module globals at every launch, so tests
patch :data:`THREADS_PER_BLOCK`, :data:`TILE`, :data:`MAX_BLOCKS` and
:data:`FUSED_THREADS` small to make tiny arrays span several blocks and to make
the grid-stride loops go round more than once.

Kernels are written to compile for a real GPU as well as to run under the
simulator (which checks no types and has no warps): explicit dtypes, constant
shared shapes, every thread of a block reaching every ``syncthreads``, no warp
intrinsics, no atomics (sums over a mini-batch are reduced in a fixed order, so
runs are reproducible).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda, from_dtype

from .. import functions as fn

#: Threads per block of the one-dimensional kernels.
THREADS_PER_BLOCK = 128
#: Side of the square thread blocks and shared-memory tiles of the tiled kernels.
TILE = 16
#: Upper bound on the blocks of a grid along each axis; grid-stride loops cover the rest.
MAX_BLOCKS = 65535
#: Threads per block of the fused narrow-network kernel.
FUSED_THREADS = 128

SIGMOID, TANH, RELU, IDENTITY, SOFTMAX = (
    fn.SIGMOID,
    fn.TANH,
    fn.RELU,
    fn.IDENTITY,
    fn.SOFTMAX,
)
QUADRATIC, CROSS_ENTROPY, LOG_LIKELIHOOD = fn.QUADRATIC, fn.CROSS_ENTROPY, fn.LOG_LIKELIHOOD
SGD, MOMENTUM, NESTEROV, ADAM = 0, 1, 2, 3

activate = cuda.jit(device=True)(fn.activate)
derivative = cuda.jit(device=True)(fn.derivative)
xlogy = cuda.jit(device=True)(fn.xlogy)


# --------------------------------------------------------------- device functions
@cuda.jit(device=True)
def _softmax_row(z, a):
    # In place (z is a) is allowed: each a[j] is written after z[j] is read.
    top = z[0]
    for j in range(1, z.shape[0]):
        if z[j] > top:
            top = z[j]
    total = 0.0
    for j in range(z.shape[0]):
        e = math.exp(z[j] - top)
        a[j] = e
        total += e
    for j in range(z.shape[0]):
        a[j] = a[j] / total


@cuda.jit(device=True)
def _output_delta_row(ax, yx, dx, act, cost):
    """BP1 for one sample: writes δ^L into ``dx`` and returns C_x (the CPU loop body)."""
    n = ax.shape[0]
    c = 0.0
    if cost == QUADRATIC:
        for j in range(n):
            g = ax[j] - yx[j]
            c += g * g
            dx[j] = g
        c *= 0.5
        if act == SOFTMAX:
            ga = 0.0
            for j in range(n):
                ga += dx[j] * ax[j]
            for j in range(n):
                dx[j] = ax[j] * (dx[j] - ga)
        else:
            for j in range(n):
                dx[j] = dx[j] * derivative(ax[j], act)
    elif cost == CROSS_ENTROPY:
        for j in range(n):
            c -= xlogy(yx[j], ax[j]) + xlogy(1.0 - yx[j], 1.0 - ax[j])
            dx[j] = ax[j] - yx[j]
    else:
        ysum = 0.0
        for j in range(n):
            c -= xlogy(yx[j], ax[j])
            ysum += yx[j]
        for j in range(n):
            dx[j] = ax[j] * ysum - yx[j]
    return c


# The optimiser steps for one parameter, g the mean gradient: shared by the update
# twins and by the fused step's update, so each formula is written once.
@cuda.jit(device=True)
def _sgd_step(params, i, g, eta, l2, n_w):
    if i < n_w:
        g += l2 * params[i]
    params[i] -= eta * g


@cuda.jit(device=True)
def _momentum_step(params, velocity, i, g, eta, l2, n_w, mu, nesterov):
    if i < n_w:
        g += l2 * params[i]
    v = mu * velocity[i] - eta * g
    velocity[i] = v
    if nesterov:
        params[i] += mu * v - eta * g
    else:
        params[i] += v


@cuda.jit(device=True)
def _adam_step(params, m1, m2, i, g, eta, l2, n_w, beta1, beta2, eps, c1, c2):
    if i < n_w:
        g += l2 * params[i]
    mi = beta1 * m1[i] + (1.0 - beta1) * g
    vi = beta2 * m2[i] + (1.0 - beta2) * g * g
    m1[i] = mi
    m2[i] = vi
    params[i] -= eta * (mi / c1) / (math.sqrt(vi / c2) + eps)


# ------------------------------------------------------- one-dimensional kernels
@cuda.jit
def _softmax_rows(z, a):
    for x in range(cuda.grid(1), z.shape[0], cuda.gridsize(1)):
        _softmax_row(z[x], a[x])


@cuda.jit
def _output_delta(a, y, delta, costs, act, cost):
    for x in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
        costs[x] = _output_delta_row(a[x], y[x], delta[x], act, cost)


@cuda.jit
def _bias_grads(delta, nabla_b):
    m, n = delta.shape
    for j in range(cuda.grid(1), n, cuda.gridsize(1)):
        acc = delta[0, j]  # typed like delta; m >= 1
        for x in range(1, m):
            acc += delta[x, j]
        nabla_b[j] = acc


@cuda.jit
def _sgd_update(params, grads, eta, inv_m, l2, n_w, status):
    if status[0] != 0:
        return
    for i in range(cuda.grid(1), params.shape[0], cuda.gridsize(1)):
        _sgd_step(params, i, grads[i] * inv_m, eta, l2, n_w)


@cuda.jit
def _momentum_update(params, grads, velocity, eta, inv_m, l2, n_w, mu, nesterov, status):
    if status[0] != 0:
        return
    for i in range(cuda.grid(1), params.shape[0], cuda.gridsize(1)):
        _momentum_step(params, velocity, i, grads[i] * inv_m, eta, l2, n_w, mu, nesterov)


@cuda.jit
def _adam_update(params, grads, m1, m2, eta, inv_m, l2, n_w, beta1, beta2, eps, t, status):
    if status[0] != 0:
        return
    c1 = 1.0 - beta1**t
    c2 = 1.0 - beta2**t
    for i in range(cuda.grid(1), params.shape[0], cuda.gridsize(1)):
        g = grads[i] * inv_m
        _adam_step(params, m1, m2, i, g, eta, l2, n_w, beta1, beta2, eps, c1, c2)


@cuda.jit
def _gather_rows(src, order, start, dst):
    m, n = dst.shape
    for t in range(cuda.grid(1), m * n, cuda.gridsize(1)):
        i = t // n
        c = t - i * n
        dst[i, c] = src[order[start + i], c]


@cuda.jit
def _record_cost(costs, m, batch_costs, i, status):
    # One thread: the mean cost of mini-batch i, summed in sample order as on the CPU;
    # a non-finite cost marks the run diverged and every later update is skipped.
    if cuda.grid(1) == 0:
        total = 0.0
        for x in range(m):
            total += costs[x]
        mean = total / m
        batch_costs[i] = mean
        if status[0] == 0 and not math.isfinite(mean):
            status[0] = i + 1


# --------------------------------------------------------- tiled and fused kernels
@functools.cache
def _build(dtype_name: str, tile: int):
    """Compile-time constants of one (dtype, tile) pair baked into kernels that need them."""
    nbtype = from_dtype(np.dtype(dtype_name))
    T = tile
    # +1 column: threads of a warp reading down a column of the tile hit distinct banks.
    PADDED = (tile, tile + 1)
    SQUARE = (tile, tile)

    @cuda.jit
    def weighted_sums(W, b, a_prev, z, a, act):
        # z[x, j] = b[j] + Σ_k W[j, k] a_prev[x, k]: block (bx, by) owns a T×T tile of
        # outputs and walks k in steps of T through shared copies of a_prev and W.
        As = cuda.shared.array(SQUARE, nbtype)
        Ws = cuda.shared.array(PADDED, nbtype)
        m, n_in = a_prev.shape
        n_out = W.shape[0]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        zero = nbtype(0)
        for by in range(cuda.blockIdx.y, (m + T - 1) // T, cuda.gridDim.y):
            for bx in range(cuda.blockIdx.x, (n_out + T - 1) // T, cuda.gridDim.x):
                x = by * T + ty
                j = bx * T + tx
                jw = bx * T + ty  # the row of W this thread loads
                acc = b[j] if j < n_out else zero
                for k0 in range(0, n_in, T):
                    k = k0 + tx
                    As[ty, tx] = a_prev[x, k] if x < m and k < n_in else zero
                    Ws[ty, tx] = W[jw, k] if jw < n_out and k < n_in else zero
                    cuda.syncthreads()
                    for kk in range(T):
                        acc += As[ty, kk] * Ws[tx, kk]
                    cuda.syncthreads()
                if x < m and j < n_out:
                    z[x, j] = acc
                    if act != SOFTMAX:
                        a[x, j] = activate(acc, act)

    @cuda.jit
    def hidden_delta(W_next, delta_next, a, delta, act):
        # delta[x, k] = (Σ_j delta_next[x, j] W_next[j, k]) σ'(a[x, k]), tiled over j.
        Ds = cuda.shared.array(SQUARE, nbtype)
        Ws = cuda.shared.array(SQUARE, nbtype)
        m, n = a.shape
        n_next = W_next.shape[0]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        zero = nbtype(0)
        for by in range(cuda.blockIdx.y, (m + T - 1) // T, cuda.gridDim.y):
            for bx in range(cuda.blockIdx.x, (n + T - 1) // T, cuda.gridDim.x):
                x = by * T + ty
                k = bx * T + tx
                acc = zero
                for j0 in range(0, n_next, T):
                    jd = j0 + tx
                    jw = j0 + ty
                    Ds[ty, tx] = delta_next[x, jd] if x < m and jd < n_next else zero
                    Ws[ty, tx] = W_next[jw, k] if jw < n_next and k < n else zero
                    cuda.syncthreads()
                    for jj in range(T):
                        acc += Ds[ty, jj] * Ws[jj, tx]
                    cuda.syncthreads()
                if x < m and k < n:
                    delta[x, k] = acc * derivative(a[x, k], act)

    @cuda.jit
    def weight_grads(delta, a_prev, nabla_w):
        # nabla_w[j, k] = Σ_x delta[x, j] a_prev[x, k], tiled over the samples x.
        Ds = cuda.shared.array(PADDED, nbtype)
        As = cuda.shared.array(SQUARE, nbtype)
        m, n_out = delta.shape
        n_in = a_prev.shape[1]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        zero = nbtype(0)
        for by in range(cuda.blockIdx.y, (n_out + T - 1) // T, cuda.gridDim.y):
            for bx in range(cuda.blockIdx.x, (n_in + T - 1) // T, cuda.gridDim.x):
                j = by * T + ty
                k = bx * T + tx
                jd = by * T + tx  # the column of delta this thread loads
                acc = zero
                for x0 in range(0, m, T):
                    x = x0 + ty
                    Ds[ty, tx] = delta[x, jd] if x < m and jd < n_out else zero
                    As[ty, tx] = a_prev[x, k] if x < m and k < n_in else zero
                    cuda.syncthreads()
                    for xx in range(T):
                        acc += Ds[xx, ty] * As[xx, tx]
                    cuda.syncthreads()
                if j < n_out and k < n_in:
                    nabla_w[j, k] = acc

    @cuda.jit
    def fused_backprop(
        params, sizes, acts, w_off, b_off, s_off, X, Y, order, start, m, cost, S, partials, costs
    ):
        """Forward pass, BP1–BP4 of one mini-batch; one block per tile of S samples.

        The activations a^1..a^L and two δ buffers of the tile live in dynamic shared
        memory (layer l's at S*s_off[l-1], then δ at S*Σ sizes[1:] and + S*max width);
        a^0 is read straight from the data set through ``order`` (the gather is fused).
        Tile ``t`` writes its gradient sums into ``partials[t]`` (layout of
        ``params``) and its samples' C_x into ``costs``; :func:`fused_update` reduces.
        """
        sh = cuda.shared.array(0, nbtype)
        L = sizes.shape[0] - 1
        tid = cuda.threadIdx.x
        nth = cuda.blockDim.x
        zero = nbtype(0)
        n_act = s_off[L - 1] + sizes[L]
        widest = 0
        for l in range(1, L + 1):
            widest = max(widest, sizes[l])
        for tile in range(cuda.blockIdx.x, (m + S - 1) // S, cuda.gridDim.x):
            s0 = tile * S
            ns = min(S, m - s0)
            first = start + s0
            # ---- forward, equations (1)-(3)
            for l in range(L):
                n_in = sizes[l]
                n_out = sizes[l + 1]
                out = S * s_off[l]
                inp = S * s_off[l - 1] if l > 0 else 0
                for t in range(tid, ns * n_out, nth):
                    x = t // n_out
                    j = t - x * n_out
                    row = w_off[l] + j * n_in
                    acc = params[b_off[l] + j]
                    if l == 0:
                        r = order[first + x]
                        for k in range(n_in):
                            acc += params[row + k] * X[r, k]
                    else:
                        base = inp + x * n_in
                        for k in range(n_in):
                            acc += params[row + k] * sh[base + k]
                    if acts[l] == SOFTMAX:
                        sh[out + t] = acc
                    else:
                        sh[out + t] = activate(acc, acts[l])
                cuda.syncthreads()
                if acts[l] == SOFTMAX:
                    for x in range(tid, ns, nth):
                        o = out + x * n_out
                        _softmax_row(sh[o : o + n_out], sh[o : o + n_out])
                    cuda.syncthreads()
            # ---- BP1
            cur = S * n_act
            nxt = cur + S * widest
            n_L = sizes[L]
            a_L = S * s_off[L - 1]
            for x in range(tid, ns, nth):
                o = x * n_L
                costs[s0 + x] = _output_delta_row(
                    sh[a_L + o : a_L + o + n_L],
                    Y[order[first + x]],
                    sh[cur + o : cur + o + n_L],
                    acts[L - 1],
                    cost,
                )
            cuda.syncthreads()
            # ---- BP3, BP4 and BP2, layer by layer downwards
            for l in range(L - 1, -1, -1):
                n_in = sizes[l]
                n_out = sizes[l + 1]
                inp = S * s_off[l - 1] if l > 0 else 0
                for t in range(tid, n_out * n_in, nth):
                    j = t // n_in
                    k = t - j * n_in
                    acc = zero
                    if l == 0:
                        for x in range(ns):
                            acc += sh[cur + x * n_out + j] * X[order[first + x], k]
                    else:
                        for x in range(ns):
                            acc += sh[cur + x * n_out + j] * sh[inp + x * n_in + k]
                    partials[tile, w_off[l] + t] = acc
                for j in range(tid, n_out, nth):
                    acc = zero
                    for x in range(ns):
                        acc += sh[cur + x * n_out + j]
                    partials[tile, b_off[l] + j] = acc
                if l > 0:
                    for t in range(tid, ns * n_in, nth):
                        x = t // n_in
                        k = t - x * n_in
                        acc = zero
                        for j in range(n_out):
                            acc += sh[cur + x * n_out + j] * params[w_off[l] + j * n_in + k]
                        sh[nxt + t] = acc * derivative(sh[inp + t], acts[l - 1])
                    cuda.syncthreads()
                    cur, nxt = nxt, cur
            cuda.syncthreads()  # the next tile overwrites shared memory

    return weighted_sums, hidden_delta, weight_grads, fused_backprop


@cuda.jit
def fused_update(
    params, partials, n_part, costs, m, batch_costs, i, status, m1, m2, opt,
    eta, l2, n_w, mu, beta1, beta2, eps, t,
):  # fmt: skip
    """The second launch of a fused step: sum the tiles' gradients and update.

    Every block sums the mini-batch's costs itself (``m`` reads) so that no block
    updates on a batch whose cost is not finite; block 0 records the mean in
    ``batch_costs[i]`` and marks ``status`` as :func:`_record_cost` does.
    """
    ok = cuda.shared.array(1, np.int64)
    if cuda.threadIdx.x == 0:
        total = 0.0
        for x in range(m):
            total += costs[x]
        mean = total / m
        good = math.isfinite(mean) and status[0] == 0
        ok[0] = 1 if good else 0
        if cuda.blockIdx.x == 0:
            batch_costs[i] = mean
            if status[0] == 0 and not math.isfinite(mean):
                status[0] = i + 1
    cuda.syncthreads()
    if ok[0] == 0:
        return
    inv_m = 1.0 / m
    c1 = 1.0 - beta1**t
    c2 = 1.0 - beta2**t
    for p in range(cuda.grid(1), params.shape[0], cuda.gridsize(1)):
        g = partials[0, p]
        for q in range(1, n_part):
            g += partials[q, p]
        g = g * inv_m
        if opt == SGD:
            _sgd_step(params, p, g, eta, l2, n_w)
        elif opt == ADAM:
            _adam_step(params, m1, m2, p, g, eta, l2, n_w, beta1, beta2, eps, c1, c2)
        else:
            _momentum_step(params, m1, p, g, eta, l2, n_w, mu, opt == NESTEROV)


# ------------------------------------------------------------------ launch helpers
def _grid1(n: int) -> tuple[int, int]:
    tpb = int(THREADS_PER_BLOCK)
    return max(1, min(int(MAX_BLOCKS), -(-n // tpb))), tpb


def _grid2(cols: int, rows: int) -> tuple[tuple[int, int], tuple[int, int]]:
    t = int(TILE)
    most = int(MAX_BLOCKS)
    return (max(1, min(most, -(-cols // t))), max(1, min(most, -(-rows // t)))), (t, t)


def _tiled(arr):
    return _build(np.dtype(arr.dtype).name, int(TILE))


_NO_GUARD: dict[int, object] = {}


def _guard(status):
    """The update kernels skip when ``status[0] != 0``; without one, a device zero."""
    if status is not None:
        return status
    # One zero per process (and per simulator/real switch, which never happens in one process).
    z = _NO_GUARD.get(0)
    if z is None:
        z = _NO_GUARD[0] = cuda.to_device(np.zeros(1, dtype=np.int64))
    return z


# ------------------------------------------------------------------- the twins
def weighted_sums(W, b, a_prev, z, a, act):
    """Forward pass of one layer, (1)–(3); see :func:`nbbackprop.kernels.cpu.weighted_sums`.

    Tiled: each T×T block keeps tiles of ``a_prev`` and ``W`` in shared memory, so a
    weight is read from global memory once per tile of T samples, not once per sample.
    A softmax layer takes a second launch over the rows.
    """
    m, n_out = z.shape
    grid, block = _grid2(n_out, m)
    _tiled(z)[0][grid, block](W, b, a_prev, z, a, int(act))
    if act == SOFTMAX:
        _softmax_rows[_grid1(m)](z, a)


def output_delta(a, y, delta, costs, act, cost):
    """BP1 and each sample's cost; see :func:`nbbackprop.kernels.cpu.output_delta`.

    One thread per sample (output layers are narrow); ``costs`` is float64.
    """
    _output_delta[_grid1(a.shape[0])](a, y, delta, costs, int(act), int(cost))


def hidden_delta(W_next, delta_next, a, delta, act):
    """BP2, tiled like :func:`weighted_sums`; see :func:`nbbackprop.kernels.cpu.hidden_delta`."""
    m, n = a.shape
    grid, block = _grid2(n, m)
    _tiled(a)[1][grid, block](W_next, delta_next, a, delta, int(act))


def bias_grads(delta, nabla_b):
    """BP3, one thread per neuron; see :func:`nbbackprop.kernels.cpu.bias_grads`."""
    _bias_grads[_grid1(delta.shape[1])](delta, nabla_b)


def weight_grads(delta, a_prev, nabla_w):
    """BP4, tiled over samples; see :func:`nbbackprop.kernels.cpu.weight_grads`.

    Sums over the samples in order, as the CPU kernel does.
    """
    n_out, n_in = nabla_w.shape
    grid, block = _grid2(n_in, n_out)
    _tiled(delta)[2][grid, block](delta, a_prev, nabla_w)


def sgd_update(params, grads, eta, inv_m, l2, n_w, status=None):
    """Gradient descent; see :func:`nbbackprop.kernels.cpu.sgd_update`.

    ``status`` (optional, int64 device array of one element): when ``status[0]`` is
    not 0 the update is skipped, which lets a driver stop updating after a diverged
    mini-batch without reading anything back to the host.
    """
    _sgd_update[_grid1(params.shape[0])](
        params, grads, float(eta), float(inv_m), float(l2), int(n_w), _guard(status)
    )


def momentum_update(params, grads, velocity, eta, inv_m, l2, n_w, mu, nesterov, status=None):
    """Momentum or Nesterov; see :func:`nbbackprop.kernels.cpu.momentum_update`."""
    _momentum_update[_grid1(params.shape[0])](
        params, grads, velocity, float(eta), float(inv_m), float(l2), int(n_w), float(mu),
        bool(nesterov), _guard(status),
    )  # fmt: skip


def adam_update(
    params, grads, m1, m2, eta, inv_m, l2, n_w, beta1, beta2, eps, t, status=None
):  # fmt: skip
    """Adam; see :func:`nbbackprop.kernels.cpu.adam_update` and :func:`sgd_update`."""
    _adam_update[_grid1(params.shape[0])](
        params, grads, m1, m2, float(eta), float(inv_m), float(l2), int(n_w), float(beta1),
        float(beta2), float(eps), int(t), _guard(status),
    )  # fmt: skip


# ----------------------------------------------------------- driver-only kernels
def gather_rows(src, order, start, dst):
    """``dst[i] = src[order[start + i]]`` for each row of ``dst``: a mini-batch from the data."""
    m, n = dst.shape
    _gather_rows[_grid1(m * n)](src, order, int(start), dst)


def record_cost(costs, m, batch_costs, i, status):
    """``batch_costs[i]`` = mean of ``costs[:m]``; marks ``status`` on a non-finite cost."""
    _record_cost[1, 1](costs, int(m), batch_costs, int(i), status)


def fused_shared_bytes(sizes, samples: int, itemsize: int) -> int:
    """Dynamic shared memory of :func:`fused_backprop` for tiles of ``samples`` samples."""
    return samples * (sum(sizes[1:]) + 2 * max(sizes[1:])) * itemsize


def fused_backprop(params, sizes, acts, w_off, b_off, s_off, X, Y, order, start, m, cost, S,
                   partials, costs, host_sizes):  # fmt: skip
    """Launch the fused forward/backward of one mini-batch of ``m`` samples from ``start``.

    ``host_sizes`` is the tuple of widths (to size the launch without reading the
    device copy ``sizes``); see the kernel's docstring for the rest.
    """
    kernel = _tiled(params)[3]
    n_tiles = -(-m // S)
    blocks = max(1, min(int(MAX_BLOCKS), n_tiles))
    shared = fused_shared_bytes(host_sizes, S, np.dtype(params.dtype).itemsize)
    kernel[blocks, int(FUSED_THREADS), 0, shared](
        params, sizes, acts, w_off, b_off, s_off, X, Y, order, int(start), int(m), int(cost),
        int(S), partials, costs,
    )  # fmt: skip


def fused_step_update(params, partials, n_part, costs, m, batch_costs, i, status, m1, m2, opt,
                      hyper, n_w, t):  # fmt: skip
    """Launch :func:`fused_update`; ``hyper`` is (eta, l2, mu, beta1, beta2, eps)."""
    eta, l2, mu, beta1, beta2, eps = (float(h) for h in hyper)
    fused_update[_grid1(params.shape[0])](
        params, partials, int(n_part), costs, int(m), batch_costs, int(i), status, m1, m2,
        int(opt), eta, l2, int(n_w), mu, beta1, beta2, eps, int(t),
    )  # fmt: skip
