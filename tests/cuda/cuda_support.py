"""Shared set-up of the CUDA tests (not a conftest.py: see tests/conftest.py).

Import the autouse fixture into a test module to make every launch tiny::

    from cuda_support import small_launches  # noqa: F401
"""

import numpy as np
import pytest

from nbbackprop import devices

if not (devices.simulator_requested() or devices.cuda_status().usable):
    # Reached when tests/cuda is named explicitly without the simulator or a GPU
    # (a plain ``python -m pytest`` does not collect it: see tests/conftest.py).
    pytest.skip(
        f"CUDA tests need NUMBA_ENABLE_CUDASIM=1 (set before numba is imported) or a GPU; "
        f"{devices.cuda_status()}",
        allow_module_level=True,
    )

from numba import cuda  # noqa: E402

from nbbackprop import orchestration  # noqa: E402
from nbbackprop.kernels import cuda as kc  # noqa: E402


@pytest.fixture(autouse=True)
def small_launches(monkeypatch):
    """Blocks of a few threads, tiles of 3 and at most 2 blocks per grid axis.

    So the tiny arrays of these tests span several blocks, sizes do not divide
    the block or tile size, and every grid-stride loop goes round more than once.
    The fused kernel gets tiles of 2 samples and 8 threads per block.
    """
    monkeypatch.setattr(kc, "THREADS_PER_BLOCK", 4)
    monkeypatch.setattr(kc, "TILE", 3)
    monkeypatch.setattr(kc, "MAX_BLOCKS", 2)
    monkeypatch.setattr(kc, "FUSED_THREADS", 8)
    monkeypatch.setattr(orchestration, "FUSED_MAX_SAMPLES", 2)


def dev(a):
    """A device copy of a host array."""
    return cuda.to_device(np.ascontiguousarray(a))


def host(d):
    return d.copy_to_host()
