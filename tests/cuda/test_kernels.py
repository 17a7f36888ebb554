"""Every CUDA kernel against its CPU twin and against the NumPy reference.

Run under NVIDIA's simulator in its own process::

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda

Launches are patched tiny (``cuda_support.small_launches``): blocks of 4 threads,
3×3 tiles, 2 blocks per grid axis, so the odd sizes here span several blocks and
every grid-stride loop goes round more than once.
"""

import numpy as np
import pytest
import reference as ref
from conftest import assert_close
from cuda_support import dev, host, small_launches  # noqa: F401

from nbbackprop import functions as fn
from nbbackprop.kernels import cpu
from nbbackprop.kernels import cuda as kc

DTYPES = [np.float64, np.float32]
ACT_NAMES = ["sigmoid", "tanh", "relu", "identity", "softmax"]
HIDDEN = ["sigmoid", "tanh", "relu", "identity"]
#: (m, n_in, n_out): none divides the tile (3) or the block (4); the last is all ones.
SHAPES = [(5, 7, 4), (1, 1, 1)]
OUTPUT_PAIRS = [("quadratic", a) for a in ACT_NAMES] + [
    ("cross_entropy", "sigmoid"),
    ("log_likelihood", "softmax"),
]


def rows_act(z, name):
    return np.stack([ref.act(r, name) for r in z])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACT_NAMES)
@pytest.mark.parametrize("shape", SHAPES)
def test_weighted_sums(shape, act, dtype, rng):
    m, n_in, n_out = shape
    W = rng.standard_normal((n_out, n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    A = rng.random((m, n_in)).astype(dtype)
    code = fn.ACTIVATIONS[act]
    z, a = np.zeros((m, n_out), dtype), np.zeros((m, n_out), dtype)
    cpu.weighted_sums_serial(W, b, A, z, a, code)
    dz, da = dev(np.zeros_like(z)), dev(np.zeros_like(a))
    kc.weighted_sums(dev(W), dev(b), dev(A), dz, da, code)
    assert_close(host(dz), z, dtype)
    assert_close(host(da), a, dtype)
    z64 = A.astype(np.float64) @ W.T.astype(np.float64) + b
    assert_close(host(dz), z64, dtype)
    assert_close(host(da), rows_act(z64, act), dtype)


def one_layer_reference(W, b, X, Y, act, cost):
    """δ^L and C_x of each sample from the reference, for a network of one weight layer."""
    deltas, costs = [], []
    for x, y in zip(X.astype(np.float64), Y.astype(np.float64), strict=True):
        nw, nb_, c = ref.backprop_sample(
            [W.astype(np.float64)], [b.astype(np.float64)], [act], cost,
            x.reshape(-1, 1), y.reshape(-1, 1),
        )  # fmt: skip
        deltas.append(nb_[0])
        costs.append(c)
    return np.array(deltas), np.array(costs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cost, act", OUTPUT_PAIRS)
def test_output_delta(cost, act, dtype, rng):
    m, n_in, n = 5, 3, 4
    W = rng.standard_normal((n, n_in)).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    X = rng.random((m, n_in)).astype(dtype)
    Y = np.eye(n, dtype=dtype)[rng.integers(0, n, m)]
    a_code, c_code = fn.ACTIVATIONS[act], fn.COSTS[cost]
    z, a = np.zeros((m, n), dtype), np.zeros((m, n), dtype)
    cpu.weighted_sums_serial(W, b, X, z, a, a_code)
    delta, costs = np.zeros((m, n), dtype), np.zeros(m)
    cpu.output_delta_serial(a, Y, delta, costs, a_code, cost=c_code)
    d_delta, d_costs = dev(np.zeros_like(delta)), dev(np.zeros(m))
    kc.output_delta(dev(a), dev(Y), d_delta, d_costs, a_code, c_code)
    assert_close(host(d_delta), delta, dtype)
    assert_close(host(d_costs), costs, dtype)
    # The reference, through a one-layer network whose forward pass also ran on the GPU.
    dz, da = dev(np.zeros_like(z)), dev(np.zeros_like(a))
    kc.weighted_sums(dev(W), dev(b), dev(X), dz, da, a_code)
    kc.output_delta(da, dev(Y), d_delta, d_costs, a_code, c_code)
    delta_ref, costs_ref = one_layer_reference(W, b, X, Y, act, cost)
    assert_close(host(d_delta), delta_ref, dtype, scale=10)
    assert_close(host(d_costs), costs_ref, dtype, scale=10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", HIDDEN)
def test_hidden_delta(act, dtype, rng):
    m, n_in, n, n_next = 5, 2, 4, 7
    W1 = rng.standard_normal((n, n_in)).astype(dtype)
    b1 = rng.standard_normal(n).astype(dtype)
    W2 = rng.standard_normal((n_next, n)).astype(dtype)
    b2 = rng.standard_normal(n_next).astype(dtype)
    X = rng.random((m, n_in)).astype(dtype)
    Y = rng.random((m, n_next)).astype(dtype)
    code = fn.ACTIVATIONS[act]
    # The CPU twin on random δ^{l+1} and activations.
    a = rng.random((m, n)).astype(dtype)
    delta_next = rng.standard_normal((m, n_next)).astype(dtype)
    delta = np.zeros((m, n), dtype)
    cpu.hidden_delta_serial(W2, delta_next, a, delta, code)
    d_delta = dev(np.zeros_like(delta))
    kc.hidden_delta(dev(W2), dev(delta_next), dev(a), d_delta, code)
    assert_close(host(d_delta), delta, dtype)
    # The reference: δ^1 of a two-layer network (sigmoid output, quadratic cost).
    a1, z1 = dev(np.zeros((m, n), dtype)), dev(np.zeros((m, n), dtype))
    a2, z2 = dev(np.zeros((m, n_next), dtype)), dev(np.zeros((m, n_next), dtype))
    kc.weighted_sums(dev(W1), dev(b1), dev(X), z1, a1, code)
    kc.weighted_sums(dev(W2), dev(b2), a1, z2, a2, fn.SIGMOID)
    d2, d_costs = dev(np.zeros((m, n_next), dtype)), dev(np.zeros(m))
    kc.output_delta(a2, dev(Y), d2, d_costs, fn.SIGMOID, fn.QUADRATIC)
    kc.hidden_delta(dev(W2), d2, a1, d_delta, code)
    expected = []
    for x, y in zip(X.astype(np.float64), Y.astype(np.float64), strict=True):
        _, nb_, _ = ref.backprop_sample(
            [W1.astype(np.float64), W2.astype(np.float64)],
            [b1.astype(np.float64), b2.astype(np.float64)], [act, "sigmoid"], "quadratic",
            x.reshape(-1, 1), y.reshape(-1, 1),
        )  # fmt: skip
        expected.append(nb_[0])
    assert_close(host(d_delta), np.array(expected), dtype, scale=10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(8, 5, 7)])
def test_weight_and_bias_grads(shape, dtype, rng):
    m, n_in, n_out = shape
    delta = rng.standard_normal((m, n_out)).astype(dtype)
    A = rng.random((m, n_in)).astype(dtype)
    nabla_w, nabla_b = np.zeros((n_out, n_in), dtype), np.zeros(n_out, dtype)
    cpu.weight_grads_serial(delta, A, nabla_w)
    cpu.bias_grads_serial(delta, nabla_b)
    d_w, d_b = dev(np.full_like(nabla_w, np.nan)), dev(np.full_like(nabla_b, np.nan))
    kc.weight_grads(dev(delta), dev(A), d_w)
    kc.bias_grads(dev(delta), d_b)
    assert_close(host(d_w), nabla_w, dtype)
    assert_close(host(d_b), nabla_b, dtype)
    # BP4 and BP3 summed over the samples: Σ_x δ_x a_xᵀ and Σ_x δ_x.
    assert_close(host(d_w), delta.astype(np.float64).T @ A.astype(np.float64), dtype)
    assert_close(host(d_b), delta.astype(np.float64).sum(axis=0), dtype)


def update_inputs(rng, dtype, P=11):
    params = rng.standard_normal(P).astype(dtype)
    grads = rng.standard_normal(P).astype(dtype)
    s1 = rng.standard_normal(P).astype(dtype)
    s2 = rng.random(P).astype(dtype)
    return params, grads, s1, s2


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt", ["sgd", "momentum", "nesterov", "adam"])
def test_updates(opt, dtype, rng):
    params, grads, s1, s2 = update_inputs(rng, dtype)
    eta, inv_m, l2, n_w, mu, b1, b2, eps, t = 0.3, 1 / 3, 0.01, 7, 0.9, 0.9, 0.999, 1e-8, 4
    p_cpu, v_cpu, m2_cpu = params.copy(), s1.copy(), s2.copy()
    d_p, d_v, d_m2 = dev(params), dev(s1), dev(s2)
    if opt == "sgd":
        cpu.sgd_update_serial(p_cpu, grads, eta, inv_m, l2, n_w)
        kc.sgd_update(d_p, dev(grads), eta, inv_m, l2, n_w)
    elif opt == "adam":
        cpu.adam_update_serial(p_cpu, grads, v_cpu, m2_cpu, eta, inv_m, l2, n_w, b1, b2, eps, t)
        kc.adam_update(d_p, dev(grads), d_v, d_m2, eta, inv_m, l2, n_w, b1, b2, eps, t)
    else:
        nest = opt == "nesterov"
        cpu.momentum_update_serial(p_cpu, grads, v_cpu, eta, inv_m, l2, n_w, mu, nest)
        kc.momentum_update(d_p, dev(grads), d_v, eta, inv_m, l2, n_w, mu, nest)
    assert_close(host(d_p), p_cpu, dtype)
    assert_close(host(d_v), v_cpu, dtype)
    assert_close(host(d_m2), m2_cpu, dtype)
    # The formulas, in float64 NumPy.
    w, g, v, s = (x.astype(np.float64) for x in (params, grads, s1, s2))
    g = g * inv_m + np.where(np.arange(w.size) < n_w, l2 * w, 0.0)
    if opt == "sgd":
        expected = w - eta * g
    elif opt == "adam":
        mh = (b1 * v + (1 - b1) * g) / (1 - b1**t)
        vh = (b2 * s + (1 - b2) * g * g) / (1 - b2**t)
        expected = w - eta * mh / (np.sqrt(vh) + eps)
    else:
        v = mu * v - eta * g
        expected = w + (mu * v - eta * g if opt == "nesterov" else v)
    assert_close(host(d_p), expected, dtype)


@pytest.mark.parametrize("opt", ["sgd", "momentum", "adam"])
def test_updates_skip_when_status_is_set(opt, rng):
    params, grads, s1, s2 = update_inputs(rng, np.float64)
    d_p, status = dev(params), dev(np.array([3], dtype=np.int64))
    if opt == "sgd":
        kc.sgd_update(d_p, dev(grads), 0.3, 1.0, 0.0, 5, status)
    elif opt == "adam":
        kc.adam_update(d_p, dev(grads), dev(s1), dev(s2), 0.3, 1, 0, 5, 0.9, 0.99, 1e-8, 1, status)
    else:
        kc.momentum_update(d_p, dev(grads), dev(s1), 0.3, 1.0, 0.0, 5, 0.9, False, status)
    np.testing.assert_array_equal(host(d_p), params)


def test_gather_rows_and_record_cost(rng):
    X = rng.standard_normal((9, 5))
    order = rng.permutation(9).astype(np.int64)
    d_dst = dev(np.zeros((4, 5)))
    kc.gather_rows(dev(X), dev(order), 3, d_dst)
    np.testing.assert_array_equal(host(d_dst), X[order[3:7]])
    costs = np.array([0.5, 1.5, 2.0, np.nan])
    batch_costs, status = dev(np.zeros(3)), dev(np.zeros(1, dtype=np.int64))
    kc.record_cost(dev(costs), 3, batch_costs, 1, status)
    assert host(batch_costs)[1] == pytest.approx(4.0 / 3) and host(status)[0] == 0
    kc.record_cost(dev(costs), 4, batch_costs, 2, status)
    assert np.isnan(host(batch_costs)[2]) and host(status)[0] == 3  # batch 2 diverged


def layout(sizes):
    n_w = [sizes[l + 1] * sizes[l] for l in range(len(sizes) - 1)]
    w_off = np.concatenate([[0], np.cumsum(n_w)[:-1]]).astype(np.int64)
    b_off = (sum(n_w) + np.concatenate([[0], np.cumsum(sizes[1:])[:-1]])).astype(np.int64)
    s_off = np.concatenate([[0], np.cumsum(sizes[1:])[:-1]]).astype(np.int64)
    return w_off, b_off, s_off, int(sum(n_w)), int(sum(n_w) + sum(sizes[1:]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "sizes, acts, cost",
    [
        ([7, 5, 3], ["tanh", "sigmoid"], "quadratic"),
        ([4, 6, 1, 5], ["relu", "sigmoid", "softmax"], "log_likelihood"),
    ],
)
def test_fused_backprop_and_update(sizes, acts, cost, dtype, rng):
    """The fused step equals the CPU batch gradients and update, on a batch of 5 of 9 rows."""
    from nbbackprop.kernels import cpu_train

    w_off, b_off, s_off, n_w, P = layout(sizes)
    params = (rng.standard_normal(P) * 0.7).astype(dtype)
    X = rng.random((9, sizes[0])).astype(dtype)
    Y = np.eye(sizes[-1], dtype=dtype)[rng.integers(0, sizes[-1], 9)]
    order = rng.permutation(9).astype(np.int64)
    start, m, S = 3, 5, 2
    a_codes = np.array([fn.ACTIVATIONS[a] for a in acts], dtype=np.int64)
    # CPU: the batch X[order[3:8]] as one batch.
    Xb, Yb = X[order[start : start + m]], Y[order[start : start + m]]
    grads, costs = np.zeros(P, dtype), np.zeros(m)
    sz = np.array(sizes, dtype=np.int64)
    a_off = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    total = cpu_train.batch_gradients(
        params, grads, sz, a_codes, fn.COSTS[cost], w_off, b_off, a_off, s_off, Xb, Yb,
        np.zeros(m * sum(sizes), dtype), np.zeros(m * sum(sizes[1:]), dtype),
        np.zeros(m * sum(sizes[1:]), dtype), costs, np.zeros(len(sizes), dtype=np.int64),
    )  # fmt: skip
    n_tiles = -(-m // S)
    d_params, d_costs = dev(params), dev(np.zeros(m))
    d_partials = dev(np.zeros((n_tiles, P), dtype))
    kc.fused_backprop(
        d_params, dev(sz), dev(a_codes), dev(w_off), dev(b_off), dev(s_off), dev(X), dev(Y),
        dev(order), start, m, fn.COSTS[cost], S, d_partials, d_costs, tuple(sizes),
    )  # fmt: skip
    assert_close(host(d_partials).sum(axis=0), grads, dtype, scale=10)
    assert_close(host(d_costs), costs, dtype, scale=10)
    # The reference gradients (mean over the batch).
    Ws = [params[o : o + sizes[l + 1] * sizes[l]].reshape(sizes[l + 1], sizes[l]) for l, o in
          enumerate(w_off)]  # fmt: skip
    bs = [params[o : o + sizes[l + 1]] for l, o in enumerate(b_off)]
    nw, nb_, c = ref.mean_gradients(
        [w.astype(np.float64) for w in Ws], [b.astype(np.float64) for b in bs], acts, cost,
        Xb.astype(np.float64), Yb.astype(np.float64),
    )  # fmt: skip
    flat = np.concatenate([g.ravel() for g in nw] + [g.ravel() for g in nb_])
    assert_close(host(d_partials).sum(axis=0) / m, flat, dtype, scale=10)
    assert total / m == pytest.approx(c, rel=1e-4 if dtype == np.float32 else 1e-9)
    # The second launch: sum, record the cost, SGD with L2.
    batch_costs, status = dev(np.zeros(4)), dev(np.zeros(1, dtype=np.int64))
    dummy = dev(np.zeros(1, dtype))
    kc.fused_step_update(
        d_params, d_partials, n_tiles, d_costs, m, batch_costs, 2, status, dummy, dummy,
        kc.SGD, (0.5, 0.01, 0.0, 0.9, 0.999, 1e-8), n_w, 1,
    )  # fmt: skip
    expected = params.copy()
    cpu.sgd_update_serial(expected, grads, 0.5, 1.0 / m, 0.01, n_w)
    assert_close(host(d_params), expected, dtype, scale=10)
    assert host(batch_costs)[2] == pytest.approx(total / m, rel=1e-4)
    assert host(status)[0] == 0
