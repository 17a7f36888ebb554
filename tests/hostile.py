"""A catalogue of hostile inputs to every public entry point, and what each must do.

Each :class:`Case` is one call with one bad (or merely unusual) argument. A case
either *expects* an exception type and the name of the argument its message must
mention, or is *accepted*: its result must then equal, bit for bit, the result of
``reference()`` on the same values as a clean C-contiguous float array. The cases
are run by ``tests/test_reliability.py::test_hostile_input`` and their observed
outcomes make up the table in ``docs/reliability.md`` (``tests/reliability_table.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import nbbackprop as nb

SIZES = [3, 4, 2]


@dataclass(frozen=True)
class Case:
    id: str
    entry: str
    what: str
    call: Callable[[], object]
    expect: type[BaseException] | None = None
    names: str | None = None
    reference: Callable[[], object] | None = None


def net(**kw) -> nb.Network:
    kw.setdefault("seed", 0)
    return nb.Network(SIZES, **kw)


def data():
    rng = np.random.default_rng(0)
    X = rng.random((6, 3))
    y = np.array([0, 1, 1, 0, 1, 0])
    return X, y


def fitted(X, y, **kw) -> np.ndarray:
    n = net(dtype=kw.pop("dtype", "float64"), cost=kw.pop("cost", "quadratic"))
    kw = {"epochs": 2, "batch_size": 4, "eta": 0.5, "seed": 0, **kw}
    n.fit(X, y, **kw)
    return n.params


X, Y = data()
ONEHOT = np.eye(2)[Y]


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _strided(a):
    big = np.zeros((a.shape[0] * 2, a.shape[1] * 3))
    big[::2, ::3] = a
    return big[::2, ::3]


def _nan(a, value=np.nan):
    a = a.astype(np.float64)
    a.flat[1] = value
    return a


def _replaced_weights():
    n = net()
    n.weights[0] = np.zeros((4, 3))
    return n


def _replaced_params():
    n = net()
    n.params = n.params.astype(np.float32)
    return n


def _nan_weights():
    n = net()
    n.weights[1][0, 0] = np.nan
    return n


def _inf_bias():
    n = net()
    n.biases[0][2] = np.inf
    return n


def _network_cases():
    bad = [
        ("sizes-none", "sizes=None", dict(sizes=None), TypeError, "sizes"),
        ("sizes-str", "sizes='64,10' (a string)", dict(sizes="64,10"), TypeError, "sizes"),
        ("sizes-one-layer", "sizes=[3]", dict(sizes=[3]), ValueError, "sizes"),
        ("sizes-zero", "sizes=[3, 0]", dict(sizes=[3, 0]), ValueError, "sizes[1]"),
        ("sizes-negative", "sizes=[3, -2]", dict(sizes=[3, -2]), ValueError, "sizes[1]"),
        ("sizes-float", "sizes=[3, 2.0]", dict(sizes=[3, 2.0]), TypeError, "sizes[1]"),
        ("sizes-bool", "sizes=[3, True]", dict(sizes=[3, True]), TypeError, "sizes[1]"),
        (
            "sizes-absurd",
            "sizes=[2**40, 2**40] (10^24 parameters)",
            dict(sizes=[2**40, 2**40]),
            ValueError,
            "sizes",
        ),
        ("activation-unknown", "activation='softplus'", dict(activation="softplus"), ValueError,
         "activation"),
        ("activation-none", "activation=None", dict(activation=None), TypeError, "activation"),
        ("activation-int", "activation=3", dict(activation=3), TypeError, "activation"),
        ("activation-count", "3 activations for 2 weight layers",
         dict(activation=["sigmoid"] * 3), ValueError, "activation"),
        ("cost-unknown", "cost='hinge'", dict(cost="hinge"), ValueError, "cost"),
        ("cost-output", "cost='cross_entropy' with a softmax output",
         dict(cost="cross_entropy", output_activation="softmax"), ValueError,
         "output_activation"),
        ("dtype-float16", "dtype='float16'", dict(dtype="float16"), ValueError, "dtype"),
        ("seed-negative", "seed=-1", dict(seed=-1), ValueError, "seed"),
        ("seed-float", "seed=1.5", dict(seed=1.5), TypeError, "seed"),
        ("init-unknown", "init='zeros'", dict(init="zeros"), ValueError, "init"),
        ("strategy-unknown", "strategy='gpu'", dict(strategy="gpu"), ValueError, "strategy"),
    ]  # fmt: skip
    cases = []
    for cid, what, kw, exc, name in bad:
        kw = {"sizes": SIZES, **kw}
        cases.append(Case(cid, "Network", what, lambda kw=kw: nb.Network(**kw), exc, name))
    cases.append(
        Case(
            "sizes-ndarray", "Network", "sizes=np.array([3, 4, 2])",
            lambda: nb.Network(np.array(SIZES), seed=0).params,
            reference=lambda: net().params,
        )
    )  # fmt: skip
    return cases


def _input_cases():
    """X variants for feedforward (the same checks guard predict, evaluate, cost, fit)."""
    ragged = [[0.1, 0.2, 0.3], [0.1, 0.2]]
    masked = np.ma.masked_array(X, mask=np.zeros_like(X, dtype=bool))
    masked.mask[0, 0] = True
    accepted = [
        ("x-fortran", "Fortran-ordered X", np.asfortranarray(X), X),
        ("x-strided", "non-contiguous X (a strided view)", _strided(X), X),
        ("x-readonly", "read-only X", _readonly(X), X),
        ("x-bigendian", "big-endian float64 X", X.astype(">f8"), X),
        ("x-int", "integer X", (X * 10).astype(np.int64), (X * 10).astype(np.int64) * 1.0),
        ("x-uint8", "uint8 X", (X * 255).astype(np.uint8), (X * 255).astype(np.uint8) * 1.0),
        ("x-bool", "boolean X", X > 0.5, (X > 0.5) * 1.0),
        ("x-float16", "float16 X", X.astype(np.float16), X.astype(np.float16).astype(float)),
        ("x-float32", "float32 X into a float64 network", X.astype(np.float32),
         X.astype(np.float32).astype(float)),
        ("x-list", "nested lists", X.tolist(), X),
        ("x-unmasked", "masked array with nothing masked",
         np.ma.masked_array(X, mask=np.zeros_like(X, dtype=bool)), X),
    ]  # fmt: skip
    refused = [
        ("x-object", "object-dtype X", X.astype(object), TypeError, "X"),
        ("x-complex", "complex X", X.astype(complex), TypeError, "X"),
        ("x-string", "a string", "abc", TypeError, "X"),
        ("x-none", "None", None, TypeError, "X"),
        ("x-datetime", "datetime64 X", np.zeros((2, 3), "M8[s]"), TypeError, "X"),
        ("x-ragged", "ragged nested lists", ragged, TypeError, "X"),
        ("x-1d", "a single sample as a 1-D array", X[0], ValueError, "X"),
        ("x-3d", "3-D X", X[None], ValueError, "X"),
        ("x-empty", "X with no rows", np.zeros((0, 3)), ValueError, "X"),
        ("x-width", "X with 4 columns for sizes[0] = 3", np.zeros((2, 4)), ValueError, "X"),
        ("x-transposed", "X transposed (features as rows)", X.T, ValueError, "X"),
        ("x-nan", "X with a NaN", _nan(X), ValueError, "X"),
        ("x-inf", "X with an inf", _nan(X, np.inf), ValueError, "X"),
        ("x-masked", "masked array with a masked entry", masked, ValueError, "X"),
    ]  # fmt: skip
    cases = [
        Case(cid, "feedforward", what, lambda a=a: net().feedforward(a),
             reference=lambda r=r: net().feedforward(r))
        for cid, what, a, r in accepted
    ]  # fmt: skip
    cases += [
        Case(cid, "feedforward", what, lambda a=a: net().feedforward(a), exc, name)
        for cid, what, a, exc, name in refused
    ]
    cases.append(
        Case(
            "x-overflow-float32", "feedforward", "1e300 into a float32 network",
            lambda: net(dtype="float32").feedforward(np.full((2, 3), 1e300)), ValueError, "X",
        )
    )  # fmt: skip
    return cases


def _label_cases():
    n = len(Y)
    accepted = [
        ("y-float-labels", "labels as integral floats", Y.astype(float)),
        ("y-uint8", "uint8 labels", Y.astype(np.uint8)),
        ("y-onehot", "one-hot target rows", ONEHOT),
        ("y-list", "labels as a list", Y.tolist()),
    ]
    refused = [
        ("y-length", "5 labels for 6 rows", Y[:5], ValueError, "y"),
        ("y-range", "label 2 with sizes[-1] = 2", np.r_[Y[:-1], 2], ValueError, "y"),
        ("y-negative", "label -1", np.r_[Y[:-1], -1], ValueError, "y"),
        ("y-fraction", "label 0.5", np.r_[Y[:-1], 0.5], ValueError, "y"),
        ("y-nan", "label NaN", np.r_[Y[:-1], np.nan], ValueError, "y"),
        ("y-huge-float", "label 1e20 (would wrap in int64)", np.r_[Y[:-1], 1e20], ValueError, "y"),
        ("y-huge-uint64", "label 2**63 as uint64 (would wrap in int64)",
         np.r_[Y[:-1].astype(np.uint64), np.uint64(2**63)], ValueError, "y"),
        ("y-bool", "boolean labels", Y.astype(bool), TypeError, "y"),
        ("y-string", "string labels", Y.astype(str), TypeError, "y"),
        ("y-3d", "3-D targets", ONEHOT[None], ValueError, "y"),
        ("y-width", "target rows of width 3 for sizes[-1] = 2", np.zeros((n, 3)), ValueError, "y"),
    ]  # fmt: skip
    cases = [
        Case(cid, "evaluate", what, lambda a=a: net().evaluate(X, a),
             reference=lambda: net().evaluate(X, Y))
        for cid, what, a in accepted
    ]  # fmt: skip
    cases += [
        Case(cid, "evaluate", what, lambda a=a: net().evaluate(X, a), exc, name)
        for cid, what, a, exc, name in refused
    ]
    return cases


def _cost_backprop_cases():
    ce = np.full((len(Y), 2), 2.0)
    return [
        Case("cost-lmbda-negative", "cost", "lmbda=-1", lambda: net().cost(X, Y, lmbda=-1),
             ValueError, "lmbda"),
        Case("cost-lmbda-nan", "cost", "lmbda=nan", lambda: net().cost(X, Y, lmbda=np.nan),
             ValueError, "lmbda"),
        Case("cost-lmbda-str", "cost", "lmbda='0'", lambda: net().cost(X, Y, lmbda="0"),
             TypeError, "lmbda"),
        Case("cost-targets-nan", "cost", "target rows with a NaN",
             lambda: net().cost(X, _nan(ONEHOT)), ValueError, "Y"),
        Case("cost-ce-range", "cost", "cross-entropy targets of 2 (outside [0, 1])",
             lambda: net(cost="cross_entropy").cost(X, ce), ValueError, "Y"),
        Case("cost-ll-negative", "cost", "log-likelihood targets of -1",
             lambda: net(cost="log_likelihood").cost(X, -ONEHOT), ValueError, "Y"),
        Case("backprop-shape", "backprop", "Y of shape (6, 3) for sizes[-1] = 2",
             lambda: net().backprop(X, np.zeros((6, 3))), ValueError, "Y"),
        Case("backprop-x-nan", "backprop", "X with a NaN",
             lambda: net().backprop(_nan(X), ONEHOT), ValueError, "X"),
        Case("backprop-fortran", "backprop", "Fortran-ordered X and Y",
             lambda: net().backprop(np.asfortranarray(X), np.asfortranarray(ONEHOT)),
             reference=lambda: net().backprop(X, ONEHOT)),
    ]  # fmt: skip


def _fit_cases():
    n = len(Y)
    bad_kw = [
        ("fit-epochs-negative", "epochs=-1", dict(epochs=-1), ValueError, "epochs"),
        ("fit-epochs-float", "epochs=1.0", dict(epochs=1.0), TypeError, "epochs"),
        ("fit-epochs-bool", "epochs=True", dict(epochs=True), TypeError, "epochs"),
        ("fit-batch-zero", "batch_size=0", dict(batch_size=0), ValueError, "batch_size"),
        ("fit-batch-float", "batch_size=2.5", dict(batch_size=2.5), TypeError, "batch_size"),
        ("fit-eta-zero", "eta=0", dict(eta=0), ValueError, "eta"),
        ("fit-eta-negative", "eta=-1", dict(eta=-1), ValueError, "eta"),
        ("fit-eta-nan", "eta=nan", dict(eta=np.nan), ValueError, "eta"),
        ("fit-eta-inf", "eta=inf", dict(eta=np.inf), ValueError, "eta"),
        ("fit-eta-str", "eta='0.5'", dict(eta="0.5"), TypeError, "eta"),
        ("fit-lmbda-negative", "lmbda=-0.1", dict(lmbda=-0.1), ValueError, "lmbda"),
        ("fit-optimizer", "optimizer='rmsprop'", dict(optimizer="rmsprop"), ValueError,
         "optimizer"),
        ("fit-momentum-one", "momentum=1.0", dict(momentum=1.0), ValueError, "momentum"),
        ("fit-seed-negative", "seed=-1", dict(seed=-1), ValueError, "seed"),
        ("fit-shuffle-str", "shuffle='yes'", dict(shuffle="yes"), TypeError, "shuffle"),
        ("fit-strategy", "strategy='fast'", dict(strategy="fast"), ValueError, "strategy"),
        ("fit-callback", "callback=3 (not callable)", dict(callback=3), TypeError, "callback"),
        ("fit-on-divergence", "on_divergence='ignore'", dict(on_divergence="ignore"),
         ValueError, "on_divergence"),
        ("fit-divergence-check", "divergence_check='never'", dict(divergence_check="never"),
         ValueError, "divergence_check"),
        ("fit-threads-str", "threads='many'", dict(threads="many"), ValueError, "threads"),
        ("fit-threads-zero", "threads=0", dict(threads=0), ValueError, "threads"),
        ("fit-threads-float", "threads=1.5", dict(threads=1.5), TypeError, "threads"),
        ("fit-val-single", "validation_data=(X,)", dict(validation_data=(X,)), TypeError,
         "validation_data"),
        ("fit-val-array", "validation_data=X (not a pair)", dict(validation_data=X),
         TypeError, "validation_data"),
        ("fit-val-length", "validation labels of the wrong length",
         dict(validation_data=(X, Y[:2])), ValueError, "validation_data[1]"),
        ("fit-val-width", "validation inputs of the wrong width",
         dict(validation_data=(X[:, :2], Y)), ValueError, "validation_data[0]"),
        ("fit-val-nan", "validation inputs with a NaN",
         dict(validation_data=(_nan(X), Y)), ValueError, "validation_data[0]"),
    ]  # fmt: skip
    cases = [
        Case(cid, "fit", what, lambda kw=kw: net().fit(X, Y, **kw), exc, name)
        for cid, what, kw, exc, name in bad_kw
    ]
    cases += [
        Case("fit-length", "fit", "X of 6 rows, 5 labels", lambda: net().fit(X, Y[:5]),
             ValueError, "y"),
        Case("fit-ce-range", "fit", "cross-entropy targets of 2",
             lambda: net(cost="cross_entropy").fit(X, np.full((n, 2), 2.0)), ValueError, "y"),
        Case("fit-ll-negative", "fit", "log-likelihood targets of -1",
             lambda: net(cost="log_likelihood").fit(X, -ONEHOT), ValueError, "y"),
        Case("fit-nan-weights", "fit", "a weight set to NaN before fit",
             lambda: _nan_weights().fit(X, Y), ValueError, "weights/biases"),
        Case("fit-inf-bias", "fit", "a bias set to inf before fit",
             lambda: _inf_bias().fit(X, Y), ValueError, "weights/biases"),
        Case("predict-nan-weights", "predict", "a weight set to NaN",
             lambda: _nan_weights().predict(X), ValueError, "weights/biases"),
        Case("fit-replaced-weights", "fit",
             "net.weights[0] = new array (rebinding, not assigning into)",
             lambda: _replaced_weights().fit(X, Y), ValueError, "weights[0]"),
        Case("feedforward-replaced-params", "feedforward",
             "net.params replaced by a float32 copy",
             lambda: _replaced_params().feedforward(X), ValueError, "params"),
    ]  # fmt: skip
    accepted = [
        ("fit-x-fortran-readonly", "Fortran-ordered, read-only X",
         lambda: fitted(_readonly(np.asfortranarray(X)), Y)),
        ("fit-x-bigendian", "big-endian X and float labels",
         lambda: fitted(X.astype(">f8"), Y.astype(float))),
        ("fit-batch-larger", "batch_size larger than the data",
         lambda: fitted(X, Y, batch_size=n + 5)),
        ("fit-batch-huge", "batch_size=10**30 (beyond int64)",
         lambda: fitted(X, Y, batch_size=10**30)),
    ]  # fmt: skip
    ref = {
        "fit-batch-larger": lambda: fitted(X, Y, batch_size=n),
        "fit-batch-huge": lambda: fitted(X, Y, batch_size=n),
    }
    cases += [
        Case(cid, "fit", what, call, reference=ref.get(cid, lambda: fitted(X, Y)))
        for cid, what, call in accepted
    ]
    return cases


CASES: list[Case] = (
    _network_cases() + _input_cases() + _label_cases() + _cost_backprop_cases() + _fit_cases()
)


def outcome(case: Case) -> tuple[str, BaseException | None, object]:
    """Run ``case``; return (a one-line description, the exception or None, the result)."""
    try:
        result = case.call()
    except Exception as exc:  # what the user would see
        first = str(exc).splitlines()[0] if str(exc) else ""
        if len(first) > 110:
            first = first[:107] + "..."
        return f"{type(exc).__name__}: {first}", exc, None
    return "accepted; identical result to the clean equivalent", None, result


#: Bad command lines: each must print one line, ``Error: ...``, and exit with status 2.
CLI_CASES: list[tuple[str, list[str], str]] = [
    ("cli-epochs-text", ["train", "--epochs", "abc"], "--epochs abc"),
    ("cli-epochs-negative", ["train", "--epochs", "-1"], "--epochs -1"),
    ("cli-batch-zero", ["train", "--batch-size", "0"], "--batch-size 0"),
    ("cli-eta-nan", ["train", "--eta", "nan"], "--eta nan"),
    ("cli-eta-negative", ["train", "--eta", "-3"], "--eta -3"),
    ("cli-seed-negative", ["train", "--seed", "-1"], "--seed -1"),
    ("cli-dtype", ["train", "--dtype", "float16"], "--dtype float16"),
    ("cli-sizes-text", ["train", "--sizes", "a,b"], "--sizes a,b"),
    ("cli-sizes-zero", ["train", "--sizes", "64,0,10"], "--sizes 64,0,10"),
    ("cli-sizes-input", ["train", "--sizes", "63,10"], "--sizes 63,10 (data has 64 features)"),
    ("cli-data-unknown", ["train", "--data", "foo"], "--data foo"),
    ("cli-threads-text", ["train", "--threads", "many"], "--threads many"),
    ("cli-threads-zero", ["train", "--threads", "0"], "--threads 0"),
    ("cli-data-missing", ["train", "--data", "mnist:/nonexistent"], "--data mnist:/nonexistent"),
    ("cli-option-unknown", ["train", "--bogus"], "an unknown option"),
    ("cli-option-missing-value", ["train", "--epochs"], "--epochs without a value"),
    ("cli-extra-argument", ["train", "extra"], "an unexpected argument"),
    ("cli-command-unknown", ["frobnicate"], "an unknown command"),
    ("cli-evaluate-missing-model", ["evaluate", "/nonexistent/model.npz"],
     "evaluate a model file that does not exist"),
    ("cli-predict-missing-model", ["predict", "/nonexistent/model.npz", "/nonexistent/x.npy"],
     "predict with a model file that does not exist"),
    ("cli-resume-missing", ["train", "--resume", "/nonexistent/ck.npz", "--epochs", "1"],
     "--resume a checkpoint that does not exist"),
]  # fmt: skip


def cli_outcome(args: list[str]) -> tuple[int, str, BaseException | None]:
    """Run the CLI in-process; return (exit status, its output, an unexpected exception)."""
    from click.testing import CliRunner

    from nbbackprop.cli import main

    result = CliRunner().invoke(main, args)
    exc = result.exception
    if isinstance(exc, SystemExit):
        exc = None
    return result.exit_code, result.output, exc


def _readonly_params():
    n = net()
    n.params.flags.writeable = False
    return n


def _nan_opt_state():
    n = net()
    n.fit(X, Y, epochs=1, optimizer="momentum", eta=0.1)
    n.opt_state[0, 0] = np.nan
    return n


CASES += [
    Case("predict-readonly-params", "predict",
         "read-only parameter buffer (e.g. unpickled from a read-only memory map)",
         lambda: _readonly_params().predict(X), reference=lambda: net().predict(X)),
    Case("fit-readonly-params", "fit", "read-only parameter buffer",
         lambda: _readonly_params().fit(X, Y), ValueError, "params"),
    Case("fit-nan-opt-state", "fit", "NaN in the optimiser's state",
         lambda: _nan_opt_state().fit(X, Y, optimizer="momentum"), ValueError, "opt_state"),
]  # fmt: skip


def _estimator_cases():
    import importlib.util

    if importlib.util.find_spec("sklearn") is None:  # an optional extra
        return []
    rng = np.random.default_rng(0)
    Xe, ye = rng.random((20, 3)), np.arange(20) % 2

    def clf(**kw):
        return nb.MLPClassifier(max_iter=2, random_state=0, **kw)

    def fitted_clf(Xf):
        return clf().fit(Xf, ye).predict_proba(Xe)

    return [
        Case("clf-nan", "MLPClassifier.fit", "X with a NaN",
             lambda: clf().fit(np.where(Xe > 0.9, np.nan, Xe), ye), ValueError, "NaN"),
        Case("clf-3d", "MLPClassifier.fit", "3-D X", lambda: clf().fit(Xe[None], ye),
             ValueError, "dim 3"),
        Case("clf-hidden-zero", "MLPClassifier.fit", "hidden_layer_sizes=(0,)",
             lambda: clf(hidden_layer_sizes=(0,)).fit(Xe, ye), ValueError,
             "hidden_layer_sizes"),
        Case("clf-lr-nan", "MLPClassifier.fit", "learning_rate_init=nan",
             lambda: clf(learning_rate_init=float("nan")).fit(Xe, ye), ValueError,
             "learning_rate_init"),
        Case("clf-predict-width", "MLPClassifier.predict", "2 features after fitting on 3",
             lambda: clf().fit(Xe, ye).predict(Xe[:, :2]), ValueError, "features"),
        Case("clf-unfitted", "MLPClassifier.predict", "predict before fit",
             lambda: clf().predict(Xe), ValueError, "not fitted"),
        Case("clf-fortran-bigendian", "MLPClassifier.fit", "Fortran-ordered big-endian X",
             lambda: fitted_clf(np.asfortranarray(Xe.astype(">f8"))),
             reference=lambda: fitted_clf(Xe)),
    ]  # fmt: skip


CASES += _estimator_cases()
