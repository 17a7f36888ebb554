"""Guards around training: divergence, interruption and the network's own state.

Numba kernels trust their inputs and a diverging run fills the parameters with
NaN, so the checks that keep a network usable live here, outside the kernels:

- :func:`check_network_state` -- before any kernel runs, the parameter buffer is
  the right dtype, shape and layout, ``weights[l]``/``biases[l]`` are still views
  into it, and (optionally) every parameter is finite.
- :class:`TrainingGuard` -- wraps the compiled runs of mini-batches that
  ``Network.fit`` makes. It snapshots the parameters, the optimiser state and the
  step counter at the start of every epoch and every compiled call, scans the
  parameters once per call, and when the cost or a parameter stops being finite it
  restores the last finite state, pinpoints the mini-batch and raises a
  :class:`DivergenceError` (or warns with :class:`DivergenceWarning`).
- Ctrl-C: a compiled call cannot be interrupted midway (Python sees the signal
  only between calls), so the parameters are always those after a whole number
  of mini-batches; :meth:`TrainingGuard.interrupted` records how far training got.

Why a scan per compiled call rather than per mini-batch: a snapshot or a scan of
every parameter after every mini-batch costs as much as a sizeable part of the
update itself on small networks (see ``docs/reliability.md`` for the figures),
whereas training is deterministic for a fixed thread count, so the failing
mini-batch can be found after the fact by replaying the call from its snapshot,
one mini-batch at a time. The replay runs only when training has diverged.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from numba import njit

DIVERGENCE_ACTIONS = ("raise", "warn")
DIVERGENCE_CHECKS = ("epoch", "batch")

#: Why training was stopped: the mean cost of a mini-batch was not finite (found
#: before its update), or the update of a mini-batch made a parameter (or the
#: optimiser's state) non-finite.
COST, PARAMETERS = "cost", "parameters"


class DivergenceError(FloatingPointError):
    """Training diverged: a cost or a parameter became NaN or infinite.

    The network has been restored to its last finite state before this is raised.

    Attributes
    ----------
    epoch, batch : int
        Where it happened (0-based): the mini-batch ``batch`` of epoch ``epoch``.
    reason : str
        ``"cost"`` (the mini-batch's cost was not finite; the mini-batch was not
        applied) or ``"parameters"`` (its update made a parameter non-finite).
    cost : float
        The mini-batch's mean cost, computed before its update.
    history : dict
        The per-epoch history of the completed epochs, as ``fit`` returns it.
    """

    def __init__(self, message, *, epoch, batch, reason, cost, history=None):
        super().__init__(message)
        self.epoch = epoch
        self.batch = batch
        self.reason = reason
        self.cost = cost
        self.history = history


class DivergenceWarning(RuntimeWarning):
    """Training diverged and ``fit(on_divergence="warn")`` stopped early."""


# --------------------------------------------------------------------- compiled helpers
@njit(cache=True)
def _all_finite(flat):
    # A 1-D array: callers flatten (a reshape in here costs a second of cold compile).
    # |x| < inf is False for NaN and ±inf. Counting instead of returning early keeps
    # the loop branch-free, so LLVM vectorises it (~10x faster than np.isfinite with an
    # early exit). No fastmath here: with "nsz" + "reassoc" LLVM folds the tempting
    # alternative sum(x - x) to 0 and NaN goes unseen (measured; see docs/reliability.md).
    bad = 0
    for i in range(flat.shape[0]):
        bad += not (abs(flat[i]) < np.inf)
    return bad == 0


@njit(cache=True)
def _copy_state(src_params, src_state, src_step, dst_params, dst_state, dst_step):
    # One compiled call, so a Ctrl-C cannot land between the three copies. Element
    # loops: slice assignment compiles NumPy's broadcasting machinery.
    for i in range(src_params.shape[0]):
        dst_params[i] = src_params[i]
    for r in range(src_state.shape[0]):
        for c in range(src_state.shape[1]):
            dst_state[r, c] = src_state[r, c]
    dst_step[0] = src_step[0]


def all_finite(a: np.ndarray) -> bool:
    """True when every element of the float array ``a`` (any shape) is finite (a
    compiled scan; no copy when ``a`` is contiguous)."""
    return bool(_all_finite(np.ascontiguousarray(a).reshape(-1)))


# ------------------------------------------------------------------------- network state
def check_network_state(net, *, finite: bool = True, writeable: bool = False) -> None:
    """Refuse a network whose parameter buffer was replaced, re-laid or made non-finite.

    The kernels read ``net.params`` only. If a user rebinds ``net.weights[l]`` (rather
    than assigning into it) the kernels would silently ignore the new array; if they
    rebind ``net.params`` to an array of another size, dtype or layout, the kernels
    would read the wrong memory. Both are refused here, with the fix in the message.
    Training (``writeable=True``) also needs a writeable buffer; inference does not
    (a network unpickled from a read-only memory map still predicts).
    """
    p = net.params
    if not isinstance(p, np.ndarray):
        raise TypeError(f"params: expected a numpy array, got {type(p).__name__}")
    if p.dtype != net.dtype or p.shape != (net.n_params,):
        raise ValueError(
            f"params: expected a {net.dtype.name} array of shape ({net.n_params},), got "
            f"{p.dtype} with shape {p.shape}; assign into it (net.params[...] = values) "
            "instead of replacing it"
        )
    if not p.flags.c_contiguous or not p.flags.aligned or not p.dtype.isnative:
        raise ValueError("params: expected a C-contiguous, aligned, native-endian array")
    if writeable:
        for name in ("params", "opt_state", "step"):
            a = getattr(net, name)
            if not isinstance(a, np.ndarray) or not a.flags.writeable:
                raise ValueError(
                    f"{name}: training needs a writeable buffer, this one is read-only (a "
                    "network loaded from a read-only memory map?); train a copy: "
                    "copy.deepcopy(net)"
                )
    base = p.__array_interface__["data"][0]
    item = p.itemsize
    for kind, arrays, offsets in (
        ("weights", net.weights, net._w_off),
        ("biases", net.biases, net._b_off),
    ):
        if len(arrays) != len(offsets):
            raise ValueError(
                f"{kind}: expected {len(offsets)} arrays (one per weight layer), got "
                f"{len(arrays)}; assign into the arrays instead of replacing the list"
            )
        for l, (a, off) in enumerate(zip(arrays, offsets, strict=True)):
            shape = (net.sizes[l + 1], net.sizes[l]) if kind == "weights" else (net.sizes[l + 1],)
            if (
                not isinstance(a, np.ndarray)
                or a.shape != shape
                or a.dtype != p.dtype
                or a.__array_interface__["data"][0] != base + int(off) * item
                or not a.flags.c_contiguous
            ):
                raise ValueError(
                    f"{kind}[{l}]: is no longer a view into the network's parameter buffer "
                    f"(it was replaced, not assigned into); write net.{kind}[{l}][...] = "
                    f"new_values (shape {shape}) instead of net.{kind}[{l}] = new_values"
                )
    if finite and not all_finite(p):
        raise ValueError(f"weights/biases: {_describe_nonfinite(net)}")
    if writeable and finite and not all_finite(net.opt_state):
        raise ValueError(
            "opt_state: the optimiser's state holds NaN/inf; reset it (fit with another "
            "optimizer, or re-create the network) before training"
        )


def _describe_nonfinite(net) -> str:
    where = [f"weights[{l}]" for l, W in enumerate(net.weights) if not np.isfinite(W).all()]
    where += [f"biases[{l}]" for l, b in enumerate(net.biases) if not np.isfinite(b).all()]
    return (
        f"expected finite parameters, found NaN/inf in {', '.join(where)}; re-initialise "
        "the network or assign finite values before using it"
    )


# ------------------------------------------------------------------------- training guard
class _Failure:
    __slots__ = ("epoch", "batch", "reason", "cost")

    def __init__(self, epoch, batch, reason, cost):
        self.epoch, self.batch, self.reason, self.cost = epoch, batch, reason, cost


class TrainingGuard:
    """Divergence and interruption handling for one call of ``Network.fit``.

    ``run(first, last)`` must train mini-batches ``first .. last-1`` of the current
    epoch in one compiled call and return how many it completed (it stops before
    the update of a mini-batch whose cost is not finite), as
    :func:`nbbackprop.kernels.cpu_train.train_batches` does.
    """

    def __init__(self, net, *, on_divergence: str, check: str, eta: float, n_batches: int):
        self.net = net
        self.on_divergence = on_divergence
        self.check = check
        self.eta = eta
        self.n_batches = n_batches
        # Snapshots: at the start of the epoch and at the start of the current call.
        self._epoch_snap = self._alloc() if check == "epoch" else None
        self._call_snap = self._alloc()
        self.epoch = 0
        self._epoch_step = int(net.step[0])

    def _alloc(self):
        net = self.net
        return np.empty_like(net.params), np.empty_like(net.opt_state), np.zeros(1, np.int64)

    def _save(self, snap) -> None:
        net = self.net
        _copy_state(net.params, net.opt_state, net.step, *snap)

    def _restore(self, snap) -> None:
        net = self.net
        _copy_state(*snap, net.params, net.opt_state, net.step)

    def _finite(self) -> bool:
        net = self.net
        return all_finite(net.params) and all_finite(net.opt_state)

    # ------------------------------------------------------------------ training loop
    def start_epoch(self, epoch: int, eta: float | None = None) -> None:
        """Snapshot (for ``check="epoch"``) before epoch ``epoch``, trained with ``eta``."""
        self.epoch = epoch
        if eta is not None:
            self.eta = eta
        self._epoch_step = int(self.net.step[0])
        if self._epoch_snap is not None:
            self._save(self._epoch_snap)

    def diverged_at(self, batch: int, cost: float) -> _Failure:
        """Record divergence found elsewhere (the GPU driver) at mini-batch ``batch``.

        The network must already hold the state from before that mini-batch; with
        ``check="epoch"`` the state from the start of the epoch is restored.
        """
        if self._epoch_snap is not None:
            self._restore(self._epoch_snap)
        return _Failure(self.epoch, batch, COST, cost)

    def run_chunk(
        self, run: Callable[[int, int], int], first: int, last: int, batch_costs: np.ndarray
    ) -> _Failure | None:
        """Train mini-batches ``first .. last-1``; on divergence restore and describe it."""
        self._save(self._call_snap)
        done = int(run(first, last))
        if done == last - first and self._finite():
            return None
        # Diverged somewhere in this call. Replay it from its snapshot one mini-batch at
        # a time to find where, leaving the state as it was before that mini-batch.
        self._restore(self._call_snap)
        failure = None
        for i in range(first, last):
            self._save(self._call_snap)
            if run(i, i + 1) != 1:
                failure = _Failure(self.epoch, i, COST, float(batch_costs[i]))
            elif not self._finite():
                self._restore(self._call_snap)
                failure = _Failure(self.epoch, i, PARAMETERS, float(batch_costs[i]))
            if failure is not None:
                break
        if failure is None:  # pragma: no cover - only if training were not deterministic
            self._restore(self._call_snap)
            failure = _Failure(self.epoch, first + done, COST, float("nan"))
        if self._epoch_snap is not None:
            self._restore(self._epoch_snap)
        return failure

    def stop(self, failure: _Failure, history: dict) -> dict:
        """Raise :class:`DivergenceError` or warn, recording the failure in ``history``."""
        what = (
            f"the cost of the mini-batch became {failure.cost}"
            if failure.reason == COST
            else "its update made a parameter NaN or infinite"
        )
        if self.check == "epoch":
            kept = f"their values at the start of epoch {failure.epoch}"
        else:
            kept = f"their values before mini-batch {failure.batch}"
        message = (
            f"training diverged in epoch {failure.epoch}, mini-batch {failure.batch} of "
            f"{self.n_batches}: {what}. The weights and biases were restored to {kept}. "
            f"Hint: the learning rate eta={self.eta:g} is probably too large; try a smaller one "
            "(or a smaller momentum, or inputs scaled to about [0, 1])"
        )
        history["diverged"] = {
            "epoch": failure.epoch,
            "batch": failure.batch,
            "reason": failure.reason,
            "cost": failure.cost,
        }
        if self.on_divergence == "raise":
            raise DivergenceError(
                message,
                epoch=failure.epoch,
                batch=failure.batch,
                reason=failure.reason,
                cost=failure.cost,
                history=history,
            )
        warnings.warn(message, DivergenceWarning, stacklevel=3)
        return history

    def interrupted(self, history: dict, exc: BaseException) -> None:
        """Record how far training got when ``exc`` (a KeyboardInterrupt) arrived.

        The parameters are those after the last completed mini-batch: compiled calls
        are never interrupted midway. Only if the interrupt landed in the middle of a
        divergence replay could they be non-finite; then the snapshot is restored.
        """
        if not self._finite():
            self._restore(self._epoch_snap if self._epoch_snap is not None else self._call_snap)
        lists = [v for v in history.values() if isinstance(v, list)]
        if lists:  # an interrupt between two appends must not leave ragged lists
            n = min(len(v) for v in lists)
            for v in lists:
                del v[n:]
        history["interrupted"] = True
        history["interrupted_at"] = {
            "epoch": self.epoch,
            "batch": int(self.net.step[0]) - self._epoch_step,
        }
        try:
            exc.history = history
        except AttributeError:  # pragma: no cover - exceptions accept attributes
            pass
