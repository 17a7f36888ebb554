"""Device choice as a user without a GPU sees it: clear errors, quiet CPU fallback.

The CUDA kernels themselves are tested in tests/cuda (simulator or real GPU).
"""

import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import nbbackprop as nb
from nbbackprop import devices, orchestration
from nbbackprop.cli import main

no_gpu = pytest.mark.skipif(
    devices.cuda_status().usable, reason="a CUDA device (or the simulator) is usable here"
)


def test_import_does_not_import_numba_cuda():
    code = "import sys, nbbackprop; print('numba.cuda' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@no_gpu
def test_cuda_without_a_gpu_raises_and_says_why():
    with pytest.raises(devices.CudaUnavailableError, match="needs a usable NVIDIA GPU: ") as err:
        nb.Network([3, 2], device="cuda")
    assert devices.cuda_status().reason in str(err.value)
    with pytest.raises(devices.CudaUnavailableError):
        nb.Network([3, 2]).fit(np.ones((2, 3)), [0, 1], epochs=1, device="cuda")
    with pytest.raises(devices.CudaUnavailableError):
        nb.Network([3, 2], strategy="fused")


@no_gpu
def test_auto_quietly_uses_the_cpu(monkeypatch):
    net = nb.Network([5, 4, 3])
    assert net.device == "auto" and net.dtype == np.float64
    assert net.plan(10).device == "cpu"
    monkeypatch.setattr(orchestration, "AUTO_CUDA_MIN_MACS", 1)  # as if the work were large
    p = net.plan(10)
    assert p.device == "cpu" and "no usable GPU" in str(p)
    net.fit(np.ones((4, 5)), [0, 1, 2, 0], epochs=1, batch_size=2)


def test_missing_numba_cuda_is_named(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "numba_cuda" else real(name)
    )
    status = devices.cuda_status.__wrapped__()
    assert not status.usable and "numba-cuda is not installed" in status.reason
    assert "nbbackprop[cuda]" in status.reason


def test_strategy_and_device_must_agree():
    with pytest.raises(ValueError, match="runs on the GPU"):
        nb.Network([3, 2], device="cpu", strategy="fused")
    with pytest.raises(ValueError, match="CPU strategy"):
        orchestration.check_device_strategy("cuda", "serial")
    with pytest.raises(ValueError, match="device: expected one of"):
        nb.Network([3, 2], device="gpu")
    with pytest.raises(ValueError, match="strategy: expected one of"):
        nb.Network([3, 2]).plan(4, strategy="turbo")


def test_cpu_plan_api_unchanged_and_plan_says_why():
    p = orchestration.plan_cpu([5, 4, 3], 10)
    assert p.device == "cpu" and len(p.layers) == 2
    text = str(nb.Network([5, 4, 3], device="cpu").plan(10))
    assert "device: device='cpu' requested" in text and "multiply-adds per batch" in text


def test_info_reports_devices():
    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 0, result.output
    assert "threads:" in result.output and "cuda:" in result.output and "cpu:" in result.output
    assert "plan: device=" in result.output
