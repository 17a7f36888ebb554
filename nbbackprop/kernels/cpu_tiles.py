"""Register-tiled micro-kernels for the ``"tiled"`` CPU strategy.

The two products of backpropagation come in two shapes, and each has its own
micro-kernel; both keep a small tile of results in registers:

- **dot tiles** ``c[r, s] = Σ_k A[i0+r, k] B[j0+s, k]`` (both operands contiguous along
  the summed axis): the forward pass, ``z = a_prev Wᵀ``. ``mr × nr`` accumulators are
  vectorised along k by LLVM's loop vectoriser (with ``reassoc``), so one load of
  ``A[i, k:k+16]`` feeds ``nr`` fused multiply-adds; the tile is reduced to scalars
  once, at the end of k.
- **outer tiles** ``C[i, k] = keep C[i, k] - step Σ_s D[s, i] A[s, k]`` (the output
  contiguous along k): BP4 and the SGD step, ``W -= (η/m) δᵀ a_prev``, and BP2,
  ``δ = δ_next W``, without transposing anything. ``rn`` rows × ``vn`` SIMD registers
  of C are summed over all s in registers (the loop over s innermost, which the loop
  vectoriser cannot give, so they are written with the :mod:`.simd` register type),
  then written once. Per term, ``vn`` loads of A feed ``rn × vn`` multiply-adds.
  (They replaced axpy tiles, which added 4 terms at a time into C in memory: W2's
  update 24.1 → 15.9 µs per mini-batch.)

Tile sizes are compile-time constants (run-time tile sizes cost 4–8×, see
``docs/performance.md``): every combination of 4, 2 and 1 rows by 4, 2 and 1 columns
is generated from one template below, so that any matrix size is covered by whole
tiles (10 = 4 + 4 + 2) with no padding and no wasted arithmetic. The 4 × 4 tile
needs 16 vector accumulators plus 8 operands: it fits the 32 registers of AVX-512;
see :data:`TILE`.

Every loop runs from 0 over a row view, with an unsigned index where LLVM cannot
prove it non-negative: Numba's negative-index wraparound turns each address into a
``select``, an "unsafe indirect dependence" to the loop vectoriser, which then
leaves the loop scalar (a 4 × 4 tile ran at 13 GF/s instead of ~90).
Accumulators start from ``A.dtype.type(0)``: a Python ``0.0`` would silently make a
float32 kernel compute in float64.

The generated functions are compiled from source text with this file's name, so
Numba's on-disk cache (``cache=True``) stores them like any other function here.
"""

from __future__ import annotations

import numpy as np  # noqa: F401 - used by the generated code
from numba import njit

from .simd import (  # noqa: F401 - used by the generated code
    VEC_REGISTERS,
    vfma,
    vload,
    vload_first,
    vscale,
    vstore,
    vstore_first,
    vzero,
)

#: fastmath without ``nnan``/``ninf`` (NaN must still reach the divergence check).
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

#: Largest tile edge: a 4 × 4 dot tile holds 16 vector accumulators and 8 operands,
#: 24 of AVX-512's 32 vector registers (on a 16-register AVX2 machine it spills a
#: little; measured figures are in docs/performance.md).
TILE = 4
#: The tile edges generated; every n is a sum of 4s and at most one 2 and one 1.
SIZES = (4, 2, 1)
#: Widths, in registers, of the outer tiles: a 4-row tile of 4 registers keeps 16
#: accumulators, 4 operands and a broadcast in AVX-512's 32 registers; AVX2's 16 hold
#: a 4 × 2 tile.
OUTER_VECTORS = (4, 1) if VEC_REGISTERS == 32 else (2, 1)

_DOT_TEMPLATE = '''
def _dot_{mr}x{nr}(A, i0, B, j0):
    """Dot tile of {mr} rows of A by {nr} rows of B, as a 16-tuple c[4 r + s]."""
    zero = A.dtype.type(0)
{rows}
{init}
    for k in range(A.shape[1]):
{loads}
{fmas}
    return ({ret})
'''

_OUTER_TEMPLATE = '''
def _outer_{rn}x{vn}(C, r0, k0, D, ds, dr, A, m, keep, step, overwrite, count):
    """C[r0 + r, k0:+{width}] = keep C[...] - step Σ_s D[s ds + (r0 + r) dr] A[s, k0:+{width}]
    for r < {rn} (``overwrite``: ``- step Σ...`` alone), L the lanes of a register."""
{init}
    for s in range(m):
{loads}
        at = s * ds + r0 * dr
{coefs}
{fmas}
    if overwrite:
{overwrite}
    else:
{update}
'''


_OUTER_ROWS_TEMPLATE = '''
def _outer_rows_{vn}(C, i_lo, i_hi, k0, D, ds, dr, A, m, keep, step, overwrite, count):
    """The outer tiles of rows ``i_lo .. i_hi-1`` by {vn} registers at column k0: tiles
    of 4 rows, then one of 2 and one of 1 (the tiling of :func:`tile_at`)."""
    i = i_lo
    while i + 4 <= i_hi:
        _outer_4x{vn}(C, i, k0, D, ds, dr, A, m, keep, step, overwrite, count)
        i += 4
    if i + 2 <= i_hi:
        _outer_2x{vn}(C, i, k0, D, ds, dr, A, m, keep, step, overwrite, count)
        i += 2
    if i < i_hi:
        _outer_1x{vn}(C, i, k0, D, ds, dr, A, m, keep, step, overwrite, count)
'''


def _indent(lines, n):
    return "\n".join(" " * n + s for s in lines)


def _dot_source(mr: int, nr: int) -> str:
    rows = [f"a{r} = A[i0 + {r}]" for r in range(mr)] + [f"b{s} = B[j0 + {s}]" for s in range(nr)]
    init = [f"c{r}{s} = zero" for r in range(mr) for s in range(nr)]
    loads = [f"x{r} = a{r}[k]" for r in range(mr)] + [f"y{s} = b{s}[k]" for s in range(nr)]
    fmas = [f"c{r}{s} += x{r} * y{s}" for r in range(mr) for s in range(nr)]
    ret = ", ".join(
        f"c{r}{s}" if r < mr and s < nr else "zero" for r in range(TILE) for s in range(TILE)
    )
    return _DOT_TEMPLATE.format(
        mr=mr,
        nr=nr,
        rows=_indent(rows, 4),
        init=_indent(init, 4),
        loads=_indent(loads, 8),
        fmas=_indent(fmas, 8),
        ret=ret,
    )


def _outer_source(rn: int, vn: int) -> str:
    """Source of the outer tile of ``rn`` rows by ``vn`` registers; ``vn == 0``: by the
    first ``count`` (< L) lanes of one register (the columns after the last whole one)."""
    partial = vn == 0
    regs = 1 if partial else vn
    acc = [(r, v) for r in range(rn) for v in range(regs)]

    def load(array, row, v):
        return (
            f"vload_first({array}, {row}, k0, count)"
            if partial
            else f"vload({array}, {row}, k0, {v})"
        )

    def store(row, v, value):
        if partial:
            return f"vstore_first(C, {row}, k0, count, {value})"
        return f"vstore(C, {row}, k0, {v}, {value})"

    return _OUTER_TEMPLATE.format(
        rn=rn,
        vn=vn,
        width="count" if partial else f"{vn}L",
        init=_indent([f"c{r}{v} = vzero(C)" for r, v in acc], 4),
        loads=_indent([f"y{v} = {load('A', 's', v)}" for v in range(regs)], 8),
        coefs=_indent([f"d{r} = D[np.uint64(at + {r} * dr)]" for r in range(rn)], 8),
        fmas=_indent([f"c{r}{v} = vfma(d{r}, y{v}, c{r}{v})" for r, v in acc], 8),
        overwrite=_indent(
            [store(f"r0 + {r}", v, f"vscale(-step, c{r}{v})") for r, v in acc], 8
        ),  # fmt: skip
        update=_indent(
            [
                store(
                    f"r0 + {r}",
                    v,
                    f"vfma(-step, c{r}{v}, vscale(keep, {load('C', f'r0 + {r}', v)}))",
                )
                for r, v in acc
            ],
            8,
        ),  # fmt: skip
    )


def _dot_dispatch_source() -> str:
    """Source of ``dot_tile(mr, nr, A, i0, B, j0)``: the dot tile of that size."""
    lines = ["def dot_tile(mr, nr, A, i0, B, j0):"]
    for mr in SIZES:
        lines.append(f"    if mr == {mr}:")
        for nr in SIZES[:-1]:
            lines.append(f"        if nr == {nr}:")
            lines.append(f"            return _dot_{mr}x{nr}(A, i0, B, j0)")
        lines.append(f"        return _dot_{mr}x{SIZES[-1]}(A, i0, B, j0)")
    lines.append(f"    return _dot_{SIZES[-1]}x{SIZES[-1]}(A, i0, B, j0)")
    return "\n".join(lines) + "\n"


def _build():
    namespace = globals()
    # Inlined (Numba IR) into the dispatches below: the tile code is then optimised
    # once there, not in nine libraries that every caller re-optimises.
    tile = njit(cache=True, fastmath=FASTMATH, inline="always")
    for mr in SIZES:
        for nr in SIZES:
            exec(compile(_dot_source(mr, nr), __file__, "exec"), namespace)
            name = f"_dot_{mr}x{nr}"
            namespace[name] = tile(namespace[name])
    exec(compile(_dot_dispatch_source(), __file__, "exec"), namespace)
    for rn in SIZES:
        for vn in (*OUTER_VECTORS, 0):
            exec(compile(_outer_source(rn, vn), __file__, "exec"), namespace)
            name = f"_outer_{rn}x{vn}"
            namespace[name] = tile(namespace[name])
    # the row loop of a column block, one per register count vn, and their dispatch
    args = "C, i_lo, i_hi, k0, D, ds, dr, A, m, keep, step, overwrite, count"
    lines = [f"def outer_block(vn, {args}):"]
    for vn in (*OUTER_VECTORS, 0):
        exec(compile(_OUTER_ROWS_TEMPLATE.format(vn=vn), __file__, "exec"), namespace)
        name = f"_outer_rows_{vn}"
        namespace[name] = tile(namespace[name])
        lines += [f"    if vn == {vn}:", f"        return {name}({args})"]
    exec(compile("\n".join(lines) + "\n", __file__, "exec"), namespace)


_build()

#: ``dot_tile(mr, nr, A, i0, B, j0)``: the 16-tuple ``c[4 r + s]`` =
#: ``Σ_k A[i0+r, k] B[j0+s, k]`` for ``r < mr``, ``s < nr`` (zeros elsewhere); mr, nr
#: each 4, 2 or 1.
dot_tile = njit(cache=True, fastmath=FASTMATH)(dot_tile)  # noqa: F821 - defined by _build
#: ``outer_block(vn, C, i_lo, i_hi, k0, D, ds, dr, A, m, keep, step, overwrite, count)``:
#: ``C[i, k0:+vn L] = keep C[i, k0:+vn L] - step Σ_{s<m} D[s ds + i dr] A[s, k0:+vn L]``
#: for the rows ``i = i_lo .. i_hi-1`` (``overwrite``: without the first term, C is not
#: read), L the lanes of a :class:`~.simd.Simd` register; vn one of
#: :data:`OUTER_VECTORS`, or 0 for the first ``count`` (< L) columns only (masked
#: loads and stores: nothing past them is touched). The rows go in outer tiles of 4,
#: then one of 2 and one of 1, each summing its rn × vn registers over all m terms in
#: registers and writing them once. The coefficients come from a flat ``D`` by
#: strides, so that BP4 (``D = δ``, summed over samples) and BP2 (``D = δ_next``,
#: summed over its neurons) share one compilation. One call per column block, the
#: tiles inlined in its row loop: a call and a dispatch per tile cost W1's update about
#: a third of its time (16 × 784 rows, m = 10: 3.8 → 2.7 µs, one core).
outer_block = njit(cache=True, fastmath=FASTMATH)(outer_block)  # noqa: F821 - defined by _build


@njit(cache=True, error_model="numpy")
def tile_count(n):
    """Number of tiles covering ``n`` rows with tiles of 4, then at most one 2 and one 1."""
    rem = n % 4
    return n // 4 + (1 if rem >= 2 else 0) + (rem % 2)


@njit(cache=True, error_model="numpy")
def tile_at(t, n):
    """``(start, size)`` of tile ``t`` of the :func:`tile_count` tiling of ``n`` rows."""
    n4 = n // 4
    if t < n4:
        return 4 * t, 4
    rem = n - 4 * n4
    if rem >= 2 and t == n4:
        return 4 * n4, 2
    return n - 1, 1
