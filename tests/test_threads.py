"""The thread count of CPU training: ``fit(threads=...)`` and the tuner behind "auto".

The tuner may run any chunk of mini-batches at any of its counts, so the tests that
matter most check that the count never changes the result: a fit whose chunks
alternate between 2 threads and 1 gives the same bits as one at a fixed 2.
"""

import numba
import numpy as np
import pytest

import nbbackprop as nb
from nbbackprop import _threads
from nbbackprop import network as network_module

two_threads = pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads")


def _data(n_in, n_out, n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, n_in))
    X[X < 0.7] = 0.0
    return X, rng.integers(0, n_out, n)


class _Alternating(_threads.ThreadTuner):
    """Runs chunk i at ``counts[i % 2]`` threads, with chunks of varying length."""

    def __init__(self, most):
        super().__init__(most)
        self.i = 0
        self.seen = []

    def plan(self, size, now=None):
        self.i += 1
        n = max(1, size // (1 + self.i % 3))
        return self.counts[self.i % 2], n, max(1, n // 2)

    def losing(self, k, seconds, batches):
        return False

    def record(self, k, seconds, batches, now=None):
        self.seen.append((k, numba.get_num_threads(), batches))


# ------------------------------------------------- the count does not change the result
# Each case takes a different driver: the fused SGD path with its tiled-parallel layer 0
# (W1's shape), a deeper tiled network with Adam, and the prange kernels of "parallel".
CASES = [
    ([784, 30, 10], 10, "float64", "sgd", "auto"),
    ([64, 96, 48, 10], 33, "float32", "adam", "auto"),
    ([64, 40, 10], 7, "float64", "momentum", "parallel"),
    ([784, 100, 10], 32, "float32", "sgd", "auto"),
]


@two_threads
@pytest.mark.parametrize("sizes,batch_size,dtype,optimizer,strategy", CASES)
@pytest.mark.parametrize("shuffle", [False, True])
def test_alternating_thread_counts_give_the_same_bits(
    monkeypatch, sizes, batch_size, dtype, optimizer, strategy, shuffle
):
    X, y = _data(sizes[0], sizes[-1])
    eta = 0.5 if optimizer == "sgd" else 0.01
    kwargs = dict(epochs=2, batch_size=batch_size, eta=eta, optimizer=optimizer, seed=3,
                  shuffle=shuffle, strategy=strategy)  # fmt: skip
    fixed = nb.Network(sizes, dtype=dtype, seed=0)
    fixed.fit(X, y, threads=2, **kwargs)

    tuners = []

    def alternating(key, most):
        tuners.append(_Alternating(most))
        return tuners[-1]

    monkeypatch.setattr(_threads, "tuner", alternating)
    # chunks of 7 mini-batches (cut to 3 or 2 by the tuner): the fused drivers' regions
    # span mini-batches within a chunk, so a chunk of one would not exercise them
    flops = 6 * sum(a * b for a, b in zip(sizes, sizes[1:], strict=False))
    monkeypatch.setattr(network_module, "_CHUNK_SECONDS", 7.5 * flops * batch_size)
    monkeypatch.setattr(network_module, "_ASSUMED_FLOPS", 1.0)
    mixed = nb.Network(sizes, dtype=dtype, seed=0)
    mixed.fit(X, y, threads="auto", **kwargs)

    (tuner,) = tuners
    counts = {k for k, _, _ in tuner.seen}
    assert counts == {1, 2}, "both counts must have run"
    assert all(k == actual for k, actual, _ in tuner.seen), "Numba ran at the count asked"
    assert sum(b for _, _, b in tuner.seen) == 2 * -(-X.shape[0] // batch_size)
    assert {b for _, _, b in tuner.seen} >= {2, 3}
    assert np.array_equal(mixed.params, fixed.params)
    assert np.array_equal(mixed.opt_state, fixed.opt_state)


@two_threads
def test_fit_leaves_numbas_thread_count_as_it_was():
    X, y = _data(64, 10)
    saved = numba.get_num_threads()
    net = nb.Network([64, 30, 10], seed=0)
    try:
        numba.set_num_threads(2)
        for threads in (1, "auto", 2):
            net.fit(X, y, epochs=1, batch_size=10, threads=threads,
                    validation_data=(X[:50], y[:50]))  # fmt: skip
            assert numba.get_num_threads() == 2
    finally:
        numba.set_num_threads(saved)


@two_threads
def test_a_fixed_count_plans_for_that_count():
    X, y = _data(784, 10)
    net = nb.Network([784, 100, 10], seed=0)  # 79,510 parameters: a parallel update
    plans = []
    original = nb.Network.plan

    def spy(self, *args, **kwargs):
        plans.append(original(self, *args, **kwargs))
        return plans[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nb.Network, "plan", spy)
        net.fit(X, y, epochs=1, batch_size=10, threads=1)
    # the first plan only checks the arguments; the second is the one that runs
    assert plans[-1].threads == 1
    assert plans[-1].update == "serial"
    assert net.plan(10).update == "parallel"


@pytest.mark.parametrize(
    "threads,error",
    [
        ("fast", ValueError),
        ("2", ValueError),
        (0, ValueError),
        (-1, ValueError),
        (numba.config.NUMBA_NUM_THREADS + 1, ValueError),
        (1.5, TypeError),
        (True, TypeError),
        (None, TypeError),
        (np.array([1, 2]), TypeError),
    ],
)
def test_bad_threads_is_a_clear_error(threads, error):
    X, y = _data(64, 10, n=20)
    net = nb.Network([64, 10], seed=0)
    before = net.params.copy()
    with pytest.raises(error, match=r"^threads: expected 'auto' or an integer from 1 to"):
        net.fit(X, y, epochs=1, threads=threads)
    assert np.array_equal(net.params, before)


def test_numpy_integer_threads_are_accepted():
    assert _threads.check_threads(np.int64(1)) == 1


# ------------------------------------------------------------------ the tuner's policy
def test_candidates_halve_down_to_one():
    assert _threads.candidates(1) == (1,)
    assert _threads.candidates(2) == (2, 1)
    assert _threads.candidates(6) == (6, 3, 1)
    assert _threads.candidates(8) == (8, 4, 2, 1)


class _Machine:
    """A fake clock and a ``run`` that advances it by ``cost[k]`` seconds per
    mini-batch at ``k`` threads; ``cost`` can change between drives."""

    def __init__(self, cost):
        self.cost, self.t, self.chunks = dict(cost), 0.0, []

    def clock(self):
        return self.t

    def run(self, first, last):
        self.t += self.cost[numba.get_num_threads()] * (last - first)

    def drive(self, tuner, calls, size=96):
        """``calls`` runs of ``size`` mini-batches through :func:`run_chunks`, with
        ``size`` as the chunk (as ``fit`` makes them): (count, batches) of each chunk."""
        record, ran = tuner.record, []

        def logged(k, seconds, batches, now=None):
            ran.append((k, batches))
            record(k, seconds, batches, now)

        tuner.record = logged
        try:
            for _ in range(calls):
                _threads.run_chunks(self.run, size, size, tuner, clock=self.clock)
        finally:
            tuner.record = record
        return ran


QUIET = {2: 1.0, 1: 1.5}  # seconds per mini-batch at each count: 2 threads win


def _settled():
    """A 2-thread tuner after 20 calls on a quiet machine, and that machine."""
    tuner, m = _threads.ThreadTuner(2), _Machine(QUIET)
    m.drive(tuner, 20)
    assert tuner.current == 2
    return tuner, m


def _share_of_probes(ran, cost, best):
    """What the probes cost over running ``best`` throughout, as a share of the time,
    from the first probe to the last (each probe's cost is spread over the time after
    it, so the window ends where the last one's would start)."""
    probes = [i for i, (k, _) in enumerate(ran) if k != best]
    window = ran[probes[0] : probes[-1]]
    loss = sum((cost[k] - cost[best]) * n for k, n in window if k != best)
    return loss / sum(cost[k] * n for k, n in window)


@two_threads
def test_the_first_chunk_is_not_timed_and_each_count_is_then_tried():
    tuner = _threads.ThreadTuner(2)
    m = _Machine(QUIET)
    ran = m.drive(tuner, 3)
    assert ran[0] == (2, 96)  # untimed: it may compile
    assert ran[1] == (2, 96)
    # the other count on a short chunk (an eighth, in 4 calls), which stops after its
    # first call: already slower than 2 threads by more than JUMP
    assert ran[2:] == [(1, 3), (2, 93)]
    assert tuner.summary()["us_per_batch"] == {2: 1e6, 1: 1.5e6}
    assert tuner.current == 2


@two_threads
def test_a_quiet_machine_keeps_all_threads_and_probes_within_budget():
    tuner = _threads.ThreadTuner(2)
    m = _Machine({2: 1.0, 1: 1.6})
    ran = m.drive(tuner, 600)
    assert tuner.current == 2
    probes = [n for k, n in ran[3:] if k == 1]
    assert len(probes) >= 10  # still looking
    assert 0 < _share_of_probes(ran[2:], m.cost, 2) <= _threads.BUDGET


@two_threads
def test_a_busy_machine_moves_to_fewer_threads_and_back():
    tuner, m = _settled()
    busy = {2: 10.0, 1: 1.5}  # beside a spinning process
    m.cost = busy
    ran = m.drive(tuner, 3)
    # the jump in time per mini-batch at 2 threads triggers a probe of 1 at once, which
    # still loses to the better of 2's last two chunks; a second slow chunk confirms the
    # change (2's estimate is now slower than 1's probe): a probe again, and 1 takes over
    assert ran == [(2, 96), (1, 3), (2, 93), (1, 12), (1, 84)]
    assert tuner.current == 1
    ran = m.drive(tuner, 400)
    assert tuner.current == 1
    # a probe of 2 threads stops after its first call (3 mini-batches), and the next one
    # waits until its loss is BUDGET of the time since
    assert {n for k, n in ran if k == 2} == {3}
    assert _share_of_probes(ran, busy, 1) <= _threads.BUDGET
    m.cost = QUIET
    m.drive(tuner, 200)
    assert tuner.current == 2


@two_threads
def test_a_probe_that_won_by_luck_is_undone_after_one_chunk():
    tuner, m = _settled()
    tuner.times[1] = [0.5]  # a probe of 1 thread that happened to run fast
    tuner.current, tuner.fresh = 1, True
    tuner.until_probe, tuner.probe_time = 4, tuner.clock + 100  # no probe due
    ran = m.drive(tuner, 2)
    # its first whole chunk is slower than 2 threads' timing: 2 is probed at once
    assert ran == [(1, 96), (2, 12), (2, 84)]
    assert tuner.current == 2


@two_threads
def test_one_slow_chunk_is_looked_into_but_does_not_move_the_count():
    tuner, m = _settled()
    tuner.record(2, 2.0 * 96, 96)  # a hiccup: twice as slow, once
    ran = m.drive(tuner, 1)
    # the jump gets a probe of 1 thread, which loses to the better of 2's last two chunks
    assert ran == [(1, 3), (2, 93)]
    assert tuner.current == 2


@two_threads
@pytest.mark.parametrize("pause", [0.0, 500.0])
def test_a_pause_gets_the_other_count_probed_at_once(pause):
    """Settled on one thread in a slow mode, then the machine is quiet again: after a
    pause in training (the other count's timing is stale) the next chunk probes two
    threads, which win; without a pause nothing is due yet."""
    slow = {2: 2.0, 1: 1.5}
    tuner, m = _threads.ThreadTuner(2), _Machine(slow)
    m.drive(tuner, 20)
    assert tuner.current == 1
    tuner.until_probe, tuner.probe_time = 4, tuner.clock + 1e9  # no regular probe due
    m.cost = QUIET
    m.t += pause  # wall time outside this tuner's chunks
    ran = m.drive(tuner, 1)
    if pause:
        assert ran[0] == (2, 12) and tuner.current == 2
    else:
        assert ran == [(1, 96)] and tuner.current == 1


def test_a_pause_shorter_than_the_last_probes_cost_over_budget_waits():
    tuner = _threads.ThreadTuner(2)
    tuner.warm = True
    tuner.times = {2: [1.0], 1: [1.5]}
    tuner.until_probe, tuner.probe_time = 4, 1e9
    tuner.probe_at, tuner.probe_clock, tuner.probe_loss = 100.0, 0.0, 10.0  # 1,000 s
    assert tuner.plan(96, now=100.0 + _threads.STALE_SECONDS)[0] == 2
    assert tuner.plan(96, now=100.0 + 999.0)[0] == 2
    assert tuner.plan(96, now=100.0 + 1000.0)[0] == 1
    tuner.clock = 999.5  # most of that time was training, not a pause
    assert tuner.plan(96, now=100.0 + 1000.0)[0] == 2


def test_a_single_thread_tuner_never_probes():
    tuner = _threads.ThreadTuner(1)
    m = _Machine({1: 1.0})
    assert set(m.drive(tuner, 50)) == {(1, 96)}


def test_run_chunks_covers_every_mini_batch_once_in_order():
    calls = []

    def run(first, last):
        calls.append((first, last, numba.get_num_threads()))

    tuner = _threads.ThreadTuner(numba.config.NUMBA_NUM_THREADS)
    assert _threads.run_chunks(run, 1003, 40, tuner) is None
    assert calls[0][0] == 0 and calls[-1][1] == 1003
    assert all(a[1] == b[0] for a, b in zip(calls, calls[1:], strict=False))
    assert all(k in tuner.counts for _, _, k in calls)


def test_run_chunks_stops_at_the_first_result_and_restores_the_count():
    saved = numba.get_num_threads()

    def run(first, last):
        return "diverged" if first >= 30 else None

    assert _threads.run_chunks(run, 100, 10, 1) == "diverged"
    assert numba.get_num_threads() == saved


def test_tuners_are_kept_per_workload_and_bounded():
    a = _threads.tuner(("test", 1), 2)
    assert _threads.tuner(("test", 1), 2) is a
    assert _threads.tuner(("test", 2), 2) is not a
    for i in range(_threads.KEEP + 1):
        _threads.tuner(("test-fill", i), 2)
    assert len(_threads.summaries()) <= _threads.KEEP
    assert _threads.tuner(("test", 1), 2) is not a  # dropped, least recently used


def test_a_probe_call_is_long_enough_to_time():
    tuner = _threads.ThreadTuner(2)
    tuner.warm = True
    tuner.times[2] = [20e-6]  # W1 on 2 threads: 20 µs per mini-batch
    k, size, piece = tuner.plan(1749)
    assert (k, size) == (1, 218)  # an eighth of the chunk
    assert piece == 100  # PROBE_SECONDS at the current speed, more than a quarter
    tuner.times[2] = [40e-6]  # W2: its eighth of a chunk goes in one call
    assert tuner.plan(164) == (1, 20, 20)


@two_threads
def test_chunks_too_short_for_the_clock_do_not_break_the_tuner():
    tuner = _threads.ThreadTuner(2)
    m = _Machine({2: 0.0, 1: 0.0})  # a clock that does not move
    ran = m.drive(tuner, 10)
    assert sum(n for _, n in ran) == 10 * 96
