r"""Tiled CPU kernels: the equations of :mod:`nbbackprop.kernels.cpu`, cache-blocked
and register-tiled.

Same equations, same argument order as the per-equation kernels (plus a scratch
buffer where a kernel packs an operand), built from the two micro-kernels of
:mod:`nbbackprop.kernels.cpu_tiles`:

- :func:`weighted_sums_tiled` (eq. 1–3) is a product ``a_prev Wᵀ`` whose operands
  are both contiguous along the summed axis: 4 × 4 **dot tiles**, accumulated in
  registers over all of k.
- :func:`hidden_delta_tiled` (BP2, ``δ_next W``) and :func:`weight_grads_tiled`
  (BP4, ``δᵀ a_prev``) write rows that are contiguous along k: 4 × 4 **axpy tiles**,
  four output rows updated from four operand rows at a time, with no transpose.
- :func:`sgd_layer_update_tiled` folds BP3, BP4 and the SGD step of one layer into
  one pass over ``W``.

Cache blocking: the operand that every tile re-reads is cut into blocks of
:data:`BLOCK_BYTES` (L2) and, when it has many rows, copied ("packed") into a
contiguous scratch with a padded row stride first. Rows 4 KiB apart (1024 float32)
otherwise map onto the same L2 sets: a 256-row block then fills every way of the
sets it uses and the block thrashes (the axpy tiles ran at 41 instead of 55 GF/s
before packing, see ``docs/performance.md``).

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

import numba
import numpy as np
from numba import njit, prange, types
from numba.core import cgutils
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic, overload
from numba.np.arrayobj import populate_array
from numba.np.ufunc.parallel import _iget_num_threads

from .cpu import ERROR_MODEL, FASTMATH, RELU, SIGMOID, SOFTMAX, TANH, _softmax_row
from .cpu_tiles import OUTER_VECTORS, axpy_tile, dot_tile, outer_tile, tile_at, tile_count
from .simd import lanes

#: Bytes of the operand block that stays in L2 while tiles stream past it (half of a
#: Zen 4 core's 1 MiB L2).
BLOCK_BYTES = 1 << 19
#: Bytes of an axpy-tile row segment (512 float32, 256 float64): long enough (32
#: AVX-512 vectors) to amortise a tile's set-up, short enough that 4 output rows and
#: 4 operand rows stay in a 32 KiB L1.
AXPY_BYTES = 2048
#: Largest ``W`` (bytes) whose rows each thread keeps for itself, in the forward pass
#: as in the update: about what the two cores' L2 hold besides the activations.
OWN_ROWS_BYTES = 1 << 20
#: Operand blocks of at least this many rows are packed (fewer rows cannot fill an
#: L2 set's 8 ways).
PACK_MIN_ROWS = 64
#: Most rows of a packed operand block: a W3 mini-batch of 256 samples in one block,
#: so that each update tile is summed over the whole batch in one pass.
PACK_ROWS = 256
#: Samples, rows and columns from which BP2 transposes ``W_next`` and uses dot tiles.
BP2_DOT_MIN = 64
#: Padding, in elements, added to a packed row: one cache line.
_PAD = 16

#: fastmath for the elementwise passes: no ``reassoc``, which would fold the two-part
#: ln 2 of the range reduction in :func:`_exp_neg` back into one constant.
_ELEMENTWISE = {"nsz", "contract"}


def pack_size(dtype, threads: int | None = None) -> int:
    """Elements of the scratch buffer that the tiled kernels pack operands into: per
    thread, a block of :data:`PACK_ROWS` padded row segments and one 4-row tile."""
    if threads is None:
        threads = numba.get_num_threads()
    return threads * _part_elems(np.dtype(dtype).itemsize)


@njit(cache=True)
def _part_elems(itemsize):
    return (PACK_ROWS + 4) * (AXPY_BYTES // itemsize + _PAD)


@njit(cache=True)
def pack_elems(itemsize):
    """:func:`pack_size` from compiled code, for the current number of threads."""
    return _iget_num_threads() * _part_elems(itemsize)


def pack_buffer(dtype, threads: int | None = None) -> np.ndarray:
    """A scratch buffer for the tiled kernels (allocate once, reuse for every batch)."""
    return np.empty(pack_size(dtype, threads), dtype=dtype)


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
def _axpy_cols(itemsize):
    """Columns of an axpy row segment: :data:`AXPY_BYTES` of them."""
    return AXPY_BYTES // itemsize


@njit(cache=True, error_model=ERROR_MODEL)
def _rows_in(cols, itemsize, n, least):
    """Rows (a multiple of 4, at least ``least``, at most ``n``) of ``cols`` columns
    that fit :data:`BLOCK_BYTES`."""
    rows = BLOCK_BYTES // (cols * itemsize)
    rows = max(least, rows - rows % 4)
    return min(rows, n)


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _pack(src, r_lo, r_hi, k_lo, k_hi, pack, p):
    """Copy ``src[r_lo:r_hi, k_lo:k_hi]`` into part ``p`` of ``pack`` with a padded row
    stride; returns the 2-D view whose row i holds source row ``r_lo + i`` from 0."""
    ld = k_hi - k_lo + _PAD
    base = p * _part_elems(src.itemsize)
    out = as_rows(pack, base, r_hi - r_lo, ld)
    for i in range(r_hi - r_lo):
        row = src[r_lo + i, k_lo:k_hi]
        dst = out[i]
        for k in range(k_hi - k_lo):
            dst[k] = row[k]
    return out


# ------------------------------------------------------------------------- kernels
@njit(cache=True, fastmath=FASTMATH, inline="always")
def _forward_tiles(W, b, a_prev, z, it_lo, it_hi, jt_lo, jt_hi, j_lo):
    """``z = a_prev Wᵀ + b`` on sample tiles ``it_lo:it_hi`` × neuron tiles
    ``jt_lo:jt_hi`` of the rows ``j_lo:`` of W (tiles numbered within that block); no
    bias when ``b`` is empty."""
    bias = b.shape[0] > 0
    m = a_prev.shape[0]
    nj = W.shape[0] - j_lo
    for it in range(it_lo, it_hi):
        i0, mr = tile_at(it, m)
        for jt in range(jt_lo, jt_hi):
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


def _hidden_delta_tiled(W_next, delta_next, a, delta, act, pack, scratch):
    r"""BP2, :func:`~nbbackprop.kernels.cpu.hidden_delta` tiled.

    Parameters
    ----------
    W_next, delta_next, a, delta, act
        As for :func:`~nbbackprop.kernels.cpu.hidden_delta`.
    pack : ndarray
        Scratch of :func:`pack_size` elements, ``W_next``'s dtype.
    scratch : ndarray
        1-D scratch of at least ``W_next.size`` elements for its transpose, or empty.

    Notes
    -----
    Equation (18). For large layers (:data:`BP2_DOT_MIN` samples, rows and columns)
    with a ``scratch``, ``W_next`` is transposed into it and δ computed with the
    forward pass's dot tiles, :math:`\delta^l = \delta^{l+1} (w^{l+1})`, summing over
    j in registers (the axpy tiles ran at ~95 GF/s on W3's 1024 × 1024 layer, the
    dot tiles at ~165, and the transpose costs ~0.3 ms).

    Otherwise each tile adds :math:`\sum_j \delta^{l+1}_j w^{l+1}_{jk}` for up to 4
    samples and 4 rows j to rows of ``delta``
    (:func:`~nbbackprop.kernels.cpu_tiles.axpy_tile`, vectorised along k, no
    transpose). Each thread owns a run of columns k (of ``delta`` and of
    ``W_next``), taken in segments of :data:`AXPY_BYTES`; rows j go in blocks such
    that ``W_next[block, segment]`` (packed when tall) stays in L2 while every
    sample tile passes over it.
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
        _hidden_delta_axpy_part(W_next, delta_next, a, delta, act, pack, np.int64(part), parts)


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
def _hidden_delta_axpy_part(W_next, delta_next, a, delta, act, pack, p, parts):
    """Part ``p`` of ``parts`` of BP2 by axpy tiles (:func:`hidden_delta_tiled`): a run
    of columns k."""
    m, n = a.shape
    n_next = W_next.shape[0]
    seg = _axpy_cols(W_next.itemsize)
    rows = min(n_next, PACK_ROWS)
    zero = delta.dtype.type(0)
    n_seg = -(-n // seg)
    # whole segments per thread when there are enough, else split the columns evenly
    if n_seg >= parts:
        s_lo, s_hi = _share(n_seg, parts, p)
        c_lo, c_hi = s_lo * seg, min(s_hi * seg, n)
    else:
        c_lo, c_hi = _share(n, parts, p)
    for k_lo in range(c_lo, c_hi, seg):
        k_hi = min(k_lo + seg, c_hi)
        for j_lo in range(0, n_next, rows):
            j_hi = min(j_lo + rows, n_next)
            if j_hi - j_lo >= PACK_MIN_ROWS:
                B = _pack(W_next, j_lo, j_hi, k_lo, k_hi, pack, p)
                b_row, b_col = 0, 0
            else:
                B = W_next
                b_row, b_col = j_lo, k_lo
            for xt in range(tile_count(m)):
                x0, xr = tile_at(xt, m)
                if j_lo == 0:
                    for r in range(xr):
                        dx = delta[x0 + r, k_lo:k_hi]
                        for k in range(k_hi - k_lo):
                            dx[k] = zero
                for jt in range(tile_count(j_hi - j_lo)):
                    j0, jr = tile_at(jt, j_hi - j_lo)
                    axpy_tile(xr, jr, delta, x0, k_lo, B, b_row + j0, b_col, delta_next,
                              x0, j_lo + j0, np.bool_(False), 1.0, k_hi - k_lo)  # fmt: skip
        for x in range(m):
            _derivative_row(delta[x, k_lo:k_hi], a[x, k_lo:k_hi], act)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL, inline="always")
def hidden_delta_axpy_serial(W_next, delta_next, a, delta, act, pack):
    """:func:`hidden_delta_tiled_serial` by its axpy path alone, for a driver whose every
    BP2 runs on one thread below :data:`BP2_DOT_MIN`: it compiles neither the parallel
    kernel nor the transpose and dot path (~4 s of a cold start)."""
    _hidden_delta_axpy_part(W_next, delta_next, a, delta, act, pack, np.int64(0), np.int64(1))


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _outer_segment(delta, B, b_row, b_col, x_lo, x_hi, C, c_row, c_col, jt, n, first, scale):
    """``C[c_row + r, c_col:+n] (+)= scale Σ_x δ[x, j0 + r] a_prev[x, k]`` for the rows
    ``j0 + r`` of neuron tile ``jt`` and samples ``x_lo:x_hi`` (``first``: overwrite);
    ``B[b_row + x - x_lo, b_col:+n]`` holds ``a_prev[x, k]``."""
    j0, jr = tile_at(jt, delta.shape[1])
    if first:
        zero = C.dtype.type(0)
        for r in range(jr):
            row = C[c_row + r, c_col : c_col + n]
            for k in range(n):
                row[k] = zero
    for xt in range(tile_count(x_hi - x_lo)):
        x0, xr = tile_at(xt, x_hi - x_lo)
        # np.bool_: a run-time bool, so that BP2 and BP4 share one compilation of the
        # tile dispatch (literal True and False compiled it twice, ~2 s cold)
        axpy_tile(jr, xr, C, c_row, c_col, B, b_row + x0, b_col, delta, x_lo + x0, j0,
                  np.bool_(True), scale, n)  # fmt: skip


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _outer_rows(delta, a_prev, C, keep, step, overwrite, jt_lo, jt_hi):
    """``C[j] = keep C[j] - step Σ_x δ[x, j] a_prev[x]`` (``overwrite``: without the
    first term) for the rows j of neuron tiles ``jt_lo .. jt_hi-1``, by outer tiles:
    each block of rows × registers of ``C`` is summed over the whole mini-batch in
    registers, then written once."""
    m, n_out = delta.shape
    n_in = a_prev.shape[1]
    L = lanes(a_prev)
    vectors = n_in // L
    widest = OUTER_VECTORS[0]
    v0 = 0
    while v0 < vectors:  # a column block of a_prev stays in L1 while the row tiles pass
        vn = widest if vectors - v0 >= widest else 1
        for jt in range(jt_lo, jt_hi):
            j0, jr = tile_at(jt, n_out)
            outer_tile(jr, vn, C, j0, v0 * L, delta, a_prev, m, keep, step, overwrite)
        v0 += vn
    r_lo, r_hi = _tile_span(jt_lo, jt_hi, n_out)
    for j in range(r_lo, r_hi):  # the columns after the last whole register
        for k in range(vectors * L, n_in):
            total = C.dtype.type(0)
            for x in range(m):
                total += delta[x, j] * a_prev[x, k]
            C[j, k] = -step * total if overwrite else keep * C[j, k] - step * total


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)
def _weight_grads_part(delta, a_prev, G, pack, W, b, step, keep, p, parts):
    """Part ``p`` of ``parts`` of ``G = δᵀ a_prev``, a run of neuron tiles (the rows
    each thread owns in :func:`weighted_sums_tiled`); when ``W`` has rows, the update
    ``W = keep W - step G`` instead, and ``b -= step Σ_x δ`` (see
    :func:`sgd_layer_update_tiled`)."""
    m, n_out = delta.shape
    jt_lo, jt_hi = _share(tile_count(n_out), parts, p)
    n_in = a_prev.shape[1]
    rows = min(m, PACK_ROWS)
    packed = rows >= PACK_MIN_ROWS
    update = W.shape[0] > 0
    if not packed:  # the mini-batch in registers: outer tiles, a_prev read in place
        # (names of their own: Numba types a name once for the whole function)
        out, overwrite, coef = (W, False, step) if update else (G, True, G.dtype.type(-1))
        _outer_rows(delta, a_prev, out, keep, coef, overwrite, jt_lo, jt_hi)
    else:
        # float64 updates add each sample group straight into W. float32 ones sum the
        # whole batch first: in a 4-row tile of the scratch (after this thread's packed
        # block when there is one) when the batch is one block, else in G.
        direct = update and W.itemsize == 8
        in_tile = update and not direct and rows == m
        seg = _axpy_cols(a_prev.itemsize)
        ld = seg + _PAD
        base = p * _part_elems(a_prev.itemsize) + PACK_ROWS * ld
        T = as_rows(pack, base, 4, ld)
        for k_lo in range(0, n_in, seg):
            k_hi = min(k_lo + seg, n_in)
            n = k_hi - k_lo
            if direct and keep != 1:
                r_lo, r_hi = _tile_span(jt_lo, jt_hi, n_out)
                for j in range(r_lo, r_hi):
                    w = W[j, k_lo:k_hi]
                    for k in range(n):
                        w[k] = keep * w[k]
            for x_lo in range(0, m, rows):
                x_hi = min(x_lo + rows, m)
                if x_hi - x_lo >= PACK_MIN_ROWS:
                    B = _pack(a_prev, x_lo, x_hi, k_lo, k_hi, pack, p)
                    b_row, b_col = 0, 0
                else:
                    B = a_prev
                    b_row, b_col = x_lo, k_lo
                for jt in range(jt_lo, jt_hi):
                    j0, jr = tile_at(jt, n_out)
                    # one call site for the three targets: each inlined copy of the tile
                    # dispatch costs seconds of cold compilation
                    if direct:
                        C, c_row, c_col, first, scale = W, j0, k_lo, False, -step
                    elif in_tile:
                        C, c_row, c_col, first, scale = T, 0, 0, True, 1.0
                    else:
                        C, c_row, c_col, first, scale = G, j0, k_lo, x_lo == 0, 1.0
                    _outer_segment(delta, B, b_row, b_col, x_lo, x_hi, C, c_row, c_col, jt, n,
                                   first, scale)  # fmt: skip
                    if update and not direct and x_hi == m:
                        for r in range(jr):
                            w = W[j0 + r, k_lo:k_hi]
                            g = C[c_row + r, c_col : c_col + n]
                            for k in range(n):
                                w[k] = keep * w[k] - step * g[k]
    if update:  # BP3 and the step of the biases of this part's rows
        r_lo, r_hi = _tile_span(jt_lo, jt_hi, n_out)
        for j in range(r_lo, r_hi):
            total = W.dtype.type(0)
            for x in range(m):
                total += delta[x, j]
            b[j] -= step * total


def _weight_grads_tiled(delta, a_prev, nabla_w, pack):
    r"""BP4, :func:`~nbbackprop.kernels.cpu.weight_grads` tiled.

    Parameters
    ----------
    delta, a_prev, nabla_w
        As for :func:`~nbbackprop.kernels.cpu.weight_grads`.
    pack : ndarray
        Scratch of :func:`pack_size` elements, ``a_prev``'s dtype.

    Notes
    -----
    Equation (16): each tile adds :math:`\sum_x \delta^l_j(x)\, a^{l-1}_k(x)` for up
    to 4 rows j and 4 samples x to rows of ``nabla_w``
    (:func:`~nbbackprop.kernels.cpu_tiles.axpy_tile`; no transpose of δ or
    ``a_prev``). Each thread owns a run of rows j (the same as in
    :func:`weighted_sums_tiled`); columns go in segments of :data:`AXPY_BYTES`,
    samples in blocks such that ``a_prev[block, segment]`` (packed when tall) stays
    in L2 while the thread's row tiles pass over it.
    """
    parts = _threads()
    no_W = nabla_w[:0]
    zero, one = nabla_w.dtype.type(0), nabla_w.dtype.type(1)  # typed as step, keep
    for part in prange(parts):
        # a prange index may be unsigned: int64 * uint64 is float64
        _weight_grads_part(
            delta, a_prev, nabla_w, pack, no_W, _flat(nabla_w)[:0], zero, one, np.int64(part), parts
        )


def _sgd_layer_update_tiled(W, b, delta, a_prev, eta, inv_m, l2, nabla_w, pack):
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
    nabla_w : ndarray, shape (n_out, n_in)
        Scratch: receives the summed gradient, segment by segment.
    pack : ndarray
        Scratch of :func:`pack_size` elements.

    Notes
    -----
    Equations (15), (16) and (6)–(9) in one pass over ``W``:

    .. math:: w^l_{jk} \to \Big(1 - \frac{\eta\lambda}{n}\Big) w^l_{jk}
              - \frac{\eta}{m} \sum_x \delta^l_j(x)\, a^{l-1}_k(x), \qquad
              b^l_j \to b^l_j - \frac{\eta}{m} \sum_x \delta^l_j(x)

    the update of ``weight_grads``, ``bias_grads`` and ``sgd_update``. In float32 each
    segment of the gradient is summed over the whole mini-batch first, exactly as in
    :func:`weight_grads_tiled` (so the rounding is that of the unfused kernels:
    adding each 4-sample group straight into a float32 ``W`` made runs drift ~100×
    further from float64 ones), then applied to ``W`` while it is in L1. In float64
    each 4-sample group is added straight into ``W`` (scaled by -η/m): the extra
    roundings are ~1e-16 relative, and it saves the passes that zero and apply the
    gradient (W1's first-layer update on 2 threads: 10.7 → 6.2 µs per mini-batch; float32
    the same shape: 16.6 → 7.3 µs). Run it after BP2 has used this layer's weights. Each thread
    owns the rows it owns in :func:`weighted_sums_tiled`.
    """
    step = W.dtype.type(eta * inv_m)
    keep = W.dtype.type(1.0 - eta * l2)
    parts = _threads()
    for part in prange(parts):
        # a prange index may be unsigned: int64 * uint64 is float64
        p = np.int64(part)
        _weight_grads_part(delta, a_prev, nabla_w, pack, W, b, step, keep, p, parts)


def _update_forward_tiled(W, b, delta, a_prev, eta, inv_m, l2, nabla_w, pack, a_next, z_next,
                          out_next, act, update):  # fmt: skip
    r"""When ``update``, :func:`sgd_layer_update_tiled` on this mini-batch; then
    :func:`weighted_sums_tiled` of ``a_next`` (→ ``z_next``, ``out_next``), in one
    parallel region.

    Each thread updates its rows of ``W`` and ``b`` and at once computes its neurons'
    weighted sums of the next mini-batch with them: no thread reads another's rows, so
    one fork/join does the work of two, with the same arithmetic in the same order
    (results bitwise those of the two kernels). With the update, only valid when the
    forward pass of ``a_next`` splits by neurons (:func:`forward_splits_by_neurons`)
    and ``act`` is not softmax; the training driver checks both. Without it, this is
    the parallel region of :func:`weighted_sums_tiled`: one parallel kernel compiled
    for both (~1.4 s of a cold start). With a 0-row next mini-batch it is
    :func:`sgd_layer_update_tiled`, whatever the split.
    """
    step = W.dtype.type(eta * inv_m)
    keep = W.dtype.type(1.0 - eta * l2)
    parts = _threads()
    for part in prange(parts):
        # a prange index may be unsigned: int64 * uint64 is float64
        p = np.int64(part)
        if update:
            _weight_grads_part(delta, a_prev, nabla_w, pack, W, b, step, keep, p, parts)
        _weighted_sums_part(W, b, a_next, z_next, out_next, act, p, parts)


update_forward_tiled = njit(parallel=True, cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL)(
    _update_forward_tiled
)


@njit(cache=True, fastmath=FASTMATH, error_model=ERROR_MODEL, inline="always")
def sgd_update_forward_tiled(W, b, delta, a_prev, eta, inv_m, l2, nabla_w, pack, a_next, z_next,
                             out_next, act):  # fmt: skip
    """:func:`sgd_layer_update_tiled` on this mini-batch, then :func:`weighted_sums_tiled`
    of the next one, in one parallel region (:func:`update_forward_tiled`)."""
    update_forward_tiled(W, b, delta, a_prev, eta, inv_m, l2, nabla_w, pack, a_next, z_next,
                         out_next, act, np.bool_(True))  # fmt: skip


def _forward_region(W, b, a_prev, z, a, act):
    """The parallel region of :func:`weighted_sums_tiled` (compiled code only)."""


@overload(_forward_region, jit_options={"fastmath": FASTMATH, "error_model": ERROR_MODEL})
def _forward_region_for(W, b, a_prev, z, a, act):
    if W.mutable and b.mutable:
        # the region of update_forward_tiled without the update, whose arguments it
        # never reads (empty views stand in for them)
        def region(W, b, a_prev, z, a, act):
            update_forward_tiled(W, b, z[:0], a_prev[:0], 0.0, 0.0, 0.0, W, b, a_prev, z, a,
                                 act, np.bool_(False))  # fmt: skip
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
def sgd_layer_update_tiled(W, b, delta, a_prev, eta, inv_m, l2, nabla_w, pack):
    """:func:`sgd_layer_update_tiled_serial`'s work on every thread: the region of
    :func:`update_forward_tiled` with a 0-row next mini-batch (one parallel kernel
    compiled for the update, the forward pass and both, ~2 s of a cold start)."""
    update_forward_tiled(W, b, delta, a_prev, eta, inv_m, l2, nabla_w, pack, a_prev[:0],
                         delta[:0], delta[:0], np.int64(0), np.bool_(True))  # fmt: skip


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
