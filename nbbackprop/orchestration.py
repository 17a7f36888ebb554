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
    :data:`TILED_PARALLEL_MIN_MACS` (BP2 through a layer's W, into the layer below,
    is that layer's: the same m·n_in·n_out multiply-adds).
``"auto"`` (default)
    The fastest measured choice per layer; at present the same as ``"tiled"``.

"serial" and "parallel" run the per-equation kernels exactly as written next to the
equations; they are the readable reference path. The thresholds come from
measurements on the 2-core machine of ``docs/performance.md``, quoted next to each.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numba
import numpy as np

# The thresholds are measurements (python -m benchmarks.thresholds, 2 vCPUs, 2026-12-04;
# the tables are in docs/performance.md, "Thresholds"). Serial time / parallel time:

#: Multiply-adds per mini-batch from which a layer's tiled kernels run in parallel.
#: One layer step (forward + fused update), float32 / float64: 78,400 (10x784x10) 0.82 /
#: 0.90, 32,000 (32x100x10) 0.96 / 0.95; from 100,000 (10x100x100) on every shape gains,
#: 1.67 / 1.71 there, 1.5-2.1 above. (The per-equation kernels of strategy="parallel",
#: --kind plain, gain from ~30,000: 1.29 at 32x100x10, 1.08 at 10x784x10.)
TILED_PARALLEL_MIN_MACS = 100_000
#: Parameters from which the optimiser step (momentum, Nesterov, Adam; plain SGD is
#: folded into the tiled update) runs in parallel. adam_update, float32: 23,860
#: parameters 1.16, 50,000 1.40, 79,510 1.69, 200,000 1.78, 1.86M 2.07; 5,000 0.52.
PARALLEL_MIN_PARAMS = 50_000

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


_LAYER_KERNELS = ("weighted_sums", "output_delta", "hidden_delta", "weight_grads", "bias_grads")
_TILED_KERNELS = (
    "weighted_sums_tiled",
    "output_delta",
    "hidden_delta_tiled",
    "sgd_layer_update_tiled (SGD) | weight_grads_tiled, bias_grads",
)


def _layer_kernels(names, layer: int, last: int) -> tuple[str, ...]:
    """The kernels of weight layer ``layer``: BP1 (output_delta) only for the last one,
    BP2 through its W (hidden_delta, into layer l-1: the same m·n_in·n_out
    multiply-adds as its forward pass) for every layer but the first."""
    return tuple(
        n
        for n in names
        if not (n.startswith("output_delta") and layer != last)
        and not (n.startswith("hidden_delta") and layer == 0)
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
            if macs >= TILED_PARALLEL_MIN_MACS:
                variant = "tiled-parallel"
                reason = f"tiled; {macs:,} multiply-adds per batch >= {TILED_PARALLEL_MIN_MACS:,}"
                if threads < 2:
                    # measured (docs/performance.md): W1 on one thread 123 -> 109 ms
                    reason += (
                        "; on one thread too, for the region that fuses the update with "
                        "the next forward pass"
                    )
            else:
                variant = "tiled"
                reason = f"tiled; {macs:,} multiply-adds per batch < {TILED_PARALLEL_MIN_MACS:,}"
        kernels = _layer_kernels(kernels, l, len(sizes) - 2)
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
    notes = ("mini-batches run many to a compiled call, with no Python between them",)
    if threads >= 2:
        notes += (
            f"fit(threads='auto') times those calls and runs each on {threads} threads "
            "or fewer, whichever has been fastest",
        )
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


# ----------------------------------------------------------------------- devices and the GPU
# Everything below is additive to the CPU planner above: ``plan`` is the front that picks a
# device and calls ``plan_cpu`` or ``plan_cuda``. Nothing here imports numba.cuda unless a
# GPU is asked about (see nbbackprop.devices).

DEVICES = ("auto", "cpu", "cuda")
CUDA_STRATEGIES = ("auto", "layered", "fused")
#: Every strategy name; which device each implies is in :func:`choose_device`.
STRATEGIES = tuple(dict.fromkeys(CPU_STRATEGIES + CUDA_STRATEGIES))

# Provisional thresholds: no GPU was available when they were written, so they are
# estimates, not measurements (docs/cuda.md gives the arithmetic behind each, and
# benchmarks/gpu_check.py prints the figures that should replace them).
#: Multiply-adds per mini-batch, m·Σ n_in·n_out, from which device="auto" takes a usable
#: GPU. Estimate: the CPU driver does ~9 G multiply-adds/s of training work (3 per MAC
#: counted here) on the 2-core reference machine, i.e. 4M MACs ≈ 1.3 ms per mini-batch,
#: several times the ~0.1-0.3 ms of Python-side kernel launches of one GPU step.
AUTO_CUDA_MIN_MACS = 4_000_000
#: Widest layer after the input that the fused kernel takes (activations live in shared
#: memory; tiny-cuda-nn's fully fused MLP targets widths of 16-128).
FUSED_MAX_WIDTH = 128
#: Dynamic shared memory per block the fused kernel may use: 48 KiB is what every CUDA
#: GPU gives a block without an opt-in.
FUSED_SHARED_BYTES = 48 * 1024
#: Most samples per block tile of the fused kernel (halved until the tile fits).
FUSED_MAX_SAMPLES = 16
#: Largest buffer of per-tile gradient sums the fused path may allocate.
FUSED_MAX_PARTIAL_BYTES = 256 * 2**20

_GPU_ONLY = tuple(s for s in CUDA_STRATEGIES if s not in CPU_STRATEGIES)
_CPU_ONLY = tuple(s for s in CPU_STRATEGIES if s not in CUDA_STRATEGIES)


def check_device_strategy(device: str, strategy: str) -> None:
    """Raise ValueError when ``strategy`` cannot run on ``device``."""
    if device not in DEVICES:
        raise ValueError(f"device: expected one of {', '.join(DEVICES)}, got {device!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if device == "cpu" and strategy in _GPU_ONLY:
        raise ValueError(
            f"strategy={strategy!r} runs on the GPU; device='cpu' takes one of "
            f"{', '.join(CPU_STRATEGIES)}"
        )
    if device == "cuda" and strategy in _CPU_ONLY:
        raise ValueError(
            f"strategy={strategy!r} is a CPU strategy; device='cuda' takes one of "
            f"{', '.join(CUDA_STRATEGIES)}"
        )


def requires_cuda(device: str, strategy: str) -> bool:
    """True when the pair can only run on a GPU."""
    return device == "cuda" or (device == "auto" and strategy in _GPU_ONLY)


def choose_device(device: str, strategy: str, sizes, batch_size: int) -> tuple[str, str]:
    """``("cpu" | "cuda", reason)`` for a requested device, strategy and mini-batch size.

    ``"cuda"`` (or a GPU-only strategy) without a usable GPU raises
    :class:`nbbackprop.devices.CudaUnavailableError` saying why; ``"auto"`` then
    quietly takes the CPU. ``"auto"`` never takes the CUDA simulator, which is for tests.
    """
    from . import devices

    check_device_strategy(device, strategy)
    if device == "cpu":
        return "cpu", "device='cpu' requested"
    if device == "cuda":
        status = devices.require_cuda()
        return "cuda", f"device='cuda' requested: {status.name}"
    if strategy in _GPU_ONLY:
        status = devices.require_cuda()
        return "cuda", f"strategy={strategy!r} runs on the GPU: {status.name}"
    if strategy in _CPU_ONLY:
        return "cpu", f"strategy={strategy!r} is a CPU strategy"
    macs = batch_size * sum(int(sizes[l]) * int(sizes[l + 1]) for l in range(len(sizes) - 1))
    if macs < AUTO_CUDA_MIN_MACS:
        return "cpu", (
            f"auto: {macs:,} multiply-adds per batch < {AUTO_CUDA_MIN_MACS:,}, "
            "too little work to gain from a GPU"
        )
    status = devices.cuda_status()
    if not status.usable:
        return "cpu", f"auto: no usable GPU ({status.reason})"
    if status.simulated:
        return "cpu", "auto: the CUDA simulator is for tests, never chosen automatically"
    return "cuda", (
        f"auto: {macs:,} multiply-adds per batch >= {AUTO_CUDA_MIN_MACS:,} on {status.name}"
    )


def fused_samples(sizes, itemsize: int, batch_size: int) -> tuple[int, str]:
    """Samples per block tile of the fused kernel, or ``(0, why not)``."""
    widths = [int(s) for s in sizes[1:]]
    if max(widths) > FUSED_MAX_WIDTH:
        return 0, f"a layer of {max(widths)} > {FUSED_MAX_WIDTH} neurons is too wide to fuse"
    per_sample = (sum(widths) + 2 * max(widths)) * itemsize
    S = FUSED_MAX_SAMPLES
    while S > 1 and S * per_sample > FUSED_SHARED_BYTES:
        S //= 2
    if S * per_sample > FUSED_SHARED_BYTES:
        return 0, f"one sample's activations need {per_sample:,} B > {FUSED_SHARED_BYTES:,} B"
    S = max(1, min(S, batch_size))
    n_params = sum(int(sizes[l + 1]) * (int(sizes[l]) + 1) for l in range(len(sizes) - 1))
    partial_bytes = -(-batch_size // S) * n_params * itemsize
    if partial_bytes > FUSED_MAX_PARTIAL_BYTES:
        return 0, (
            f"per-tile gradient sums would take {partial_bytes:,} B > "
            f"{FUSED_MAX_PARTIAL_BYTES:,} B (batch too large)"
        )
    return S, (
        f"every layer <= {FUSED_MAX_WIDTH} wide: {S} samples per block, "
        f"{S * per_sample:,} B of shared memory"
    )


def plan_cuda(
    sizes, batch_size: int, strategy: str = "auto", n_params: int | None = None,
    dtype="float32",
) -> Plan:  # fmt: skip
    """Choose the CUDA kernels for mini-batches of ``batch_size`` (a usable GPU is assumed)."""
    if strategy not in CUDA_STRATEGIES:
        raise ValueError(
            f"strategy: expected one of {', '.join(CUDA_STRATEGIES)} for CUDA, got {strategy!r}"
        )
    from .kernels import cuda as kc

    itemsize = np.dtype(dtype).itemsize
    S, why = fused_samples(sizes, itemsize, batch_size)
    if strategy == "fused" and not S:
        raise ValueError(f"strategy='fused' cannot run this network: {why}")
    fused = strategy == "fused" or (strategy == "auto" and S > 0)
    L = len(sizes) - 1
    layers = []
    for l in range(L):
        n_in, n_out = int(sizes[l]), int(sizes[l + 1])
        if fused:
            reason = why if l == 0 else "in the same launch as layer 0"
            if strategy == "fused" and l == 0:
                reason = f"forced by strategy='fused'; {why}"
            layers.append(LayerPlan(l, n_in, n_out, "fused", ("fused_backprop",), reason))
        else:
            reason = f"tiled {kc.TILE}x{kc.TILE} blocks, shared-memory tiles of a and W"
            if strategy == "layered":
                reason = f"forced by strategy='layered'; {reason}"
            elif l == 0:
                reason = f"not fused ({why}); {reason}"
            layers.append(LayerPlan(l, n_in, n_out, "layered", _LAYER_KERNELS, reason))
    if fused:
        n_tiles = -(-batch_size // S)
        update = "fused_update"
        update_reason = f"sums {n_tiles} tile(s) of gradients and updates in one launch"
        launches = "2 launches per mini-batch (fused_backprop, fused_update)"
    else:
        update = "update twin"
        update_reason = "record_cost, then sgd_update/momentum_update/adam_update"
        launches = (
            f"{4 * L + 4} launches per mini-batch (+1 for a softmax output): gathers, "
            "per-layer kernels, record_cost, update"
        )
    return Plan(
        device="cuda",
        strategy=strategy,
        batch_size=batch_size,
        threads=kc.FUSED_THREADS if fused else kc.THREADS_PER_BLOCK,
        layers=tuple(layers),
        update=update,
        update_reason=update_reason,
        notes=(
            launches,
            "threads = threads per block; the data set, parameters and buffers stay on the "
            "device for the whole fit, one sample order uploaded per epoch, costs copied back "
            "once per epoch",
        ),
    )


def plan(
    sizes, batch_size: int, device: str = "auto", strategy: str = "auto",
    n_params: int | None = None, dtype="float64",
) -> Plan:  # fmt: skip
    """The front: choose the device (:func:`choose_device`), then its kernels."""
    chosen, reason = choose_device(device, strategy, sizes, batch_size)
    if chosen == "cuda":
        p = plan_cuda(sizes, batch_size, strategy, n_params, dtype)
    else:
        p = plan_cpu(sizes, batch_size, strategy, n_params)
    return replace(p, notes=(f"device: {reason}",) + p.notes)
