"""Atomics and a spinning barrier, for threads that work together over many
mini-batches (the parts of :func:`~nbbackprop.kernels.cpu_train._run_parts`).

A ``prange`` loop is a fork and a join of the thread pool: ~0.8 µs on the 2-core
reference machine, once or twice per mini-batch, which for W1 (10 samples, ~10 µs of
work per mini-batch) is most of what one core waits for. Threads that stay together
for a whole run of mini-batches (a *region*, each thread one *part* of it)
synchronise with :func:`barrier` instead (~0.06 µs: one atomic add and a spin on one
cache line).

A barrier deadlocks unless every part runs at the same time, on its own thread, which
nothing promises (a pool thread may be busy elsewhere, or late). :func:`start`
therefore lets the parts meet before any work: a part that waits there too long calls
the region off, atomically, and does the whole work alone; every other part returns
having done nothing. Past :func:`start`, every part is running on a thread of its
own, and the barriers only wait.

``sync`` is an int64 array of :data:`SYNC_SIZE` zeros, one per region: the counters sit
on cache lines of their own.
"""

from __future__ import annotations

import os
import platform

from llvmlite import ir
from numba import njit
from numba import types as nbtypes
from numba.core import cgutils
from numba.extending import intrinsic

#: Where the counters are in ``sync`` (64-byte lines apart).
START, BARRIER = 0, 8
SYNC_SIZE = 16
#: Added to the start counter when the region is called off.
CALLED_OFF = 1 << 40
#: Polls of the start counter before a part calls the region off (the polls past
#: :data:`SPIN_POLLS` yield the CPU where POSIX has ``sched_yield``, 0.1–1 µs each):
#: ~15–100 ms, far longer than a pool thread takes to wake, take the GIL and enter the
#: loop (~0.1 ms); without the yields, 32 times as many polls of ``pause`` alone.
START_POLLS = 1 << 17 if os.name == "posix" else 1 << 22
#: Polls of a counter (one ``pause``: ~10–140 cycles, by CPU) before a waiting part
#: also yields its CPU at each poll: a wait between two mini-batches is ~1 µs, but
#: with more threads than free CPUs the part waited for may be off its CPU, and a pure
#: spin would hold the CPU it needs for the rest of a time slice (milliseconds).
SPIN_POLLS = 1 << 12

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")
_POSIX = os.name == "posix"


def _element(context, builder, sig, args):
    ary = context.make_array(sig.args[0])(context, builder, args[0])
    return builder.gep(ary.data, [args[1]])


@intrinsic
def atomic_add(typingctx, arr, index, value):
    """``arr[index] += value`` as one atomic instruction; returns the old value."""
    if not (isinstance(arr, nbtypes.Array) and arr.dtype == nbtypes.int64):
        return None

    def codegen(context, builder, sig, args):
        return builder.atomic_rmw("add", _element(context, builder, sig, args), args[2], "acq_rel")

    return nbtypes.int64(arr, nbtypes.intp, nbtypes.int64), codegen


@intrinsic
def atomic_load(typingctx, arr, index):
    """``arr[index]``, read atomically (acquire: later reads see what the writer wrote
    before its release)."""
    if not (isinstance(arr, nbtypes.Array) and arr.dtype == nbtypes.int64):
        return None

    def codegen(context, builder, sig, args):
        return builder.load_atomic(_element(context, builder, sig, args), "acquire", 8)

    return nbtypes.int64(arr, nbtypes.intp), codegen


@intrinsic
def compare_exchange(typingctx, arr, index, expected, new):
    """``arr[index] = new`` if it holds ``expected``, atomically; returns the old value."""
    if not (isinstance(arr, nbtypes.Array) and arr.dtype == nbtypes.int64):
        return None

    def codegen(context, builder, sig, args):
        ptr = _element(context, builder, sig, args)
        pair = builder.cmpxchg(ptr, args[2], args[3], "acq_rel", "acquire")
        return builder.extract_value(pair, 0)

    return nbtypes.int64(arr, nbtypes.intp, nbtypes.int64, nbtypes.int64), codegen


@intrinsic
def spin_pause(typingctx):
    """A hint to the core that this thread is spinning (x86 ``pause``; nothing elsewhere)."""

    def codegen(context, builder, sig, args):
        if _X86:
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause"
            )
            builder.call(fn, [])
        return context.get_dummy_value()

    return nbtypes.void(), codegen


@intrinsic
def _yield_cpu(typingctx):
    """``sched_yield()`` where POSIX has it (nothing elsewhere)."""

    def codegen(context, builder, sig, args):
        if _POSIX:
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield"
            )
            builder.call(fn, [])
        return context.get_dummy_value()

    return nbtypes.void(), codegen


@njit(cache=True, inline="always")
def _wait(polls):
    """One poll's pause: a spin hint, and past :data:`SPIN_POLLS` a yield of the CPU."""
    spin_pause()
    if polls >= SPIN_POLLS:
        _yield_cpu()


#: What :func:`start` tells a part.
GO, CALLED_OFF_ELSEWHERE, ALONE = 1, 0, 2


@njit(cache=True, inline="always")
def start(sync, parts):
    """Meet the other parts of the region: :data:`GO` when all ``parts`` arrived;
    :data:`ALONE` when this part waited too long and called the region off (it then
    does the whole work as the only part); :data:`CALLED_OFF_ELSEWHERE` when another
    part did (return at once, touching nothing shared)."""
    if parts == 1:
        return GO
    if atomic_add(sync, START, 1) >= CALLED_OFF:
        return CALLED_OFF_ELSEWHERE
    polls = 0
    while True:
        seen = atomic_load(sync, START)
        if seen >= CALLED_OFF:
            return CALLED_OFF_ELSEWHERE
        if seen == parts:
            return GO
        polls += 1
        if polls >= START_POLLS:
            # call it off, unless another part arrived since ``seen`` was read
            if compare_exchange(sync, START, seen, seen + CALLED_OFF) == seen:
                return ALONE
            polls = 0
        _wait(polls)


@njit(cache=True, inline="always")
def barrier(sync, parts):
    """Wait until all ``parts`` have arrived here (after :func:`start` returned
    :data:`GO`).

    Arrivals are counted, never reset: round r is complete when the count reaches
    ``(r + 1) * parts``, and no part can arrive at round r + 1 before that."""
    if parts == 1:
        return
    arrived = atomic_add(sync, BARRIER, 1)
    target = (arrived // parts + 1) * parts
    polls = 0
    while atomic_load(sync, BARRIER) < target:
        polls += 1
        _wait(polls)


@njit(cache=True)
def call_off(sync):
    """Call the region off from outside it (its caller failed): parts not yet past
    :func:`start` return at once. Once every part has started it changes nothing (no
    part reads the start counter again), and part 0 can only have started with them."""
    atomic_add(sync, START, CALLED_OFF)
