"""Which devices can run the kernels, and why a GPU cannot when it cannot.

``import nbbackprop`` must stay light and work without numba-cuda, so nothing
here imports :mod:`numba.cuda` until a GPU is asked about. The probe runs once
per process and its answer is cached: a :class:`CudaStatus` that says whether the
CUDA target is usable, whether it is NVIDIA's simulator
(``NUMBA_ENABLE_CUDASIM=1``), and in words why not when it is not.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass

INSTALL_HINT = "install the CUDA extra: pip install 'nbbackprop[cuda]'"


class CudaUnavailableError(RuntimeError):
    """``device="cuda"`` was asked for and no usable CUDA device exists; the message says why."""


@dataclass(frozen=True)
class CudaStatus:
    """The answer of the GPU probe."""

    usable: bool
    simulated: bool
    reason: str
    name: str = ""

    def __str__(self) -> str:
        if self.usable:
            return f"cuda: {self.name} ({self.reason})"
        return f"cuda: not usable - {self.reason}"


def simulator_requested() -> bool:
    """True when ``NUMBA_ENABLE_CUDASIM`` asks for NVIDIA's CUDA simulator."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


@functools.cache
def cuda_status() -> CudaStatus:
    """Probe the CUDA target once: numba-cuda installed, a driver, a device."""
    if importlib.util.find_spec("numba_cuda") is None:
        return CudaStatus(False, False, f"numba-cuda is not installed ({INSTALL_HINT})")
    try:
        from numba import cuda
    except Exception as exc:  # a broken install: say what broke
        return CudaStatus(False, False, f"importing numba.cuda failed: {exc}")
    if simulator_requested():
        return CudaStatus(
            True, True, "NVIDIA's simulator, NUMBA_ENABLE_CUDASIM=1: slow, for tests", "cudasim"
        )
    try:
        from numba.cuda.cudadrv import driver

        count = driver.driver.get_device_count()
    except Exception as exc:
        text = " ".join(str(exc).split())
        if "cannot be found" in text or "driver library" in text:
            why = "no NVIDIA driver: the CUDA driver library (libcuda) cannot be found"
        else:
            why = f"the CUDA driver failed to initialise: {text}"
        return CudaStatus(False, False, why)
    if count < 1:
        return CudaStatus(False, False, "the NVIDIA driver reports no GPU")
    try:
        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        cc = ".".join(str(c) for c in dev.compute_capability)
    except Exception as exc:
        return CudaStatus(False, False, f"the GPU could not be opened: {exc}")
    return CudaStatus(True, False, f"compute capability {cc}, {count} device(s)", name)


def require_cuda() -> CudaStatus:
    """The status of a usable CUDA target, or :class:`CudaUnavailableError` saying why not."""
    status = cuda_status()
    if not status.usable:
        raise CudaUnavailableError(
            f"device='cuda' needs a usable NVIDIA GPU: {status.reason}. "
            "Use device='cpu' or device='auto' to train on the CPU."
        )
    return status


def describe() -> list[str]:
    """Lines for ``nbbackprop info``: the CPU and the CUDA device."""
    import numba

    return [f"cpu: {numba.get_num_threads()} threads", str(cuda_status())]
