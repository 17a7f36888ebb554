"""Property-based tests: random networks against the oracles, random bad inputs against the guards.

Hypothesis draws architectures (1-4 weight layers, widths 1-9), batch sizes (some
larger than the data), dtypes, activations, the costs allowed for each output
activation (:data:`nbbackprop.functions.COST_OUTPUTS`) and data, and checks the
kernels against the plain-NumPy reference (``tests/reference.py``) and float64
central differences. It also draws malformed arrays and checks that each is refused
with the expected exception type naming the argument, or, when it is merely unusual
(another dtype, layout or byte order), gives exactly the result of a clean copy.

Runs are bounded and reproducible for CI: a fixed number of examples, no deadline
(the first example of a dtype pays Numba's compilation), ``derandomize=True`` and no
example database, so every run tries the same inputs (the file takes a few seconds).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import reference as ref
from conftest import assert_close, numeric_grads
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nbbackprop as nb
from nbbackprop import functions as fn

#: ``NBBACKPROP_HYPOTHESIS_EXAMPLES=2000 pytest tests/test_properties.py`` searches
#: harder, with fresh random examples each run; CI uses the fixed, quick default.
_DEEP = os.environ.get("NBBACKPROP_HYPOTHESIS_EXAMPLES")
BOUNDED = settings(
    max_examples=int(_DEEP) if _DEEP else 50,
    deadline=None,
    derandomize=not _DEEP,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
HIDDEN = ("sigmoid", "tanh", "relu", "identity")


@st.composite
def networks(draw, dtypes=("float64", "float32")):
    """(sizes, activations, cost, dtype, seed) of a valid network."""
    L = draw(st.integers(1, 4))
    sizes = draw(st.lists(st.integers(1, 9), min_size=L + 1, max_size=L + 1))
    cost = draw(st.sampled_from(sorted(fn.COST_OUTPUTS)))
    output = draw(st.sampled_from(fn.COST_OUTPUTS[cost]))
    if output == "softmax" and sizes[-1] == 1:
        sizes[-1] = 2  # a softmax over one output is constant: nothing to learn or check
    hidden = draw(st.lists(st.sampled_from(HIDDEN), min_size=L - 1, max_size=L - 1))
    dtype = draw(st.sampled_from(dtypes))
    seed = draw(st.integers(0, 2**16))
    return sizes, [*hidden, output], cost, dtype, seed


def make(spec):
    sizes, activations, cost, dtype, seed = spec
    return nb.Network(sizes, activation=activations, cost=cost, dtype=dtype, seed=seed)


@st.composite
def batches(draw, sizes, cost, m=None):
    """Inputs in [-2, 2] and targets valid for ``cost``: (X, Y) in float64."""
    m = draw(st.integers(1, 12)) if m is None else m
    X = draw(hnp.arrays(np.float64, (m, sizes[0]), elements=st.floats(-2, 2, width=32)))
    n_out = sizes[-1]
    if cost == "log_likelihood" or draw(st.booleans()):
        labels = draw(hnp.arrays(np.int64, m, elements=st.integers(0, n_out - 1)))
        Y = np.eye(n_out)[labels]
    else:
        Y = draw(hnp.arrays(np.float64, (m, n_out), elements=st.floats(0, 1, width=32)))
    return X, Y


def _flat(nabla_w, nabla_b):
    return np.concatenate([g.ravel() for g in nabla_w] + [g.ravel() for g in nabla_b])


def _near_relu_kink(net, X):
    """True when some ReLU pre-activation is so close to 0 that differences straddle it."""
    W = [w.astype(np.float64) for w in net.weights]
    b = [x.astype(np.float64) for x in net.biases]
    for x in X:
        zs, _ = ref.feedforward(W, b, net.activations, x.reshape(-1, 1))
        for z, a in zip(zs, net.activations, strict=True):
            if a == "relu" and np.min(np.abs(z)) < 1e-4:
                return True
    return False


# ---------------------------------------------------------------------------- the oracles
@BOUNDED
@given(spec=networks(), data=st.data())
def test_backprop_matches_reference(spec, data):
    net = make(spec)
    sizes, _, cost, dtype, _ = spec
    X, Y = data.draw(batches(sizes, cost))
    Xd, Yd = X.astype(dtype), Y.astype(dtype)
    W = [w.astype(np.float64) for w in net.weights]
    b = [x.astype(np.float64) for x in net.biases]
    nw_ref, nb_ref, c_ref = ref.mean_gradients(
        W, b, net.activations, cost, Xd.astype(np.float64), Yd.astype(np.float64)
    )
    nabla_w, nabla_b = net.backprop(Xd, Yd)
    # float32 results are compared with the float64 reference: the tolerance follows
    # the size of the numbers involved (conftest's tolerances x 10, as in test_network).
    scale = 10 * max(1.0, float(np.max(np.abs(_flat(nw_ref, nb_ref)))))
    assert_close(_flat(nabla_w, nabla_b), _flat(nw_ref, nb_ref), dtype, scale=scale)
    assert_close(net.cost(Xd, Yd), c_ref, dtype, scale=10 * max(1.0, abs(c_ref)))


@BOUNDED
@given(spec=networks(dtypes=("float64",)), data=st.data())
def test_backprop_matches_finite_differences(spec, data):
    net = make(spec)
    sizes, _, cost, _, _ = spec
    X, Y = data.draw(batches(sizes, cost))
    assume(not _near_relu_kink(net, X))
    analytic = _flat(*net.backprop(X, Y))
    # A sample of the parameters keeps wide networks quick; all of them when few.
    rng = np.random.default_rng(spec[-1])
    idx = rng.choice(net.n_params, size=min(net.n_params, 40), replace=False)
    for i, numeric in zip(idx, numeric_grads(net, X, Y, indices=idx), strict=True):
        assert analytic[i] == pytest.approx(numeric, rel=1e-5, abs=1e-7), f"parameter {i}"


@BOUNDED
@given(spec=networks(), data=st.data())
def test_fit_epoch_matches_reference(spec, data):
    net = make(spec)
    sizes, _, cost, dtype, _ = spec
    X, Y = data.draw(batches(sizes, cost))
    n = len(X)
    batch_size = data.draw(st.integers(1, n + 5), label="batch_size")  # may exceed n
    eta = data.draw(st.sampled_from([0.01, 0.1, 0.5]), label="eta")
    lmbda = data.draw(st.sampled_from([0.0, 0.5]), label="lmbda")
    Xd, Yd = X.astype(dtype), Y.astype(dtype)
    W = [w.astype(np.float64) for w in net.weights]
    b = [x.astype(np.float64) for x in net.biases]
    c_ref = ref.sgd_epoch(
        W, b, net.activations, cost, Xd.astype(np.float64), Yd.astype(np.float64),
        batch_size, eta, lmbda,
    )  # fmt: skip
    try:
        hist = net.fit(Xd, Yd, epochs=1, batch_size=batch_size, eta=eta, lmbda=lmbda,
                       shuffle=False)  # fmt: skip
    except nb.DivergenceError:
        assume(False)  # an identity network may blow up; divergence has its own tests
    got = np.concatenate([w.ravel() for w in net.weights] + [x.ravel() for x in net.biases])
    want = np.concatenate([w.ravel() for w in W] + [x.ravel() for x in b])
    scale = 10 * max(1.0, float(np.max(np.abs(want))))
    assert_close(got, want, dtype, scale=scale)
    assert_close(hist["train_cost"][0], c_ref, dtype, scale=10 * max(1.0, abs(c_ref)))


# ------------------------------------------------------------------------ malformed inputs
BAD_DTYPES = (np.complex128, object, "U8", "M8[s]")
GOOD_DTYPES = (np.float64, np.float32, np.float16, np.int64, np.int8, np.uint8, np.bool_,
               ">f8", ">f4", ">i4")  # fmt: skip
ENTRIES = ("feedforward", "predict", "evaluate", "cost", "backprop", "fit")


@st.composite
def mangled_inputs(draw, n_features):
    """A possibly malformed X and the exception it must raise (None: must be accepted)."""
    m = draw(st.integers(1, 6))
    values = draw(hnp.arrays(np.float64, (m, n_features), elements=st.floats(-3, 3, width=16)))
    expect = None
    shape_fault = draw(st.sampled_from([None, "1d", "3d", "width", "empty"]))
    if shape_fault == "1d":
        values = values[0]
    elif shape_fault == "3d":
        values = values[None]
    elif shape_fault == "width":
        values = np.zeros((m, n_features + draw(st.integers(1, 3))))
    elif shape_fault == "empty":
        values = np.zeros((0, n_features))
    if shape_fault is not None:
        expect = ValueError
    nonfinite = draw(st.sampled_from([None, np.nan, np.inf, -np.inf]))
    if nonfinite is not None and values.size:
        values = values.copy()
        values.flat[draw(st.integers(0, values.size - 1))] = nonfinite
        expect = expect or ValueError
    bad_dtype = draw(st.booleans())
    if bad_dtype:
        with np.errstate(invalid="ignore"):
            arr = values.astype(draw(st.sampled_from(BAD_DTYPES)))
        expect = TypeError  # the dtype is checked before the shape and the values
    else:
        dtype = np.dtype(draw(st.sampled_from(GOOD_DTYPES)))
        if dtype.kind in "iub" and nonfinite is not None:
            dtype = np.dtype(np.float64)  # integers cannot hold NaN/inf
        with np.errstate(invalid="ignore"):
            arr = values.astype(dtype)
    layout = draw(st.sampled_from(["C", "F", "strided", "readonly", "list"]))
    if layout == "F":
        arr = np.asfortranarray(arr)
    elif layout == "strided" and arr.ndim >= 1 and arr.dtype != object:
        big = np.zeros((2 * arr.shape[0], *arr.shape[1:]), dtype=arr.dtype)
        big[::2] = arr
        arr = big[::2]
    elif layout == "readonly":
        arr = arr.copy()
        arr.flags.writeable = False
    elif layout == "list" and not bad_dtype:
        arr = arr.tolist()
    return arr, expect


def _call(net, entry, X, labels):
    m = np.shape(X)[0] if np.ndim(X) >= 1 else 0
    y = labels[:m] if m <= len(labels) else np.resize(labels, m)
    Y = np.eye(net.sizes[-1])[y]
    if entry == "feedforward":
        return net.feedforward(X)
    if entry == "predict":
        return net.predict(X)
    if entry == "evaluate":
        return net.evaluate(X, y)
    if entry == "cost":
        return net.cost(X, Y)
    if entry == "backprop":
        return _flat(*net.backprop(X, Y))
    net.fit(X, y, epochs=1, batch_size=2, eta=0.1, seed=0)
    return net.params.copy()


@BOUNDED
@given(
    spec=networks(),
    entry=st.sampled_from(ENTRIES),
    data=st.data(),
)
def test_malformed_inputs_are_refused_or_equivalent(spec, entry, data):
    sizes = spec[0]
    X, expect = data.draw(mangled_inputs(sizes[0]))
    labels = np.arange(8) % sizes[-1]  # as one-hot rows, valid targets for every cost
    if expect is not None:
        with pytest.raises(expect, match=r"^X: "):
            _call(make(spec), entry, X, labels)
        return
    clean = np.array(np.asarray(X), dtype=np.float64, order="C")
    try:
        got = _call(make(spec), entry, X, labels)
    except nb.DivergenceError:
        with pytest.raises(nb.DivergenceError):
            _call(make(spec), entry, clean, labels)
        return
    want = _call(make(spec), entry, clean, labels)
    assert np.array_equal(got, want, equal_nan=True)


@st.composite
def mangled_labels(draw, m, n_classes):
    """Labels for m rows of n_classes, possibly malformed, and the exception expected."""
    labels = draw(hnp.arrays(np.int64, m, elements=st.integers(0, n_classes - 1)))
    fault = draw(
        st.sampled_from([None, "range", "negative", "fraction", "nan", "length", "bool",
                         "str", "2d-width", "huge"])
    )  # fmt: skip
    values, expect = labels, None
    if fault == "range":
        values = labels.copy()
        values[draw(st.integers(0, m - 1))] = n_classes + draw(st.integers(0, 10**6))
        expect = ValueError
    elif fault == "negative":
        values = labels.copy()
        values[draw(st.integers(0, m - 1))] = -draw(st.integers(1, 10**6))
        expect = ValueError
    elif fault == "fraction":
        values = labels.astype(float)
        values[draw(st.integers(0, m - 1))] += 0.5
        expect = ValueError
    elif fault == "nan":
        values = labels.astype(float)
        values[draw(st.integers(0, m - 1))] = np.nan
        expect = ValueError
    elif fault == "length":
        values = np.resize(labels, m + draw(st.sampled_from([-1, 1, 5])))
        expect = ValueError
    elif fault == "bool":
        values = labels.astype(bool)
        expect = TypeError
    elif fault == "str":
        values = labels.astype(str)
        expect = TypeError
    elif fault == "2d-width":
        values = np.zeros((m, n_classes + 1))
        expect = ValueError
    elif fault == "huge":
        values = labels.astype(np.float64)
        values[0] = draw(st.sampled_from([1e19, 2.0**63, 1e300]))
        expect = ValueError
    elif draw(st.booleans()):
        values = labels.astype(draw(st.sampled_from([np.uint8, np.int32, np.float32, ">i8"])))
    return values, expect


@BOUNDED
@given(
    spec=networks(dtypes=("float64",)),
    entry=st.sampled_from(["evaluate", "fit"]),
    m=st.integers(1, 8),
    data=st.data(),
)
def test_malformed_labels_are_refused_or_equivalent(spec, entry, m, data):
    sizes = spec[0]
    assume(sizes[-1] > 1)  # with one output, 1-D y are regression targets, not labels
    X = np.linspace(0, 1, m * sizes[0]).reshape(m, sizes[0])
    y, expect = data.draw(mangled_labels(m, sizes[-1]))

    def call(labels):
        net = make(spec)
        if entry == "evaluate":
            return net.evaluate(X, labels)
        net.fit(X, labels, epochs=1, batch_size=3, eta=0.1, seed=0)
        return net.params

    if expect is not None:
        with pytest.raises(expect, match=r"^y: "):
            call(y)
        return
    try:
        got = call(y)
    except nb.DivergenceError:
        assume(False)
    assert np.array_equal(got, call(np.asarray(y).astype(np.int64)))


# ------------------------------------------------------------------- model files, fuzzed
# A valid checkpoint (Adam state, run metadata, best parameters) is mutated and loaded:
# every result must be a ModelFileError (a ValueError) or a network that is consistent
# and whose entry points answer cleanly. Nothing else may escape, nothing may crash.


def _model_bytes(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    rng = np.random.default_rng(0)
    X, y = rng.random((12, 3)), rng.integers(0, 2, 12)
    net = nb.Network([3, 4, 2], seed=0)
    path = d / "ck.npz"
    net.fit(X, y, epochs=2, batch_size=4, eta=0.1, optimizer="adam", early_stopping=True,
            restore_best=True, validation_fraction=0.25, checkpoint=path)  # fmt: skip
    return path.read_bytes()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return _model_bytes(tmp_path_factory)


def _load_and_use(path):
    """Load ``path``; a refusal must be a ValueError, a network must be usable."""
    from nbbackprop import _guards, persistence

    try:
        net = nb.load(path)
    except persistence.ModelFileError:
        return "refused"
    _guards.check_network_state(net, finite=False)
    assert net.opt_state.shape[1] == net.n_params
    X = np.linspace(0, 1, 2 * net.sizes[0]).reshape(2, net.sizes[0])
    try:
        net.predict(X)
    except ValueError as exc:
        assert "weights/biases" in str(exc)  # a file holding NaN/inf parameters
    return "loaded"


@BOUNDED
@given(
    edits=st.lists(
        st.tuples(st.sampled_from(["flip", "set", "delete", "insert"]),
                  st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
        min_size=1, max_size=4,
    ),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)  # fmt: skip
def test_model_file_fuzz_bytes(model_file, tmp_path_factory, edits, cut):
    data = bytearray(model_file)
    for op, where, value in edits:
        i = int(where * len(data))
        if op == "flip":
            data[i] ^= 1 << (value % 8)
        elif op == "set":
            data[i] = value
        elif op == "delete":
            del data[i : i + 1 + value % 16]
        else:
            data[i:i] = bytes([value]) * (1 + value % 16)
        if not data:
            break
    if cut is not None:
        del data[int(cut * len(data)) :]
    path = tmp_path_factory.mktemp("fuzz") / "m.npz"
    path.write_bytes(bytes(data))
    _load_and_use(path)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4)
    | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=8,
)  # fmt: skip


@BOUNDED
@given(data=st.data())
def test_model_file_fuzz_metadata(model_file, tmp_path_factory, data):
    import io
    import json

    with np.load(io.BytesIO(model_file)) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes())
    key = data.draw(st.sampled_from(sorted(meta)), label="key")
    if data.draw(st.booleans(), label="delete"):
        del meta[key]
    elif isinstance(meta[key], list) and meta[key] and data.draw(st.booleans()):
        meta[key][data.draw(st.integers(0, len(meta[key]) - 1))] = data.draw(JSON)
    else:
        meta[key] = data.draw(JSON, label="value")
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    if data.draw(st.booleans(), label="mangle params"):
        shape = data.draw(st.sampled_from([(0,), (1,), (26,), (27,), (2, 13)]))
        dtype = data.draw(st.sampled_from(["f8", "f4", "i8", "u1", ">f8"]))
        arrays["params"] = np.ones(shape, dtype=dtype)
    path = tmp_path_factory.mktemp("fuzzmeta") / "m.npz"
    np.savez(path, **arrays)
    _load_and_use(path)
