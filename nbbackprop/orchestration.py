"""The orchestration layer: which kernels run, for a device, a batch size and layer widths.

It chooses; it never computes. A :class:`Plan` names the kernel variant for every
layer and says why, and is what ``Network.plan(batch_size)`` returns. A plan is
turned into the ``par`` flags of :mod:`nbbackprop.kernels.cpu_train`.

CPU strategies
--------------
``"serial"``
    Every kernel single-threaded, the whole run of mini-batches in one compiled
    call. Best when a layer's work per mini-batch is too small to repay waking the
    thread pool.
``"parallel"``
    Every kernel parallel (``prange`` over the outputs it writes).
``"auto"`` (default)
    Per layer: parallel when the layer's multiply-adds per mini-batch,
    ``m * n_in * n_out``, reach :data:`PARALLEL_MIN_MACS`, else serial.

The threshold comes from measurement (see ``docs/performance.md``): the throw-away
prototype found that waking Numba's pool costs about the time of 100k
multiply-adds on this 2-core machine class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

#: Multiply-adds per mini-batch from which a layer's kernels run in parallel.
PARALLEL_MIN_MACS = 100_000
#: Parameters from which the update kernel runs in parallel.
PARALLEL_MIN_PARAMS = 200_000

CPU_STRATEGIES = ("auto", "serial", "parallel")
SERIAL, PARALLEL = 0, 1
_VARIANT_NAMES = {SERIAL: "serial", PARALLEL: "parallel"}


@dataclass(frozen=True)
class LayerPlan:
    """The kernels chosen for one weight layer."""

    layer: int
    n_in: int
    n_out: int
    variant: str
    kernels: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class Plan:
    """Which kernels a network runs for a batch size on a device, and why."""

    device: str
    strategy: str
    batch_size: int
    threads: int
    layers: tuple[LayerPlan, ...]
    update: str
    update_reason: str
    notes: tuple[str, ...] = field(default=())

    @property
    def flags(self) -> np.ndarray:
        """The per-layer variant codes (and the update's, last) for the compiled drivers."""
        codes = [PARALLEL if lp.variant == "parallel" else SERIAL for lp in self.layers]
        codes.append(PARALLEL if self.update == "parallel" else SERIAL)
        return np.array(codes, dtype=np.int64)

    def __str__(self) -> str:
        lines = [
            f"plan: device={self.device} strategy={self.strategy} "
            f"batch_size={self.batch_size} threads={self.threads}"
        ]
        for lp in self.layers:
            lines.append(
                f"  layer {lp.layer} ({lp.n_in} -> {lp.n_out}): {lp.variant} "
                f"[{', '.join(lp.kernels)}] - {lp.reason}"
            )
        lines.append(f"  update: {self.update} - {self.update_reason}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


_LAYER_KERNELS = ("weighted_sums", "output_delta|hidden_delta", "weight_grads", "bias_grads")


def plan_cpu(sizes, batch_size: int, strategy: str = "auto", n_params: int | None = None) -> Plan:
    """Choose the CPU kernel variant of each layer for mini-batches of ``batch_size``."""
    if strategy not in CPU_STRATEGIES:
        raise ValueError(
            f"strategy: expected one of {', '.join(CPU_STRATEGIES)} for the CPU, got {strategy!r}"
        )
    threads = numba.get_num_threads()
    layers = []
    for l in range(len(sizes) - 1):
        n_in, n_out = int(sizes[l]), int(sizes[l + 1])
        macs = batch_size * n_in * n_out
        if strategy != "auto":
            variant, reason = strategy, f"forced by strategy={strategy!r}"
        elif threads < 2:
            variant, reason = "serial", "one thread available"
        elif macs >= PARALLEL_MIN_MACS:
            variant = "parallel"
            reason = f"{macs:,} multiply-adds per batch >= {PARALLEL_MIN_MACS:,}"
        else:
            variant = "serial"
            reason = f"{macs:,} multiply-adds per batch < {PARALLEL_MIN_MACS:,}"
        layers.append(LayerPlan(l, n_in, n_out, variant, _LAYER_KERNELS, reason))
    if n_params is None:
        n_params = sum(int(sizes[l + 1]) * (int(sizes[l]) + 1) for l in range(len(sizes) - 1))
    if strategy != "auto":
        update, update_reason = strategy, f"forced by strategy={strategy!r}"
    elif threads >= 2 and n_params >= PARALLEL_MIN_PARAMS:
        update, update_reason = "parallel", f"{n_params:,} parameters >= {PARALLEL_MIN_PARAMS:,}"
    else:
        update, update_reason = "serial", f"{n_params:,} parameters < {PARALLEL_MIN_PARAMS:,}"
    return Plan(
        device="cpu",
        strategy=strategy,
        batch_size=batch_size,
        threads=threads,
        layers=tuple(layers),
        update=update,
        update_reason=update_reason,
        notes=("the whole run of mini-batches executes in one compiled call",),
    )
