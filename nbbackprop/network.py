"""The :class:`Network`: parameters, buffers and the public training API.

A network owns one contiguous parameter buffer; ``weights[l]`` and ``biases[l]``
are views into it (all weights first, then all biases), so there is one array to
save, to copy to a GPU and to check for NaN. Per-batch buffers (z, a, δ,
gradients) are allocated once per batch capacity and reused: the training loop
itself allocates nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from . import _guards, orchestration
from . import _validation as v
from . import functions as fn
from .kernels import cpu_train

INITS = ("default", "large", "glorot", "he")
OPTIMIZERS = {
    "sgd": cpu_train.SGD,
    "momentum": cpu_train.MOMENTUM,
    "nesterov": cpu_train.NESTEROV,
    "adam": cpu_train.ADAM,
}
_STATE_ROWS = {"sgd": 0, "momentum": 1, "nesterov": 1, "adam": 2}
#: Seconds of work one compiled call should do, so that Ctrl-C is answered promptly
#: (it is seen between calls) while the per-call overhead stays negligible.
_CHUNK_SECONDS = 0.25
_ASSUMED_FLOPS = 1.0e10


class Workspace:
    """The per-batch buffers of one network for mini-batches of up to ``cap`` samples."""

    def __init__(self, sizes: tuple[int, ...], cap: int, dtype: np.dtype, n_params: int):
        self.cap = cap
        self.abuf = np.zeros(cap * sum(sizes), dtype=dtype)
        self.zbuf = np.zeros(cap * sum(sizes[1:]), dtype=dtype)
        self.dbuf = np.zeros(cap * sum(sizes[1:]), dtype=dtype)
        self.ybuf = np.zeros(cap * sizes[-1], dtype=dtype)
        self.costs = np.zeros(cap, dtype=np.float64)
        self.grads = np.zeros(n_params, dtype=dtype)

    @property
    def nbytes(self) -> int:
        return sum(
            a.nbytes for a in (self.abuf, self.zbuf, self.dbuf, self.ybuf, self.costs, self.grads)
        )


class Network:
    """A fully-connected feed-forward network trained by backpropagation.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths, input first: ``[784, 30, 10]`` has one hidden layer of 30.
    activation : str or sequence of str
        ``"sigmoid"``, ``"tanh"``, ``"relu"`` or ``"identity"``, for every weight
        layer, or one name per weight layer (``len(sizes) - 1`` names).
    output_activation : str, optional
        Overrides the output layer's activation (also ``"softmax"``). By default
        the output uses ``activation``, except that ``cost="log_likelihood"``
        implies ``"softmax"``.
    cost : str
        ``"quadratic"``, ``"cross_entropy"`` (sigmoid output) or
        ``"log_likelihood"`` (softmax output).
    dtype : str
        ``"float64"`` or ``"float32"``.
    init : str
        ``"default"``: N(0, 1/n_in) weights and N(0, 1) biases (Nielsen's
        network2); ``"large"``: N(0, 1) for both (Nielsen's network.py);
        ``"glorot"``: uniform ±sqrt(6/(n_in+n_out)), zero biases; ``"he"``:
        N(0, 2/n_in), zero biases.
    seed : int, optional
        Seeds the initialisation and the network's own random stream (used by
        :meth:`fit` for shuffling when it is given no seed).
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str | Sequence[str] = "sigmoid",
        cost: str = "quadratic",
        dtype: str = "float64",
        seed: int | None = None,
        *,
        output_activation: str | None = None,
        init: str = "default",
        strategy: str = "auto",
    ):
        self.sizes = v.check_sizes(sizes)
        self.cost_name = v.check_choice(cost, "cost", fn.COSTS)
        self.dtype = v.check_dtype(dtype)
        self.init = v.check_choice(init, "init", INITS)
        self.activations = self._check_activations(activation, output_activation)
        self.strategy = v.check_choice(strategy, "strategy", orchestration.CPU_STRATEGIES)
        seed = v.check_seed(seed)
        L = len(self.sizes) - 1
        self._acts = np.array([fn.ACTIVATIONS[a] for a in self.activations], dtype=np.int64)
        self._sizes = np.array(self.sizes, dtype=np.int64)
        n_w = [self.sizes[l + 1] * self.sizes[l] for l in range(L)]
        self._w_off = np.concatenate([[0], np.cumsum(n_w)[:-1]]).astype(np.int64)
        self._b_off = (sum(n_w) + np.concatenate([[0], np.cumsum(self.sizes[1:])[:-1]])).astype(
            np.int64
        )
        self._a_off = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self._z_off = np.concatenate([[0], np.cumsum(self.sizes[1:])[:-1]]).astype(np.int64)
        self.n_weights = int(sum(n_w))
        self.n_params = self.n_weights + int(sum(self.sizes[1:]))
        self.params = np.zeros(self.n_params, dtype=self.dtype)
        self.weights = [
            self.params[o : o + self.sizes[l + 1] * self.sizes[l]].reshape(
                self.sizes[l + 1], self.sizes[l]
            )
            for l, o in enumerate(self._w_off)
        ]
        self.biases = [self.params[o : o + self.sizes[l + 1]] for l, o in enumerate(self._b_off)]
        self._init_rng = np.random.default_rng(seed)
        self.rng = np.random.default_rng(self._init_rng.integers(2**63))
        self._initialise(self._init_rng)
        self._workspaces: dict[int, Workspace] = {}
        self._opt_name: str | None = None
        self.opt_state = np.zeros((0, self.n_params), dtype=self.dtype)
        self.step = np.zeros(1, dtype=np.int64)

    # ------------------------------------------------------------------ set-up
    def _check_activations(self, activation, output_activation) -> tuple[str, ...]:
        L = len(self.sizes) - 1
        hidden = ("sigmoid", "tanh", "relu", "identity")
        if isinstance(activation, str):
            v.check_choice(activation, "activation", hidden)
            names = [activation] * L
        else:
            try:
                names = list(activation)
            except TypeError:
                raise TypeError(
                    f"activation: expected a name or one name per weight layer ({L}), "
                    f"got {activation!r}"
                ) from None
            if len(names) != L:
                raise ValueError(
                    f"activation: expected one name or {L} names (one per weight layer), "
                    f"got {len(names)}"
                )
            for i, a in enumerate(names[:-1]):
                v.check_choice(a, f"activation[{i}]", hidden)
            v.check_choice(names[-1], f"activation[{L - 1}]", fn.ACTIVATIONS)
        if output_activation is not None:
            names[-1] = v.check_choice(output_activation, "output_activation", fn.ACTIVATIONS)
        elif self.cost_name == "log_likelihood" and isinstance(activation, str):
            names[-1] = "softmax"
        allowed = fn.COST_OUTPUTS[self.cost_name]
        if names[-1] not in allowed:
            raise ValueError(
                f"output_activation: cost={self.cost_name!r} needs an output activation in "
                f"{list(allowed)}, got {names[-1]!r}"
            )
        return tuple(names)

    def _initialise(self, rng: np.random.Generator) -> None:
        for W, b in zip(self.weights, self.biases, strict=True):
            n_out, n_in = W.shape
            if self.init == "large":
                W[...] = rng.standard_normal((n_out, n_in))
                b[...] = rng.standard_normal(n_out)
            elif self.init == "default":
                W[...] = rng.standard_normal((n_out, n_in)) / math.sqrt(n_in)
                b[...] = rng.standard_normal(n_out)
            elif self.init == "glorot":
                limit = math.sqrt(6.0 / (n_in + n_out))
                W[...] = rng.uniform(-limit, limit, (n_out, n_in))
                b[...] = 0
            else:
                W[...] = rng.standard_normal((n_out, n_in)) * math.sqrt(2.0 / n_in)
                b[...] = 0

    def _workspace(self, cap: int) -> Workspace:
        ws = self._workspaces.get(cap)
        if ws is None:
            # Keep at most a couple of capacities alive (training and inference).
            if len(self._workspaces) >= 3:
                self._workspaces.pop(next(iter(self._workspaces)))
            ws = self._workspaces[cap] = Workspace(self.sizes, cap, self.dtype, self.n_params)
        return ws

    def _layout(self):
        return (self._sizes, self._acts)

    # ------------------------------------------------------------- orchestration
    def plan(self, batch_size: int = 10, strategy: str | None = None) -> orchestration.Plan:
        """The kernels that run for mini-batches of ``batch_size``, and why."""
        batch_size = v.check_int(batch_size, "batch_size", minimum=1)
        strategy = self.strategy if strategy is None else strategy
        v.check_choice(strategy, "strategy", orchestration.CPU_STRATEGIES)
        return orchestration.plan_cpu(self.sizes, batch_size, strategy, self.n_params)

    # ---------------------------------------------------------------- inference
    def feedforward(self, X) -> np.ndarray:
        """Output activations a^L for each row of ``X`` (shape (m, sizes[0]))."""
        _guards.check_network_state(self)
        X = v.check_inputs(X, self.sizes[0], self.dtype)
        cap = min(X.shape[0], 256)
        ws = self._workspace(cap)
        out = np.empty((X.shape[0], self.sizes[-1]), dtype=self.dtype)
        par = self.plan(cap).flags
        cpu_train.forward_rows(
            self.params, self._sizes, self._acts, self._w_off, self._b_off, self._a_off,
            self._z_off, X, out, ws.abuf, ws.zbuf, cap, par,
        )  # fmt: skip
        return out

    def predict(self, X) -> np.ndarray:
        """Integer labels: the index of the largest output for each row of ``X``."""
        return np.argmax(self.feedforward(X), axis=1)

    def evaluate(self, X, y) -> float:
        """Accuracy in [0, 1]; ``y`` is integer labels (m,) or target rows (m, sizes[-1])."""
        X = v.check_inputs(X, self.sizes[0], self.dtype)
        labels = self._labels(y, X.shape[0])
        return float(np.mean(self.predict(X) == labels))

    def _labels(self, y, m: int) -> np.ndarray:
        arr = v._as_numeric_array(y, "y")
        if arr.ndim == 2:
            v.check_targets(arr, m, self.sizes[-1], self.dtype)
            return np.argmax(arr, axis=1)
        if arr.ndim != 1 or arr.shape[0] != m:
            raise ValueError(
                f"y: expected {m} integer labels or target rows of shape ({m}, {self.sizes[-1]}), "
                f"got shape {arr.shape}"
            )
        return v.check_labels(arr, self.sizes[-1])

    # ----------------------------------------------------------------- gradients
    def _batch(self, X, Y):
        _guards.check_network_state(self)
        X = v.check_inputs(X, self.sizes[0], self.dtype)
        Y = v.check_targets(Y, X.shape[0], self.sizes[-1], self.dtype, "Y", self.cost_name)
        m = X.shape[0]
        ws = Workspace(self.sizes, m, self.dtype, self.n_params)
        total = cpu_train.batch_gradients(
            self.params, ws.grads, self._sizes, self._acts, fn.COSTS[self.cost_name],
            self._w_off, self._b_off, self._a_off, self._z_off, X, Y, ws.abuf, ws.zbuf,
            ws.dbuf, ws.costs, self.plan(m).flags,
        )  # fmt: skip
        return total, m, ws

    def backprop(self, X, Y) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Gradients of the mean cost over the rows of ``X``, ``Y``.

        Returns ``(nabla_w, nabla_b)``, lists shaped like :attr:`weights` and
        :attr:`biases`: ∂C/∂w and ∂C/∂b for C = (1/m) Σ_x C_x (no L2 term).
        """
        _, m, ws = self._batch(X, Y)
        g = ws.grads / m
        nabla_w = [
            g[o : o + W.size].reshape(W.shape)
            for o, W in zip(self._w_off, self.weights, strict=True)
        ]
        nabla_b = [g[o : o + b.size] for o, b in zip(self._b_off, self.biases, strict=True)]
        return nabla_w, nabla_b

    def cost(self, X, Y, lmbda: float = 0.0) -> float:
        r"""The cost C = (1/n) Σ_x C_x over the rows of ``X``, ``Y`` (equation (4)).

        With ``lmbda`` > 0 the L2 term (λ/2n) Σ w² is added, n the number of rows,
        as in Nielsen's ``total_cost``.
        """
        lmbda = v.check_float(lmbda, "lmbda", nonnegative=True)
        X = v.check_inputs(X, self.sizes[0], self.dtype)
        Y = v.check_targets(Y, X.shape[0], self.sizes[-1], self.dtype, "Y", self.cost_name)
        total = 0.0
        cap = min(X.shape[0], 1024)
        for start in range(0, X.shape[0], cap):
            t, _, _ = self._batch(X[start : start + cap], Y[start : start + cap])
            total += t
        c = total / X.shape[0]
        if lmbda:
            c += 0.5 * (lmbda / X.shape[0]) * float(np.sum(self.params[: self.n_weights] ** 2))
        return c

    # ------------------------------------------------------------------ training
    def _set_optimizer(self, name: str) -> None:
        if self._opt_name != name:
            self._opt_name = name
            self.opt_state = np.zeros((_STATE_ROWS[name], self.n_params), dtype=self.dtype)
            self.step[0] = 0

    def fit(
        self,
        X,
        y,
        epochs: int = 30,
        batch_size: int = 10,
        eta: float = 3.0,
        validation_data=None,
        seed: int | None = None,
        *,
        shuffle: bool = True,
        lmbda: float = 0.0,
        optimizer: str = "sgd",
        momentum: float = 0.9,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
        strategy: str | None = None,
        callback: Callable[[int, dict], None] | None = None,
        on_divergence: str = "raise",
        divergence_check: str = "epoch",
    ) -> dict[str, list]:
        """Train by mini-batch gradient descent and return the per-epoch history.

        Parameters
        ----------
        X : array, shape (n, sizes[0])
            Training inputs, one sample per row.
        y : array, shape (n,) or (n, sizes[-1])
            Integer labels or target rows.
        epochs, batch_size : int
            Passes over the data, and samples per mini-batch m (the last
            mini-batch of an epoch may be shorter).
        eta : float
            Learning rate η > 0.
        validation_data : (X_val, y_val), optional
            Evaluated after every epoch (accuracy and cost).
        seed : int, optional
            Reseeds the network's shuffling stream; ``None`` continues it.
        shuffle : bool
            ``False`` keeps the data's order in every epoch.
        lmbda : float
            L2 regularisation λ ≥ 0, Nielsen's convention: weight decay
            1 − ηλ/n per update, n = len(X).
        optimizer : str
            ``"sgd"``, ``"momentum"``, ``"nesterov"`` or ``"adam"``.
        momentum, beta1, beta2, epsilon : float
            Hyper-parameters of momentum and Adam.
        strategy : str, optional
            Force a kernel strategy (see :meth:`plan`).
        callback : callable, optional
            Called as ``callback(epoch, history)`` after each epoch.
        on_divergence : str
            What to do when a mini-batch's cost or a parameter becomes NaN or
            infinite: ``"raise"`` a :class:`~nbbackprop.DivergenceError` (a
            ``FloatingPointError``) or ``"warn"`` with a
            :class:`~nbbackprop.DivergenceWarning` and return the history so far.
            Either way the network is first restored to its last finite state.
        divergence_check : str
            Which finite state is restored: ``"epoch"``, the parameters (and
            optimiser state) at the start of the diverging epoch, or ``"batch"``,
            those just before the diverging mini-batch. Both cost the same while
            training is healthy (see ``docs/reliability.md``).

        Returns
        -------
        dict
            ``"epoch"``, ``"train_cost"`` (the mean of the mini-batch costs computed
            during the epoch, before each update), and with ``validation_data``
            ``"val_accuracy"`` and ``"val_cost"``. After a divergence with
            ``on_divergence="warn"``, ``"diverged"``: the epoch, mini-batch, reason and
            cost.

        Raises
        ------
        DivergenceError
            With ``on_divergence="raise"``; its ``history`` holds the completed epochs.
        KeyboardInterrupt
            Re-raised after Ctrl-C, with the network at its last completed mini-batch
            (compiled calls are never interrupted midway); the exception's ``history``
            has ``"interrupted": True`` and ``"interrupted_at"`` (epoch, mini-batch).
        """
        X = v.check_inputs(X, self.sizes[0], self.dtype)
        Y = v.check_targets(y, X.shape[0], self.sizes[-1], self.dtype, "y", self.cost_name)
        epochs = v.check_int(epochs, "epochs", minimum=0)
        batch_size = v.check_int(batch_size, "batch_size", minimum=1)
        eta = v.check_float(eta, "eta", positive=True)
        lmbda = v.check_float(lmbda, "lmbda", nonnegative=True)
        v.check_choice(optimizer, "optimizer", OPTIMIZERS)
        momentum = v.check_float(momentum, "momentum", nonnegative=True, below=1.0)
        beta1 = v.check_float(beta1, "beta1", nonnegative=True, below=1.0)
        beta2 = v.check_float(beta2, "beta2", nonnegative=True, below=1.0)
        epsilon = v.check_float(epsilon, "epsilon", positive=True)
        seed = v.check_seed(seed)
        if not isinstance(shuffle, bool):
            raise TypeError(f"shuffle: expected True or False, got {shuffle!r}")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback: expected a callable or None, got {callback!r}")
        v.check_choice(on_divergence, "on_divergence", _guards.DIVERGENCE_ACTIONS)
        v.check_choice(divergence_check, "divergence_check", _guards.DIVERGENCE_CHECKS)
        _guards.check_network_state(self)
        val = None
        if validation_data is not None:
            try:
                Xv, yv = validation_data
            except (TypeError, ValueError):
                raise TypeError("validation_data: expected a pair (X_val, y_val)") from None
            Xv = v.check_inputs(Xv, self.sizes[0], self.dtype, name="validation_data[0]")
            Yv = v.check_targets(
                yv, Xv.shape[0], self.sizes[-1], self.dtype, "validation_data[1]", self.cost_name
            )
            val = (Xv, Yv)
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._set_optimizer(optimizer)

        n = X.shape[0]
        # One mini-batch of all n samples either way; keeps batch_size within int64.
        batch_size = min(batch_size, n)
        cap = batch_size
        ws = self._workspace(cap)
        par = self.plan(cap, strategy).flags
        hyper = np.array([eta, lmbda / n, momentum, beta1, beta2, epsilon], dtype=np.float64)
        n_batches = -(-n // batch_size)
        flops = 6.0 * sum(self.sizes[l] * self.sizes[l + 1] for l in range(len(self.sizes) - 1))
        chunk = max(1, int(_CHUNK_SECONDS * _ASSUMED_FLOPS / (flops * cap)))
        batch_costs = np.zeros(n_batches, dtype=np.float64)
        history: dict[str, list] = {"epoch": [], "train_cost": []}
        if val is not None:
            history["val_accuracy"] = []
            history["val_cost"] = []
        identity = np.arange(n, dtype=np.int64)
        order = identity

        def run(first: int, last: int) -> int:
            return cpu_train.train_batches(
                self.params, ws.grads, self.opt_state, self._sizes, self._acts,
                fn.COSTS[self.cost_name], self._w_off, self._b_off, self._a_off,
                self._z_off, X, Y, order, batch_size, first, last, ws.abuf, ws.zbuf,
                ws.dbuf, ws.ybuf, ws.costs, batch_costs, OPTIMIZERS[optimizer], hyper,
                self.step, par,
            )  # fmt: skip

        guard = _guards.TrainingGuard(
            self, on_divergence=on_divergence, check=divergence_check, eta=eta,
            n_batches=n_batches,
        )  # fmt: skip
        try:
            for epoch in range(epochs):
                order = self.rng.permutation(n).astype(np.int64) if shuffle else identity
                guard.start_epoch(epoch)
                for first in range(0, n_batches, chunk):
                    last = min(first + chunk, n_batches)
                    failure = guard.run_chunk(run, first, last, batch_costs)
                    if failure is not None:
                        return guard.stop(failure, history)
                history["epoch"].append(epoch)
                history["train_cost"].append(float(np.mean(batch_costs)))
                if val is not None:
                    history["val_accuracy"].append(self.evaluate(val[0], val[1]))
                    history["val_cost"].append(self.cost(val[0], val[1]))
                if callback is not None:
                    callback(epoch, history)
        except KeyboardInterrupt as exc:
            guard.interrupted(history, exc)
            raise
        return history

    def __repr__(self) -> str:
        return (
            f"Network(sizes={list(self.sizes)}, activation={list(self.activations)}, "
            f"cost={self.cost_name!r}, dtype={self.dtype.name!r})"
        )
