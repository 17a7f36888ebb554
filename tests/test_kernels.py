"""Each CPU kernel and variant against plain NumPy, at sizes that do not divide the tiles.

The tiled kernels cut their work into 4-wide register tiles, column blocks of up to
4 SIMD registers (then columns one by one) and L2 blocks of ``BLOCK_BYTES``; the sizes
below are chosen to leave remainders of 1, 2 and 3 rows, columns past the last whole
register, and several blocks, in both dtypes and both the serial and the parallel
compilation.
"""

import numba
import numpy as np
import pytest
from conftest import assert_close
from numba import njit

from nbbackprop import functions as fn
from nbbackprop.kernels import cpu, cpu_tiled, cpu_tiles

DTYPES = [np.float64, np.float32]
ACTS = ["sigmoid", "tanh", "relu", "identity"]
#: (m, n_in, n_out): remainders mod 4 of 1, 2, 3; width 1; many segments/blocks.
SHAPES = [(1, 1, 1), (3, 5, 2), (10, 784, 30), (7, 33, 13), (6, 1030, 9), (37, 130, 67)]


def _act(z, name):
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return z


def _act_prime_from_a(a, name):
    if name == "sigmoid":
        return a * (1 - a)
    if name == "tanh":
        return 1 - a * a
    if name == "relu":
        return (a > 0).astype(a.dtype)
    return np.ones_like(a)


def _data(rng, m, n_in, n_out, dtype):
    W = (rng.uniform(-1, 1, (n_out, n_in)) / np.sqrt(n_in)).astype(dtype)
    b = rng.uniform(-1, 1, n_out).astype(dtype)
    a_prev = rng.uniform(0, 1, (m, n_in)).astype(dtype)
    delta = rng.uniform(-1, 1, (m, n_out)).astype(dtype)
    return W, b, a_prev, delta


def _variants(module, name):
    return [getattr(module, name), getattr(module, name + "_serial")]


def _f64(*arrays):
    return [np.asarray(x, dtype=np.float64) for x in arrays]


# ------------------------------------------------------------------ micro-kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mr", cpu_tiles.SIZES)
@pytest.mark.parametrize("nr", cpu_tiles.SIZES)
def test_dot_tile(mr, nr, dtype, rng):
    A = rng.uniform(-1, 1, (7, 37)).astype(dtype)
    B = rng.uniform(-1, 1, (6, 37)).astype(dtype)
    c = np.array(cpu_tiles.dot_tile(mr, nr, A, 2, B, 1)).reshape(4, 4)
    A64, B64 = _f64(A, B)
    assert_close(c[:mr, :nr], A64[2 : 2 + mr] @ B64[1 : 1 + nr].T, dtype)
    assert np.all(c[mr:, :] == 0) and np.all(c[:, nr:] == 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [(2, 9), (1, 8), (0, 4), (3, 5), (2, 3), (4, 4)])
@pytest.mark.parametrize("vn", (*cpu_tiles.OUTER_VECTORS, 0))
@pytest.mark.parametrize("by_rows", [False, True])
@pytest.mark.parametrize("overwrite", [False, True])
def test_outer_block(rows, vn, by_rows, overwrite, dtype, rng):
    """Rows i_lo..i_hi-1 of one column block: 7 rows are tiles of 4, 2 and 1, 4 rows
    one tile of 4, 2 and 1 rows the short tiles alone, 0 rows nothing."""
    i_lo, i_hi = rows
    L = (64 if cpu_tiles.VEC_REGISTERS == 32 else 32) // np.dtype(dtype).itemsize
    width = vn * L if vn else L - 3  # vn = 0: the first L - 3 columns of one register
    n = 3 + width + 5  # the block's columns start at 3 and end 5 before the last
    C = rng.uniform(-1, 1, (10, n)).astype(dtype)
    A = rng.uniform(-1, 1, (9, n)).astype(dtype)
    D = rng.uniform(-1, 1, (9, 10) if not by_rows else (10, 9)).astype(dtype)
    # coefficients of row i, term s: D[s, i] (BP4's δ) or D[i, s] (BP2's δ_next)
    ds, dr = (10, 1) if not by_rows else (1, 9)
    coef = D[:, i_lo:i_hi] if not by_rows else D[i_lo:i_hi, :].T
    keep, step = dtype(0.75), dtype(0.5)
    expected = C.astype(np.float64)
    k = slice(3, 3 + width)
    total = coef.T.astype(np.float64) @ A[:, k].astype(np.float64)
    first = 0.0 if overwrite else keep * expected[i_lo:i_hi, k]
    expected[i_lo:i_hi, k] = first - step * total
    D = D.ravel()
    cpu_tiles.outer_block(vn, C, i_lo, i_hi, 3, D, ds, dr, A, 9, keep, step, overwrite, width)
    assert_close(C, expected, dtype)  # and nothing outside the block changed


def test_outer_tiles_refuse_strided_operands(rng):
    """A register is L consecutive elements of a row: an F-ordered or reversed operand
    is a typing error, not a silent misread or a write past the array (the kernels
    are private; the public API hands them C-contiguous arrays)."""
    delta = rng.uniform(-1, 1, (5, 3))
    a_prev = np.asfortranarray(rng.uniform(-1, 1, (5, 37)))
    with pytest.raises(numba.core.errors.TypingError):
        cpu_tiled.weight_grads_tiled_serial(delta, a_prev, np.empty((3, 37)))
    W_reversed = np.zeros((3, 37))[:, ::-1]
    a_c = np.ascontiguousarray(a_prev)
    with pytest.raises(numba.core.errors.TypingError):
        cpu_tiled.sgd_layer_update_tiled_serial(W_reversed, np.zeros(3), delta, a_c, 0.1, 0.2, 0.0)


def test_outer_tiles_at_avx2_width(tmp_path):
    """The 32-byte registers and 4 × 2 tiles of a machine without AVX-512 (compiled for
    AVX2 features in a child process, with a cache of its own), against NumPy."""
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from nbbackprop.kernels import cpu_tiled, cpu_tiles, simd\n"
        "assert simd.VEC_BYTES == 32 and cpu_tiles.OUTER_VECTORS == (2, 1)\n"
        "rng = np.random.default_rng(0)\n"
        "for dt in (np.float32, np.float64):\n"
        "    d = rng.standard_normal((13, 30)).astype(dt)\n"
        "    a = rng.standard_normal((13, 37)).astype(dt)\n"
        "    g = np.full((30, 37), np.nan, dt)\n"
        "    cpu_tiled.weight_grads_tiled_serial(d, a, g)\n"
        "    ref = d.T.astype(float) @ a.astype(float)\n"
        "    assert np.abs(g - ref).max() < (1e-4 if dt == np.float32 else 1e-12), dt\n"
        "print('ok')\n"
    )
    env = dict(
        __import__("os").environ,
        NUMBA_CPU_FEATURES="+sse,+sse2,+sse3,+ssse3,+sse4.1,+sse4.2,+avx,+avx2,+fma",
        NUMBA_CACHE_DIR=str(tmp_path),
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


@pytest.mark.parametrize("n", range(0, 23))
def test_tiles_cover_rows_exactly_once(n):
    covered = np.zeros(n, dtype=int)
    for t in range(cpu_tiles.tile_count(n)):
        start, size = cpu_tiles.tile_at(t, n)
        assert size in cpu_tiles.SIZES
        covered[start : start + size] += 1
    assert np.all(covered == 1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_vectorised_sigmoid_is_within_a_few_ulp(dtype):
    z = np.concatenate(
        [np.linspace(-800, 800, 40001), np.linspace(-6, 6, 20001), [0.0, -0.0, 1e-30, -1e-30]]
    ).astype(dtype)
    a = np.empty_like(z)
    cpu_tiled._sigmoid_row(z, a)
    with np.errstate(over="ignore"):
        expected = 1.0 / (1.0 + np.exp(-z.astype(np.float64)))
    # exp is clamped where σ leaves the normal range (documented in _exp_neg64/32)
    tiny = {np.float64: 1e-300, np.float32: 1e-36}[dtype]
    normal = expected > tiny
    ulps = np.abs(a[normal] - expected[normal]) / expected[normal] / np.finfo(dtype).eps
    assert ulps.max() < 4
    assert np.all(np.abs(a[~normal] - expected[~normal]) <= tiny)


# ----------------------------------------------------------------- forward pass
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ACTS + ["softmax"])
@pytest.mark.parametrize("tiled", [False, True])
def test_weighted_sums(shape, act, dtype, tiled, rng):
    m, n_in, n_out = shape
    W, b, a_prev, _ = _data(rng, m, n_in, n_out, dtype)
    W64, b64, a64 = _f64(W, b, a_prev)
    z_ref = a64 @ W64.T + b64
    a_ref = _act(z_ref, act)
    module = cpu_tiled if tiled else cpu
    for kernel in _variants(module, "weighted_sums" + ("_tiled" if tiled else "")):
        z = np.full((m, n_out), np.nan, dtype=dtype)
        a = np.full((m, n_out), np.nan, dtype=dtype)
        kernel(W, b, a_prev, z, a, fn.ACTIVATIONS[act])
        assert_close(z, z_ref, dtype)
        assert_close(a, a_ref, dtype)


# ----------------------------------------------------------------------- BP1
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "act, cost",
    [(a, "quadratic") for a in ACTS + ["softmax"]]
    + [("sigmoid", "cross_entropy"), ("softmax", "log_likelihood")],
)
def test_output_delta(act, cost, dtype, rng):
    m, n = 7, 5
    z = rng.uniform(-2, 2, (m, n))
    a = _act(z, act).astype(dtype)
    y = np.eye(n, dtype=dtype)[rng.integers(0, n, m)]
    a64, y64 = _f64(a, y)
    if cost == "quadratic":
        g = a64 - y64
        if act == "softmax":
            delta_ref = a64 * (g - np.sum(g * a64, axis=1, keepdims=True))
        else:
            delta_ref = g * _act_prime_from_a(a64, act)
        c_ref = 0.5 * np.sum(g * g, axis=1)
    elif cost == "cross_entropy":
        delta_ref = a64 - y64
        c_ref = -np.sum(y64 * np.log(a64) + (1 - y64) * np.log(1 - a64), axis=1)
    else:
        delta_ref = a64 * y64.sum(axis=1, keepdims=True) - y64
        c_ref = -np.sum(np.where(y64 > 0, y64 * np.log(a64), 0.0), axis=1)
    for kernel in _variants(cpu, "output_delta"):
        delta = np.full((m, n), np.nan, dtype=dtype)
        costs = np.full(m, np.nan)
        kernel(a, y, delta, costs, fn.ACTIVATIONS[act], fn.COSTS[cost])
        assert_close(delta, delta_ref, dtype)
        assert_close(costs, c_ref, dtype, scale=10)


# ----------------------------------------------------------------------- BP2
#: (m, n, n_next): columns past the last whole register, n_next > 64 terms per tile.
BP2_SHAPES = [
    (1, 1, 1), (3, 5, 2), (10, 30, 10), (7, 33, 13), (5, 1030, 250), (37, 67, 130),
    (66, 70, 67), (130, 75, 65),  # the transposed (dot-tile) path: all >= BP2_DOT_MIN
]  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BP2_SHAPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("tiled", [False, True])
def test_hidden_delta(shape, act, dtype, tiled, rng):
    m, n, n_next = shape
    W_next, _, _, delta_next = _data(rng, m, n, n_next, dtype)
    a = _act(rng.uniform(-2, 2, (m, n)), act).astype(dtype)
    W64, dn64, a64 = _f64(W_next, delta_next, a)
    expected = (dn64 @ W64) * _act_prime_from_a(a64, act)
    if tiled:
        scratch = np.full(W_next.size, np.nan, dtype=dtype)
        kernels = [
            lambda *args, k=k, s=s: k(*args, s)
            for k in _variants(cpu_tiled, "hidden_delta_tiled")
            for s in (scratch, scratch[:0])  # transpose + dot tiles, or outer tiles
        ]
        kernels.append(lambda *args: cpu_tiled.hidden_delta_outer_serial(*args))
    else:
        kernels = _variants(cpu, "hidden_delta")
    for kernel in kernels:
        delta = np.full((m, n), np.nan, dtype=dtype)
        kernel(W_next, delta_next, a, delta, fn.ACTIVATIONS[act])
        assert_close(delta, expected, dtype)


# ----------------------------------------------------------------- BP3, BP4
#: (m, n_in, n_out): up to 250 samples summed in registers, columns past the last register.
BP4_SHAPES = SHAPES + [(250, 1030, 7), (130, 67, 5)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BP4_SHAPES)
def test_bias_and_weight_grads(shape, dtype, rng):
    m, n_in, n_out = shape
    _, _, a_prev, delta = _data(rng, m, n_in, n_out, dtype)
    a64, d64 = _f64(a_prev, delta)
    weight_kernels = _variants(cpu, "weight_grads") + _variants(cpu_tiled, "weight_grads_tiled")
    for kernel in weight_kernels:
        nabla_w = np.full((n_out, n_in), np.nan, dtype=dtype)
        kernel(delta, a_prev, nabla_w)
        assert_close(nabla_w, d64.T @ a64, dtype, scale=10)
    for kernel in _variants(cpu, "bias_grads"):
        nabla_b = np.full(n_out, np.nan, dtype=dtype)
        kernel(delta, nabla_b)
        assert_close(nabla_b, d64.sum(axis=0), dtype, scale=10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BP4_SHAPES)
@pytest.mark.parametrize("l2", [0.0, 0.01])
def test_sgd_layer_update_tiled_matches_the_unfused_kernels(shape, l2, dtype, rng):
    m, n_in, n_out = shape
    W, b, a_prev, delta = _data(rng, m, n_in, n_out, dtype)
    W64, b64, a64, d64 = _f64(W, b, a_prev, delta)
    eta = 0.7
    W_ref = (1 - eta * l2) * W64 - (eta / m) * (d64.T @ a64)
    b_ref = b64 - (eta / m) * d64.sum(axis=0)
    for kernel in _variants(cpu_tiled, "sgd_layer_update_tiled"):
        W1, b1 = W.copy(), b.copy()
        kernel(W1, b1, delta, a_prev, eta, 1.0 / m, l2)
        assert_close(W1, W_ref, dtype, scale=10)
        assert_close(b1, b_ref, dtype, scale=10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape",
    [(10, 784, 30), (32, 784, 100), (7, 50, 40), (1, 33, 17), (12, 9, 30), (70, 130, 90)],
)
@pytest.mark.parametrize("act", [fn.SIGMOID, fn.RELU])
def test_sgd_update_forward_tiled_is_the_two_kernels_bitwise(shape, act, dtype, rng):
    """One parallel region for layer 0's update and the next mini-batch's forward pass:
    the same numbers, bit for bit, as the two kernels one after the other."""
    m, n_in, n_out = shape
    W, b, a_prev, delta = _data(rng, m, n_in, n_out, dtype)
    a_next = rng.uniform(0, 1, (m + 1, n_in)).astype(dtype)[:m]  # a view, as in training
    W1, b1, W2, b2 = W.copy(), b.copy(), W.copy(), b.copy()
    z1, z2, o1, o2 = (np.full((m, n_out), np.nan, dtype=dtype) for _ in range(4))
    cpu_tiled.sgd_layer_update_tiled(W1, b1, delta, a_prev, 0.7, 1.0 / m, 0.01)
    cpu_tiled.weighted_sums_tiled(W1, b1, a_next, z1, o1, act)
    # the parallel update is the fused region with a 0-row next mini-batch: bitwise its
    # serial compilation, whatever the split
    W3, b3 = W.copy(), b.copy()
    cpu_tiled.sgd_layer_update_tiled_serial(W3, b3, delta, a_prev, 0.7, 1.0 / m, 0.01)
    np.testing.assert_array_equal(W3, W1)
    np.testing.assert_array_equal(b3, b1)
    split = cpu_tiled.forward_splits_by_neurons(W, m)
    if numba.get_num_threads() == 2:  # which shapes split by neurons depends on the threads
        assert split == (shape not in ((1, 33, 17), (70, 130, 90)))
    if not split:
        return  # the driver never fuses these
    # with the gather of a later mini-batch's rows (a shuffled epoch's): each thread
    # copies its share of rows[first:first + m] of a source into `gathered`
    source = rng.uniform(0, 1, (3 * m + 5, n_in)).astype(dtype)
    rows = rng.permutation(source.shape[0]).astype(np.int64)
    first = 2
    gathered = np.full((m, n_in), np.nan, dtype=dtype)
    cpu_tiled.sgd_update_forward_tiled(
        W2, b2, delta, a_prev, 0.7, 1.0 / m, 0.01, a_next, z2, o2, act, W2[:0], delta[:0],
        delta[:0], source, rows, first, gathered,
    )  # fmt: skip
    for got, want in ((W2, W1), (b2, b1), (z2, z1), (o2, o1)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(gathered, source[rows[first : first + m]])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(10, 784, 30), (32, 784, 100), (7, 50, 40), (12, 9, 30)])
@pytest.mark.parametrize("act", [fn.SIGMOID, fn.RELU])
def test_fused_region_with_the_layer_above(shape, act, dtype, rng):
    """The region that also runs BP2 through the layer above and that layer's weight
    step, each thread on its own neurons' columns, against the serial kernels one after
    the other: BP2, the step of the layer above, the update, the next forward pass."""
    m, n_in, n_out = shape
    W, b, a_prev, _ = _data(rng, m, n_in, n_out, dtype)
    W_up, _, _, delta_up = _data(rng, m, n_out, 10, dtype)
    name = {fn.SIGMOID: "sigmoid", fn.RELU: "relu"}[act]
    a = _act(rng.uniform(-2, 2, (m, n_out)), name).astype(dtype)  # this layer's outputs
    a_next = rng.uniform(0, 1, (m + 1, n_in)).astype(dtype)[:m]
    if not cpu_tiled.forward_splits_by_neurons(W, m):
        pytest.skip("the driver fuses only forward passes split by neurons")
    # serial kernels, one after the other
    W1, b1, W_up1 = W.copy(), b.copy(), W_up.copy()
    delta1 = np.full((m, n_out), np.nan, dtype=dtype)
    cpu_tiled.hidden_delta_outer_serial(W_up1, delta_up, a, delta1, act)
    b_up = np.zeros(10, dtype=dtype)
    cpu_tiled.sgd_layer_update_tiled_serial(W_up1, b_up, delta_up, a, 0.7, 1.0 / m, 0.01)
    cpu_tiled.sgd_layer_update_tiled_serial(W1, b1, delta1, a_prev, 0.7, 1.0 / m, 0.01)
    z1, o1 = (np.full((m, n_out), np.nan, dtype=dtype) for _ in range(2))
    cpu_tiled.weighted_sums_tiled_serial(W1, b1, a_next, z1, o1, act)
    # the region
    W2, b2, W_up2 = W.copy(), b.copy(), W_up.copy()
    delta2 = np.full((m, n_out), np.nan, dtype=dtype)
    z2, o2 = (np.full((m, n_out), np.nan, dtype=dtype) for _ in range(2))
    a2 = a.copy()  # this layer's outputs, overwritten by the next mini-batch's
    cpu_tiled.sgd_update_forward_tiled(
        W2, b2, delta2, a_prev, 0.7, 1.0 / m, 0.01, a_next, z2, a2, act, W_up2, delta_up, a2,
        a_next, np.empty(0, np.int64), 0, z2[:0],
    )  # fmt: skip
    for got, want in ((delta2, delta1), (W_up2, W_up1), (W2, W1), (b2, b1), (z2, z1), (a2, o1)):
        assert_close(got, want, dtype)


# ------------------------------------------------------------------- updates
@pytest.mark.parametrize("dtype", DTYPES)
def test_updates(dtype, rng):
    n, n_w, m = 23, 17, 4
    params = rng.uniform(-1, 1, n).astype(dtype)
    grads = rng.uniform(-1, 1, n).astype(dtype)
    eta, l2 = 0.3, 0.01
    p64, g64 = _f64(params, grads)
    g_mean = g64 / m + np.where(np.arange(n) < n_w, l2 * p64, 0.0)
    for kernel in _variants(cpu, "sgd_update"):
        p = params.copy()
        kernel(p, grads, eta, 1.0 / m, l2, n_w)
        assert p.dtype == dtype
        assert_close(p, p64 - eta * g_mean, dtype)
    for nesterov in (False, True):
        v_ref = 0.9 * 0.5 - eta * g_mean
        p_ref = p64 + (0.9 * v_ref - eta * g_mean if nesterov else v_ref)
        for kernel in _variants(cpu, "momentum_update"):
            p, v = params.copy(), np.full(n, 0.5, dtype=dtype)
            kernel(p, grads, v, eta, 1.0 / m, l2, n_w, 0.9, nesterov)
            assert_close(v, v_ref, dtype)
            assert_close(p, p_ref, dtype)
    for kernel in _variants(cpu, "adam_update"):
        p, m1, m2 = params.copy(), np.zeros(n, dtype), np.zeros(n, dtype)
        kernel(p, grads, m1, m2, eta, 1.0 / m, l2, n_w, 0.9, 0.999, 1e-8, 1)
        mh = (0.1 * g_mean) / 0.1
        vh = (0.001 * g_mean**2) / 0.001
        assert_close(p, p64 - eta * mh / (np.sqrt(vh) + 1e-8), dtype)


# --------------------------------------------------------------------- views
@njit
def _rows_view(buf, start, rows, cols):
    return cpu_tiled.as_rows(buf, start, rows, cols)


@njit
def _flat_view(a):
    return cpu_tiled._flat(a)


@pytest.mark.parametrize("dtype", DTYPES)
def test_unchecked_views_are_views_of_the_right_elements(dtype):
    buf = np.arange(40, dtype=dtype)
    v = _rows_view(buf, 3, 4, 5)
    assert v.shape == (4, 5) and v.strides == (5 * buf.itemsize, buf.itemsize)
    np.testing.assert_array_equal(v, buf[3:23].reshape(4, 5))
    v[1, 2] = -1
    assert buf[3 + 7] == -1
    assert _rows_view(buf, 40, 0, 5).shape == (0, 5)
    strided = buf[::2]  # not contiguous: the view keeps its stride
    np.testing.assert_array_equal(_rows_view(strided, 1, 3, 4), strided[1:13].reshape(3, 4))
    a = np.arange(12, dtype=dtype).reshape(3, 4)
    f = _flat_view(a)
    assert f.shape == (12,) and f.strides == (a.itemsize,)
    np.testing.assert_array_equal(f, a.ravel())
    f[5] = -2
    assert a[1, 1] == -2
    np.testing.assert_array_equal(_flat_view(a[1:]), a[1:].ravel())


@njit
def _through_borrowed(a, value):
    """Writes through a borrowed view of ``a`` and of a view of it; returns their sums
    and a new array made from the borrowed one (which owns its own memory)."""
    b = cpu_tiled.borrowed(a)
    b[0, 1] = value
    row = b[1]  # a view of a borrowed view: no reference count either
    row[2] = value
    copy = b.copy()
    return b.sum(), row.sum(), copy


@pytest.mark.parametrize("dtype", DTYPES)
def test_borrowed_views_alias_their_array(dtype):
    a = np.arange(12, dtype=dtype).reshape(3, 4)
    total, row_total, copy = _through_borrowed(a, -5)
    assert a[0, 1] == -5 and a[1, 2] == -5
    assert total == a.sum() and row_total == a[1].sum()
    np.testing.assert_array_equal(copy, a)
    del a  # the copy has its own owner
    assert copy[1, 2] == -5
    strided = np.arange(24, dtype=dtype).reshape(3, 8)[:, ::2]  # strides kept
    _through_borrowed(strided, 7)
    assert strided[0, 1] == 7 and strided[1, 2] == 7
