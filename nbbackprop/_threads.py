"""How many threads run the CPU training chunks: chosen by measuring them.

A CPU training run is a sequence of compiled calls ("chunks" of mini-batches, see
:meth:`nbbackprop.Network.fit`). With ``threads="auto"`` (the default) a
:class:`ThreadTuner` times every chunk and runs the next one at the thread count that
has been fastest per mini-batch: Numba's full count or a halving of it (on a 2-core
machine, 2 or 1).

Why measure instead of always using every thread: a mini-batch of a small network is
~10 µs of work, and every one joins the threads at least once. When another process
keeps a core busy, or the machine's vCPUs stop sharing a cache, those joins wait, and
two threads run slower than one: a W1 epoch (``[784, 30, 10]``, batch 10) took
250-900 ms (once 5.6 s) on two threads beside one busy process against 110-135 ms on
one, and in the reference machine's slow mode 144-164 ms on two against 102-123 ms on
one (``docs/performance.md``). When the machine is quiet, two threads win (65-79 ms),
so neither count can be fixed in advance.

The thread count never changes the result: every kernel splits the index it writes
between the threads, with the same loop order within each output, so a run gives
identical parameters at any count (``tests/test_threads.py``). Only the plan's
choices (made once per fit, from Numba's full count) could change it, and they do
not change here.

The policy, per workload (network shape, batch size, dtype, optimiser, kernel plan):

- the first chunk the process runs of a workload is not timed (it loads or compiles);
- each candidate not yet timed is tried on a short chunk (``PROBE_FRACTION`` of one,
  in ``PROBE_PIECES`` calls of at least ``PROBE_SECONDS``);
- after that the fastest estimate runs; the running count's estimate is the better of
  its last two chunks (one slow chunk is noise until the next confirms it), another
  count's is its last probe;
- the other counts are tried again, in turn, on a short chunk: no sooner than
  ``PROBE_EVERY`` chunks after the last probe, and no sooner than the last probe's
  cost (its time over what the current count would have taken) divided by ``BUDGET``,
  in seconds of timed chunks, so that probing costs at most ``BUDGET`` of the time;
  at once when the running count's time per mini-batch jumps by ``JUMP`` or more;
  and at the next chunk after a pause of ``STALE_SECONDS`` or more in this workload's
  training (another program ran, or the program did other work between ``fit``
  calls), when the last probe's cost divided by ``BUDGET`` has passed in wall time:
  the machine may have changed meanwhile, and a count that lost before the pause can
  win after it, which the running count's own timings do not show.

On a quiet 2-core machine a W1 probe of one thread loses by more than ``JUMP`` in its
first call (148 mini-batches) and costs ~1 ms, so the choice of two threads is
re-checked every ``PROBE_EVERY`` chunks (~0.1 s). In the slow mode, where one thread
wins, a probe of two costs about as little and comes as often. Beside a busy process
one call of a 2-thread probe can take 70-260 ms (0.7-2.6 ms per mini-batch), so it
comes back only every 7-26 s of training.
"""

from __future__ import annotations

import numbers
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from contextlib import contextmanager

import numba

#: Chunks from one probe of a slower count to the next, at least.
PROBE_EVERY = 4
#: A chunk this much slower per mini-batch than its count's estimate triggers a probe.
JUMP = 1.3
#: A probe runs this fraction of a chunk (at least one mini-batch), in this many calls.
PROBE_FRACTION = 0.125
PROBE_PIECES = 4
#: A probe's calls take at least this long (at the current count's speed): a thread
#: pool that slept while fewer threads ran wakes in tens of microseconds.
PROBE_SECONDS = 0.002
#: The most of the training time that probing slower counts may cost.
BUDGET = 0.01
#: A pause in a workload's training this long (wall-clock seconds not spent in its
#: chunks) makes the other counts' timings stale: they are probed again at the next
#: chunk (budget permitting). W1 in ``benchmarks.compare``, one epoch per round with
#: the peers' epochs between: a tuner that had moved to one thread in the slow mode
#: kept it for two fast-mode epochs (81 ms each against ~58 on two threads).
STALE_SECONDS = 1.0
#: Tuners kept (least recently used dropped): one per workload a process trains.
KEEP = 32


def candidates(most: int) -> tuple[int, ...]:
    """Thread counts tried: ``most``, then halvings down to 1 (8 → 8, 4, 2, 1)."""
    counts = [most]
    while counts[-1] > 1:
        counts.append(counts[-1] // 2)
    return tuple(counts)


class ThreadTuner:
    """Times chunks of one workload at each candidate thread count and picks the fastest."""

    def __init__(self, most: int):
        self.counts = candidates(most)
        self.times: dict[int, list[float]] = {k: [] for k in self.counts}  # s per batch
        self.current = most
        self.fresh = False  # the current count won a probe and has run no chunk since
        self.warm = False  # the first chunk (compiling or loading) is not timed
        self.until_probe = PROBE_EVERY  # chunks to the next probe, at least
        self.clock = 0.0  # seconds of timed chunks
        self.probe_time = 0.0  # no probe before the clock reaches this
        self.next_probe = 0  # index into the other counts, in turn
        self.chunks = dict.fromkeys(self.counts, 0)
        # the last probe: when it ended (the caller's clock), the timed seconds by then,
        # and what it cost over the count that won
        self.probe_at: float | None = None
        self.probe_clock = 0.0
        self.probe_loss = 0.0

    def seconds_per_batch(self, k: int) -> float | None:
        """The estimate at ``k`` threads (``None``: never timed): the better of the current
        count's last two chunks (one slow chunk is not yet a slower machine), another
        count's last probe."""
        return min(self.times[k], default=None)

    def stale(self, now: float | None) -> bool:
        """Whether a pause of :data:`STALE_SECONDS` or more (``now`` minus the last
        probe's end, less the timed chunks since) came after the last probe, and that
        probe's cost over :data:`BUDGET` has passed since in wall time."""
        if now is None or self.probe_at is None:
            return False
        since = now - self.probe_at
        pause = since - (self.clock - self.probe_clock)
        return pause >= STALE_SECONDS and since >= self.probe_loss / BUDGET

    def plan(self, size: int, now: float | None = None) -> tuple[int, int, int]:
        """The thread count, number of mini-batches (≤ ``size``) and mini-batches per
        call of the next chunk (a probe goes in ``PROBE_PIECES`` calls, so that a
        losing one can stop early: :meth:`losing`). ``now``: the caller's clock, for
        :meth:`stale`."""
        if not self.warm:
            return self.current, size, size
        short = max(1, int(size * PROBE_FRACTION))
        piece = -(-short // PROBE_PIECES)
        current = self.seconds_per_batch(self.current)
        if current:  # long enough to time (and to wake a sleeping pool)
            piece = min(short, max(piece, int(PROBE_SECONDS / current)))
        untimed = [k for k in self.counts if not self.times[k]]
        if untimed:
            if untimed[0] == self.current:
                return self.current, size, size
            return untimed[0], short, piece
        due = self.until_probe <= 0 and self.clock >= self.probe_time
        if (due or self.stale(now)) and len(self.counts) > 1:
            others = [k for k in self.counts if k != self.current]
            return others[self.next_probe % len(others)], short, piece
        return self.current, size, size

    def losing(self, k: int, seconds: float, batches: int) -> bool:
        """Whether a probe at ``k`` threads is already clearly slower than the current count."""
        current = self.seconds_per_batch(self.current)
        return k != self.current and current is not None and seconds > JUMP * current * batches

    def record(self, k: int, seconds: float, batches: int, now: float | None = None) -> None:
        """Chunk of ``batches`` mini-batches at ``k`` threads took ``seconds``, ending at
        ``now`` on the caller's clock (when given)."""
        self.chunks[k] += 1
        if not self.warm:
            self.warm = True
            return
        self.clock += seconds
        per_batch = seconds / batches
        before = self.seconds_per_batch(k)
        if k == self.current:
            if self.fresh:  # the probe that made it current no longer counts
                self.times[k].clear()
                self.fresh = False
            self.times[k] = [*self.times[k][-1:], per_batch]
            self.until_probe -= 1
            others = [self.seconds_per_batch(c) for c in self.counts if c != k]
            others = [e for e in others if e is not None]
            if (before is not None and per_batch > JUMP * before) or (
                others and self.seconds_per_batch(k) > min(others)
            ):  # the machine changed, or a probe's win did not last: look now
                self.until_probe, self.probe_time = 0, 0.0
            return
        # a probe (or a first timing): does another count now beat the current one?
        self.times[k] = [per_batch]  # its older timing may be from another mode
        self.next_probe += 1
        current = self.seconds_per_batch(self.current)
        if current is not None and per_batch < current:
            self.current, self.fresh = k, True
        self.until_probe = PROBE_EVERY
        # what the probe cost over the count that won, spread to BUDGET of the time
        loss = seconds - batches * self.seconds_per_batch(self.current)
        self.probe_time = self.clock + max(0.0, loss) / BUDGET
        self.probe_at, self.probe_clock, self.probe_loss = now, self.clock, max(0.0, loss)

    def summary(self) -> dict:
        """Chunks run and the current estimate (µs per mini-batch) at each count."""
        return {
            "current": self.current,
            "chunks": dict(self.chunks),
            "us_per_batch": {
                k: None if (s := self.seconds_per_batch(k)) is None else round(s * 1e6, 2)
                for k in self.counts
            },
        }


_tuners: OrderedDict[Hashable, ThreadTuner] = OrderedDict()


def tuner(key: Hashable, most: int) -> ThreadTuner:
    """The process's tuner for workload ``key`` with up to ``most`` threads."""
    key = (key, most)
    found = _tuners.pop(key, None)
    if found is None:
        found = ThreadTuner(most)
    _tuners[key] = found
    while len(_tuners) > KEEP:
        _tuners.popitem(last=False)
    return found


def summaries() -> dict:
    """:meth:`ThreadTuner.summary` of every workload this process has trained."""
    return {key: t.summary() for key, t in _tuners.items()}


def run_chunks(
    run: Callable[[int, int], object],
    n_batches: int,
    chunk: int,
    threads: int | ThreadTuner,
    clock: Callable[[], float] = time.perf_counter,
):
    """Call ``run(first, last)`` over mini-batches ``0 .. n_batches-1`` in chunks.

    ``threads`` is a fixed count or a tuner that picks one per chunk (timed with
    ``clock``); Numba's thread count is restored afterwards. Stops at (and returns) the
    first result that is not ``None``.
    """
    restore = numba.get_num_threads()
    tuner = threads if isinstance(threads, ThreadTuner) else None
    first = 0
    try:
        while first < n_batches:
            k, size, piece = (
                (threads, chunk, chunk) if tuner is None else tuner.plan(chunk, clock())
            )
            end = min(first + size, n_batches)
            numba.set_num_threads(k)
            start = clock()
            last = first
            result = None
            while last < end and result is None:
                result = run(last, min(last + piece, end))
                last = min(last + piece, end)
                if tuner is not None and tuner.losing(k, clock() - start, last - first):
                    break
            if tuner is not None:
                now = clock()
                tuner.record(k, now - start, last - first, now)
            if result is not None:
                return result
            first = last
        return None
    finally:
        numba.set_num_threads(restore)


def check_threads(threads) -> int:
    """``threads`` as a fixed count: an int from 1 to ``NUMBA_NUM_THREADS``."""
    most = numba.config.NUMBA_NUM_THREADS
    expected = f"'auto' or an integer from 1 to {most} (NUMBA_NUM_THREADS)"
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral):
        error = ValueError if isinstance(threads, str) else TypeError
        raise error(f"threads: expected {expected}, got {threads!r}")
    if not 1 <= threads <= most:
        raise ValueError(f"threads: expected {expected}, got {threads!r}")
    return int(threads)


@contextmanager
def limit(k: int | None):
    """Run the block at ``k`` Numba threads (``None``: leave the count alone)."""
    if k is None:
        yield
        return
    restore = numba.get_num_threads()
    numba.set_num_threads(k)
    try:
        yield
    finally:
        numba.set_num_threads(restore)
