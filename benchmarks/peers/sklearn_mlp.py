"""scikit-learn's MLPRegressor with SGD: the practitioner's peer (``same_params = False``).

    MLPRegressor(hidden_layer_sizes=sizes[1:-1], activation="logistic", solver="sgd",
                 batch_size=bs, learning_rate="constant", learning_rate_init=eta,
                 momentum=0, nesterovs_momentum=False, alpha=0, shuffle=False, max_iter=1)

and one ``partial_fit(X, Y)`` per epoch (one pass, batches in order, last one short).

Why its parameters differ from the other peers: scikit-learn's regressor has an IDENTITY
output layer (``out_activation_ = "identity"``, no constructor option) and its squared-error
loss is ``mean((y - a)**2) / 2``; its back-propagated output error is ``a - y`` with no sigmoid
derivative. Hidden layers (logistic, delta *= a(1-a)), the mean over the batch and the update
``w -= eta * grad`` are the same as ours, so it does the same amount of arithmetic, plus its own
overheads (input validation of the whole X on every partial_fit, the loss of every batch).

Two output modes (constructor argument ``output``):

* ``"identity"`` - MLPRegressor exactly as shipped. With one-hot targets and a linear output,
  SGD DIVERGES at Nielsen's eta = 3.0 on W1/W2/W3 (scikit-learn then raises "Solver produced
  non-finite parameter weights"); it is stable at eta <= 0.5 on these workloads.
* ``"logistic"`` (default) - after the estimator is built its fitted attribute
  ``out_activation_`` is set to ``"logistic"``: the output is a sigmoid and the output error
  stays ``a - y`` (the cross-entropy gradient, which is exactly what MLPClassifier computes for
  multi-label targets). Stable at any eta we use, and the forward pass is the same as ours;
  parameters still differ from ours by the missing sigma'(z_L) factor.

``infer`` returns ``predict(X)``: sigmoid activations in "logistic" mode, linear outputs in
"identity" mode. ``reference_output`` names the rule ``agreement.reference_epoch`` checks it
against.

The initial parameters are installed by one ``partial_fit`` on a single zero sample (which
builds coefs_/intercepts_ and the optimizer) followed by overwriting ``coefs_[l]`` with
``weights[l].T`` (sklearn's coefs_[l] is (n_in, n_out)) and ``intercepts_[l]`` with
``biases[l]``, in place. ``learning_rate_init`` is frozen into the optimizer when it is built, so
a ``train_epoch`` with a different ``eta`` rebuilds the estimator first (about a millisecond).
"""

from __future__ import annotations

import warnings

import numpy as np

from ._base import PeerBase, as_dtype


class Peer(PeerBase):
    name = "sklearn_mlp"
    same_params = False

    def __init__(self, output: str = "logistic"):
        if output not in ("logistic", "identity"):
            raise ValueError("output must be 'logistic' or 'identity'")
        self.output = output
        self.reference_output = "logistic_ce" if output == "logistic" else "identity"

    @classmethod
    def available(cls) -> bool:
        try:
            import sklearn.neural_network  # noqa: F401
        except Exception:
            return False
        return True

    def setup(self, weights, biases, dtype) -> None:
        self.dtype = as_dtype(dtype)
        self._W0 = [np.array(w, dtype=self.dtype, copy=True) for w in weights]
        self._b0 = [np.array(b, dtype=self.dtype, copy=True).reshape(-1) for b in biases]
        self.sizes = [self._W0[0].shape[1]] + [w.shape[0] for w in self._W0]
        self.model = None
        self._eta = None
        self._build(3.0, 10)

    def _build(self, eta: float, batch_size: int) -> None:
        from sklearn.neural_network import MLPRegressor

        if self.model is None:
            Ws, bs_ = self._W0, self._b0
        else:
            Ws, bs_ = self.params()
        model = MLPRegressor(
            hidden_layer_sizes=tuple(self.sizes[1:-1]),
            activation="logistic",
            solver="sgd",
            batch_size=int(batch_size),
            learning_rate="constant",
            learning_rate_init=float(eta),
            momentum=0.0,
            nesterovs_momentum=False,
            alpha=0.0,
            shuffle=False,
            max_iter=1,
            early_stopping=False,
            random_state=0,
        )
        dt = self.dtype
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.partial_fit(
                np.zeros((1, self.sizes[0]), dtype=dt), np.zeros((1, self.sizes[-1]), dtype=dt)
            )
        if self.output == "logistic":
            model.out_activation_ = "logistic"
        for l, (w, b) in enumerate(zip(Ws, bs_, strict=True)):
            assert model.coefs_[l].shape == w.T.shape and model.coefs_[l].dtype == dt
            model.coefs_[l][...] = w.T
            model.intercepts_[l][...] = b
        self.model = model
        self._eta = float(eta)

    def train_epoch(self, X, Y, batch_size: int, eta: float) -> None:
        if self._eta != float(eta):
            self._build(eta, batch_size)
        self.model.batch_size = int(batch_size)
        X, Y = self.prepare(X, Y)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            self.model.partial_fit(X, Y)

    def infer(self, X) -> np.ndarray:
        X, _ = self.prepare(X)
        out = self.model.predict(X)
        return out.reshape(X.shape[0], -1)

    def params(self):
        m = self.model
        return ([c.T.copy() for c in m.coefs_], [b.copy() for b in m.intercepts_])
