"""The scikit-learn estimators: scikit-learn's checks, the alpha <-> lmbda mapping, behaviour."""

import pickle
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import nbbackprop as nb

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

#: Checks we expect to fail, with the reason (also listed in docs/training.md). None today.
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


@parametrize_with_checks(
    [nb.MLPClassifier(), nb.MLPRegressor()],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
        check(estimator)


def test_alpha_maps_to_lmbda_like_scikit_learn(rng):
    """One epoch of plain SGD with L2 equals scikit-learn's MLPRegressor step for step."""
    from sklearn.neural_network import MLPRegressor

    X = rng.standard_normal((20, 4))
    y = rng.standard_normal(20)
    params = dict(hidden_layer_sizes=(3,), activation="tanh", solver="sgd", momentum=0.0,
                  alpha=0.3, batch_size=5, learning_rate_init=0.05, shuffle=False,
                  random_state=0)  # fmt: skip
    ours = nb.MLPRegressor(**params).partial_fit(X, y)
    theirs = MLPRegressor(**params).partial_fit(X, y)
    for l in range(2):
        theirs.coefs_[l][...] = ours.coefs_[l]
        theirs.intercepts_[l][...] = ours.intercepts_[l]
    ours.partial_fit(X, y)
    theirs.partial_fit(X, y)
    for l in range(2):
        np.testing.assert_allclose(ours.coefs_[l], theirs.coefs_[l], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(ours.intercepts_[l], theirs.intercepts_[l], rtol=1e-12)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-12)
    # The network saw lmbda = alpha * n / batch_size.
    assert ours._fit_kwargs(20, 5)["lmbda"] == pytest.approx(0.3 * 20 / 5)


@pytest.fixture(scope="module")
def digits():
    return nb.datasets.load_digits()


def test_classifier_on_digits_with_string_labels(digits):
    (X, y), (Xt, yt) = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                      "nine"])  # fmt: skip
    clf = nb.MLPClassifier(hidden_layer_sizes=(30,), max_iter=30, learning_rate_init=0.01,
                           random_state=0)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
        clf.fit(X, names[y])
    assert list(clf.classes_) == sorted(names)
    assert clf.score(Xt, names[yt]) > 0.93
    proba = clf.predict_proba(Xt)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert clf.out_activation_ == "softmax" and clf.n_layers_ == 3 and clf.n_outputs_ == 10
    assert [c.shape for c in clf.coefs_] == [(64, 30), (30, 10)]
    assert np.shares_memory(clf.coefs_[0], clf.network_.params)
    assert len(clf.loss_curve_) == clf.n_iter_ <= 30
    assert clf.network_.activations == ("relu", "softmax")


def test_binary_classifier_has_one_sigmoid_output(rng):
    X = rng.standard_normal((60, 3))
    y = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    clf = nb.MLPClassifier(hidden_layer_sizes=(5,), max_iter=300, random_state=0,
                           learning_rate_init=0.01).fit(X, y)  # fmt: skip
    assert clf.network_.sizes[-1] == 1 and clf.network_.cost_name == "cross_entropy"
    assert clf.out_activation_ == "logistic"
    proba = clf.predict_proba(X)
    assert proba.shape == (60, 2)
    assert np.array_equal(clf.predict(X), clf.classes_[(proba[:, 1] > 0.5).astype(int)])
    assert clf.score(X, y) > 0.9


def test_nielsen_style_classifier(digits):
    (X, y), (Xt, yt) = digits
    clf = nb.MLPClassifier(hidden_layer_sizes=(30,), activation="logistic", solver="sgd",
                           momentum=0.0, learning_rate_init=3.0, batch_size=10, alpha=0.0,
                           cost="quadratic", init="large", max_iter=10,
                           random_state=0)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
        clf.fit(X, y)
    assert clf.network_.activations == ("sigmoid", "sigmoid")
    assert clf.network_.cost_name == "quadratic" and clf.network_.optimizer == "sgd"
    assert clf.score(Xt, yt) > 0.85


def test_early_stopping_and_validation_scores(digits):
    (X, y), _ = digits
    clf = nb.MLPClassifier(hidden_layer_sizes=(20,), early_stopping=True, n_iter_no_change=3,
                           max_iter=200, learning_rate_init=0.01, random_state=0)  # fmt: skip
    clf.fit(X, y)
    assert clf.n_iter_ < 200
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)


def test_partial_fit_and_warm_start(digits):
    (X, y), (Xt, yt) = digits
    clf = nb.MLPClassifier(hidden_layer_sizes=(20,), learning_rate_init=0.01, random_state=0)
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(X[:100], y[:100])
    for start in range(0, len(X), 200):
        clf.partial_fit(X[start : start + 200], y[start : start + 200], classes=np.arange(10))
    assert clf.n_iter_ == len(clf.loss_curve_) == 8
    # warm_start: a second fit continues the same network.
    reg = nb.MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, warm_start=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
        reg.fit(X, y.astype(float))
        net = reg.network_
        reg.fit(X, y.astype(float))
    assert reg.network_ is net and net.epochs_trained == 10 and len(reg.loss_curve_) == 10


def test_same_random_state_same_model_and_pickle(digits):
    (X, y), (Xt, _) = digits
    kw = dict(hidden_layer_sizes=(10,), max_iter=3, random_state=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
        a = nb.MLPClassifier(**kw).fit(X, y)
        b = clone(a).fit(X, y)
    assert np.array_equal(a.network_.params, b.network_.params)
    c = pickle.loads(pickle.dumps(a))
    assert np.array_equal(c.predict_proba(Xt), a.predict_proba(Xt))
    assert a.get_params()["hidden_layer_sizes"] == (10,)
    assert a.set_params(alpha=0.5).alpha == 0.5


def test_regressor_multioutput(rng):
    X = rng.standard_normal((80, 3))
    Y = np.column_stack([X[:, 0] - X[:, 1], 0.5 * X[:, 2]])
    reg = nb.MLPRegressor(hidden_layer_sizes=(16,), max_iter=400, learning_rate_init=0.01,
                          random_state=0).fit(X, Y)  # fmt: skip
    assert reg.predict(X).shape == (80, 2)
    assert reg.score(X, Y) > 0.9
    assert reg.out_activation_ == "identity"


def test_bad_hyper_parameters_are_explained(rng):
    X, y = rng.standard_normal((10, 2)), np.arange(10) % 2
    for kw, match in [
        ({"solver": "lbfgs"}, "lbfgs"),
        ({"activation": "softplus"}, "activation"),
        ({"learning_rate": "cosine"}, "learning_rate"),
        ({"hidden_layer_sizes": (0,)}, "hidden_layer_sizes"),
        ({"batch_size": 0}, "batch_size"),
        ({"cost": "hinge"}, "cost"),
    ]:
        with pytest.raises(ValueError, match=match):
            nb.MLPClassifier(**kw).fit(X, y)


def run_python(code):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, check=False)  # fmt: skip


def test_import_does_not_pull_in_sklearn_or_matplotlib():
    out = run_python("""
        import sys, nbbackprop
        print("sklearn" in sys.modules, "matplotlib" in sys.modules)
    """)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_estimators_work_without_sklearn():
    out = run_python("""
        import sys, warnings
        warnings.simplefilter("ignore")
        sys.modules["sklearn"] = None  # any import of scikit-learn now fails
        import numpy as np
        import nbbackprop as nb
        from nbbackprop import sklearn as nbsk
        assert not nbsk.HAVE_SKLEARN
        (X, y), (Xt, yt) = nb.datasets.load_digits()
        clf = nb.MLPClassifier(hidden_layer_sizes=(20,), max_iter=20, random_state=0,
                               learning_rate_init=0.01)
        clf.fit(X, y)
        assert clf.score(Xt, yt) > 0.9, clf.score(Xt, yt)
        assert clf.get_params()["max_iter"] == 20 and "MLPClassifier(" in repr(clf)
        t = y.astype(float)
        reg = nb.MLPRegressor(hidden_layer_sizes=(8,), max_iter=50).fit(X, t)
        r2 = 1 - ((t - reg.predict(X)) ** 2).sum() / ((t - t.mean()) ** 2).sum()
        print("ok", abs(reg.score(X, t) - r2) < 1e-12)
    """)
    assert out.stdout.split() == ["ok", "True"], out.stderr
