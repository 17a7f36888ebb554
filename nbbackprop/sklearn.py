"""scikit-learn-compatible estimators: :class:`MLPClassifier` and :class:`MLPRegressor`.

They follow scikit-learn's conventions and spell their hyper-parameters as
``sklearn.neural_network.MLPClassifier`` does, but train a
:class:`nbbackprop.Network` with the package's looped kernels. scikit-learn is an
optional extra (``pip install 'nbbackprop[sklearn]'``): when it is installed
the estimators inherit ``BaseEstimator`` and the mixins and validate their
input with its tools; without it they still work, with a small stand-in for
``get_params``/``set_params`` and NumPy input checks.

Differences from scikit-learn's MLP, all documented in ``docs/training.md``:

- ``solver`` is ``"sgd"`` or ``"adam"`` (no ``"lbfgs"``); ``"sgd"`` with
  ``momentum > 0`` is classical or Nesterov momentum as in scikit-learn.
- ``learning_rate="invscaling"`` decays per epoch, η/(epoch+1)^power_t, not per
  sample; ``"adaptive"`` divides η by 5 after ``n_iter_no_change`` epochs without
  improvement for every solver.
- ``alpha`` is scikit-learn's L2 term; it is passed to the network as
  ``lmbda = alpha * n_train / batch_size`` (equal per-update decay).
- No ``sample_weight``.
"""

from __future__ import annotations

import inspect
import numbers
import warnings

import numpy as np

from .network import Network

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted

    try:
        from sklearn.utils.validation import validate_data
    except ImportError:  # scikit-learn < 1.6

        def validate_data(estimator, *args, **kwargs):
            return estimator._validate_data(*args, **kwargs)

    HAVE_SKLEARN = True
except ImportError:  # pragma: no cover - exercised in a subprocess by the tests
    HAVE_SKLEARN = False

    class ConvergenceWarning(UserWarning):
        """Training stopped at max_iter before the loss converged."""

    class BaseEstimator:
        """A stand-in for scikit-learn's: hyper-parameters from the constructor's signature."""

        def get_params(self, deep=True):
            names = inspect.signature(type(self).__init__).parameters
            return {name: getattr(self, name) for name in names if name != "self"}

        def set_params(self, **params):
            valid = self.get_params()
            for key, value in params.items():
                if key not in valid:
                    raise ValueError(f"Invalid parameter {key!r} for estimator {self!r}")
                setattr(self, key, value)
            return self

        def __repr__(self):
            args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
            return f"{type(self).__name__}({args})"

    class ClassifierMixin:
        def score(self, X, y):
            return float(np.mean(self.predict(X) == np.asarray(y)))

    class RegressorMixin:
        def score(self, X, y):
            y = np.asarray(y, dtype=np.float64)
            pred = np.asarray(self.predict(X), dtype=np.float64).reshape(y.shape)
            ss_res = ((y - pred) ** 2).sum(axis=0)
            ss_tot = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
            return float(np.mean(1 - ss_res / ss_tot))

    def check_random_state(seed):
        if seed is None or isinstance(seed, numbers.Integral):
            return np.random.RandomState(seed)
        return seed

    def check_is_fitted(estimator):
        if not hasattr(estimator, "network_"):
            raise AttributeError(
                f"This {type(estimator).__name__} instance is not fitted yet; call fit first"
            )

    def check_classification_targets(y):
        if np.asarray(y).dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
            raise ValueError("Unknown label type: continuous targets for a classifier")

    def validate_data(estimator, X, y="no_validation", reset=True, **kwargs):
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"Expected 2D array, got {X.ndim}D array instead")
        if X.dtype.kind not in "biuf":
            raise ValueError(f"Expected a numeric array, got dtype {X.dtype}")
        X = X.astype(kwargs.get("dtype", np.float64))
        if not np.isfinite(X).all():
            raise ValueError("Input X contains NaN or infinity")
        if reset:
            estimator.n_features_in_ = X.shape[1]
        elif X.shape[1] != estimator.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(estimator).__name__} is expecting "
                f"{estimator.n_features_in_} features as input"
            )
        if isinstance(y, str) and y == "no_validation":
            return X
        y = np.asarray(y)
        if y.shape[0] != X.shape[0]:
            raise ValueError("X and y have inconsistent numbers of samples")
        return X, y


__all__ = ["MLPClassifier", "MLPRegressor", "ConvergenceWarning", "HAVE_SKLEARN"]

_ACTIVATION_NAMES = {"logistic": "sigmoid", "sigmoid": "sigmoid", "tanh": "tanh",
                     "relu": "relu", "identity": "identity"}  # fmt: skip
_SCHEDULES = {"constant": "constant", "invscaling": "invscaling", "adaptive": "plateau"}


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: hyper-parameters and the training loop."""

    _parameter_names = ()

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        init="glorot",
        cost=None,
        dtype="float64",
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.init = init
        self.cost = cost
        self.dtype = dtype

    # ------------------------------------------------------------ set-up
    def _check_params(self):
        if self.solver not in ("sgd", "adam"):
            raise ValueError(
                f"solver: expected 'sgd' or 'adam' (nbbackprop has no 'lbfgs'), got {self.solver!r}"
            )
        if self.activation not in _ACTIVATION_NAMES:
            raise ValueError(
                f"activation: expected one of {sorted(_ACTIVATION_NAMES)}, got {self.activation!r}"
            )
        if self.learning_rate not in _SCHEDULES:
            raise ValueError(
                f"learning_rate: expected one of {sorted(_SCHEDULES)}, got {self.learning_rate!r}"
            )
        hidden = self.hidden_layer_sizes
        if isinstance(hidden, numbers.Integral):
            hidden = (hidden,)
        hidden = list(hidden)
        if any(isinstance(h, bool) or not isinstance(h, numbers.Integral) or h < 1 for h in hidden):
            raise ValueError(
                f"hidden_layer_sizes: expected positive integers, got {self.hidden_layer_sizes!r}"
            )
        for name in ("max_iter", "n_iter_no_change"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if not (isinstance(self.alpha, numbers.Real) and self.alpha >= 0):
            raise ValueError(f"alpha: expected a number >= 0, got {self.alpha!r}")
        if not (isinstance(self.learning_rate_init, numbers.Real) and self.learning_rate_init > 0):
            raise ValueError(
                f"learning_rate_init: expected a number > 0, got {self.learning_rate_init!r}"
            )
        bs = self.batch_size
        if bs != "auto" and (
            isinstance(bs, bool) or not isinstance(bs, numbers.Integral) or bs < 1
        ):
            raise ValueError(f"batch_size: expected 'auto' or a positive integer, got {bs!r}")
        return [int(h) for h in hidden]

    def _optimizer(self):
        if self.solver == "adam":
            return "adam"
        if self.momentum == 0:
            return "sgd"
        return "nesterov" if self.nesterovs_momentum else "momentum"

    def _batch(self, n):
        return min(200, n) if self.batch_size == "auto" else min(int(self.batch_size), n)

    def _fit_kwargs(self, n_train, batch):
        # scikit-learn adds alpha * W / m to each mini-batch's mean gradient; the
        # network adds (lmbda / n) * W: the same decay when lmbda = alpha * n / m.
        return dict(
            batch_size=batch, eta=float(self.learning_rate_init), shuffle=bool(self.shuffle),
            lmbda=float(self.alpha) * n_train / batch, optimizer=self._optimizer(),
            momentum=float(self.momentum), beta1=float(self.beta_1),
            beta2=float(self.beta_2), epsilon=float(self.epsilon),
            schedule=_SCHEDULES[self.learning_rate], power_t=float(self.power_t),
            gamma=0.2, plateau_patience=int(self.n_iter_no_change) + 1, tol=float(self.tol),
        )  # fmt: skip

    def _seed(self):
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _new_network(self, n_features, n_outputs, out_activation, cost, seed):
        hidden = self._check_params()
        act = _ACTIVATION_NAMES[self.activation]
        sizes = [n_features, *hidden, n_outputs]
        return Network(sizes, activation=[act] * len(hidden) + [out_activation], cost=cost,
                       dtype=self.dtype, seed=seed, init=self.init)  # fmt: skip

    def _publish(self):
        net = self.network_
        # scikit-learn's layout is (n_in, n_out): transposed views into the network.
        self.coefs_ = [W.T for W in net.weights]
        self.intercepts_ = list(net.biases)
        self.n_layers_ = len(net.sizes)
        self.n_outputs_ = net.sizes[-1]
        self.t_ = int(net.step[0])

    def _train(self, X, T, y_raw, *, first, incremental):
        """Fit the network on inputs X and network targets T (y_raw: for stratifying)."""
        net = self.network_
        seed = self._seed() if first else None
        if incremental:
            kw = self._fit_kwargs(X.shape[0], self._batch(X.shape[0]))
            for name in ("gamma", "plateau_patience", "tol"):
                kw.pop(name)
            if kw["schedule"] == "plateau":
                kw["schedule"] = "constant"
            hist = net.partial_fit(X, T, seed=seed, **kw)
            self.n_iter_ = getattr(self, "n_iter_", 0) + 1
        else:
            val = None
            if self.early_stopping:
                stratify = y_raw if self._stratify else None
                X, Xv, T, Tv = train_test_split(
                    X, T, test_size=self.validation_fraction, stratify=stratify,
                    random_state=seed,
                )  # fmt: skip
                val = (Xv, Tv)
            kw = self._fit_kwargs(X.shape[0], self._batch(X.shape[0]))
            metric = self._val_metric if self.early_stopping else "train_cost"
            if kw["schedule"] == "plateau" and not self.early_stopping:
                metric = "train_cost"
            callback = None
            if self.verbose:

                def callback(epoch, history):
                    print(f"Iteration {epoch + 1}, loss = {history['train_cost'][-1]:.8f}")

            hist = net.fit(
                X, T, epochs=int(self.max_iter), validation_data=val, seed=seed,
                early_stopping=True, patience=int(self.n_iter_no_change) + 1,
                metric=metric, restore_best=bool(self.early_stopping), callback=callback,
                monitor=(metric,) if metric != "train_cost" else (), **kw,
            )  # fmt: skip
            self.n_iter_ = len(hist["epoch"])
            if self.early_stopping:
                self.validation_scores_ = list(hist[metric])
                pick = max if metric.endswith("accuracy") else min
                self.best_validation_score_ = pick(hist[metric])
            if self.n_iter_ == self.max_iter:
                warnings.warn(
                    f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and "
                    "the optimization hasn't converged yet.",
                    ConvergenceWarning,
                    stacklevel=3,
                )
        self.loss_curve_ = list(getattr(self, "loss_curve_", [])) + hist["train_cost"]
        self.loss_ = self.loss_curve_[-1]
        self.best_loss_ = min(self.loss_curve_)
        self._publish()
        return self

    def _np_dtype(self):
        return np.float32 if str(np.dtype(self.dtype)) == "float32" else np.float64


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multi-layer perceptron classifier trained by nbbackprop's looped kernels.

    The hyper-parameters are scikit-learn's ``MLPClassifier``'s (see the module
    docstring for the differences), plus ``init`` (``"glorot"``, ``"he"``,
    ``"default"``, ``"large"``), ``cost`` (``None``: softmax with the
    log-likelihood for several classes, one sigmoid unit with cross-entropy for
    two, as scikit-learn; or ``"quadratic"``/``"cross_entropy"`` with one
    sigmoid output per class, Nielsen's chapter 1 and 3 networks) and ``dtype``.

    Fitted attributes: ``classes_`` (any label type), ``coefs_`` (list of
    ``(n_in, n_out)`` arrays), ``intercepts_``, ``loss_curve_``, ``loss_``,
    ``best_loss_``, ``n_iter_``, ``t_``, ``n_layers_``, ``n_outputs_``,
    ``out_activation_``, ``n_features_in_``, ``validation_scores_`` and
    ``best_validation_score_`` with early stopping, and ``network_``, the
    :class:`nbbackprop.Network`.
    """

    _stratify = True
    _val_metric = "val_accuracy"

    def _targets(self, y):
        idx = np.searchsorted(self.classes_, y)
        if not np.array_equal(self.classes_[np.clip(idx, 0, len(self.classes_) - 1)], y):
            raise ValueError(
                f"y contains labels not among the classes {self.classes_.tolist()} seen first"
            )
        if self._binary:
            return idx.astype(self._np_dtype()).reshape(-1, 1)
        return idx

    def _output(self):
        k = len(self.classes_)
        cost = self.cost
        if cost is None:
            return (1, "sigmoid", "cross_entropy") if k == 2 else (k, "softmax", "log_likelihood")
        if cost == "log_likelihood":
            return k, "softmax", cost
        if cost in ("quadratic", "cross_entropy"):
            return k, "sigmoid", cost
        raise ValueError(
            f"cost: expected None, 'log_likelihood', 'cross_entropy' or 'quadratic', got {cost!r}"
        )

    def _setup(self, X, classes, seed_first):
        self.classes_ = np.asarray(classes)
        if len(self.classes_) < 2:
            raise ValueError(
                "Classifier can't train when only one class is present: got the single class "
                f"{self.classes_.tolist()}"
            )
        n_out, out_act, cost = self._output()
        self._binary = n_out == 1
        self.out_activation_ = {"sigmoid": "logistic"}.get(out_act, out_act)
        self.network_ = self._new_network(X.shape[1], n_out, out_act, cost, seed_first)
        for name in ("loss_curve_", "n_iter_", "validation_scores_", "best_validation_score_"):
            self.__dict__.pop(name, None)

    def _validate_y(self, X, y, reset):
        X, y = validate_data(self, X, y, reset=reset, dtype=self._np_dtype(), y_numeric=False)
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn(
                "A column-vector y was passed when a 1d array was expected. Please change the "
                "shape of y to (n_samples,), for example using ravel().",
                _data_conversion_warning(),
                stacklevel=3,
            )
            y = y.ravel()
        if y.ndim != 1:
            raise ValueError(
                f"y: expected a 1-D array of class labels, got shape {y.shape} "
                "(multilabel targets are not supported)"
            )
        check_classification_targets(y)
        return X, y

    def fit(self, X, y):
        """Train on ``X`` (n_samples, n_features) and class labels ``y`` of any type."""
        self._check_params()
        X, y = self._validate_y(X, y, reset=not (self.warm_start and hasattr(self, "network_")))
        classes = np.unique(y)
        if not (self.warm_start and hasattr(self, "network_")):
            self._setup(X, classes, self._seed())
        elif not np.isin(classes, self.classes_).all():
            raise ValueError(
                f"warm_start: y has classes {np.setdiff1d(classes, self.classes_).tolist()} not "
                f"seen in the first fit ({self.classes_.tolist()})"
            )
        first = self.network_.epochs_trained == 0
        return self._train(X, self._targets(y), y, first=first, incremental=False)

    def partial_fit(self, X, y, classes=None):
        """One epoch over ``X``, ``y``; the first call needs ``classes`` (all labels)."""
        first = not hasattr(self, "network_")
        if first:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            self._check_params()
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(
                f"`classes={list(classes)}` is not the same as on last call to partial_fit, "
                f"was: {self.classes_.tolist()}"
            )
        X, y = self._validate_y(X, y, reset=first)
        if first:
            self._setup(X, np.unique(np.asarray(classes)), self._seed())
        return self._train(X, self._targets(y), y, first=first, incremental=True)

    def predict_proba(self, X):
        """Class probabilities, columns in the order of ``classes_``."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=self._np_dtype())
        a = self.network_.feedforward(X).astype(np.float64)
        if self._binary:
            return np.hstack([1 - a, a])
        if self.network_.activations[-1] != "softmax":
            a = a / np.maximum(a.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
        return a

    def predict_log_proba(self, X):
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """The most probable class of each row of ``X``."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = False
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multi-layer perceptron regressor: identity output, quadratic cost.

    Hyper-parameters as :class:`MLPClassifier` (``cost`` must be ``None`` or
    ``"quadratic"``). ``y`` may have one or several columns; ``predict`` returns
    the shape it was fitted with. The quadratic cost is ½‖y − a‖² per sample, the
    mean over samples; for one output it equals scikit-learn's ``squared_error``
    loss.
    """

    _stratify = False
    _val_metric = "val_cost"

    def _prepare(self, X, y, reset):
        X, y = validate_data(self, X, y, reset=reset, dtype=self._np_dtype(), y_numeric=True,
                             multi_output=True)  # fmt: skip
        y = np.asarray(y, dtype=self._np_dtype())
        T = y.reshape(-1, 1) if y.ndim == 1 else y
        return X, y, T

    def _setup(self, X, y, T):
        if self.cost not in (None, "quadratic"):
            raise ValueError(f"cost: the regressor uses None/'quadratic', got {self.cost!r}")
        self._y_1d = y.ndim == 1
        self.out_activation_ = "identity"
        self.network_ = self._new_network(X.shape[1], T.shape[1], "identity", "quadratic",
                                          self._seed())  # fmt: skip
        for name in ("loss_curve_", "n_iter_", "validation_scores_", "best_validation_score_"):
            self.__dict__.pop(name, None)

    def fit(self, X, y):
        """Train on ``X`` (n_samples, n_features) and targets ``y`` (n_samples,) or 2-D."""
        self._check_params()
        warm = self.warm_start and hasattr(self, "network_")
        X, y, T = self._prepare(X, y, reset=not warm)
        if not warm:
            self._setup(X, y, T)
        first = self.network_.epochs_trained == 0
        return self._train(X, T, None, first=first, incremental=False)

    def partial_fit(self, X, y):
        """One epoch over ``X``, ``y``."""
        first = not hasattr(self, "network_")
        if first:
            self._check_params()
        X, y, T = self._prepare(X, y, reset=first)
        if first:
            self._setup(X, y, T)
        return self._train(X, T, None, first=first, incremental=True)

    def predict(self, X):
        """Predicted targets, shaped like the ``y`` given to fit."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=self._np_dtype())
        out = self.network_.feedforward(X)
        return out.ravel() if self._y_1d else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


def _data_conversion_warning():
    if HAVE_SKLEARN:
        from sklearn.exceptions import DataConversionWarning

        return DataConversionWarning
    return UserWarning
