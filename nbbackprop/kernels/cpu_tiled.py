r"""Tiled CPU kernels: the equations of :mod:`nbbackprop.kernels.cpu`, cache-blocked
and register-tiled.

Same equations, same argument order as the per-equation kernels (BP2 takes a scratch
buffer for the transpose of large weights), built from the two micro-kernels of
:mod:`nbbackprop.kernels.cpu_tiles`:

- :func:`weighted_sums_tiled` (eq. 1–3) is a product ``a_prev Wᵀ`` whose operands
  are both contiguous along the summed axis: 4 × 4 **dot tiles**, accumulated in
  registers over all of k.
- :func:`hidden_delta_tiled` (BP2, ``δ_next W``) and :func:`weight_grads_tiled`
  (BP4, ``δᵀ a_prev``) write rows that are contiguous along k: **outer tiles** of up
  to 4 rows × 4 SIMD registers, each summed over all its terms in registers and
  written once, with no transpose.
- :func:`sgd_layer_update_tiled` folds BP3, BP4 and the SGD step of one layer into
  one pass over ``W``.

Cache blocking: the forward pass cuts ``W`` into blocks of :data:`BLOCK_BYTES` (L2)
that every sample tile re-reads; the outer tiles walk the columns in blocks of 4
registers (2 with AVX2), so that the block of the operand they all read stays in L1 (W2's
``a_prev[:, block]``: 32 × 64 float32, 8 KiB) while the row tiles pass over it.

Activations are applied by row passes that LLVM vectorises; σ uses
:func:`_exp_neg64`, an ``exp`` for non-positive arguments written with a polynomial
(a call to ``math.exp`` cannot be vectorised without a vector maths library, and
the scalar calls cost ~30 % of a forward pass).

Each kernel is compiled twice as in :mod:`nbbackprop.kernels.cpu`: ``name`` splits
its work into one contiguous part per thread (``prange`` over the parts, so that a
thread owns the same rows of ``W`` in every kernel), ``name_serial`` runs it as one
part. One part's work is its own compiled function, ``_name_part(..., p, parts)``,
which both compilations call: Numba emits a ``prange`` body several times over
(once per gufunc variant it builds), so a tiled body written inside the ``prange``
loop was compiled ~6 times, cold. They trust their inputs.
"""

from __future__ import annotations

import types as types_

import numpy as np
from numba import njit, prange, types
from numba.core import cgutils
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic, overload
from numba.np.arrayobj import populate_array
from numba.np.ufunc.parallel import _iget_num_threads

from .cpu import ERROR_MODEL, FASTMATH, RELU, SIGMOID, SOFTMAX, TANH, _softmax_row
from .cpu_tiles import OUTER_VECTORS, dot_tile, outer_block, tile_at, tile_count
from .simd import lanes

#: Bytes of the operand block that stays in L2 while tiles stream past it (half of a
#: Zen 4 core's 1 MiB L2).
BLOCK_BYTES = 1 << 19
#: Bytes of L1 data cache that a forward pass's rows of W and sample tile may fill
#: (of Zen 5's 48 KiB).
L1_BYTES = 40960
#: Largest ``W`` (bytes) whose rows each thread keeps for itself, in the forward pass
#: as in the update: about what the two cores' L2 hold besides the activations.
OWN_ROWS_BYTES = 1 << 20
#: Samples, rows and columns from which BP2 transposes ``W_next`` and uses dot tiles.
BP2_DOT_MIN = 64

#: fastmath for the elementwise passes: no ``reassoc``, which would fold the two-part
#: ln 2 of the range reduction in :func:`_exp_neg` back into one constant.
_ELEMENTWISE = {"nsz", "contract"}


# --------------------------------------------------------------------------- views
# ``reshape`` and ``ravel`` compile to a stride computation, checks and exceptions at
# every call site (``ravel`` also a copying path), seconds of cold compilation in all.
# The views here are built directly; the public API has checked the buffers first.
@intrinsic
def as_rows(typingctx, buf, start, rows, cols):
    """``buf[start : start + rows * cols]`` of a 1-D array, viewed as ``(rows, cols)``.

    Unchecked: the caller guarantees that the range lies inside ``buf``.
    """
    if not isinstance(buf, types.Array) or buf.ndim != 1:
        return None
    contiguous = buf.layout == "C"
    ret = buf.copy(ndim=2, layout="C" if contiguous else "A")

    def codegen(context, builder, sig, args):
        src = context.make_array(sig.args[0])(context, builder, args[0])
        _, first, n_rows, n_cols = args
        stride = builder.extract_value(src.strides, 0)
        if contiguous:
            data = builder.gep(src.data, [first], inbounds=True)
        else:
            data = cgutils.pointer_add(builder, src.data, builder.mul(first, stride))
        out = context.make_array(sig.return_type)(context, builder)
        populate_array(
            out, data=data, shape=[n_rows, n_cols], strides=[builder.mul(n_cols, stride), stride],
            itemsize=src.itemsize, meminfo=src.meminfo, parent=src.parent,
        )  # fmt: skip
        return impl_ret_borrowed(context, builder, sig.return_type, out._getvalue())

    return ret(buf, types.intp, types.intp, types.intp), codegen


@intrinsic
def _flat(typingctx, arr):
    """The elements of a C-contiguous array as a 1-D view (``ravel`` without its checks)."""
    if not isinstance(arr, types.Array) or arr.layout != "C":
        return None
    ret = arr.copy(ndim=1, layout="C")

    def codegen(context, builder, sig, args):
        src = context.make_array(sig.args[0])(context, builder, args[0])
        size = context.get_constant(types.intp, 1)
        for extent in cgutils.unpack_tuple(builder, src.shape, arr.ndim):
            size = builder.mul(size, extent)
        out = context.make_array(sig.return_type)(context, builder)
        populate_array(
            out, data=src.data, shape=[size], strides=[src.itemsize], itemsize=src.itemsize,
            meminfo=src.meminfo, parent=src.parent,
        )  # fmt: skip
        return impl_ret_borrowed(context, builder, sig.return_type, out._getvalue())

    return ret(arr), codegen


@intrinsic
def _no_rows(typingctx):
    """An empty int64 array with no data and no owner: the row list of a region that
    gathers nothing (``np.empty(0, np.int64)`` would allocate at every call)."""
    ret = types.Array(types.int64, 1, "C")

    def codegen(context, builder, sig, args):
        out = context.make_array(ret)(context, builder)
        zero = context.get_constant(types.intp, 0)
        itemsize = context.get_constant(types.intp, 8)
        populate_array(
            out, data=cgutils.get_null_value(out.data.type), shape=[zero], strides=[itemsize],
            itemsize=itemsize, meminfo=None,
        )  # fmt: skip
        return out._getvalue()

    return ret(), codegen


@intrinsic
def borrowed(typingctx, arr):
    """``arr`` without its owner (no meminfo, no parent): the same data, shape and
    strides, but Numba's reference counting skips it and every view taken from it.

    Each view a compiled function takes of an owned array, and each call that passes
    one, increments and decrements the owner's count with an atomic instruction; W1's
    driver made ~50 of them per mini-batch between the parallel regions, about half of
    that serial time (perf). Only for arrays that outlive every use of the result: a
    driver's own arguments, inside the driver; never returned or stored. Returned to
    Python, a borrowed view (or a slice of one) would be an array that does not keep
    its owner alive.
    """
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, sig, args):
        src = context.make_array(sig.args[0])(context, builder, args[0])
        out = context.make_array(sig.return_type)(context, builder)
        populate_array(
            out, data=src.data, shape=src.shape, strides=src.strides, itemsize=src.itemsize,
            meminfo=None,
        )  # fmt: skip
        return out._getvalue()

    return arr(arr), codegen


# --------------------------------------------------------------------- elementwise
@intrinsic
def _as_float(typingctx, bits):
    """Reinterpret the bits of an int64 (int32) as a float64 (float32)."""
    if not isinstance(bits, types.Integer) or bits.bitwidth not in (32, 64):
        return None
    ret = types.float64 if bits.bitwidth == 64 else types.float32

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(ret))

    return ret(bits), codegen


@njit(cache=True, fastmath=_ELEMENTWISE, error_model="numpy")
def _exp_neg64(t):
    """``exp(t)`` for float64 ``t <= 0``, with nothing LLVM cannot vectorise.

    ``t = q ln 2 + r`` with ``|r| <= ln 2 / 2`` (Cody–Waite: ln 2 in two parts so that
    ``q ln2_hi`` is exact), ``e^r`` by its Taylor polynomial to degree 13 (truncation
    below 0.03 ulp), times ``2^q`` assembled from its bits. ``t`` is clamped at -700
    (``e^-700`` ~ 1e-304), where a sigmoid is 0 to every tolerance in use.
    """
    t = max(t, -700.0)
    q = np.floor(t * 1.4426950408889634 + 0.5)
    r = t - q * 6.93147180369123816490e-01 - q * 1.90821492927058770002e-10
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p * _as_float((np.int64(q) + 1023) << 52)


@njit(cache=True, fastmath=_ELEMENTWISE, error_model="numpy")
def _exp_neg32(t):
    """:func:`_exp_neg64` for float32: degree 7, clamped at -87 (``e^-87`` ~ 2e-38)."""
    t = max(t, np.float32(-87.0))
    q = np.floor(t * np.float32(1.442695) + np.float32(0.5))
    r = t - q * np.float32(0.693145751953125) - q * np.float32(1.428606765330187e-06)
    p = np.float32(1.0 / 5040.0)
    p = p * r + np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    # Numba widens int32 arithmetic to int64: narrow the bits back before the cast.
    return p * _as_float(np.int32((np.int64(q) + 127) << 23))


@njit(cache=True, fastmath=_ELEMENTWISE, error_model="numpy")
def _sigmoid_row(z, a):
    """``a = σ(z)`` over a row, vectorised: σ(z) = 1/(1 + e) for z ≥ 0 and e/(1 + e)
    for z < 0 with e = exp(-|z|), the two branches of :func:`nbbackprop.functions.activate`."""
    if z.itemsize == 8:
        for k in range(z.shape[0]):
            e = _exp_neg64(-abs(z[k]))
            s = 1.0 / (1.0 + e)
            a[k] = s if z[k] >= 0 else e * s
    else:
        one = np.float32(1)
        for k in range(z.shape[0]):
            e = _exp_neg32(-abs(z[k]))
            s = one / (one + e)
            a[k] = s if z[k] >= 0 else e * s


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _activate_row(z, a, act):
    """``a = σ(z)`` over one row (softmax included), vectorised where possible."""
    if act == SIGMOID:
        _sigmoid_row(z, a)
    elif act == SOFTMAX:
        _softmax_row(z, a)
    elif act == TANH:
        for k in range(z.shape[0]):
            a[k] = np.tanh(z[k])
    elif act == RELU:
        zero = z.dtype.type(0)
        for k in range(z.shape[0]):
            a[k] = z[k] if z[k] > zero else zero * z[k]
    else:
        for k in range(z.shape[0]):
            a[k] = z[k]


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _derivative_row(d, a, act):
    """``d *= σ'(z)`` over one row, σ' from the activations a (typed constants, so a
    float32 row stays float32)."""
    one = a.dtype.type(1)
    zero = a.dtype.type(0)
    if act == SIGMOID:
        for k in range(d.shape[0]):
            d[k] = d[k] * (a[k] * (one - a[k]))
    elif act == TANH:
        for k in range(d.shape[0]):
            d[k] = d[k] * (one - a[k] * a[k])
    elif act == RELU:
        for k in range(d.shape[0]):
            d[k] = d[k] if a[k] > zero else zero


# ------------------------------------------------------------------------ blocking
@njit(cache=True, inline="always")
def _threads():
    # numba.get_num_threads() goes through a ctypes pointer, which stops Numba from
    # caching the kernel; this intrinsic is the call Numba's own parfors make.
    return _iget_num_threads()


@njit(cache=True, inline="always")
def _one_thread():
    # int64, as _iget_num_threads returns: the part functions then have one signature
    # for the parallel and the serial kernel and are compiled once for both
    return np.int64(1)


@njit(cache=True, error_model=ERROR_MODEL)
def _share(n, parts, p):
    """Items ``[lo, hi)`` of ``n`` that part ``p`` of ``parts`` owns (contiguous, even)."""
    q, r = divmod(n, parts)
    lo = p * q + min(p, r)
    return lo, lo + q + (1 if p < r else 0)


@njit(cache=True, error_model=ERROR_MODEL)
def _tile_span(t_lo, t_hi, n):
    """The rows ``[lo, hi)`` covered by tiles ``t_lo .. t_hi-1`` of ``n`` rows."""
    if t_lo >= t_hi:
        return 0, 0
    lo, _ = tile_at(t_lo, n)
    last, size = tile_at(t_hi - 1, n)
    return lo, last + size


@njit(cache=True, error_model=ERROR_MODEL)
def _rows_in(cols, itemsize, n, least):
    """Rows (a multiple of 4, at least ``least``, at most ``n``) of ``cols`` columns
    that fit :data:`BLOCK_BYTES`."""
    rows = BLOCK_BYTES // (cols * itemsize)
    rows = max(least, rows - rows % 4)
    return min(rows, n)


# ------------------------------------------------------------------------- kernels
@njit(cache=True, error_model=ERROR_MODEL)
def _neuron_group(n_in, itemsize):
    """Neuron tiles whose rows of W stay in L1 (with one sample tile's rows beside them)
    while the forward pass takes every sample tile: at least 1."""
    rows = L1_BYTES // (n_in * itemsize)
    return max(1, (rows - 4) // 4)


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _forward_tiles(W, b, a_prev, z, it_lo, it_hi, jt_lo, jt_hi, j_lo):
    """``z = a_prev Wᵀ + b`` on sample tiles ``it_lo:it_hi`` × neuron tiles
    ``jt_lo:jt_hi`` of the rows ``j_lo:`` of W (tiles numbered within that block); no
    bias when ``b`` is empty."""
    bias = b.shape[0] > 0
    m = a_prev.shape[0]
    nj = W.shape[0] - j_lo
    group = _neuron_group(W.shape[1], W.itemsize)
    for jg in range(jt_lo, jt_hi, group):  # these rows of W stay in L1 over the samples
        for it in range(it_lo, it_hi):
            i0, mr = tile_at(it, m)
            for jt in range(jg, min(jg + group, jt_hi)):
                j0, nr = tile_at(jt, nj)
                j0 += j_lo
                c = dot_tile(mr, nr, a_prev, i0, W, j0)
                for r in range(mr):
                    zx = z[i0 + r]
                    for s in range(nr):
                        zx[j0 + s] = c[4 * r + s] + (b[j0 + s] if bias else 0)


@njit(cache=True, error_model=ERROR_MODEL)
def _forward_by_cols(W, m, parts):
    """Whether each thread of :func:`weighted_sums_tiled` owns a run of neurons (else
    a run of samples)."""
    return (
        W.size * W.itemsize <= OWN_ROWS_BYTES
        and tile_count(W.shape[0]) >= 4 * parts
        and tile_count(m) <= 4 * parts
    )


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _weighted_sums_part(W, b, a_prev, z, a, act, p, parts):
    """Part ``p`` of ``parts`` of :func:`weighted_sums_tiled`: one thread's work."""
    m = a_prev.shape[0]
    n_out, n_in = W.shape
    n_it = tile_count(m)
    n_jt = tile_count(n_out)
    by_cols = _forward_by_cols(W, m, parts)
    rows = n_out if by_cols else _rows_in(n_in, W.itemsize, n_out, 4)
    if by_cols:
        it_lo, it_hi = 0, n_it
        jt_lo, jt_hi = _share(n_jt, parts, p)
    else:
        it_lo, it_hi = _share(n_it, parts, p)
        jt_lo, jt_hi = 0, 0
    for j_lo in range(0, n_out, rows):
        block = W[: min(j_lo + rows, n_out)]
        if not by_cols:
            jt_lo, jt_hi = 0, tile_count(block.shape[0] - j_lo)
        _forward_tiles(block, b, a_prev, z, it_lo, it_hi, jt_lo, jt_hi, j_lo)
    if by_cols:
        c_lo, c_hi = _tile_span(jt_lo, jt_hi, n_out)
        if act != SOFTMAX:
            for x in range(m):
                _activate_row(z[x, c_lo:c_hi], a[x, c_lo:c_hi], act)
    else:
        x_lo, x_hi = _tile_span(it_lo, it_hi, m)
        if act == SOFTMAX:
            for x in range(x_lo, x_hi):
                _softmax_row(z[x], a[x])
        else:  # the thread's rows are one contiguous run: one long vectorised pass
            _activate_row(_flat(z)[x_lo * n_out : x_hi * n_out],
                          _flat(a)[x_lo * n_out : x_hi * n_out], act)  # fmt: skip


def _weighted_sums_tiled(W, b, a_prev, z, a, act):
    r"""Forward pass of one layer, :func:`~nbbackprop.kernels.cpu.weighted_sums` tiled.

    Notes
    -----
    Equations (1)–(3). Each tile of up to 4 samples × 4 neurons is a
    :func:`~nbbackprop.kernels.cpu_tiles.dot_tile` over all of :math:`k` (both
    ``a_prev`` and ``W`` are contiguous along k); the bias is added as the tile is
    stored, σ by a vectorised pass over each thread's part of the rows afterwards.

    Work split: for a small mini-batch (at most 4 sample tiles per thread: W1's 10
    samples, W2's 32) whose ``W`` fits in the threads' L2 (:data:`OWN_ROWS_BYTES`) and
    has at least 4 neuron tiles per thread, each thread owns a contiguous run of
    neurons, the same rows of ``W`` that it updates in :func:`sgd_layer_update_tiled`,
    so that ``W`` never moves between cores (splitting W1's forward pass by samples
    instead cost more than the second core gained; W2's epoch is 107 → 93 ms split by
    neurons, as then its update and next forward pass also share one parallel
    region; at 64 and 128 samples the two splits measured within noise). Otherwise
    each thread owns a run of sample tiles, ``W`` is walked in blocks of rows that
    stay in L2 while the thread's tiles pass over them, and σ runs over the thread's
    rows as one contiguous vector (narrow rows, such as a 10-wide output layer, would
    otherwise leave σ mostly in the scalar remainder of the vectorised loop).
    """
    parts = _threads()
    for part in prange(parts):
        # a prange index may be unsigned: int64 * uint64 is float64
        _weighted_sums_part(W, b, a_prev, z, a, act, np.int64(part), parts)
    _softmax_after_split(W, a_prev, z, a, act, parts)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL, inline="always")
def _softmax_after_split(W, a_prev, z, a, act, parts):
    """Softmax of whole rows after a forward pass split by neurons (each row was
    written by every thread); a split by samples applied it in each part."""
    if act == SOFTMAX and _forward_by_cols(W, a_prev.shape[0], parts):
        for x in range(a_prev.shape[0]):
            _softmax_row(z[x], a[x])


def _hidden_delta_tiled(W_next, delta_next, a, delta, act, scratch):
    r"""BP2, :func:`~nbbackprop.kernels.cpu.hidden_delta` tiled.

    Parameters
    ----------
    W_next, delta_next, a, delta, act
        As for :func:`~nbbackprop.kernels.cpu.hidden_delta`.
    scratch : ndarray
        1-D scratch of at least ``W_next.size`` elements for its transpose, or empty.

    Notes
    -----
    Equation (18). For large layers (:data:`BP2_DOT_MIN` samples, rows and columns)
    with a ``scratch``, ``W_next`` is transposed into it and δ computed with the
    forward pass's dot tiles, :math:`\delta^l = \delta^{l+1} (w^{l+1})`, summing over
    j in registers (the axpy tiles ran at ~95 GF/s on W3's 1024 × 1024 layer, the
    dot tiles at ~165, and the transpose costs ~0.3 ms).

    Otherwise each outer tile (:func:`~nbbackprop.kernels.cpu_tiles.outer_block`)
    sums :math:`\sum_j \delta^{l+1}_j w^{l+1}_{jk}` over all j in registers, for up to
    4 samples and 4 registers of columns k (no transpose), and writes it once. Each
    thread owns a run of columns k (of ``delta`` and of ``W_next``).
    """
    m, n = a.shape
    n_next = W_next.shape[0]
    parts = _threads()
    if scratch.shape[0] >= W_next.size and min(m, n, n_next) >= BP2_DOT_MIN:
        WT = as_rows(scratch, 0, n, n_next)
        for part in prange(parts):
            # a prange index may be unsigned: int64 * uint64 is float64
            _transpose_part(W_next, WT, np.int64(part), parts)
        for part in prange(parts):
            _hidden_delta_dot_part(WT, delta_next, a, delta, act, np.int64(part), parts)
        return
    for part in prange(parts):
        _hidden_delta_outer_part(W_next, delta_next, a, delta, act, np.int64(part), parts)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _transpose_part(W, WT, p, parts):
    """``WT[k, j] = W[j, k]`` for part ``p`` of ``parts`` of the rows of WT, in 32 × 32
    blocks."""
    k_lo, k_hi = _share(WT.shape[0], parts, p)
    n_next = W.shape[0]
    for jb in range(0, n_next, 32):
        j_hi = min(jb + 32, n_next)
        for kb in range(k_lo, k_hi, 32):
            for k in range(kb, min(kb + 32, k_hi)):
                row = WT[k, jb:j_hi]
                for j in range(j_hi - jb):
                    row[j] = W[jb + j, k]


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _hidden_delta_dot_part(WT, delta_next, a, delta, act, p, parts):
    """Part ``p`` of ``parts`` of BP2 by dot tiles over the transpose ``WT`` of
    ``W_next`` (:func:`hidden_delta_tiled`): a run of sample tiles."""
    m, n = a.shape
    rows = _rows_in(WT.shape[1], WT.itemsize, n, 4)
    no_bias = delta[0, :0]
    it_lo, it_hi = _share(tile_count(m), parts, p)
    for k_lo in range(0, n, rows):
        block = WT[: min(k_lo + rows, n)]
        _forward_tiles(block, no_bias, delta_next, delta, it_lo, it_hi, 0,
                       tile_count(block.shape[0] - k_lo), k_lo)  # fmt: skip
    x_lo, x_hi = _tile_span(it_lo, it_hi, m)
    _derivative_row(_flat(delta)[x_lo * n : x_hi * n], _flat(a)[x_lo * n : x_hi * n],
                    act)  # fmt: skip


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _hidden_delta_cols(W_next, delta_next, a, delta, act, k_lo, k_hi):
    """BP2 by outer tiles for the columns ``k_lo .. k_hi-1`` of ``delta``: for every
    sample x, ``δ[x, k] = Σ_j δ_next[x, j] W_next[j, k] σ'(z[x, k])``."""
    m = a.shape[0]
    n_next = W_next.shape[0]
    one = delta.dtype.type(1)
    # coefficient D[j + x n_next] = δ_next[x, j]; run-time values, not literals, so that
    # BP2 and BP4 share one compilation (~2 s cold)
    _outer_rows(_flat(delta_next), np.int64(1), n_next, n_next, W_next, delta, one, -one,
                np.bool_(True), np.int64(0), tile_count(m), k_lo, k_hi)  # fmt: skip
    for x in range(m):
        _derivative_row(delta[x, k_lo:k_hi], a[x, k_lo:k_hi], act)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _hidden_delta_outer_part(W_next, delta_next, a, delta, act, p, parts):
    """Part ``p`` of ``parts`` of BP2 by outer tiles (:func:`hidden_delta_tiled`): a run
    of whole registers of columns k (the last part also takes the columns after the
    last whole register)."""
    n = a.shape[1]
    L = lanes(W_next)
    v_lo, v_hi = _share(n // L, parts, p)
    k_hi = v_hi * L if p < parts - 1 else n
    _hidden_delta_cols(W_next, delta_next, a, delta, act, v_lo * L, k_hi)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL, inline="always")
def hidden_delta_outer_serial(W_next, delta_next, a, delta, act):
    """:func:`hidden_delta_tiled_serial` by its outer-tile path alone, for a driver whose
    every BP2 runs on one thread below :data:`BP2_DOT_MIN`: it compiles neither the
    parallel kernel nor the transpose and dot path (~4 s of a cold start)."""
    _hidden_delta_outer_part(W_next, delta_next, a, delta, act, np.int64(0), np.int64(1))


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _outer_rows(D, ds, dr, m, A, C, keep, step, overwrite, rt_lo, rt_hi, k_lo, k_hi):
    """``C[i, k] = keep C[i, k] - step Σ_{s<m} D[s ds + i dr] A[s, k]`` (``overwrite``:
    without the first term) for the rows i of row tiles ``rt_lo .. rt_hi-1`` and the
    columns ``k_lo .. k_hi-1``, by outer tiles (:func:`~.cpu_tiles.outer_block`): each
    block of rows × registers of ``C`` is summed over all m terms in registers, then
    written once. Columns past the last whole register go in one masked register."""
    L = lanes(A)
    n_rows = C.shape[0]
    vectors = (k_hi - k_lo) // L
    widest = OUTER_VECTORS[0]
    rest = k_hi - k_lo - vectors * L
    v0 = 0
    # a column block of A stays in L1 while the row tiles pass; whole registers, then
    # the columns after the last whole one in a masked register (vn = 0)
    i_lo, i_hi = _tile_span(rt_lo, rt_hi, n_rows)
    while v0 < vectors or (v0 == vectors and rest > 0):
        vn = widest if vectors - v0 >= widest else (1 if v0 < vectors else 0)
        outer_block(vn, C, i_lo, i_hi, k_lo + v0 * L, D, ds, dr, A, m, keep, step, overwrite,
                    rest)  # fmt: skip
        v0 += max(vn, 1)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _weight_grads_part(delta, a_prev, G, W, b, step, keep, p, parts):
    """Part ``p`` of ``parts`` of ``G = δᵀ a_prev``, a run of neuron tiles (the rows
    each thread owns in :func:`weighted_sums_tiled`); when ``W`` has rows, the update
    ``W = keep W - step δᵀ a_prev`` instead (``G`` is then not touched), and
    ``b -= step Σ_x δ`` (see :func:`sgd_layer_update_tiled`)."""
    m, n_out = delta.shape
    jt_lo, jt_hi = _share(tile_count(n_out), parts, p)
    n_in = a_prev.shape[1]
    update = W.shape[0] > 0
    # the whole mini-batch in registers (outer tiles), a_prev read in place
    out, overwrite, coef = (W, False, step) if update else (G, True, G.dtype.type(-1))
    _outer_rows(_flat(delta), n_out, np.int64(1), m, a_prev, out, keep, coef,
                np.bool_(overwrite), jt_lo, jt_hi, np.int64(0), n_in)  # fmt: skip
    if update:  # BP3 and the step of the biases of this part's rows
        _bias_rows(b, delta, step, *_tile_span(jt_lo, jt_hi, n_out))


def _weight_grads_tiled(delta, a_prev, nabla_w):
    r"""BP4, :func:`~nbbackprop.kernels.cpu.weight_grads` tiled.

    Parameters
    ----------
    delta, a_prev, nabla_w
        As for :func:`~nbbackprop.kernels.cpu.weight_grads`.

    Notes
    -----
    Equation (16): each outer tile sums :math:`\sum_x \delta^l_j(x)\, a^{l-1}_k(x)`
    over the whole mini-batch in registers for up to 4 rows j and 4 registers of
    columns k, and writes it into ``nabla_w`` once
    (:func:`~nbbackprop.kernels.cpu_tiles.outer_block`; no transpose of δ or
    ``a_prev``). Each thread owns a run of rows j (the same as in
    :func:`weighted_sums_tiled`); columns go in blocks of 4 registers (2 with AVX2), whose
    ``a_prev[:, block]`` stays in L1 while the thread's row tiles pass over it.
    """
    parts = _threads()
    no_W = nabla_w[:0]
    zero, one = nabla_w.dtype.type(0), nabla_w.dtype.type(1)  # typed as step, keep
    for part in prange(parts):
        # a prange index may be unsigned: int64 * uint64 is float64
        _weight_grads_part(
            delta, a_prev, nabla_w, no_W, _flat(nabla_w)[:0], zero, one, np.int64(part), parts
        )


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def step_keep(W, eta, inv_m, l2):
    """η/m and 1 − ηλ/n in ``W``'s dtype: one compiled copy for every caller, so that
    the rounding (fastmath may fuse ``1 - η·λ/n`` into one FMA) is the same in the
    parallel kernels and in the SGD loop's parts."""
    return W.dtype.type(eta * inv_m), W.dtype.type(1.0 - eta * l2)


def _sgd_layer_update_tiled(W, b, delta, a_prev, eta, inv_m, l2):
    r"""BP3, BP4 and the gradient-descent step of one layer, fused and tiled.

    Parameters
    ----------
    W : ndarray, shape (n_out, n_in)
        Weights of layer l, updated in place.
    b : ndarray, shape (n_out,)
        Biases of layer l, updated in place.
    delta : ndarray, shape (m, n_out)
        :math:`\delta^l` of the mini-batch.
    a_prev : ndarray, shape (m, n_in)
        :math:`a^{l-1}` of the mini-batch.
    eta, inv_m, l2 : float
        η, 1/m and λ/n, as for :func:`~nbbackprop.kernels.cpu.sgd_update`.

    Notes
    -----
    Equations (15), (16) and (6)–(9) in one pass over ``W``:

    .. math:: w^l_{jk} \to \Big(1 - \frac{\eta\lambda}{n}\Big) w^l_{jk}
              - \frac{\eta}{m} \sum_x \delta^l_j(x)\, a^{l-1}_k(x), \qquad
              b^l_j \to b^l_j - \frac{\eta}{m} \sum_x \delta^l_j(x)

    the update of ``weight_grads``, ``bias_grads`` and ``sgd_update``. Each outer tile
    sums its block of the gradient over the whole mini-batch in registers, exactly as
    :func:`weight_grads_tiled` does (so the rounding is that of the unfused kernels:
    adding each 4-sample group straight into a float32 ``W`` made runs drift ~100×
    further from float64 ones), then applies it to ``W``: each block of ``W`` is read
    and written once (W2's first-layer update on 2 threads: 24.1 → 15.9 µs per
    mini-batch against the axpy tiles). Run it after BP2 has used this layer's weights.
    Each thread owns the rows it owns in :func:`weighted_sums_tiled`.
    """
    step, keep = step_keep(W, eta, inv_m, l2)
    parts = _threads()
    for part in prange(parts):
        # a prange index may be unsigned: int64 * uint64 is float64
        p = np.int64(part)
        _weight_grads_part(delta, a_prev, W, W, b, step, keep, p, parts)


def _update_forward_tiled(W, b, delta, a_prev, eta, inv_m, l2, a_next, z_next, out_next, act,
                          update, W_up, delta_up, a, X, rows, first, gathered):  # fmt: skip
    r"""When ``W_up`` has rows, BP2 through it into ``delta`` and its SGD step (its
    weights; not its biases); when ``update``, :func:`sgd_layer_update_tiled` on this
    mini-batch; then :func:`weighted_sums_tiled` of ``a_next`` (→ ``z_next``,
    ``out_next``), in one parallel region. When ``gathered`` has rows, the rows
    ``X[rows[first + i]]`` of a later mini-batch are copied into them too, each thread
    its share: a shuffled epoch's gather is then split between the cores' memory
    queues instead of waiting on one (W1: 10 random rows take ~4 µs on one core).

    Each thread updates its rows of ``W`` and ``b`` and at once computes its neurons'
    weighted sums of the next mini-batch with them: no thread reads another's rows, so
    one fork/join does the work of two, with the same arithmetic in the same order
    (results bitwise those of the two kernels). Before that, the δ of its neurons, which
    its rows' update needs, is its own part of BP2 through the layer above
    (``W_up``, ``delta_up``; ``a`` holds this layer's activations), and the columns of
    ``W_up`` that BP2 just read are its own to update: the small layer above then adds
    no serial work between the regions (W1, W2). With the update, only valid when the
    forward pass of ``a_next`` splits by neurons (:func:`forward_splits_by_neurons`)
    and ``act`` is not softmax; the training driver checks both. Without it, this is
    the parallel region of :func:`weighted_sums_tiled`: one parallel kernel compiled
    for both (~1.4 s of a cold start). With a 0-row next mini-batch it is
    :func:`sgd_layer_update_tiled`, whatever the split.
    """
    step, keep = step_keep(W, eta, inv_m, l2)
    parts = _threads()
    for part in prange(parts):
        # a prange index may be unsigned: int64 * uint64 is float64
        update_forward_part(W, b, delta, a_prev, step, keep, a_next, z_next, out_next, act,
                            update, W_up, delta_up, a, X, rows, first, gathered,
                            np.int64(part), parts)  # fmt: skip


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL, inline="always")
def update_forward_part(W, b, delta, a_prev, step, keep, a_next, z_next, out_next, act,
                        update, W_up, delta_up, a, X, rows, first, gathered, p, parts):  # fmt: skip
    """Part ``p`` of ``parts`` of :func:`update_forward_tiled` (``step`` = η/m and
    ``keep`` = 1 − ηλ/n in ``W``'s dtype): one thread's work, also run by the parts of
    a region that stays up over many mini-batches (:mod:`~nbbackprop.kernels.cpu_train`)."""
    if gathered.shape[0] > 0:
        i_lo, i_hi = _share(gathered.shape[0], parts, p)
        gather_rows(X, rows, first, gathered, i_lo, i_hi)
    if W_up.shape[0] > 0:
        _hidden_delta_update_part(W_up, delta_up, a, delta, act, step, keep, p, parts)
    if update:
        _weight_grads_part(delta, a_prev, W, W, b, step, keep, p, parts)
    _weighted_sums_part(W, b, a_next, z_next, out_next, act, p, parts)


@njit(cache=True, error_model=ERROR_MODEL)
def gather_rows(X, rows, first, out, i_lo, i_hi):
    """``out[i] = X[rows[first + i]]`` for ``i`` in ``i_lo .. i_hi-1`` (unchecked)."""
    for i in range(i_lo, i_hi):
        # element loops: a slice assignment compiles to NumPy's broadcasting machinery
        src, dst = X[rows[first + i]], out[i]
        for e in range(X.shape[1]):
            dst[e] = src[e]


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _hidden_delta_update_part(W_up, delta_up, a, delta, act, step, keep, p, parts):
    """BP2 through ``W_up`` into the neurons that part ``p`` of ``parts`` owns in this
    layer (its rows of W), then the SGD step of those columns of ``W_up``."""
    m, n_up = delta_up.shape
    k_lo, k_hi = _tile_span(*_share(tile_count(a.shape[1]), parts, p), a.shape[1])
    _hidden_delta_cols(W_up, delta_up, a, delta, act, k_lo, k_hi)
    _outer_rows(_flat(delta_up), n_up, np.int64(1), m, a, W_up, keep, step, np.bool_(False),
                np.int64(0), tile_count(n_up), k_lo, k_hi)  # fmt: skip


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _bias_rows(b, delta, step, r_lo, r_hi):
    """BP3 and the SGD step of the biases ``r_lo .. r_hi-1``: ``b[j] -= step Σ_x δ[x, j]``."""
    for j in range(r_lo, r_hi):
        total = b.dtype.type(0)
        for x in range(delta.shape[0]):
            total += delta[x, j]
        b[j] -= step * total


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def bias_step(b, delta, eta, inv_m):
    """BP3 and the SGD step of a layer's biases alone: ``b -= (η/m) Σ_x δ[x]``."""
    _bias_rows(b, delta, b.dtype.type(eta * inv_m), np.int64(0), b.shape[0])


update_forward_tiled = njit(parallel=True, cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)(
    _update_forward_tiled
)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL, inline="always")
def sgd_update_forward_tiled(W, b, delta, a_prev, eta, inv_m, l2, a_next, z_next, out_next,
                             act, W_up, delta_up, a, X, rows, first, gathered):  # fmt: skip
    """BP2 through ``W_up`` (when it has rows) and its step, :func:`sgd_layer_update_tiled`
    on this mini-batch, then :func:`weighted_sums_tiled` of the next one, and the gather
    of ``X[rows[first:]]`` into ``gathered`` (when it has rows), in one parallel region
    (:func:`update_forward_tiled`)."""
    update_forward_tiled(W, b, delta, a_prev, eta, inv_m, l2, a_next, z_next, out_next, act,
                         np.bool_(True), W_up, delta_up, a, X, rows, first, gathered)  # fmt: skip


def _forward_region(W, b, a_prev, z, a, act):
    """The parallel region of :func:`weighted_sums_tiled` (compiled code only)."""


@overload(_forward_region, jit_options={"fastmath": FASTMATH, "error_model": ERROR_MODEL})
def _forward_region_for(W, b, a_prev, z, a, act):
    if W.mutable and b.mutable:
        # the region of update_forward_tiled without the update, whose arguments it
        # never reads (empty views stand in for them)
        def region(W, b, a_prev, z, a, act):
            update_forward_tiled(W, b, z[:0], a_prev[:0], 0.0, 0.0, 0.0, a_prev, z, a, act,
                                 np.bool_(False), W[:0], z[:0], z[:0], a_prev, _no_rows(),
                                 np.int64(0), z[:0])  # fmt: skip
            _softmax_after_split(W, a_prev, z, a, act, _threads())
    else:
        # read-only parameters (inference on a read-only buffer): the update's writes
        # would not type, so the parallel compilation of the forward pass's own body,
        # compiled only then
        def region(W, b, a_prev, z, a, act):
            _weighted_sums_readonly(W, b, a_prev, z, a, act)

    return region


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL, inline="always")
def weighted_sums_tiled(W, b, a_prev, z, a, act):
    """Forward pass of one layer on every thread: the work of
    :func:`weighted_sums_tiled_serial`, split as its notes say, run as the parallel
    region of :func:`update_forward_tiled` without the update (one parallel kernel
    compiled for both; read-only ``W`` and ``b`` get a kernel of their own)."""
    _forward_region(W, b, a_prev, z, a, act)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL, inline="always")
def sgd_layer_update_tiled(W, b, delta, a_prev, eta, inv_m, l2):
    """:func:`sgd_layer_update_tiled_serial`'s work on every thread: the region of
    :func:`update_forward_tiled` with a 0-row next mini-batch (one parallel kernel
    compiled for the update, the forward pass and both, ~2 s of a cold start)."""
    update_forward_tiled(W, b, delta, a_prev, eta, inv_m, l2, a_prev[:0], delta[:0],
                         delta[:0], np.int64(0), np.bool_(True), W[:0], delta[:0],
                         delta[:0], a_prev, _no_rows(), np.int64(0), delta[:0])  # fmt: skip


@njit(cache=True, error_model=ERROR_MODEL)
def forward_splits_by_neurons(W, m):
    """Whether :func:`weighted_sums_tiled` of ``m`` samples gives each thread a run of
    neurons, the same rows of ``W`` that :func:`sgd_layer_update_tiled` gives it."""
    return _forward_by_cols(W, m, _threads())


def _compile_pair(body):
    """``(name, name_serial)`` compilations of a kernel body, as ``_compile_twice`` in
    :mod:`~nbbackprop.kernels.cpu`; the serial copy also sees one thread (one part)."""
    name = body.__name__.lstrip("_")
    namespace = dict(body.__globals__, _threads=_one_thread)
    fn = types_.FunctionType(body.__code__, namespace, name + "_serial", body.__defaults__)
    fn.__qualname__ = name + "_serial"
    fn.__doc__ = body.__doc__
    return (
        njit(parallel=True, cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)(body),
        njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL, inline="always")(fn),
    )


# The parallel forward pass and SGD update are the wrappers above, over one parallel
# kernel; the bodies' own parallel compilations serve read-only parameters (the forward
# pass) or nothing (the update).
_weighted_sums_readonly, weighted_sums_tiled_serial = _compile_pair(_weighted_sums_tiled)
hidden_delta_tiled, hidden_delta_tiled_serial = _compile_pair(_hidden_delta_tiled)
weight_grads_tiled, weight_grads_tiled_serial = _compile_pair(_weight_grads_tiled)
_, sgd_layer_update_tiled_serial = _compile_pair(_sgd_layer_update_tiled)
