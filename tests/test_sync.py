"""The barrier that lets the threads of the SGD driver stay together over a run of
mini-batches (nbbackprop.kernels.sync), and that driver."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import pytest
from numba import njit, prange

import nbbackprop as nb
from nbbackprop import functions as fn
from nbbackprop.kernels import cpu_train, sync

TWO = pytest.mark.skipif(numba.get_num_threads() < 2, reason="needs 2 Numba threads")


@njit
def _start(shared, parts):
    return sync.start(shared, parts)


def test_a_part_alone_calls_the_region_off_and_a_late_one_sees_it():
    shared = np.zeros(sync.SYNC_SIZE, np.int64)
    _start(np.zeros(sync.SYNC_SIZE, np.int64), 1)  # compile
    begin = time.perf_counter()
    assert _start(shared, 2) == sync.ALONE  # the other part never comes: do it all
    assert time.perf_counter() - begin < 30  # bounded (~10 ms here)
    assert shared[sync.START] >= sync.CALLED_OFF
    # the part that comes later returns at once, touching nothing
    assert _start(shared, 2) == sync.CALLED_OFF_ELSEWHERE


def test_one_part_starts_without_waiting():
    shared = np.zeros(sync.SYNC_SIZE, np.int64)
    assert _start(shared, 1) == sync.GO
    assert (shared == 0).all()


@njit(parallel=True)
def _lockstep(shared, seen, rounds):
    """Each round, every part writes the round number, meets the others, and checks
    that every other part wrote it too; then meets them again before the next round."""
    parts = seen.shape[0]
    for part in prange(parts):
        p = np.int64(part)
        if sync.start(shared, parts) == sync.GO:
            for r in range(1, rounds + 1):
                seen[p, 0] = r
                sync.barrier(shared, parts)
                for q in range(parts):
                    if seen[q, 0] != r:
                        seen[p, 1] += 1  # a part got past the barrier too early
                sync.barrier(shared, parts)


@TWO
def test_barrier_holds_every_part_until_all_arrive():
    parts = numba.get_num_threads()
    shared = np.zeros(sync.SYNC_SIZE, np.int64)
    seen = np.zeros((parts, 2), np.int64)
    _lockstep(shared, seen, 20_000)
    assert shared[sync.START] == parts  # nobody called it off
    assert (seen[:, 0] == 20_000).all()
    assert (seen[:, 1] == 0).all()


# ----------------------------------------------------------- the SGD driver's region
def _train(driver, sizes, dtype, m, order, X, Y, eta, slots, alone=False, parts=0):
    """One run of a plain-SGD driver over ``order``: ``"parts"`` runs the loop of the
    small family as one part per Numba thread (barriers), ``"forks"`` the full tiled
    family's driver (a fork and join of the pool per parallel kernel); returns the
    parameters, the mini-batch costs, the count it reports and the step counter."""
    net = nb.Network(sizes, dtype=dtype, seed=5)
    ws = net._workspace(m)
    # abuf with 1, 2 or 3 input slots after the activations (the driver's choice of
    # gathering now, in place, or a mini-batch ahead inside the region)
    abuf = np.zeros(m * sum(sizes) + (slots - 1) * m * sizes[0], dtype=dtype)
    n_batches = -(-order.shape[0] // m)
    costs = np.zeros(n_batches)
    par = net.plan(m).flags
    assert par[-1] == 1  # plain SGD folds the gradients into the update
    args = (
        net.params, ws.grads, net.opt_state, net._sizes, net._acts, fn.COSTS[net.cost_name],
        net._w_off, net._b_off, net._a_off, net._z_off, X, Y, order, m, 0, n_batches,
        abuf, ws.zbuf, ws.dbuf, ws.ybuf, ws.costs, costs, nb.network.OPTIMIZERS["sgd"],
        np.array([eta, 1e-4, 0, 0, 0, 0.0]), net.step, par,
    )  # fmt: skip
    if driver == "parts":
        loop = cpu_train._TILED_SMALL["sgd_loop"]
        parts = parts or numba.get_num_threads()
        shared = np.zeros(sync.SYNC_SIZE, np.int64)
        done = cpu_train._run_parts(loop, parts, args, shared)
        if alone:  # part 0 waited, called the others off and did all the work
            assert shared[sync.START] >= sync.CALLED_OFF
            assert shared[sync.BARRIER] == 0
        else:  # every part came and met at every barrier
            assert shared[sync.START] == parts
            assert shared[sync.BARRIER] % parts == 0 and shared[sync.BARRIER] > 0
    else:
        done = cpu_train._TILED["train_sgd"](*args)
    return net.params.copy(), costs, done, int(net.step[0])


def _train_together(*args, parts=0):
    """:func:`_train` by parts that all start together; a run in which a pool thread was
    late to start (part 0 waits ~10 ms, then does the work alone: correct, but not
    what is tested here) is run once more."""
    try:
        return _train("parts", *args, parts=parts)
    except AssertionError:
        return _train("parts", *args, parts=parts)


REGION_CASES = [
    ([784, 30, 10], "float64", 10),  # W1: layer 1's BP2 and step inside the region
    ([784, 100, 10], "float32", 32),  # W2
    ([784, 40, 20, 10], "float64", 7),  # a layer above layer 1, on part 0 alone
]


@TWO
@pytest.mark.parametrize("sizes,dtype,m", REGION_CASES)
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("slots", [1, 2, 3])
def test_parts_driver_trains_the_bits_of_the_fork_join_driver(sizes, dtype, m, shuffle, slots):
    # _TILED_SMALL runs its loop as parts that meet at barriers, _TILED forks and joins
    # the pool per kernel: the same arithmetic in the same order, so the same bits,
    # whatever the input slots
    rng = np.random.default_rng(0)
    n = 9 * m + 3  # a short last mini-batch
    X = rng.random((n, sizes[0])).astype(dtype)
    Y = np.eye(sizes[-1], dtype=dtype)[rng.integers(0, sizes[-1], n)]
    order = (rng.permutation(n) if shuffle else np.arange(n)).astype(np.int64)
    net = nb.Network(sizes, dtype=dtype, seed=5)
    par = net.plan(m).flags
    assert cpu_train._family_of(par, net._sizes, m) is cpu_train._TILED_SMALL
    assert par[0] == cpu_train.TILED_PARALLEL  # layer 0 split between the parts
    region = _train_together(sizes, dtype, m, order, X, Y, 0.5, slots)
    forks = _train("forks", sizes, dtype, m, order, X, Y, 0.5, slots)
    np.testing.assert_array_equal(region[0], forks[0])
    np.testing.assert_array_equal(region[1], forks[1])
    assert region[2] == forks[2] == -(-n // m)
    assert region[3] == forks[3] == -(-n // m)


@TWO
@pytest.mark.parametrize("shuffle,slots", [(False, 3), (True, 1)])
def test_parts_driver_stops_every_part_at_a_diverged_mini_batch(shuffle, slots):
    # in place with 3 slots every step is fused; shuffled with 1 slot none is (the
    # layer-0 forward pass then runs at the start of each step, between two barriers)
    sizes, dtype, m = [784, 30, 10], "float64", 10
    rng = np.random.default_rng(1)
    n = 200
    X = rng.random((n, sizes[0]))
    order = (rng.permutation(n) if shuffle else np.arange(n)).astype(np.int64)
    X[order[63]] = np.nan  # mini-batch 6's cost is not finite
    Y = np.eye(10)[rng.integers(0, 10, n)]
    region = _train_together(sizes, dtype, m, order, X, Y, 0.5, slots)
    forks = _train("forks", sizes, dtype, m, order, X, Y, 0.5, slots)
    assert region[2] == forks[2] == 6  # six mini-batches done, the seventh not applied
    assert region[3] == forks[3] == 6
    assert np.isfinite(region[0]).all()
    np.testing.assert_array_equal(region[0], forks[0])
    np.testing.assert_array_equal(region[1][:6], forks[1][:6])
    assert not np.isfinite(region[1][6])


def _w1_shuffled(seed):
    """W1's shapes, 95 random samples (a short last mini-batch) in a shuffled order."""
    sizes, dtype, m, n = [784, 30, 10], "float64", 10, 95
    rng = np.random.default_rng(seed)
    X = rng.random((n, sizes[0]))
    Y = np.eye(10)[rng.integers(0, 10, n)]
    return sizes, dtype, m, rng.permutation(n).astype(np.int64), X, Y


@TWO
def test_parts_driver_does_the_work_alone_when_no_thread_comes(monkeypatch):
    # the pool's only thread is busy: part 0 waits, calls the region off, trains alone
    # and does not wait for the queued part (the same bits as the fork/join driver)
    sizes, dtype, m, order, X, Y = _w1_shuffled(seed=2)
    busy, gate = ThreadPoolExecutor(1), threading.Event()
    blocker = busy.submit(gate.wait)
    monkeypatch.setattr(cpu_train, "_pool", lambda workers: busy)
    try:
        alone = _train("parts", sizes, dtype, m, order, X, Y, 0.5, 3, alone=True)
    finally:
        gate.set()
        blocker.result()
        busy.shutdown()
    forks = _train("forks", sizes, dtype, m, order, X, Y, 0.5, 3)
    np.testing.assert_array_equal(alone[0], forks[0])
    np.testing.assert_array_equal(alone[1], forks[1])
    assert alone[2] == forks[2] == 10


@TWO
def test_more_parts_than_threads_train_the_same_bits():
    # three parts on two cores (the barriers' waits yield the CPU): uneven shares
    sizes, dtype, m, order, X, Y = _w1_shuffled(seed=3)
    three = _train_together(sizes, dtype, m, order, X, Y, 0.5, 3, parts=3)
    forks = _train("forks", sizes, dtype, m, order, X, Y, 0.5, 3)
    np.testing.assert_array_equal(three[0], forks[0])
    np.testing.assert_array_equal(three[1], forks[1])


@TWO
def test_an_interrupted_caller_leaves_no_part_training():
    # part 0 is interrupted before it starts (Ctrl-C while it waits to compile): the
    # region is called off and the pool's part returns without training (or, had it
    # already given part 0 up, it trains alone to the end); either way it has returned
    # before the interrupt reaches the caller, so nothing trains afterwards
    sizes, m, n = [784, 30, 10], 10, 60
    rng = np.random.default_rng(4)
    X = rng.random((n, sizes[0]))
    Y = np.eye(10)[rng.integers(0, 10, n)]
    net = nb.Network(sizes, seed=5)
    ws = net._workspace(m)
    before = net.params.copy()
    args = (
        net.params, ws.grads, net.opt_state, net._sizes, net._acts, fn.COSTS[net.cost_name],
        net._w_off, net._b_off, net._a_off, net._z_off, X, Y, np.arange(n, dtype=np.int64),
        m, 0, n // m, ws.abuf, ws.zbuf, ws.dbuf, ws.ybuf, ws.costs, np.zeros(n // m),
        nb.network.OPTIMIZERS["sgd"], np.array([0.5, 0, 0, 0, 0, 0.0]), net.step,
        net.plan(m).flags,
    )  # fmt: skip
    loop = cpu_train._TILED_SMALL["sgd_loop"]
    started = threading.Event()
    returned = []

    def interrupted_part0(p, *rest):
        if p == 0:
            started.wait(5)  # the pool's part is on its way to the start line
            raise KeyboardInterrupt
        started.set()
        returned.append(loop(p, *rest))
        return returned[-1]

    shared = np.zeros(sync.SYNC_SIZE, np.int64)
    with pytest.raises(KeyboardInterrupt):
        cpu_train._run_parts(interrupted_part0, 2, args, shared)
    assert shared[sync.START] >= sync.CALLED_OFF
    assert len(returned) == 1  # the pool's part had ended when the interrupt came out
    step, params = int(net.step[0]), net.params.copy()
    time.sleep(0.05)
    np.testing.assert_array_equal(net.params, params)  # and nothing trains since
    if returned == [-1]:  # called off at the start line: it did nothing
        np.testing.assert_array_equal(params, before)
        assert step == 0
    else:  # it had called part 0 off first and trained alone, to the end
        assert returned == [n // m] and step == n // m
