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

from . import _guards, _threads, devices, orchestration
from . import _validation as v
from . import functions as fn
from ._aligned import ALIGN_BYTES, aligned_copy, aligned_zeros
from .kernels import cpu as cpu_kernels
from .kernels import cpu_train

INITS = ("default", "large", "glorot", "he")
OPTIMIZERS = {
    "sgd": cpu_train.SGD,
    "momentum": cpu_train.MOMENTUM,
    "nesterov": cpu_train.NESTEROV,
    "adam": cpu_train.ADAM,
}
_STATE_ROWS = {"sgd": 0, "momentum": 1, "nesterov": 1, "adam": 2}
#: Learning-rate schedules: η for an epoch from the base η (see :meth:`Network.fit`).
SCHEDULES = ("constant", "invscaling", "step", "plateau")
#: Per-epoch figures that early stopping and the plateau schedule can watch.
METRICS = ("val_cost", "val_accuracy", "train_cost", "train_accuracy")
#: Opt-in per-epoch figures for the history (``train_cost`` is always there).
MONITORS = ("train_accuracy", "val_cost", "val_accuracy")
#: Seconds of work one compiled call should do, so that Ctrl-C is answered promptly
#: (it is seen between calls) while the per-call overhead stays negligible.
_CHUNK_SECONDS = 0.25
_ASSUMED_FLOPS = 1.0e10


def chunk_batches(sizes, cap: int) -> int:
    """Mini-batches of up to ``cap`` samples per compiled call (about ``_CHUNK_SECONDS``)."""
    flops = 6.0 * sum(sizes[l] * sizes[l + 1] for l in range(len(sizes) - 1))
    return max(1, int(_CHUNK_SECONDS * _ASSUMED_FLOPS / (flops * cap)))


class Workspace:
    """The per-batch buffers of one network for mini-batches of up to ``cap`` samples."""

    def __init__(self, sizes: tuple[int, ...], cap: int, dtype: np.dtype, n_params: int):
        self.cap = cap
        # every layer's activations, then two more slots for gathered inputs (the SGD
        # driver gathers the next two mini-batches while this one's inputs are still read)
        self.abuf = aligned_zeros(cap * (sum(sizes) + 2 * sizes[0]), dtype)
        self.zbuf = aligned_zeros(cap * sum(sizes[1:]), dtype)
        self.dbuf = aligned_zeros(cap * sum(sizes[1:]), dtype)
        self.ybuf = aligned_zeros(cap * sizes[-1], dtype)
        self.costs = aligned_zeros(cap, np.float64)
        self.grads = aligned_zeros(n_params, dtype)

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
    dtype : str, optional
        ``"float64"`` or ``"float32"``; by default float32 with ``device="cuda"``
        (the GPU default) and float64 otherwise.
    init : str
        ``"default"``: N(0, 1/n_in) weights and N(0, 1) biases (Nielsen's
        network2); ``"large"``: N(0, 1) for both (Nielsen's network.py);
        ``"glorot"``: uniform ±sqrt(6/(n_in+n_out)), zero biases; ``"he"``:
        N(0, 2/n_in), zero biases.
    seed : int, optional
        Seeds the initialisation and the network's own random stream (used by
        :meth:`fit` for shuffling when it is given no seed).
    strategy : str
        The kernel strategy (see :meth:`plan`): ``"auto"``, the CPU's ``"serial"``
        and ``"parallel"``, the GPU's ``"layered"`` and ``"fused"``.
    device : str
        ``"auto"`` (a usable GPU when the work per mini-batch is large enough to
        gain from it, else the CPU), ``"cpu"`` or ``"cuda"``. ``"cuda"`` without a
        usable GPU raises :class:`nbbackprop.devices.CudaUnavailableError` saying why.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str | Sequence[str] = "sigmoid",
        cost: str = "quadratic",
        dtype: str | None = None,
        seed: int | None = None,
        *,
        output_activation: str | None = None,
        init: str = "default",
        strategy: str = "auto",
        device: str = "auto",
    ):
        self.sizes = v.check_sizes(sizes)
        self.cost_name = v.check_choice(cost, "cost", fn.COSTS)
        self.device = v.check_choice(device, "device", orchestration.DEVICES)
        if dtype is None:
            dtype = "float32" if self.device == "cuda" else "float64"
        self.dtype = v.check_dtype(dtype)
        self.init = v.check_choice(init, "init", INITS)
        self.activations = self._check_activations(activation, output_activation)
        self.strategy = v.check_choice(strategy, "strategy", orchestration.STRATEGIES)
        orchestration.check_device_strategy(self.device, self.strategy)
        if orchestration.requires_cuda(self.device, self.strategy):
            devices.require_cuda()
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
        self.params = aligned_zeros(self.n_params, self.dtype)
        self._make_views()
        self._init_rng = np.random.default_rng(seed)
        self.rng = np.random.default_rng(self._init_rng.integers(2**63))
        self._initialise(self._init_rng)
        self._workspaces: dict[int, Workspace] = {}
        self._opt_name: str | None = None
        self.opt_state = np.zeros((0, self.n_params), dtype=self.dtype)
        self.step = np.zeros(1, dtype=np.int64)
        #: Epochs trained so far, over all calls to fit (the schedules count from it).
        self.epochs_trained = 0
        #: The plateau schedule's memory: the factor on η, the best figure seen and
        #: the epochs since it improved. Kept across fits so training continues exactly.
        self.schedule_state: dict = _fresh_schedule_state(None)

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

    def _make_views(self) -> None:
        self.weights = [
            self.params[o : o + self.sizes[l + 1] * self.sizes[l]].reshape(
                self.sizes[l + 1], self.sizes[l]
            )
            for l, o in enumerate(self._w_off)
        ]
        self.biases = [self.params[o : o + self.sizes[l + 1]] for l, o in enumerate(self._b_off)]

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
    def plan(
        self, batch_size: int = 10, strategy: str | None = None, device: str | None = None
    ) -> orchestration.Plan:
        """The device and kernels that run for mini-batches of ``batch_size``, and why.

        Print it to read it. ``strategy`` and ``device`` default to the network's.
        """
        batch_size = v.check_int(batch_size, "batch_size", minimum=1)
        strategy = self.strategy if strategy is None else strategy
        device = self.device if device is None else device
        v.check_choice(strategy, "strategy", orchestration.STRATEGIES)
        v.check_choice(device, "device", orchestration.DEVICES)
        return orchestration.plan(
            self.sizes, batch_size, device, strategy, self.n_params, self.dtype
        )

    def _on_gpu(self, batch_size: int) -> bool:
        device, _ = orchestration.choose_device(self.device, self.strategy, self.sizes, batch_size)
        return device == "cuda"

    # ---------------------------------------------------------------- inference
    def feedforward(self, X) -> np.ndarray:
        """Output activations a^L for each row of ``X`` (shape (m, sizes[0]))."""
        _guards.check_network_state(self)
        return self._feedforward(v.check_inputs(X, self.sizes[0], self.dtype))

    def _feedforward(self, X: np.ndarray) -> np.ndarray:
        """:meth:`feedforward` of inputs already validated."""
        cap = min(X.shape[0], 256)
        if self._on_gpu(cap):
            from .kernels import cuda_train

            return cuda_train.feedforward(self, X)
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
        if self._on_gpu(m):
            from .kernels import cuda_train

            return cuda_train.batch_gradients(self, X, Y, ws.grads), m, ws
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
        # the forward pass, then each C_x by BP1's kernel (its δ unused): no backward
        # pass, and no backward driver to compile for a monitor
        _guards.check_network_state(self)
        a_L = self._feedforward(X)
        costs = np.empty(X.shape[0])
        cpu_kernels.output_delta_serial(
            a_L, Y, np.empty_like(a_L), costs, self._acts[-1], fn.COSTS[self.cost_name]
        )
        c = math.fsum(costs) / X.shape[0]
        if lmbda:
            c += 0.5 * (lmbda / X.shape[0]) * float(np.sum(self.params[: self.n_weights] ** 2))
        return c

    # ------------------------------------------------------------------ training
    def _set_optimizer(self, name: str) -> None:
        if self._opt_name != name:
            self._opt_name = name
            self.opt_state = aligned_zeros((_STATE_ROWS[name], self.n_params), self.dtype)
            self.step[0] = 0

    @property
    def optimizer(self) -> str | None:
        """The optimiser whose state :attr:`opt_state` holds (``None`` before any fit)."""
        return self._opt_name

    def _epoch_eta(self, eta: float, sch: dict) -> float:
        """η for the next epoch under the schedule (``self.epochs_trained`` counts from 0)."""
        e = self.epochs_trained
        if sch["schedule"] == "invscaling":
            return eta / (e + 1) ** sch["power_t"]
        if sch["schedule"] == "step":
            return eta * sch["gamma"] ** (e // sch["step_size"])
        if sch["schedule"] == "plateau":
            return eta * self.schedule_state["eta_scale"]
        return eta

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
        schedule: str = "constant",
        power_t: float = 0.5,
        step_size: int = 10,
        gamma: float = 0.5,
        plateau_patience: int = 5,
        early_stopping: bool = False,
        patience: int = 10,
        tol: float = 0.0,
        metric: str | None = None,
        validation_fraction: float = 0.1,
        restore_best: bool = False,
        monitor: Sequence[str] | None = None,
        checkpoint: str | None = None,
        checkpoint_every: int = 1,
        resume: str | None = None,
        strategy: str | None = None,
        callback: Callable[[int, dict], None] | None = None,
        device: str | None = None,
        on_divergence: str = "raise",
        divergence_check: str = "epoch",
        threads: int | str = "auto",
    ) -> dict[str, list]:
        """Train by mini-batch gradient descent and return the per-epoch history.

        Every call continues the network's training: the optimiser state (velocity,
        Adam's moments and step), the random stream, the epoch count and the
        schedule's memory carry over from the previous call, so ``fit(epochs=2,
        seed=s)`` then ``fit(epochs=3)`` trains exactly as ``fit(epochs=5, seed=s)``.

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
            Learning rate η > 0 (the base rate of the schedule).
        validation_data : (X_val, y_val), optional
            Evaluated after every epoch (by default accuracy and cost).
        seed : int, optional
            Reseeds the network's shuffling stream; ``None`` continues it.
        shuffle : bool
            ``False`` keeps the data's order in every epoch.
        lmbda : float
            L2 regularisation λ ≥ 0, Nielsen's convention: weight decay
            1 − ηλ/n per update, n = len(X). scikit-learn's ``alpha`` is
            λ = alpha·n/batch_size (see ``docs/training.md``).
        optimizer : str
            ``"sgd"``, ``"momentum"``, ``"nesterov"`` or ``"adam"``. Changing it
            between calls starts the new optimiser's state from zero.
        momentum, beta1, beta2, epsilon : float
            Hyper-parameters of momentum and Adam.
        schedule : str
            η for epoch e (counted over all calls, from 0): ``"constant"``;
            ``"invscaling"``: η/(e+1)^power_t; ``"step"``: η·gamma^(e // step_size);
            ``"plateau"``: η is multiplied by ``gamma`` each time ``metric`` has not
            improved by more than ``tol`` for ``plateau_patience`` epochs.
        power_t, step_size, gamma, plateau_patience : number
            The schedules' parameters.
        early_stopping : bool
            Stop when ``metric`` has not improved by more than ``tol`` for
            ``patience`` epochs in a row (the count starts afresh in every call).
        patience : int
            Epochs without improvement before early stopping.
        tol : float
            The improvement that counts, for early stopping and the plateau schedule.
        metric : str, optional
            The figure watched by early stopping and the plateau schedule:
            ``"val_cost"`` (the default with validation data or early stopping),
            ``"val_accuracy"``, ``"train_cost"`` (the default otherwise) or
            ``"train_accuracy"``. With a ``"val_"`` metric and no
            ``validation_data`` (also for a ``"val_"`` name in ``monitor``), a
            random ``validation_fraction`` of the training
            data is held out (drawn from the network's random stream).
        restore_best : bool
            With early stopping, end with the parameters of the best epoch.
        monitor : sequence of str, optional
            Opt-in per-epoch figures for the history: ``"train_accuracy"``
            (a pass over the training data), ``"val_cost"``, ``"val_accuracy"``.
            ``None`` means both validation figures when there is validation data.
        checkpoint : path, optional
            Save the network and the state of this run (atomically) every
            ``checkpoint_every`` epochs and after the last.
        resume : path, optional
            Load a checkpoint written by a ``fit(..., checkpoint=...)`` with the
            same arguments and finish that run: the epochs that remain of
            ``epochs`` are trained, exactly as if it had not stopped, and the
            returned history covers the whole run. ``seed`` is then ignored.
        strategy : str, optional
            Force a kernel strategy (see :meth:`plan`).
        device : str, optional
            Override the network's device for this run. On the GPU the data set,
            parameters and buffers stay on the device for the whole run, with no
            host round trip per mini-batch; parameters and optimiser state are
            copied back into :attr:`params` and :attr:`opt_state` (in place) after
            every epoch, so monitors, callbacks and checkpoints see them.
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
        threads : int or "auto"
            Numba threads for training on the CPU. ``"auto"`` times the compiled
            calls and runs each at Numba's thread count or a halving of it, whichever
            has been fastest (two threads lose to one beside a busy process: see
            :mod:`nbbackprop._threads`); an int from 1 to ``NUMBA_NUM_THREADS`` fixes
            the count for the whole fit. The result is the same at any count.

        Returns
        -------
        dict
            Lists, one entry per epoch: ``"epoch"`` (counted over all calls),
            ``"eta"``, ``"train_cost"`` (the mean of the mini-batch costs computed
            during the epoch, before each update; no L2 term), and the monitored
            figures (``"val_accuracy"``, ``"val_cost"``, ``"train_accuracy"``).
            After a divergence with ``on_divergence="warn"``, ``"diverged"``: the
            epoch, mini-batch, reason and cost.

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
        v.check_choice(schedule, "schedule", SCHEDULES)
        sch = {
            "schedule": schedule,
            "power_t": v.check_float(power_t, "power_t", nonnegative=True),
            "step_size": v.check_int(step_size, "step_size", minimum=1),
            "gamma": v.check_float(gamma, "gamma", positive=True),
            "plateau_patience": v.check_int(plateau_patience, "plateau_patience", minimum=1),
        }
        patience = v.check_int(patience, "patience", minimum=1)
        tol = v.check_float(tol, "tol", nonnegative=True)
        validation_fraction = v.check_float(
            validation_fraction, "validation_fraction", positive=True, below=1.0
        )
        checkpoint_every = v.check_int(checkpoint_every, "checkpoint_every", minimum=1)
        seed = v.check_seed(seed)
        for name, flag in (
            ("shuffle", shuffle),
            ("early_stopping", early_stopping),
            ("restore_best", restore_best),
        ):
            if not isinstance(flag, bool):
                raise TypeError(f"{name}: expected True or False, got {flag!r}")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback: expected a callable or None, got {callback!r}")
        v.check_choice(on_divergence, "on_divergence", _guards.DIVERGENCE_ACTIONS)
        v.check_choice(divergence_check, "divergence_check", _guards.DIVERGENCE_CHECKS)
        _guards.check_network_state(self, writeable=True)
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
        # An unusable device or strategy fails here, before any state changes.
        auto = isinstance(threads, str) and threads == "auto"
        fixed = None if auto else _threads.check_threads(threads)
        self.plan(min(batch_size, X.shape[0]), strategy, device)
        watch = early_stopping or schedule == "plateau"
        if metric is None:
            metric = "val_cost" if val is not None or early_stopping else "train_cost"
        v.check_choice(metric, "metric", METRICS)
        if monitor is None:
            monitor = ("val_accuracy", "val_cost") if val is not None else ()
        elif isinstance(monitor, str):
            monitor = (monitor,)
        monitor = tuple(v.check_choice(name, "monitor", MONITORS) for name in monitor)
        if watch and metric != "train_cost" and metric not in monitor:
            monitor += (metric,)
        settings = {
            "epochs": epochs, "batch_size": batch_size, "eta": eta, "shuffle": shuffle,
            "lmbda": lmbda, "optimizer": optimizer, "momentum": momentum, "beta1": beta1,
            "beta2": beta2, "epsilon": epsilon, **sch, "early_stopping": early_stopping,
            "patience": patience, "tol": tol, "metric": metric,
            "validation_fraction": validation_fraction, "restore_best": restore_best,
            "monitor": list(monitor), "n": X.shape[0],
            "n_val": None if val is None else val[0].shape[0],
        }  # fmt: skip

        run = None
        if resume is not None:
            from . import persistence

            run = persistence.resume_into(self, resume, settings)
        elif seed is not None:
            self.rng = np.random.default_rng(seed)
        if val is None and any(name.startswith("val_") for name in monitor):
            if X.shape[0] < 2:
                raise ValueError("X: holding out a validation split needs at least 2 samples")
            # The split is drawn afresh from the network's stream: with resume the
            # stream is the checkpoint's, as the split of the interrupted run was.
            if run is not None:
                self.rng.bit_generator.state = run["split_rng"]
            split_rng = self.rng.bit_generator.state
            perm = self.rng.permutation(X.shape[0])
            n_val = max(1, round(validation_fraction * X.shape[0]))
            if n_val >= X.shape[0]:
                n_val = X.shape[0] - 1
            val = (X[perm[:n_val]], Y[perm[:n_val]])
            X, Y = np.ascontiguousarray(X[perm[n_val:]]), np.ascontiguousarray(Y[perm[n_val:]])
            if run is not None:
                self.rng.bit_generator.state = run["rng"]
        else:
            split_rng = None
        if run is None:
            self._set_optimizer(optimizer)
            if self.schedule_state["schedule"] != schedule:
                self.schedule_state = _fresh_schedule_state(schedule)
            history: dict[str, list] = {"epoch": [], "eta": [], "train_cost": []}
            for name in monitor:
                history[name] = []
            stop = {"best": None, "bad": 0}
            best_params = None
            start_epoch = self.epochs_trained
        else:
            history, stop = run["history"], run["stop"]
            best_params, start_epoch = run["best_params"], run["start_epoch"]
        higher = metric.endswith("accuracy")

        n = X.shape[0]
        # One mini-batch of all n samples either way; keeps batch_size within int64.
        batch_size = min(batch_size, n)
        cap = batch_size
        with _threads.limit(fixed):
            plan = self.plan(cap, strategy, device)
        hyper = np.array([eta, lmbda / n, momentum, beta1, beta2, epsilon], dtype=np.float64)
        n_batches = -(-n // batch_size)
        chunk = chunk_batches(self.sizes, cap)
        batch_costs = np.zeros(n_batches, dtype=np.float64)
        identity = np.arange(n, dtype=np.int64)
        order = identity
        gpu = None
        if plan.device == "cuda":
            from .kernels import cuda_train

            gpu = cuda_train.Trainer(
                self,
                X,
                Y,
                batch_size,
                OPTIMIZERS[optimizer],
                fused=plan.layers[0].variant == "fused",
            )
        else:
            ws = self._workspace(cap)
            par = plan.flags
            # a fixed count, or a tuner that times the chunks at Numba's count and fewer
            threads = fixed
            if fixed is None:
                key = (self.sizes, cap, self.dtype.str, optimizer, tuple(par))
                threads = _threads.tuner(key, plan.threads)

        def train_chunk(first: int, last: int) -> int:
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
        end = self.epochs_trained if run is not None and run["stopped"] else start_epoch + epochs
        try:
            while self.epochs_trained < end:
                epoch = self.epochs_trained
                hyper[cpu_train.ETA] = self._epoch_eta(eta, sch)
                order = self.rng.permutation(n).astype(np.int64) if shuffle else identity
                guard.start_epoch(epoch, eta=float(hyper[cpu_train.ETA]))
                failure = None
                if plan.device == "cuda":
                    done = gpu.epoch(order, batch_costs, hyper)
                    # Monitors, early stopping, checkpoints and callbacks read the parameters.
                    gpu.sync()
                    if done != n_batches:
                        # The device stopped before updating on the diverged mini-batch;
                        # hand its state back before the guard restores its snapshot.
                        gpu.close()
                        gpu = None
                        failure = guard.diverged_at(done, float(batch_costs[done]))
                else:
                    failure = _threads.run_chunks(
                        lambda first, last: guard.run_chunk(train_chunk, first, last, batch_costs),
                        n_batches,
                        chunk,
                        threads,
                    )
                if failure is not None:
                    guard.stop(failure, history)  # raises DivergenceError, or warns
                    break
                self.epochs_trained += 1
                history["epoch"].append(epoch)
                history["eta"].append(float(hyper[cpu_train.ETA]))
                history["train_cost"].append(float(np.mean(batch_costs)))
                with _threads.limit(fixed):
                    for name in monitor:
                        if name == "train_accuracy":
                            history[name].append(self.evaluate(X, Y))
                        elif name == "val_accuracy":
                            history[name].append(self.evaluate(val[0], val[1]))
                        else:
                            history[name].append(self.cost(val[0], val[1]))
                figure = history[metric][-1] if watch else None
                if schedule == "plateau":
                    _plateau_step(self.schedule_state, figure, higher, tol, sch)
                stopping = False
                if early_stopping:
                    if _improved(figure, stop["best"], higher, tol):
                        stop["bad"] = 0
                    else:
                        stop["bad"] += 1
                    if stop["best"] is None or (
                        figure > stop["best"] if higher else figure < stop["best"]
                    ):
                        stop["best"] = figure
                        if restore_best:
                            best_params = self.params.copy()
                    stopping = stop["bad"] >= patience
                done_run = stopping or self.epochs_trained == end
                if checkpoint is not None and (
                    done_run or (self.epochs_trained - start_epoch) % checkpoint_every == 0
                ):
                    from . import persistence

                    persistence.save(
                        self,
                        checkpoint,
                        run={
                            "settings": settings,
                            "start_epoch": start_epoch,
                            "history": history,
                            "stop": stop,
                            "split_rng": split_rng,
                            "stopped": stopping,
                        },  # fmt: skip
                        best_params=best_params,
                    )
                if callback is not None:
                    callback(epoch, history)
                if stopping:
                    break
        except KeyboardInterrupt as exc:
            if gpu is not None:
                gpu.close()  # the last completed epoch's parameters back into this network
                gpu = None
            guard.interrupted(history, exc)
            raise
        finally:
            if gpu is not None:
                gpu.close()  # parameters and optimiser state back into this network
        if early_stopping and restore_best and best_params is not None:
            self.params[...] = best_params
        return history

    def save(self, path) -> None:
        """Write the network and its training state to ``path`` (``.npz``, atomically).

        ``nbbackprop.load(path)`` gives back a network whose training continues
        exactly as this one's would. The format is specified in
        :mod:`nbbackprop.persistence` and ``docs/training.md``.
        """
        from . import persistence

        persistence.save(self, path)

    def partial_fit(self, X, y, **kwargs) -> dict[str, list]:
        """One epoch over ``X``, ``y`` (``fit(X, y, epochs=1, ...)``), for incremental training.

        The optimiser state, random stream, epoch count and schedule carry over
        between calls, so calls on successive chunks of a data stream train as one
        run. The L2 decay uses n = len(X), the chunk's size.
        """
        for name in ("epochs", "early_stopping", "checkpoint", "resume"):
            if name in kwargs:
                raise TypeError(f"partial_fit: {name!r} is not supported; use fit")
        return self.fit(X, y, epochs=1, **kwargs)

    def __getstate__(self) -> dict:
        # weights and biases are views into params: rebuild them rather than pickle copies.
        state = self.__dict__.copy()
        for key in ("weights", "biases", "_workspaces"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        # an unpickled or deep-copied array is only 16-byte aligned: back onto a cache
        # line. Not a read-only one (a memory map, shared between processes, which
        # predicts but refuses training), nor one already aligned (copy.copy shares it),
        # nor anything but an array (the entry points' check names the problem).
        for key in ("params", "opt_state"):
            values = getattr(self, key, None)
            if (
                isinstance(values, np.ndarray)
                and values.flags.writeable
                and values.ctypes.data % ALIGN_BYTES
            ):
                setattr(self, key, aligned_copy(values))
        self._workspaces = {}
        self._make_views()

    def __repr__(self) -> str:
        return (
            f"Network(sizes={list(self.sizes)}, activation={list(self.activations)}, "
            f"cost={self.cost_name!r}, dtype={self.dtype.name!r})"
        )


def _fresh_schedule_state(schedule: str | None) -> dict:
    return {"schedule": schedule, "eta_scale": 1.0, "best": None, "bad": 0}


def _improved(figure: float, best: float | None, higher: bool, tol: float) -> bool:
    """Whether ``figure`` beats ``best`` by more than ``tol`` (scikit-learn's rule)."""
    if best is None:
        return True
    return figure > best + tol if higher else figure < best - tol


def _plateau_step(state: dict, figure: float, higher: bool, tol: float, sch: dict) -> None:
    """Multiply η by gamma after ``plateau_patience`` epochs without improvement."""
    if _improved(figure, state["best"], higher, tol):
        state["bad"] = 0
    else:
        state["bad"] += 1
    if state["best"] is None or (figure > state["best"] if higher else figure < state["best"]):
        state["best"] = figure
    if state["bad"] >= sch["plateau_patience"]:
        state["eta_scale"] *= sch["gamma"]
        state["bad"] = 0
