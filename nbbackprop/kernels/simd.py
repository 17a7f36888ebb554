"""SIMD registers for the outer-product tiles: a Numba type for one vector register and
the operations on it that an outer-product micro-kernel needs.

The dot tiles of :mod:`.cpu_tiles` leave vectorisation to LLVM's loop vectoriser,
which vectorises the innermost loop only. An outer-product tile of BP4,
``C[r, k] += Σ_s δ[s, r] a[s, k]``, wants its accumulators vectorised along k but its
innermost loop over the samples s, so that a 4-row × 4-vector block of ``C`` stays in
16 registers for the whole mini-batch and is read and written once (the axpy tile reads
and writes it again for every 4 samples). LLVM cannot produce that loop order from
scalar code, so this module names the register: :class:`Simd` is ``<L x float>``
(``L`` = :data:`VEC_BYTES` / itemsize) and lives in a register like a scalar, and the
tile is written with :func:`vload`, :func:`vfma` and :func:`vstore` the way a C kernel
is written with intrinsics; :func:`vload_first` and :func:`vstore_first` (masked) take
the columns after a row's last whole register.

:data:`VEC_BYTES` follows the features Numba compiles for (``NUMBA_CPU_FEATURES``,
else the host's): 64 with AVX-512, else 32. Numba's on-disk cache is keyed by those
features, so a cache never mixes the two widths. The operations take C-contiguous
2-D arrays only (any other layout is a typing error: a register is ``L`` consecutive
elements of a row, which a strided array does not hold). Loads and stores are
unaligned and unchecked: the caller guarantees that ``k + (v + 1) L`` columns exist.
"""

from __future__ import annotations

import llvmlite.binding as llvm_binding
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic, models, register_model


def _compile_features() -> str:
    """The CPU features Numba passes to LLVM (as Numba's codegen decides them)."""
    if config.CPU_FEATURES is not None:
        return config.CPU_FEATURES
    return llvm_binding.get_host_cpu_features().flatten()


#: Bytes of one vector register: 64 where the code is compiled for AVX-512, else 32
#: (AVX2; LLVM splits a wider vector into what the target has, so any x86-64 or other
#: target still gets correct code).
VEC_BYTES = 64 if "+avx512f" in _compile_features().split(",") else 32
#: Vector registers the target has (an outer tile's accumulators must fit with room
#: for its operands): 32 with AVX-512, 16 with AVX2.
VEC_REGISTERS = 32 if VEC_BYTES == 64 else 16


class Simd(types.Type):
    """One vector register of :data:`VEC_BYTES` bytes of ``dtype`` lanes."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.lanes = VEC_BYTES * 8 // dtype.bitwidth
        super().__init__(name=f"Simd({dtype} x {self.lanes})")


@register_model(Simd)
class _SimdModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        lane = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(lane, fe_type.lanes))


def _lanes_of(array_type) -> int:
    return VEC_BYTES * 8 // array_type.dtype.bitwidth


def _vector_pointer(context, builder, sig, args, registers=True):
    """Pointer to ``A[i, k + v L]`` (``args`` start ``A, i, k, v``; without ``v`` when
    not ``registers``: ``A[i, k]``) as a pointer to a vector of ``L`` lanes."""
    array_type, array = sig.args[0], args[0]
    lanes = _lanes_of(array_type)
    i, k = (
        context.cast(builder, x, t, types.intp)
        for x, t in zip(args[1:3], sig.args[1:3], strict=True)
    )
    column = k
    if registers:
        v = context.cast(builder, args[3], sig.args[3], types.intp)
        column = builder.add(k, builder.mul(v, ir.Constant(k.type, lanes)))
    ary = context.make_array(array_type)(context, builder, array)
    element = cgutils.get_item_pointer2(
        context, builder, ary.data, cgutils.unpack_tuple(builder, ary.shape),
        cgutils.unpack_tuple(builder, ary.strides), array_type.layout, [i, column],
    )  # fmt: skip
    lane = context.get_value_type(array_type.dtype)
    return builder.bitcast(element, ir.VectorType(lane, lanes).as_pointer())


def _is_matrix(a) -> bool:
    """A C-contiguous 2-D float array: its rows hold consecutive elements."""
    return (
        isinstance(a, types.Array)
        and a.ndim == 2
        and a.layout == "C"
        and isinstance(a.dtype, types.Float)
    )


def _splat(builder, scalar, vector_type):
    """``scalar`` in every lane of a ``vector_type``."""
    one = builder.insert_element(ir.Constant(vector_type, ir.Undefined), scalar,
                                 ir.Constant(ir.IntType(32), 0))  # fmt: skip
    zeros = ir.Constant(ir.VectorType(ir.IntType(32), vector_type.count), None)
    return builder.shuffle_vector(one, one, zeros)


@intrinsic
def lanes(typingctx, A):
    """Lanes of a :class:`Simd` register of ``A``'s dtype (a compile-time constant)."""
    if not _is_matrix(A):
        return None

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, _lanes_of(sig.args[0]))

    return types.intp(A), codegen


@intrinsic
def vzero(typingctx, A):
    """A register of zeros of ``A``'s dtype."""
    if not _is_matrix(A):
        return None
    vector = Simd(A.dtype)

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(vector), None)

    return vector(A), codegen


@intrinsic
def vload(typingctx, A, i, k, v):
    """``A[i, k + v L : k + (v + 1) L]`` as one register (unchecked)."""
    if not _is_matrix(A):
        return None
    vector = Simd(A.dtype)

    def codegen(context, builder, sig, args):
        pointer = _vector_pointer(context, builder, sig, args)
        return builder.load(pointer, align=A.dtype.bitwidth // 8)

    return vector(A, i, k, v), codegen


@intrinsic
def vstore(typingctx, A, i, k, v, x):
    """``A[i, k + v L : k + (v + 1) L] = x`` (unchecked)."""
    if not _is_matrix(A) or not isinstance(x, Simd) or x.dtype != A.dtype:
        return None

    def codegen(context, builder, sig, args):
        pointer = _vector_pointer(context, builder, sig, args)
        builder.store(args[4], pointer, align=A.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.void(A, i, k, v, x), codegen


@intrinsic
def vfma(typingctx, s, x, acc):
    """``acc + s x`` for a scalar ``s`` (broadcast), one fused multiply-add per lane."""
    if not isinstance(x, Simd) or acc != x or not isinstance(s, (types.Float, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        vector_type = args[1].type
        scalar = context.cast(builder, args[0], sig.args[0], x.dtype)
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector_type, [vector_type] * 3),
            f"llvm.fma.v{vector_type.count}f{x.dtype.bitwidth}",
        )  # fmt: skip
        return builder.call(fma, [_splat(builder, scalar, vector_type), args[1], args[2]])

    return x(s, x, acc), codegen


@intrinsic
def vscale(typingctx, s, x):
    """``s x`` for a scalar ``s`` (broadcast)."""
    if not isinstance(x, Simd) or not isinstance(s, (types.Float, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        scalar = context.cast(builder, args[0], sig.args[0], x.dtype)
        return builder.fmul(_splat(builder, scalar, args[1].type), args[1])

    return x(s, x), codegen


def _first_lanes(builder, count, lanes):
    """The mask ``<lane < count>`` of a register of ``lanes`` lanes."""
    count = builder.trunc(count, ir.IntType(32)) if count.type.width > 32 else count
    index = ir.Constant(ir.VectorType(ir.IntType(32), lanes), list(range(lanes)))
    return builder.icmp_unsigned("<", index, _splat(builder, count, index.type))


def _masked(context, builder, sig, args, name, vector_type, value=None):
    """``llvm.masked.load`` (``name`` "load") or ``.store`` (of ``value``) of the first
    ``count`` lanes at ``A[i, k]`` (``args`` start ``A, i, k, count``)."""
    pointer = _vector_pointer(context, builder, sig, args, registers=False)
    count = context.cast(builder, args[3], sig.args[3], types.int64)
    mask = _first_lanes(builder, count, vector_type.count)
    align = ir.Constant(ir.IntType(32), sig.args[0].dtype.bitwidth // 8)
    if name == "load":
        operands = [pointer, align, mask, ir.Constant(vector_type, None)]
    else:
        operands = [value, pointer, align, mask]
    suffix = f"v{vector_type.count}f{sig.args[0].dtype.bitwidth}.p0"
    fn = cgutils.get_or_insert_function(
        builder.module,
        ir.FunctionType(vector_type if name == "load" else ir.VoidType(),
                        [x.type for x in operands]),
        f"llvm.masked.{name}.{suffix}",
    )  # fmt: skip
    return builder.call(fn, operands)


@intrinsic
def vload_first(typingctx, A, i, k, count):
    """The first ``count`` (< L) elements of ``A[i, k:]`` in the first lanes of a
    register, zeros in the others; nothing past them is read."""
    if not _is_matrix(A):
        return None
    vector = Simd(A.dtype)

    def codegen(context, builder, sig, args):
        return _masked(context, builder, sig, args, "load", context.get_value_type(vector))

    return vector(A, i, k, count), codegen


@intrinsic
def vstore_first(typingctx, A, i, k, count, x):
    """``A[i, k:k+count] = x[:count]`` (``count`` < L); nothing past them is written."""
    if not _is_matrix(A) or not isinstance(x, Simd) or x.dtype != A.dtype:
        return None

    def codegen(context, builder, sig, args):
        _masked(context, builder, sig, args, "store", args[4].type, args[4])
        return context.get_dummy_value()

    return types.void(A, i, k, count, x), codegen
