"""The Network API against the plain-NumPy reference, finite differences and a hand example."""

import numba
import numpy as np
import pytest
import reference as ref
from conftest import assert_backprop_matches_reference, assert_close, numeric_grads

import nbbackprop as nb
from nbbackprop._aligned import ALIGN_BYTES, aligned_zeros

SHAPES = [[4, 3], [3, 1, 2], [5, 4, 3], [7, 5, 1, 3], [6, 9, 5, 4, 2]]
DTYPES = [np.float64, np.float32]
STRATEGIES = ["serial", "parallel", "tiled", "auto"]


def make_data(rng, sizes, m, dtype=np.float64):
    X = rng.random((m, sizes[0])).astype(dtype)
    labels = rng.integers(0, sizes[-1], m)
    Y = np.eye(sizes[-1], dtype=dtype)[labels]
    return X, Y, labels


def ref_params(net):
    return [W.astype(np.float64).copy() for W in net.weights], [
        b.astype(np.float64).copy() for b in net.biases
    ]


@pytest.mark.parametrize("sizes", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [1, 3, 17])
def test_feedforward_matches_reference(sizes, dtype, m, rng):
    net = nb.Network(sizes, dtype=dtype.__name__, seed=3)
    X, _, _ = make_data(rng, sizes, m, dtype)
    W, b = ref_params(net)
    expected = ref.predict(W, b, net.activations, X.astype(np.float64))
    out = net.feedforward(X)
    assert out.dtype == dtype and out.shape == (m, sizes[-1])
    assert_close(out, expected, dtype)


@pytest.mark.parametrize("sizes", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_backprop_matches_reference(sizes, dtype, strategy, rng):
    net = nb.Network(sizes, dtype=dtype.__name__, seed=5, strategy=strategy)
    X, Y, _ = make_data(rng, sizes, 6, dtype)
    assert_backprop_matches_reference(net, X, Y, dtype)


@pytest.mark.parametrize("sizes", [[3, 4, 2], [5, 3, 1, 4], [2, 1, 1, 3]])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "identity"])
def test_backprop_matches_finite_differences(sizes, activation, rng):
    net = nb.Network(sizes, activation=activation, seed=11)
    X, Y, _ = make_data(rng, sizes, 4)
    nabla_w, nabla_b = net.backprop(X, Y)
    analytic = np.concatenate([g.ravel() for g in nabla_w] + [g.ravel() for g in nabla_b])
    np.testing.assert_allclose(analytic, numeric_grads(net, X, Y), rtol=1e-6, atol=1e-9)


def test_hand_worked_example():
    """A 1-1-1 sigmoid network worked by hand, quadratic cost.

    w1 = 0.5, b1 = 0, w2 = -1, b2 = 0.5, x = 1, y = 1.
    z1 = 0.5                        a1 = σ(0.5)  = 0.622459331202
    z2 = w2 a1 + b2 = -0.122459331202, a2 = σ(z2) = 0.469423368982
    C  = ½(a2 - y)²                 = 0.140755780691
    σ'(z2) = a2(1 - a2)             = 0.249065069636
    δ2 = (a2 - y) σ'(z2)            = -0.530576631018 · 0.249065069636 = -0.132148105551  (BP1)
    σ'(z1) = a1(1 - a1)             = 0.235003712202
    δ1 = w2 δ2 σ'(z1)               = 0.132148105551 · 0.235003712202 = 0.031055295365   (BP2)
    ∂C/∂b2 = δ2, ∂C/∂w2 = δ2 a1 = -0.082256821401                                        (BP3, BP4)
    ∂C/∂b1 = δ1, ∂C/∂w1 = δ1 x  =  0.031055295365
    """
    net = nb.Network([1, 1, 1], seed=0)
    net.weights[0][...] = 0.5
    net.biases[0][...] = 0.0
    net.weights[1][...] = -1.0
    net.biases[1][...] = 0.5
    x, y = np.array([[1.0]]), np.array([[1.0]])
    assert net.feedforward(x)[0, 0] == pytest.approx(0.469423368982, abs=1e-12)
    assert net.cost(x, y) == pytest.approx(0.140755780691, abs=1e-12)
    nw, nb_ = net.backprop(x, y)
    assert nb_[1][0] == pytest.approx(-0.132148105551, abs=1e-12)
    assert nw[1][0, 0] == pytest.approx(-0.082256821401, abs=1e-12)
    assert nb_[0][0] == pytest.approx(0.031055295365, abs=1e-12)
    assert nw[0][0, 0] == pytest.approx(0.031055295365, abs=1e-12)


@pytest.mark.parametrize("sizes", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_size", [1, 4, 30])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_fit_epoch_matches_reference(sizes, dtype, batch_size, strategy, rng):
    net = nb.Network(sizes, dtype=dtype.__name__, seed=7)
    X, Y, _ = make_data(rng, sizes, 13, dtype)
    W, b = ref_params(net)
    ref_costs = [
        ref.sgd_epoch(W, b, net.activations, "quadratic", X.astype(np.float64),
                      Y.astype(np.float64), batch_size, 0.7)
        for _ in range(2)
    ]  # fmt: skip
    hist = net.fit(X, Y, epochs=2, batch_size=batch_size, eta=0.7, shuffle=False,
                   strategy=strategy)  # fmt: skip
    for l in range(len(W)):
        assert_close(net.weights[l], W[l], dtype, scale=10)
        assert_close(net.biases[l], b[l], dtype, scale=10)
    assert_close(hist["train_cost"], ref_costs, dtype, scale=10)


# Networks whose BP2 runs in parallel (layer l >= 1 of >= TILED_PARALLEL_MIN_MACS) or on
# the transposed dot path (all of m, n_l, n_l+1 >= BP2_DOT_MIN) use the full tiled driver
# family; every smaller one uses the family without those paths (_TILED_SMALL).
LARGE_BP2 = [
    ([20, 300, 400, 3], 8, np.float64),  # BP2 through W^1 in parallel, outer-tile path
    ([20, 70, 130, 3], 64, np.float32),  # BP2 through W^1 in parallel, dot path
]


PARALLEL = pytest.mark.skipif(numba.get_num_threads() < 2, reason="needs 2 Numba threads")


@PARALLEL
@pytest.mark.parametrize("sizes, batch_size, dtype", LARGE_BP2)
def test_large_bp2_drivers_match_reference(sizes, batch_size, dtype, rng):
    from nbbackprop.kernels import cpu_train

    net = nb.Network(sizes, dtype=dtype.__name__, seed=3)
    X, Y, _ = make_data(rng, sizes, 2 * batch_size + 5, dtype)
    par = net.plan(batch_size).flags
    assert cpu_train._family_of(par, np.array(sizes), batch_size) is cpu_train._TILED
    assert_backprop_matches_reference(net, X, Y, dtype)
    W, b = ref_params(net)
    ref.sgd_epoch(W, b, net.activations, "quadratic", X.astype(np.float64),
                  Y.astype(np.float64), batch_size, 0.5)  # fmt: skip
    net.fit(X, Y, epochs=1, batch_size=batch_size, eta=0.5, shuffle=False)
    for l in range(len(W)):
        assert_close(net.weights[l], W[l], dtype, scale=10)
        assert_close(net.biases[l], b[l], dtype, scale=10)


@PARALLEL
def test_sgd_driver_without_a_second_input_slot_stays_in_its_buffer(rng):
    # The second input slot of abuf is optional: without it a shuffled next mini-batch
    # is not fused, and nothing may be written past abuf, whatever the mix of in-place
    # and gathered mini-batches (batches 0-1 consecutive rows, then shuffled ones).
    from nbbackprop import functions as fn
    from nbbackprop.kernels import cpu_train

    sizes, m, n = [784, 100, 10], 10, 60
    X, Y, _ = make_data(rng, sizes, n)
    order = np.concatenate([np.arange(20), 20 + rng.permutation(40)]).astype(np.int64)
    results = []
    for second_slot in (True, False):
        net = nb.Network(sizes, seed=2)
        ws = net._workspace(m)
        size = m * sum(sizes) + (m * sizes[0] if second_slot else 0)
        big = np.full(size + 4096, np.nan)
        abuf = big[:size]
        cpu_train.train_batches(
            net.params, ws.grads, net.opt_state, net._sizes, net._acts,
            fn.COSTS[net.cost_name], net._w_off, net._b_off, net._a_off, net._z_off,
            X, Y, order, m, 0, n // m, abuf, ws.zbuf, ws.dbuf, ws.ybuf, ws.costs,
            np.zeros(n // m), nb.network.OPTIMIZERS["sgd"], np.array([0.5, 0, 0, 0, 0, 0.0]),
            net.step, net.plan(m).flags,
        )  # fmt: skip
        assert np.isnan(big[size:]).all()
        results.append(net.params.copy())
    np.testing.assert_array_equal(results[0], results[1])


@PARALLEL
def test_read_only_parameters_infer_and_backprop_as_writable_ones(rng):
    # the parallel forward pass of writable parameters is the fused update/forward
    # kernel, whose writes do not type for a read-only buffer: it gets its own kernel
    sizes = [784, 100, 10]
    net = nb.Network(sizes, dtype="float32", seed=4)
    X, Y, _ = make_data(rng, sizes, 40, np.float32)
    want_out, want_grads = net.feedforward(X), net.backprop(X, Y)
    net.params.flags.writeable = False
    got_grads = net.backprop(X, Y)
    np.testing.assert_array_equal(net.feedforward(X), want_out)
    for got, want in zip(got_grads[0] + got_grads[1], want_grads[0] + want_grads[1], strict=True):
        np.testing.assert_array_equal(got, want)


def test_small_bp2_family_is_chosen_for_small_networks():
    from nbbackprop.kernels import cpu_train

    for sizes, m in [([784, 30, 10], 10), ([784, 100, 10], 32), ([5, 4, 3], 4)]:
        par = nb.Network(sizes, seed=0).plan(m).flags
        family = cpu_train._family_of(par, np.array(sizes), m)
        assert family is cpu_train._TILED_SMALL, sizes
    par = nb.Network([784, 30, 10], seed=0).plan(10, strategy="parallel").flags
    assert cpu_train._family_of(par, np.array([784, 30, 10]), 10) is cpu_train._PLAIN


def fit_shuffled_against_reference(sizes, n, batch_size, rng):
    """Fit two shuffled epochs (seed 42) and check the parameters against the reference
    trained in the same sample orders; returns the network and its data."""
    X, Y, labels = make_data(rng, sizes, n)
    net = nb.Network(sizes, seed=1)
    W, b = ref_params(net)
    net.fit(X, labels, epochs=2, batch_size=batch_size, eta=0.5, seed=42)
    order_rng = np.random.default_rng(42)
    for _ in range(2):
        ref.sgd_epoch(W, b, net.activations, "quadratic", X, Y, batch_size, 0.5,
                      order=order_rng.permutation(n))  # fmt: skip
    for l in range(len(W)):
        assert_close(net.weights[l], W[l], np.float64)
        assert_close(net.biases[l], b[l], np.float64)
    return net, X, labels


def test_fit_shuffle_is_seeded_and_matches_reference_order(rng):
    sizes = [5, 4, 3]
    a, X, labels = fit_shuffled_against_reference(sizes, 20, 3, rng)
    c = nb.Network(sizes, seed=1)
    c.fit(X, labels, epochs=2, batch_size=3, eta=0.5, seed=42)
    assert np.array_equal(a.params, c.params)
    d = nb.Network(sizes, seed=1)
    d.fit(X, labels, epochs=2, batch_size=3, eta=0.5, seed=43)
    assert not np.array_equal(a.params, d.params)


@PARALLEL
def test_shuffled_fit_through_the_fused_layer0_region_matches_reference(rng):
    # [784, 100, 10] in mini-batches of 10: layer 0 is tiled-parallel and split by
    # neurons (2 to 6 threads), so each shuffled next mini-batch is gathered into
    # another input slot while this one's inputs are still read by its update; from the
    # third mini-batch on (the last one 7 rows), the region of the mini-batch two before
    # gathered it, each thread its share
    from nbbackprop.kernels import cpu_tiled

    sizes = [784, 100, 10]
    net, _, _ = fit_shuffled_against_reference(sizes, 47, 10, rng)
    assert net.plan(10).layers[0].variant == "tiled-parallel"
    assert cpu_tiled.forward_splits_by_neurons(net.weights[0], 10)


def test_strategies_agree_bitwise_for_a_thread_count(rng):
    sizes = [30, 40, 10]
    X, Y, _ = make_data(rng, sizes, 64)
    runs = []
    for strategy in STRATEGIES:
        net = nb.Network(sizes, seed=2)
        net.fit(X, Y, epochs=2, batch_size=16, eta=1.0, seed=0, strategy=strategy)
        runs.append(net.params.copy())
    for r in runs[1:]:
        np.testing.assert_allclose(r, runs[0], rtol=1e-12, atol=1e-14)


def test_weights_and_biases_are_writable_views():
    net = nb.Network([3, 2, 2], seed=0)
    net.weights[1][0, 1] = 42.0
    net.biases[0][1] = -7.0
    assert 42.0 in net.params and -7.0 in net.params
    assert np.shares_memory(net.weights[0], net.params)
    net.weights[0][...] = 0
    net.biases[0][...] = 0
    net.weights[1][...] = 0
    net.biases[1][...] = 0
    np.testing.assert_allclose(net.feedforward(np.ones((2, 3))), 0.5)


@pytest.mark.parametrize("shape", [1, 7, (3, 5), 4097])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_aligned_zeros(shape, dtype):
    for _ in range(5):  # several allocations: each lands anywhere NumPy's allocator puts it
        a = aligned_zeros(shape, dtype)
        assert _is_aligned(a)
        assert a.shape == np.zeros(shape).shape and a.dtype == dtype
        assert a.flags.c_contiguous and a.flags.writeable and not a.any()


def _is_aligned(a):
    return a.ctypes.data % ALIGN_BYTES == 0


def test_parameters_and_buffers_start_on_a_cache_line(rng):
    import copy
    import pickle

    sizes = [13, 7, 3]
    X, Y, _ = make_data(rng, sizes, 20)
    net = nb.Network(sizes, seed=0)
    net.fit(X, Y, epochs=1, batch_size=5, eta=0.5, optimizer="momentum", seed=0)
    ws = net._workspace(5)
    buffers = (ws.abuf, ws.zbuf, ws.dbuf, ws.ybuf, ws.costs, ws.grads)
    assert all(map(_is_aligned, (net.params, net.opt_state, *buffers)))
    for other in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert _is_aligned(other.params) and _is_aligned(other.opt_state)
        assert np.shares_memory(other.weights[0], other.params)
        np.testing.assert_array_equal(other.params, net.params)
        np.testing.assert_array_equal(other.opt_state, net.opt_state)
    assert copy.copy(net).params is net.params  # a shallow copy still shares them


def _off_a_line(a):
    """A copy of ``a`` whose data starts 8 bytes past a cache line."""
    raw = aligned_zeros(a.nbytes + 8, np.uint8)
    out = raw[8:].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def test_unpickling_puts_parameters_back_on_a_cache_line(rng, tmp_path):
    sizes = [13, 7, 3]
    X, Y, _ = make_data(rng, sizes, 20)
    net = nb.Network(sizes, seed=0)
    net.fit(X, Y, epochs=1, batch_size=5, eta=0.5, optimizer="adam", seed=0)
    state = net.__getstate__()
    state["params"], state["opt_state"] = _off_a_line(net.params), _off_a_line(net.opt_state)
    other = nb.Network.__new__(nb.Network)
    other.__setstate__(state)
    assert _is_aligned(other.params) and _is_aligned(other.opt_state)
    np.testing.assert_array_equal(other.params, net.params)
    np.testing.assert_array_equal(other.opt_state, net.opt_state)
    assert np.shares_memory(other.weights[1], other.params)
    # a read-only buffer (a memory map shared between processes) is left as it is
    state = net.__getstate__()
    state["params"] = _off_a_line(net.params)
    state["params"].flags.writeable = False
    other = nb.Network.__new__(nb.Network)
    other.__setstate__(state)
    assert other.params is state["params"]
    # so is the optimiser state a saved network comes back with
    path = tmp_path / "net.npz"
    net.save(path)
    loaded = nb.load(path)
    assert _is_aligned(loaded.params) and _is_aligned(loaded.opt_state)
    np.testing.assert_array_equal(loaded.opt_state, net.opt_state)


def test_history_contents(rng):
    sizes = [4, 5, 3]
    X, _, labels = make_data(rng, sizes, 30)
    net = nb.Network(sizes, seed=0)
    h = net.fit(X, labels, epochs=3, batch_size=5, eta=1.0, validation_data=(X, labels), seed=0)
    assert h["epoch"] == [0, 1, 2]
    assert len(h["train_cost"]) == len(h["val_accuracy"]) == len(h["val_cost"]) == 3
    assert h["val_accuracy"][-1] == net.evaluate(X, labels)
    assert h["val_cost"][-1] == pytest.approx(net.cost(X, labels))


def test_predict_evaluate_accept_labels_and_one_hot(rng):
    sizes = [4, 5, 3]
    X, Y, labels = make_data(rng, sizes, 25)
    net = nb.Network(sizes, seed=0)
    pred = net.predict(X)
    assert pred.dtype.kind == "i" and pred.shape == (25,)
    assert net.evaluate(X, labels) == net.evaluate(X, Y) == np.mean(pred == labels)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_learns_digits(dtype):
    (Xtr, ytr), (Xte, yte) = nb.datasets.load_digits()
    net = nb.Network([64, 30, 10], dtype=dtype, seed=0)
    net.fit(Xtr, ytr, epochs=30, batch_size=10, eta=3.0, seed=0)
    assert net.evaluate(Xte, yte) >= 0.95
