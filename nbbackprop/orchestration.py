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
``"tiled"``
    The register-tiled, cache-blocked kernels (``*_tiled``) in every layer, with
    plain SGD's weight gradient folded into the update; a layer's tiled kernels run
    in parallel when its multiply-adds per mini-batch reach
    :data:`TILED_PARALLEL_MIN_MACS`.
``"auto"`` (default)
    The fastest measured choice per layer; at present the same as ``"tiled"``.

"serial" and "parallel" run the per-equation kernels exactly as written next to the
equations; they are the readable reference path. The thresholds come from
measurements on the 2-core machine of ``docs/performance.md``, quoted next to each.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

#: Multiply-adds per mini-batch from which a layer's per-equation kernels would run
#: in parallel (kept for reference: "auto" now picks the tiled kernels).
PARALLEL_MIN_MACS = 100_000
#: Multiply-adds per mini-batch from which a layer's tiled kernels run in parallel.
TILED_PARALLEL_MIN_MACS = 100_000
#: Parameters from which the update kernel runs in parallel.
PARALLEL_MIN_PARAMS = 200_000

CPU_STRATEGIES = ("auto", "serial", "parallel", "tiled")
SERIAL, PARALLEL, TILED, TILED_PARALLEL = 0, 1, 2, 3
_VARIANT_CODES = {
    "serial": SERIAL,
    "parallel": PARALLEL,
    "tiled": TILED,
    "tiled-parallel": TILED_PARALLEL,
}


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
    #: Whether plain SGD folds the weight gradients into the update.
    fused_sgd: bool = False

    @property
    def flags(self) -> np.ndarray:
        """The codes for the compiled drivers: each layer's variant, then the update's
        (1 parallel), then 1 when plain SGD folds the gradients into the update."""
        codes = [_VARIANT_CODES[lp.variant] for lp in self.layers]
        codes.append(PARALLEL if self.update == "parallel" else SERIAL)
        codes.append(1 if self.fused_sgd else 0)
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
_TILED_KERNELS = (
    "weighted_sums_tiled",
    "output_delta|hidden_delta_tiled",
    "sgd_layer_update_tiled (SGD) | weight_grads_tiled, bias_grads",
)


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
        kernels = _LAYER_KERNELS
        if strategy in ("serial", "parallel"):
            variant, reason = strategy, f"forced by strategy={strategy!r}"
        else:
            kernels = _TILED_KERNELS
            if threads < 2:
                variant, reason = "tiled", "tiled kernels; one thread available"
            elif macs >= TILED_PARALLEL_MIN_MACS:
                variant = "tiled-parallel"
                reason = f"tiled; {macs:,} multiply-adds per batch >= {TILED_PARALLEL_MIN_MACS:,}"
            else:
                variant = "tiled"
                reason = f"tiled; {macs:,} multiply-adds per batch < {TILED_PARALLEL_MIN_MACS:,}"
        layers.append(LayerPlan(l, n_in, n_out, variant, kernels, reason))
    if n_params is None:
        n_params = sum(int(sizes[l + 1]) * (int(sizes[l]) + 1) for l in range(len(sizes) - 1))
    if strategy in ("serial", "parallel"):
        update, update_reason = strategy, f"forced by strategy={strategy!r}"
    elif threads >= 2 and n_params >= PARALLEL_MIN_PARAMS:
        update, update_reason = "parallel", f"{n_params:,} parameters >= {PARALLEL_MIN_PARAMS:,}"
    else:
        update, update_reason = "serial", f"{n_params:,} parameters < {PARALLEL_MIN_PARAMS:,}"
    fused = strategy not in ("serial", "parallel")
    notes = ("the whole run of mini-batches executes in one compiled call",)
    if fused:
        notes += ("with optimizer='sgd' each layer's weight gradient is folded into its update",)
    return Plan(
        device="cpu",
        strategy=strategy,
        batch_size=batch_size,
        threads=threads,
        layers=tuple(layers),
        update=update,
        update_reason=update_reason,
        notes=notes,
        fused_sgd=fused,
    )
