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
640-910 ms on two threads beside one busy process against 125-135 ms on one, and the
~25 % of time the reference machine spends in its slow mode made two threads 144-164
ms against 123 ms on one (``docs/performance.md``). When the machine is quiet, two
threads win (65-79 ms), so neither count can be fixed in advance.

The thread count never changes the result: every kernel splits the index it writes
between the threads, with the same loop order within each output, so a run gives
identical parameters at any count (``tests/test_threads.py``). Only the plan's
choices (made once per fit, from Numba's full count) could change it, and they do
not change here.

The policy, per workload (network shape, batch size, dtype, optimiser, kernel plan):

- the first chunk the process runs of a workload is not timed (it loads or compiles);
- each candidate not yet timed is tried on a short chunk (a quarter of one);
- after that the fastest estimate runs; an estimate is the mean of its last two
  timings;
- the others are tried again on a short chunk after ``PROBE_FIRST`` chunks, then
  after twice as many each time the choice holds (up to ``PROBE_MOST``), and at once
  when the running count's time per mini-batch jumps by ``JUMP`` or more.

Probing costs the difference between the counts on a quarter chunk every
``PROBE_MOST`` chunks when nothing changes: ~0.4 % of a quiet W1 epoch.
"""

from __future__ import annotations

import numbers
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from contextlib import contextmanager

import numba

#: Chunks before the first re-probe of the slower counts, and the most between probes.
PROBE_FIRST = 4
PROBE_MOST = 64
#: A chunk this much slower per mini-batch than its count's estimate triggers a probe.
JUMP = 1.3
#: A probe runs this fraction of a chunk (at least one mini-batch).
PROBE_FRACTION = 0.25
#: The most of the training time that probing slower counts may cost.
BUDGET = 0.01
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
        self.estimate: dict[int, list[float]] = {k: [] for k in self.counts}
        self.current = most
        self.warm = False  # the first chunk (compiling or loading) is not timed
        self.interval = PROBE_FIRST  # chunks from one probe to the next, at least
        self.until_probe = PROBE_FIRST
        self.clock = 0.0  # seconds of timed chunks
        self.probe_time = 0.0  # no probe before the clock reaches this
        self.next_probe = 0  # index into the other counts, in turn
        self.chunks = dict.fromkeys(self.counts, 0)

    def seconds_per_batch(self, k: int) -> float | None:
        times = self.estimate[k]
        return sum(times) / len(times) if times else None

    def plan(self, size: int) -> tuple[int, int]:
        """The thread count and number of mini-batches (≤ ``size``) of the next chunk."""
        if not self.warm:
            return self.current, size
        short = max(1, int(size * PROBE_FRACTION))
        untimed = [k for k in self.counts if not self.estimate[k]]
        if untimed:
            return untimed[0], short if untimed[0] != self.current else size
        if self.until_probe <= 0 and self.clock >= self.probe_time and len(self.counts) > 1:
            others = [k for k in self.counts if k != self.current]
            return others[self.next_probe % len(others)], short
        return self.current, size

    def record(self, k: int, seconds: float, batches: int) -> None:
        """Chunk of ``batches`` mini-batches at ``k`` threads took ``seconds``."""
        self.chunks[k] += 1
        if not self.warm:
            self.warm = True
            return
        self.clock += seconds
        per_batch = seconds / batches
        before = self.seconds_per_batch(k)
        times = self.estimate[k]
        if k != self.current:
            times.clear()  # a probe: its count's old timing may be from another mode
        times.append(per_batch)
        del times[:-2]
        if k == self.current:
            self.until_probe -= 1
            if before is not None and per_batch > JUMP * before:
                self.until_probe, self.probe_time = 0, 0.0  # the machine changed: look now
            return
        # a probe (or a first timing): does another count now beat the current one?
        self.next_probe += 1
        current = self.seconds_per_batch(self.current)
        if current is not None and per_batch < current:
            self.current, self.interval = k, PROBE_FIRST
        elif self.next_probe % (len(self.counts) - 1) == 0:
            self.interval = min(2 * self.interval, PROBE_MOST)
        self.until_probe = self.interval
        # what the probe cost over the count that won, spread to BUDGET of the time
        loss = seconds - batches * self.seconds_per_batch(self.current)
        self.probe_time = self.clock + max(0.0, loss) / BUDGET

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
):
    """Call ``run(first, last)`` over mini-batches ``0 .. n_batches-1`` in chunks.

    ``threads`` is a fixed count or a tuner that picks one per chunk; Numba's thread
    count is restored afterwards. Stops at (and returns) the first result that is not
    ``None``.
    """
    restore = numba.get_num_threads()
    first = 0
    try:
        while first < n_batches:
            if isinstance(threads, ThreadTuner):
                k, size = threads.plan(chunk)
            else:
                k, size = threads, chunk
            last = min(first + size, n_batches)
            numba.set_num_threads(k)
            start = time.perf_counter()
            result = run(first, last)
            if isinstance(threads, ThreadTuner):
                threads.record(k, time.perf_counter() - start, last - first)
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
