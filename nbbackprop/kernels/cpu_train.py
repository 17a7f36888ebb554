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
  starting at ``cap * a_off[l]``, then (optionally) a second slot of ``cap`` inputs
  into which the SGD driver gathers the next shuffled mini-batch; ``zbuf`` and
  ``dbuf`` hold ``z`` and ``δ`` of the weight layers 0..L-1, layer l starting at
  ``cap * z_off[l]``.
- ``par[l]`` selects layer l's kernels: :data:`SERIAL`, :data:`PARALLEL`
  (``prange``), :data:`TILED` or :data:`TILED_PARALLEL` (register-tiled); ``par[L]``
  is 1 for a parallel update and ``par[L+1]`` is 1 to fold the weight gradients into
  plain SGD's update. :mod:`nbbackprop.orchestration` fills it.
- The layer-0 inputs of a mini-batch are read straight from ``X`` when its samples
  are consecutive rows (no shuffling), else gathered into ``abuf``.

Compiled specialisations. Numba links every kernel a function may call into that
function's machine code and re-optimises it there, so one driver that could call
every variant compiled all of them (about 50 s cold). The drivers are therefore
written once as plain Python bodies and compiled once per *family* of kernels:
``plain`` (the per-equation kernels of :mod:`~nbbackprop.kernels.cpu`, strategies
"serial"/"parallel"), ``tiled`` (:mod:`~nbbackprop.kernels.cpu_tiled`, strategies
"tiled"/"auto") and ``tiled_small`` (the same, for networks whose every BP2 is serial
and on the outer-tile path, such as W1 and W2: without the parallel BP2 and the
transpose and dot path), with the fused SGD step as its own specialisation. Each copy gets
its own name (so Numba's disk cache keeps them apart) and its family's kernels as
globals; the public functions below pick the copy from ``par`` and run it, so a
first run compiles only the family it uses.

Within the tiled family every level that links code re-optimises it (the tile
dispatch, each thread's part, the ``prange`` gufunc, the kernel, the driver), so
the big bodies are compiled once each: one function per thread's part
(``_name_part`` in :mod:`~nbbackprop.kernels.cpu_tiled`) shared by a kernel's
parallel and serial compilations, the serial kernels inlined into the driver, the
tile micro-kernels inlined into their dispatch, one compilation of ``outer_block``
for BP2 and BP4, the tiny index helpers (``tile_at``, ``_share``, ...) compiled once
rather than inlined (Numba IR) at every use. The views of the buffers (``as_rows``)
skip ``reshape``'s checks.
W1's first epoch compiled in ~40 s cold before this structure, ~17 s with it
(2-core reference machine, ``python -m benchmarks.startup``).

Plain SGD in the ``tiled_small`` family runs without a parallel region at all: its loop
(:func:`_sgd_loop_body`, compiled with ``nogil``) runs as one part per thread, part 0 on
the calling thread and the others on a small pool of Python threads
(:func:`_run_parts`), and the parts meet at barriers (:mod:`~nbbackprop.kernels.sync`)
between the stages of each mini-batch: ~0.06 µs each, where a ``prange`` region's fork
and join cost ~0.8 µs twice per W1 mini-batch. Part 0 runs the serial stages (the output
layer's forward pass, BP1, the bookkeeping), every part its share of layer 0's. The
loop is compiled once, at the top: inside a ``prange`` (tried first) its gufunc and
the gufunc's two wrappers each re-optimised all of it, 2.5 s more of W1's cold start,
where the threads version takes 2.5 s less than the fork/join driver did.
"""

from __future__ import annotations

import os
import threading
import types
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from llvmlite import ir
from numba import njit
from numba import types as nbtypes
from numba.core import cgutils
from numba.extending import intrinsic

from .._aligned import aligned_zeros
from . import cpu as k
from . import cpu_tiled as t
from . import sync

SGD, MOMENTUM, NESTEROV, ADAM = 0, 1, 2, 3
#: Kernel variants of a layer (``par[l]``), as chosen by :mod:`nbbackprop.orchestration`.
SERIAL, PARALLEL, TILED, TILED_PARALLEL = 0, 1, 2, 3
#: Indices into the ``hyper`` array of optimiser settings.
ETA, L2, MU, BETA1, BETA2, EPS = 0, 1, 2, 3, 4, 5


@njit(cache=True, inline="always")
def _weights(params, sizes, w_off, b_off, l):
    n_in = sizes[l]
    n_out = sizes[l + 1]
    W = t.as_rows(params, w_off[l], n_out, n_in)
    b = params[b_off[l] : b_off[l] + n_out]
    return W, b


@njit(cache=True, inline="always")
def _rows(buf, start, m, n):
    return t.as_rows(buf, start, m, n)


def _specialise(body, name, inline="never", nogil=False, **bindings):
    """Compile a copy of ``body`` named ``name`` whose globals include ``bindings``.

    The parts of a driver are inlined into it (``inline="always"``, at Numba's IR
    level): every separately compiled function re-optimises all the kernels linked
    into it, which made each level of the driver cost seconds of cold compilation.
    """
    namespace = dict(body.__globals__)
    namespace.update(bindings)
    fn = types.FunctionType(body.__code__, namespace, name, body.__defaults__, body.__closure__)
    fn.__qualname__ = name
    fn.__doc__ = body.__doc__
    if nogil:
        return njit(cache=True, nogil=True)(fn)
    return njit(cache=True, inline=inline)(fn)


# ------------------------------------------------------- the two kernel families
# Uniform signatures: ``parallel`` picks the prange compilation; the plain kernels
# ignore ``scratch`` (tiled BP2 transposes large weights into it).
@njit(cache=True, inline="always")
def _plain_forward(W, b, a_prev, z, a, act, parallel):
    if parallel:
        k.weighted_sums(W, b, a_prev, z, a, act)
    else:
        k.weighted_sums_serial(W, b, a_prev, z, a, act)


@njit(cache=True, inline="always")
def _tiled_forward(W, b, a_prev, z, a, act, parallel):
    if parallel:
        t.weighted_sums_tiled(W, b, a_prev, z, a, act)
    else:
        t.weighted_sums_tiled_serial(W, b, a_prev, z, a, act)


@njit(cache=True, inline="always")
def _plain_hidden_delta(W, delta, a_prev, delta_prev, act, parallel, scratch):
    if parallel:
        k.hidden_delta(W, delta, a_prev, delta_prev, act)
    else:
        k.hidden_delta_serial(W, delta, a_prev, delta_prev, act)


@njit(cache=True, inline="always")
def _tiled_hidden_delta(W, delta, a_prev, delta_prev, act, parallel, scratch):
    if parallel:
        t.hidden_delta_tiled(W, delta, a_prev, delta_prev, act, scratch)
    else:
        t.hidden_delta_tiled_serial(W, delta, a_prev, delta_prev, act, scratch)


@njit(cache=True, inline="always")
def _small_hidden_delta(W, delta, a_prev, delta_prev, act, parallel, scratch):
    """BP2 of a network whose every BP2 is serial and small (:func:`_small_bp2`)."""
    t.hidden_delta_outer_serial(W, delta, a_prev, delta_prev, act)


@njit(cache=True, inline="always")
def _plain_grads(delta, a_prev, nabla_w, nabla_b, parallel):
    if parallel:
        k.weight_grads(delta, a_prev, nabla_w)
        k.bias_grads(delta, nabla_b)
    else:
        k.weight_grads_serial(delta, a_prev, nabla_w)
        k.bias_grads_serial(delta, nabla_b)


@njit(cache=True, inline="always")
def _tiled_grads(delta, a_prev, nabla_w, nabla_b, parallel):
    if parallel:
        t.weight_grads_tiled(delta, a_prev, nabla_w)
        k.bias_grads(delta, nabla_b)
    else:
        t.weight_grads_tiled_serial(delta, a_prev, nabla_w)
        k.bias_grads_serial(delta, nabla_b)


@njit(cache=True, inline="always")
def _tiled_sgd_layer(W, b, delta, a_prev, eta, inv_m, l2, parallel):
    if parallel:
        t.sgd_layer_update_tiled(W, b, delta, a_prev, eta, inv_m, l2)
    else:
        t.sgd_layer_update_tiled_serial(W, b, delta, a_prev, eta, inv_m, l2)


@njit(cache=True, inline="always")
def _plain_output_error(a_L, y, delta_L, costs, act, cost, parallel, m):
    """BP1 and Σ_x C_x."""
    if parallel:
        k.output_delta(a_L, y, delta_L, costs, act, cost)
    else:
        k.output_delta_serial(a_L, y, delta_L, costs, act, cost)
    total = 0.0
    for x in range(m):
        total += costs[x]
    return total


@njit(cache=True, inline="always")
def _tiled_output_error(a_L, y, delta_L, costs, act, cost, parallel, m):
    """BP1 and Σ_x C_x, on one thread: O(m n_L) work, less than waking the pool costs
    for any output layer measured (and one kernel fewer to compile cold, ~2 s)."""
    k.output_delta_serial(a_L, y, delta_L, costs, act, cost)
    total = 0.0
    for x in range(m):
        total += costs[x]
    return total


@njit(cache=True, inline="always")
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


# ------------------------------------------------ bodies, compiled per family below
# FORWARD, OUTPUT_ERROR, HIDDEN_DELTA, GRADS, SGD_LAYER, FORWARD_PASS, BACKWARD,
# BACKWARD_SGD and STEP are bound by _specialise; ``par[l] % 2`` is 1 for a parallel layer in both
# families (SERIAL, PARALLEL = 0, 1; TILED, TILED_PARALLEL = 2, 3).
def _forward_body(
    params, sizes, acts, w_off, b_off, a_off, z_off, a0, abuf, zbuf, cap, m, par, l_first
):  # fmt: skip
    """The forward pass of ``m`` samples whose inputs are the rows of ``a0``, from layer
    ``l_first`` on (the layers below it already done)."""
    L = sizes.shape[0] - 1
    for l in range(l_first, L):
        W, b = _weights(params, sizes, w_off, b_off, l)
        a_prev = a0 if l == 0 else _rows(abuf, cap * a_off[l], m, sizes[l])
        z = _rows(zbuf, cap * z_off[l], m, sizes[l + 1])
        a = _rows(abuf, cap * a_off[l + 1], m, sizes[l + 1])
        FORWARD(W, b, a_prev, z, a, acts[l], par[l] % 2)  # noqa: F821


def _backward_body(
    params, grads, sizes, acts, cost, w_off, b_off, a_off, z_off, a0, abuf, dbuf, y, costs,
    cap, m, par,
):  # fmt: skip
    """BP1, then BP2–BP4 layer by layer downwards into ``grads``; returns Σ_x C_x."""
    L = sizes.shape[0] - 1
    a_L = _rows(abuf, cap * a_off[L], m, sizes[L])
    delta_L = _rows(dbuf, cap * z_off[L - 1], m, sizes[L])
    total = OUTPUT_ERROR(a_L, y, delta_L, costs, acts[L - 1], cost, par[L - 1] % 2, m)  # noqa: F821
    for l in range(L - 1, -1, -1):
        delta = _rows(dbuf, cap * z_off[l], m, sizes[l + 1])
        a_prev = a0 if l == 0 else _rows(abuf, cap * a_off[l], m, sizes[l])
        nabla_w, nabla_b = _weights(grads, sizes, w_off, b_off, l)
        if l > 0:
            # BP2 first: it may use this layer's gradient rows as scratch. Through W^l it
            # is m·n_l·n_{l+1} multiply-adds, layer l's forward work: it runs as layer l.
            W, _ = _weights(params, sizes, w_off, b_off, l)
            delta_prev = _rows(dbuf, cap * z_off[l - 1], m, sizes[l])
            scratch = grads[w_off[l] : w_off[l] + W.size]
            HIDDEN_DELTA(W, delta, a_prev, delta_prev, acts[l - 1], par[l] % 2, scratch)  # noqa: F821
        GRADS(delta, a_prev, nabla_w, nabla_b, par[l] % 2)  # noqa: F821
    return total


def _backward_sgd_body(
    params, grads, sizes, acts, cost, w_off, b_off, a_off, z_off, abuf, dbuf, y, costs,
    cap, m, par, eta, l2, l_low,
):  # fmt: skip
    """BP1–BP4 and the SGD step fused layer by layer down to layer ``l_low`` (1, or 2
    when the caller's parallel region does layer 1's BP2 and step), BP2 into layer
    l_low − 1 included (:func:`_train_sgd_body` updates layer 0, and layer 1 when
    l_low is 2); returns Σ_x C_x.

    Layer l is updated as soon as BP2 has carried δ through its (old) weights; each
    block of its gradient is summed in registers and applied at once. Nothing is
    updated when the cost is not finite.
    """
    L = sizes.shape[0] - 1
    inv_m = 1.0 / m
    a_L = _rows(abuf, cap * a_off[L], m, sizes[L])
    delta_L = _rows(dbuf, cap * z_off[L - 1], m, sizes[L])
    total = OUTPUT_ERROR(a_L, y, delta_L, costs, acts[L - 1], cost, par[L - 1] % 2, m)  # noqa: F821
    if not np.isfinite(total):
        return total
    for l in range(L - 1, l_low - 1, -1):
        delta = _rows(dbuf, cap * z_off[l], m, sizes[l + 1])
        a_prev = _rows(abuf, cap * a_off[l], m, sizes[l])
        W, b = _weights(params, sizes, w_off, b_off, l)
        delta_prev = _rows(dbuf, cap * z_off[l - 1], m, sizes[l])
        scratch = grads[w_off[l] : w_off[l] + W.size]
        # BP2 through W^l: layer l's forward work, so it runs as layer l does
        HIDDEN_DELTA(W, delta, a_prev, delta_prev, acts[l - 1], par[l] % 2, scratch)  # noqa: F821
        SGD_LAYER(W, b, delta, a_prev, eta, inv_m, l2, par[l] % 2)  # noqa: F821
    return total


def _step_body(
    params, grads, state, sizes, acts, cost, w_off, b_off, a_off, z_off, a0, y,
    abuf, zbuf, dbuf, costs, cap, m, opt, hyper, step, par,
):  # fmt: skip
    """One mini-batch: forward, backward into ``grads``, then the optimiser's update
    (skipped when the cost is not finite); returns Σ_x C_x."""
    L = sizes.shape[0] - 1
    FORWARD_PASS(params, sizes, acts, w_off, b_off, a_off, z_off, a0, abuf, zbuf, cap, m, par, 0)  # noqa: F821
    total = BACKWARD(  # noqa: F821
        params, grads, sizes, acts, cost, w_off, b_off, a_off, z_off, a0, abuf, dbuf, y,
        costs, cap, m, par,
    )  # fmt: skip
    if np.isfinite(total):
        step[0] += 1
        _update(params, grads, state, opt, hyper, m, b_off[0], step[0], par[L])
    return total


@njit(cache=True, inline="always")
def _consecutive(order, start, m):
    """Whether the mini-batch's samples are consecutive rows of ``X``."""
    for i in range(m):
        if order[start + i] != order[start] + i:
            return False
    return True


@njit(cache=True, inline="always")
def _rows_of(X, order, start, m, buf, offset):
    """Rows ``order[start:start+m]`` of ``X``: a view when they are consecutive, else
    a copy gathered into ``buf`` from ``offset`` on."""
    if _consecutive(order, start, m):
        first = order[start]
        return X[first : first + m]
    out = _rows(buf, offset, m, X.shape[1])
    t.gather_rows(X, order, start, out, 0, m)
    return out


@intrinsic
def _prefetch(typingctx, arr, index):
    """Ask the CPU to start loading the cache line of flat element ``index`` of ``arr``."""
    if not isinstance(arr, nbtypes.Array):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]])
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32]),
            "llvm.prefetch.p0",
        )  # fmt: skip
        builder.call(fn, [ptr, i32(0), i32(2), i32(1)])  # read, into L2 (prefetcht1), data
        return context.get_dummy_value()

    return nbtypes.void(arr, nbtypes.intp), codegen


@njit(cache=True, inline="always")
def _prefetch_batch(X, order, start, m):
    """Start loading the input rows of the mini-batch at ``start`` into L2: a batch's
    rows are read once, straight from DRAM, and the cores otherwise wait for them
    (~4 of W1's ~34 µs per batch). Into L2, not L1 (``prefetcht0``): a 256-row chunk
    of W4 does not fit L1 and evicted the chunk being computed (W4 -20 %)."""
    n_in = X.shape[1]
    step = 64 // X.itemsize
    for i in range(min(m, order.shape[0] - start)):
        row = order[start + i] * n_in
        for e in range(0, n_in, step):
            _prefetch(X, row + e)


@njit(cache=True, inline="always")
def _batch(X, Y, order, i, batch_size, last, abuf, ybuf):
    """Mini-batch ``i``: its first position in ``order``, its size and its inputs and
    targets (views of ``X`` and ``Y``, or gathered into the buffers: :func:`_rows_of`);
    the next one's rows are prefetched when the run (mini-batches up to ``last``) goes
    on."""
    start = i * batch_size
    m = min(batch_size, order.shape[0] - start)
    a0 = _rows_of(X, order, start, m, abuf, 0)
    y = _rows_of(Y, order, start, m, ybuf, 0)
    if i + 1 < last:
        _prefetch_batch(X, order, start + batch_size, batch_size)
    return start, m, a0, y


@njit(cache=True, inline="always")
def _unowned(params, grads, state, sizes, acts, w_off, b_off, a_off, z_off, X, Y, order,
             abuf, zbuf, dbuf, ybuf, costs, batch_costs, hyper, step, par):  # fmt: skip
    """A training driver's array arguments as :func:`~.cpu_tiled.borrowed` views: the
    driver's loop then takes and passes views without atomic reference counts (W1:
    ~0.5 µs of the ~1.6 µs that each mini-batch spent between parallel regions)."""
    b = t.borrowed
    return (b(params), b(grads), b(state), b(sizes), b(acts), b(w_off), b(b_off), b(a_off),
            b(z_off), b(X), b(Y), b(order), b(abuf), b(zbuf), b(dbuf), b(ybuf), b(costs),
            b(batch_costs), b(hyper), b(step), b(par))  # fmt: skip


def _train_body(
    params, grads, state, sizes, acts, cost, w_off, b_off, a_off, z_off,
    X, Y, order, batch_size, first, last,
    abuf, zbuf, dbuf, ybuf, costs, batch_costs, opt, hyper, step, par,
):  # fmt: skip
    # the loop takes views of these without reference counting (see t.borrowed)
    (params, grads, state, sizes, acts, w_off, b_off, a_off, z_off, X, Y, order, abuf, zbuf,
     dbuf, ybuf, costs, batch_costs, hyper, step, par) = _unowned(
        params, grads, state, sizes, acts, w_off, b_off, a_off, z_off, X, Y, order, abuf, zbuf,
        dbuf, ybuf, costs, batch_costs, hyper, step, par)  # fmt: skip
    n = order.shape[0]
    cap = min(batch_size, n)
    for i in range(first, last):
        _, m, a0, y = _batch(X, Y, order, i, batch_size, last, abuf, ybuf)
        total = STEP(  # noqa: F821
            params, grads, state, sizes, acts, cost, w_off, b_off, a_off, z_off, a0, y,
            abuf, zbuf, dbuf, costs, cap, m, opt, hyper, step, par,
        )  # fmt: skip
        mean_cost = total / m
        batch_costs[i] = mean_cost
        if not np.isfinite(mean_cost):
            return i - first
    return last - first


def _train_sgd_body(
    params, grads, state, sizes, acts, cost, w_off, b_off, a_off, z_off,
    X, Y, order, batch_size, first, last,
    abuf, zbuf, dbuf, ybuf, costs, batch_costs, opt, hyper, step, par,
):  # fmt: skip
    """:func:`_train_body` for plain SGD with the gradients folded into the update: the
    loop of :func:`_sgd_loop_body` as the only part, its parallel kernels forking and
    joining the pool as they go."""
    return LOOP(  # noqa: F821
        np.int64(0), np.int64(1), np.zeros(sync.SYNC_SIZE, np.int64), params, grads, state,
        sizes, acts, cost,
        w_off, b_off, a_off, z_off, X, Y, order, batch_size, first, last, abuf, zbuf, dbuf,
        ybuf, costs, batch_costs, opt, hyper, step, par,
    )  # fmt: skip


# How the loop does layer 0's work: as the parts of one region (``_region_*``: each
# part its share, between barriers), or on this thread by parallel kernels that fork
# and join the pool (``_forks_*``). Bound by _family as LAYER0_FORWARD, LAYER0_SGD,
# FUSED and THREADS.
@njit(cache=True, inline="always")
def _region_layer0_forward(shared, W, b, a_prev, z, a, act, par, p, parts):
    sync.barrier(shared, parts)  # the inputs that part 0 gathered
    t._weighted_sums_part(W, b, a_prev, z, a, act, p, parts)
    sync.barrier(shared, parts)
    if p == 0:
        t._softmax_after_split(W, a_prev, z, a, act, parts)


@njit(cache=True, inline="always")
def _forks_layer0_forward(shared, W, b, a_prev, z, a, act, par, p, parts):
    _tiled_forward(W, b, a_prev, z, a, act, par[0] % 2)


@njit(cache=True, inline="always")
def _region_layer0_sgd(W, b, delta, a_prev, eta, inv_m, l2, par, p, parts):
    step, keep = t.step_keep(W, eta, inv_m, l2)
    t._weight_grads_part(delta, a_prev, W, W, b, step, keep, p, parts)


@njit(cache=True, inline="always")
def _forks_layer0_sgd(W, b, delta, a_prev, eta, inv_m, l2, par, p, parts):
    _tiled_sgd_layer(W, b, delta, a_prev, eta, inv_m, l2, par[0] % 2)


@njit(cache=True, inline="always")
def _region_fused(W, b, delta, a_prev, eta, inv_m, l2, a_next, z_next, out_next, act, W_up,
                  delta_up, a, X, rows, first, gathered, p, parts):  # fmt: skip
    step, keep = t.step_keep(W, eta, inv_m, l2)
    t.update_forward_part(W, b, delta, a_prev, step, keep, a_next, z_next, out_next, act,
                          np.bool_(True), W_up, delta_up, a, X, rows, first, gathered, p,
                          parts)  # fmt: skip


@njit(cache=True, inline="always")
def _forks_fused(W, b, delta, a_prev, eta, inv_m, l2, a_next, z_next, out_next, act, W_up,
                 delta_up, a, X, rows, first, gathered, p, parts):  # fmt: skip
    t.sgd_update_forward_tiled(W, b, delta, a_prev, eta, inv_m, l2, a_next, z_next, out_next,
                               act, W_up, delta_up, a, X, rows, first, gathered)  # fmt: skip


@njit(cache=True, inline="always")
def _region_threads(parts):
    return parts


@njit(cache=True, inline="always")
def _forks_threads(parts):
    return t._threads()


@njit(cache=True, inline="always")
def _serial_forward(W, b, a_prev, z, a, act, parallel):
    """A layer above layer 0 inside the region: always on this thread (``tiled_small``
    plans every such layer serial; a parallel kernel here would nest regions)."""
    t.weighted_sums_tiled_serial(W, b, a_prev, z, a, act)


@njit(cache=True, inline="always")
def _serial_sgd_layer(W, b, delta, a_prev, eta, inv_m, l2, parallel):
    """As :func:`_serial_forward`, for the fused SGD step of a layer above layer 1."""
    t.sgd_layer_update_tiled_serial(W, b, delta, a_prev, eta, inv_m, l2)


def _sgd_loop_body(
    p, parts, shared, params, grads, state, sizes, acts, cost, w_off, b_off, a_off, z_off,
    X, Y, order, batch_size, first, last,
    abuf, zbuf, dbuf, ybuf, costs, batch_costs, opt, hyper, step, par,
):  # fmt: skip
    """The mini-batches ``first .. last-1`` of plain SGD, as part ``p`` of ``parts``;
    returns how many were completed.

    With one part, this thread runs them all and the parallel kernels split layer 0's
    work, each a fork and join of the pool. Layer 0's update and the next mini-batch's
    layer-0 forward pass then share one parallel region
    (:func:`~nbbackprop.kernels.cpu_tiled.sgd_update_forward_tiled`) when both split
    ``W^0`` by rows: one fork/join per mini-batch fewer (W1: 5,000 per epoch), the same
    arithmetic. When BP2 into layer 0 takes the outer tiles, it and layer 1's weight step
    join that region too, each thread doing its own neurons' columns (layer 1's bias step
    stays serial): nothing of layer 1 but BP1 and its forward pass is left on one thread.

    With more parts (:func:`_run_parts`: one per thread, the ``tiled_small`` family,
    whose layers above layer 0 all run on one thread), part 0 does that serial work,
    each part its share of that region's work
    (:func:`~nbbackprop.kernels.cpu_tiled.update_forward_part`; of layer 0's forward
    pass or update alone when they do not share one), and they meet at a barrier after
    each: two barriers per mini-batch instead of two forks and joins (W1: ~0.06 µs each
    against ~0.8). Every part walks the same bookkeeping (the slots and views below are
    the same in each); part 0 alone gathers rows and writes the cost, which the others
    read after the barrier, so that all stop at the same mini-batch. A part that finds
    the region called off at :func:`~nbbackprop.kernels.sync.start` returns -1 at once;
    the one that called it off does the work as the only part. Part 0 (or the part
    alone) returns the count, the others -1.

    The next mini-batch is read in place when its rows are consecutive, else gathered
    first into an input slot of ``abuf`` (after the last layer's activations) other than
    this one's, whose inputs the update reads. With a third slot, the region also
    gathers the mini-batch after next when its rows are not consecutive (a shuffled
    epoch), each thread its share of the rows: copying 10 random rows of 784 costs one
    core ~4 µs (its memory queue, not the bandwidth, is the limit), which two cores
    halve.
    """
    # the loop takes views of these without reference counting (see t.borrowed)
    (params, grads, state, sizes, acts, w_off, b_off, a_off, z_off, X, Y, order, abuf, zbuf,
     dbuf, ybuf, costs, batch_costs, hyper, step, par) = _unowned(
        params, grads, state, sizes, acts, w_off, b_off, a_off, z_off, X, Y, order, abuf, zbuf,
        dbuf, ybuf, costs, batch_costs, hyper, step, par)  # fmt: skip
    lead = p == 0
    n = order.shape[0]
    L = sizes.shape[0] - 1
    cap = min(batch_size, n)
    eta = hyper[ETA]
    l2 = hyper[L2]
    n_in = sizes[0]
    W0, b0 = _weights(params, sizes, w_off, b_off, 0)
    skew = L >= 2 and par[0] == TILED_PARALLEL and acts[0] != t.SOFTMAX
    # where gathered inputs go: layer 0's slot, then up to two after the last layer's
    base = cap * (a_off[L] + sizes[L])
    slots = (0, base, base + cap * n_in)
    n_slots = 1 + (abuf.shape[0] >= base + cap * n_in) + (abuf.shape[0] >= base + 2 * cap * n_in)
    cur = -1  # the slot of this mini-batch's inputs (-1: read in place)
    early, early_slot = -1, -1  # a mini-batch whose inputs a region gathered, and where
    ready = 0  # 1 when this mini-batch's inputs and layer-0 forward pass are ready
    a0 = _rows(abuf, 0, 0, n_in)
    meet = sync.start(shared, parts)
    if meet == sync.CALLED_OFF_ELSEWHERE:
        return -1
    if meet == sync.ALONE:  # no other part came: this one does all the work
        p, parts, lead = np.int64(0), np.int64(1), True
    for i in range(first, last):
        start = i * batch_size
        m = min(batch_size, n - start)
        if ready == 0:
            cur, a0 = _inputs(X, order, start, m, abuf, slots, early == i, early_slot, 0,
                              _consecutive(order, start, m), lead)  # fmt: skip
            LAYER0_FORWARD(  # noqa: F821
                shared, W0, b0, a0, _rows(zbuf, cap * z_off[0], m, sizes[1]),
                _rows(abuf, cap * a_off[1], m, sizes[1]), acts[0], par, p, parts,
            )  # fmt: skip
        fuse = False  # this update and the next forward pass in one region
        start_n, m_n, in_place = start + batch_size, 0, True
        if skew and i + 1 < last:
            m_n = min(batch_size, n - start_n)
            in_place = _consecutive(order, start_n, m_n)
            fuse = (in_place or early == i + 1 or n_slots >= 2) and t._forward_by_cols(
                W0,
                m_n,
                THREADS(parts),  # noqa: F821
            )
        ahead = 2 if fuse else 1  # a fused region reads the next batch in this step
        # layer 1's BP2 and step in that region too, when BP2 takes the outer tiles
        lift = fuse and min(m, sizes[1], sizes[2]) < t.BP2_DOT_MIN
        inv_m = 1.0 / m
        if i + ahead < last and p == parts - 1:
            _prefetch_batch(X, order, start + ahead * batch_size, batch_size)
        if lead:
            y = _rows_of(Y, order, start, m, ybuf, 0)
            FORWARD_PASS(  # noqa: F821
                params, sizes, acts, w_off, b_off, a_off, z_off, a0, abuf, zbuf, cap, m, par, 1
            )
            total = BACKWARD_SGD(  # noqa: F821
                params, grads, sizes, acts, cost, w_off, b_off, a_off, z_off, abuf, dbuf, y,
                costs, cap, m, par, eta, l2, 2 if lift else 1,
            )  # fmt: skip
            batch_costs[i] = total / m
            if lift and np.isfinite(batch_costs[i]):
                _, b1 = _weights(params, sizes, w_off, b_off, 1)
                t.bias_step(b1, _rows(dbuf, cap * z_off[1], m, sizes[2]), eta, inv_m)
        delta0 = _rows(dbuf, cap * z_off[0], m, sizes[1])
        W_up, delta_up, a_hidden = W0[:0], delta0[:0], delta0[:0]
        nxt, a_next = cur, a0
        g_first, gathered = 0, _rows(abuf, 0, 0, n_in)
        if fuse:
            if lift:
                W_up, _ = _weights(params, sizes, w_off, b_off, 1)
                delta_up = _rows(dbuf, cap * z_off[1], m, sizes[2])
                a_hidden = _rows(abuf, cap * a_off[1], m, sizes[1])
            # the next mini-batch's inputs: gathered by the last region, read in place,
            # or gathered now into a slot that this one's inputs (read by the update) are not in
            nxt, a_next = _inputs(X, order, start_n, m_n, abuf, slots, early == i + 1,
                                  early_slot, _free_slot(cur, -1), in_place, lead)  # fmt: skip
            # and the region gathers the one after, when it has three slots and those
            # rows are not consecutive (each thread copies its share)
            early = -1
            if n_slots == 3 and i + 2 < last:
                g_first = start_n + batch_size
                m_g = min(batch_size, n - g_first)
                if not _consecutive(order, g_first, m_g):
                    early, early_slot = i + 2, _free_slot(cur, nxt)
                    gathered = _rows(abuf, slots[early_slot], m_g, n_in)
        # part 0's work is done: the cost, the next inputs, layer 1's biases
        sync.barrier(shared, parts)
        if not np.isfinite(batch_costs[i]):
            return i - first if lead else -1
        if fuse:
            FUSED(  # noqa: F821
                W0, b0, delta0, a0, eta, inv_m, l2, a_next,
                _rows(zbuf, cap * z_off[0], m_n, sizes[1]),
                _rows(abuf, cap * a_off[1], m_n, sizes[1]), acts[0], W_up, delta_up, a_hidden,
                X, order, g_first, gathered, p, parts,
            )  # fmt: skip
            cur, a0 = nxt, a_next
            ready = 1
        else:
            LAYER0_SGD(W0, b0, delta0, a0, eta, inv_m, l2, par, p, parts)  # noqa: F821
            ready = 0
        if lead:
            step[0] += 1
        # layer 0 updated, the next inputs gathered and fed forward
        sync.barrier(shared, parts)
    return last - first if lead else -1


@njit(cache=True, inline="always")
def _free_slot(a, b):
    """The first input slot that is neither ``a`` nor ``b``."""
    s = 0
    while s == a or s == b:
        s += 1
    return s


@njit(cache=True, inline="always")
def _inputs(X, order, start, m, abuf, slots, early, early_slot, slot, consecutive, copy):
    """The inputs of the mini-batch at ``start`` and their slot: where a region already
    gathered them (``early``), else a view of ``X`` (slot -1) when the rows are
    ``consecutive`` (:func:`_consecutive`, which the caller has), else gathered now
    into ``slot`` (when ``copy``: the other parts of a region take the slot's view)."""
    if early:
        return early_slot, _rows(abuf, slots[early_slot], m, X.shape[1])
    if consecutive:
        return -1, X[order[start] : order[start] + m]
    out = _rows(abuf, slots[slot], m, X.shape[1])
    if copy:
        t.gather_rows(X, order, start, out, 0, m)
    return slot, out


def _forward_rows_body(
    params, sizes, acts, w_off, b_off, a_off, z_off, X, out, abuf, zbuf, cap, par
):  # fmt: skip
    n = X.shape[0]
    L = sizes.shape[0] - 1
    order = np.arange(n)
    for start in range(0, n, cap):
        m = min(cap, n - start)
        a0 = X[start : start + m]
        if start + m < n:
            _prefetch_batch(X, order, start + m, cap)
        FORWARD_PASS(  # noqa: F821
            params, sizes, acts, w_off, b_off, a_off, z_off, a0, abuf, zbuf, cap, m, par, 0
        )
        out[start : start + m] = _rows(abuf, cap * a_off[L], m, sizes[L])


def _batch_gradients_body(
    params, grads, sizes, acts, cost, w_off, b_off, a_off, z_off, X, Y, abuf, zbuf, dbuf,
    costs, par,
):  # fmt: skip
    m = X.shape[0]
    FORWARD_PASS(params, sizes, acts, w_off, b_off, a_off, z_off, X, abuf, zbuf, m, m, par, 0)  # noqa: F821
    return BACKWARD(  # noqa: F821
        params, grads, sizes, acts, cost, w_off, b_off, a_off, z_off, X, abuf, dbuf, Y, costs,
        m, m, par,
    )  # fmt: skip


def _family(name, region=False, **kernels):
    part = {"inline": "always"}
    fwd = _specialise(_forward_body, f"_forward_{name}", **part, **kernels)
    bwd = _specialise(_backward_body, f"_backward_{name}", **part, **kernels)
    out = {
        "train": _specialise(
            _train_body,
            f"_train_{name}",
            STEP=_specialise(_step_body, f"_step_{name}", **part, FORWARD_PASS=fwd, BACKWARD=bwd),
        ),
        "forward_rows": _specialise(_forward_rows_body, f"_forward_rows_{name}", FORWARD_PASS=fwd),
        "batch_gradients": _specialise(
            _batch_gradients_body, f"_batch_gradients_{name}", FORWARD_PASS=fwd, BACKWARD=bwd
        ),
    }
    if "SGD_LAYER" in kernels:
        if region:
            # the layers above layer 0 on the thread of part 0, layer 0 by the parts
            serial = dict(kernels, FORWARD=_serial_forward, SGD_LAYER=_serial_sgd_layer)
            loop_fwd = _specialise(_forward_body, f"_forward_serial_{name}", **part, **serial)
            layer0 = dict(LAYER0_FORWARD=_region_layer0_forward, LAYER0_SGD=_region_layer0_sgd,
                          FUSED=_region_fused, THREADS=_region_threads)  # fmt: skip
            bwd_kernels = serial
        else:
            loop_fwd, bwd_kernels = fwd, kernels
            layer0 = dict(LAYER0_FORWARD=_forks_layer0_forward, LAYER0_SGD=_forks_layer0_sgd,
                          FUSED=_forks_fused, THREADS=_forks_threads)  # fmt: skip
        bwd_sgd = _specialise(_backward_sgd_body, f"_backward_sgd_{name}", **part, **bwd_kernels)
        loop = _specialise(_sgd_loop_body, f"_sgd_loop_{name}", nogil=region,
                           FORWARD_PASS=loop_fwd, BACKWARD_SGD=bwd_sgd, **layer0)  # fmt: skip
        if region:
            out["sgd_loop"] = loop
        else:
            out["train_sgd"] = _specialise(_train_sgd_body, f"_train_sgd_{name}", LOOP=loop)
    return out


_PLAIN = _family(
    "plain",
    FORWARD=_plain_forward,
    OUTPUT_ERROR=_plain_output_error,
    HIDDEN_DELTA=_plain_hidden_delta,
    GRADS=_plain_grads,
)
_TILED = _family(
    "tiled",
    FORWARD=_tiled_forward,
    OUTPUT_ERROR=_tiled_output_error,
    HIDDEN_DELTA=_tiled_hidden_delta,
    GRADS=_tiled_grads,
    SGD_LAYER=_tiled_sgd_layer,
)

# The tiled family again, for networks whose every BP2 runs serially on the outer-tile
# path (W1, W2): its drivers do not contain the parallel BP2 kernel nor the transpose and dot
# path, a third of W1's cold compilation. forward_rows has no BP2 and stays in _TILED.
_TILED_SMALL = _family(
    "tiled_small",
    region=True,
    FORWARD=_tiled_forward,
    OUTPUT_ERROR=_tiled_output_error,
    HIDDEN_DELTA=_small_hidden_delta,
    GRADS=_tiled_grads,
    SGD_LAYER=_tiled_sgd_layer,
)


def _small_bp2(sizes, par, m) -> bool:
    """Whether every BP2 of mini-batches of ``m`` samples runs serially (layer l's flag,
    l ≥ 1) on the outer-tile path of :func:`~nbbackprop.kernels.cpu_tiled.hidden_delta_tiled`
    (some dimension below ``BP2_DOT_MIN``)."""
    return all(
        par[l] % 2 == 0 and min(m, sizes[l], sizes[l + 1]) < t.BP2_DOT_MIN
        for l in range(1, sizes.shape[0] - 1)
    )


def _family_of(par, sizes=None, m=0):
    if par[0] < TILED:
        return _PLAIN
    return _TILED_SMALL if sizes is not None and _small_bp2(sizes, par, m) else _TILED


# ------------------------------------------------------------------ public drivers
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
    gradients are folded into the update.
    """
    family = _family_of(par, sizes, min(batch_size, order.shape[0]))
    L = sizes.shape[0] - 1
    args = (
        params, grads, state, sizes, acts, cost, w_off, b_off, a_off, z_off,
        X, Y, order, batch_size, first, last,
        abuf, zbuf, dbuf, ybuf, costs, batch_costs, opt, hyper, step, par,
    )  # fmt: skip
    if opt == SGD and par[L + 1] != 0:
        if "sgd_loop" in family:
            parts = numba.get_num_threads() if par[0] == TILED_PARALLEL else 1
            return _run_parts(family["sgd_loop"], parts, args)
        if "train_sgd" in family:
            return family["train_sgd"](*args)
    return family["train"](*args)


_POOL: list = [None, 0, threading.Lock()]  # the executor, its threads, a lock


def _forget_pool() -> None:
    # a forked child has none of the parent's threads (nor a usable lock held by one)
    _POOL[:] = [None, 0, threading.Lock()]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _pool(workers: int) -> ThreadPoolExecutor:
    """Threads for the parts after the first (this thread runs part 0): kept between
    calls; a larger pool replaces it when more parts are asked for (the old one is not
    shut down: another thread may still be submitting to it; its idle threads end
    when it is collected)."""
    with _POOL[2]:
        if _POOL[1] < workers:
            _POOL[:2] = [ThreadPoolExecutor(workers, thread_name_prefix="nbbackprop"), workers]
        return _POOL[0]


def _run_parts(loop, parts: int, args, shared=None) -> int:
    """Run ``loop`` (a compiled :func:`_sgd_loop_body`, which releases the GIL) as
    ``parts`` parts at once: part 0 on this thread, the others on threads of
    :func:`_pool`. The parts meet at the barriers of :mod:`~nbbackprop.kernels.sync`
    between the stages of each mini-batch, so no parallel region forks and joins per
    mini-batch, and the loop is compiled once, not again at every level of a Numba
    ``prange`` region (its gufunc and two wrappers each re-optimise everything linked
    into them: W1's cold start took ~2.5 s longer that way). A part that has not started
    when part 0 gives up waiting (:func:`~nbbackprop.kernels.sync.start`) leaves part 0
    to do all the work alone. ``shared``: the parts' counters (a fresh zeroed
    ``sync.SYNC_SIZE`` array; made here by default).

    Nothing trains after this returns or raises: if this thread is interrupted (Ctrl-C
    while it waits to compile, or while it waits for the others) or a submission
    fails, the region is called off, so that a part not yet started does nothing, and
    every part already running is waited for before the exception goes on (the
    divergence and Ctrl-C guards restore and save the parameters after it)."""
    if shared is None:
        # its counters 64 bytes apart on lines of their own (sync.BARRIER)
        shared = aligned_zeros(sync.SYNC_SIZE, np.int64)
    if parts == 1:
        return loop(np.int64(0), np.int64(1), shared, *args)
    others = []
    try:
        pool = _pool(parts - 1)
        for p in range(1, parts):
            others.append(pool.submit(loop, np.int64(p), np.int64(parts), shared, *args))
        counts = [loop(np.int64(0), np.int64(parts), shared, *args)]
        # a part still queued (the pool busy elsewhere) was left out: part 0 did its work
        counts += [f.result() for f in others if not f.cancel()]
    except BaseException:
        sync.call_off(shared)
        for f in others:
            if not f.cancel():
                _wait_quietly(f)
        raise
    return max(counts)  # the part that led returns the count, the others -1


def _wait_quietly(future) -> None:
    """Wait for a running part to end, whatever its outcome or a further Ctrl-C."""
    while True:
        try:
            future.exception()
            return
        except BaseException:  # noqa: S112 - a second Ctrl-C must not leave it running
            continue


def forward_rows(params, sizes, acts, w_off, b_off, a_off, z_off, X, out, abuf, zbuf, cap, par):
    """Feed the rows of ``X`` forward, ``cap`` at a time, writing ``a^L`` into ``out``."""
    return _family_of(par)["forward_rows"](
        params, sizes, acts, w_off, b_off, a_off, z_off, X, out, abuf, zbuf, cap, par
    )


def batch_gradients(
    params, grads, sizes, acts, cost, w_off, b_off, a_off, z_off, X, Y, abuf, zbuf, dbuf,
    costs, par,
):  # fmt: skip
    """Forward and backward over all rows of ``X`` as one batch.

    ``grads`` receives the gradients summed over the rows, ``costs`` each row's C_x;
    returns Σ_x C_x.
    """
    return _family_of(par, sizes, X.shape[0])["batch_gradients"](
        params, grads, sizes, acts, cost, w_off, b_off, a_off, z_off, X, Y, abuf, zbuf, dbuf,
        costs, par,
    )  # fmt: skip
