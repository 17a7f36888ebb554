"""The Network on a CUDA device (the simulator here) against the CPU run and the reference.

Every GPU strategy ("layered" and "fused") is run; results must equal the CPU's
within the dtype tolerance of tests/conftest.py.
"""

import numpy as np
import pytest
import reference as ref
from conftest import assert_backprop_matches_reference, assert_close
from cuda_support import small_launches  # noqa: F401

import nbbackprop as nb
from nbbackprop import orchestration

DTYPES = [np.float64, np.float32]
GPU_STRATEGIES = ["layered", "fused"]


def make_data(rng, sizes, m, dtype=np.float64):
    X = rng.random((m, sizes[0])).astype(dtype)
    labels = rng.integers(0, sizes[-1], m)
    return X, np.eye(sizes[-1], dtype=dtype)[labels], labels


def ref_params(net):
    return [W.astype(np.float64).copy() for W in net.weights], [
        b.astype(np.float64).copy() for b in net.biases
    ]


def pair(sizes, dtype, **kw):
    """The same network on the CPU and on the (simulated) GPU."""
    name = np.dtype(dtype).name
    return nb.Network(sizes, dtype=name, device="cpu", **kw), nb.Network(
        sizes, dtype=name, device="cuda", **kw
    )


@pytest.mark.parametrize("strategy", GPU_STRATEGIES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes, batch_size", [([5, 4, 3], 3), ([3, 1, 2], 30), ([2, 3], 1)])
def test_fit_matches_reference_and_cpu(sizes, batch_size, dtype, strategy, rng):
    X, Y, _ = make_data(rng, sizes, 7, dtype)
    cpu_net, gpu_net = pair(sizes, dtype, seed=7)
    W, b = ref_params(gpu_net)
    ref_cost = ref.sgd_epoch(W, b, gpu_net.activations, "quadratic", X.astype(np.float64),
                             Y.astype(np.float64), batch_size, 0.7)  # fmt: skip
    h = gpu_net.fit(X, Y, epochs=1, batch_size=batch_size, eta=0.7, shuffle=False,
                    strategy=strategy)  # fmt: skip
    for l in range(len(W)):
        assert_close(gpu_net.weights[l], W[l], dtype, scale=10)
        assert_close(gpu_net.biases[l], b[l], dtype, scale=10)
    assert_close(h["train_cost"], [ref_cost], dtype, scale=10)
    h_cpu = cpu_net.fit(X, Y, epochs=1, batch_size=batch_size, eta=0.7, shuffle=False)
    assert_close(gpu_net.params, cpu_net.params, dtype)
    assert_close(h["train_cost"], h_cpu["train_cost"], dtype)
    assert gpu_net.step[0] == cpu_net.step[0]


@pytest.mark.parametrize("strategy", GPU_STRATEGIES)
@pytest.mark.parametrize("optimizer", ["momentum", "nesterov", "adam"])
def test_optimizers_shuffle_and_l2_match_cpu(optimizer, strategy, rng):
    sizes = [4, 5, 3]
    X, _, labels = make_data(rng, sizes, 7)
    cpu_net, gpu_net = pair(sizes, np.float64, seed=1)
    kw = dict(epochs=2, batch_size=4, eta=0.05, seed=42, lmbda=0.3, optimizer=optimizer)
    h_cpu = cpu_net.fit(X, labels, **kw)
    h = gpu_net.fit(X, labels, strategy=strategy, **kw)
    assert_close(gpu_net.params, cpu_net.params, np.float64)
    assert_close(gpu_net.opt_state, cpu_net.opt_state, np.float64)
    assert_close(h["train_cost"], h_cpu["train_cost"], np.float64)


@pytest.mark.parametrize("strategy", GPU_STRATEGIES)
@pytest.mark.parametrize(
    "kw",
    [
        dict(cost="cross_entropy", activation="tanh", output_activation="sigmoid"),
        dict(cost="log_likelihood", activation="relu"),
        dict(cost="quadratic", activation=["sigmoid", "identity", "softmax"]),
    ],
)
def test_costs_and_activations_match_cpu(kw, strategy, rng):
    sizes = [3, 5, 2, 4] if isinstance(kw["activation"], list) else [3, 5, 4]
    X, _, labels = make_data(rng, sizes, 5)
    cpu_net, gpu_net = pair(sizes, np.float32, seed=4, **kw)
    h_cpu = cpu_net.fit(X, labels, epochs=1, batch_size=3, eta=0.5, seed=0)
    h = gpu_net.fit(X, labels, epochs=1, batch_size=3, eta=0.5, seed=0, strategy=strategy)
    assert_close(gpu_net.params, cpu_net.params, np.float32)
    assert_close(h["train_cost"], h_cpu["train_cost"], np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
def test_feedforward_backprop_and_cost_on_the_device(dtype, rng):
    sizes = [5, 4, 1, 3]
    X, Y, labels = make_data(rng, sizes, 6, dtype)
    _, net = pair(sizes, dtype, seed=5)
    W, b = ref_params(net)
    assert_close(net.feedforward(X), ref.predict(W, b, net.activations, X.astype(np.float64)),
                 dtype)  # fmt: skip
    assert_backprop_matches_reference(net, X, Y, dtype)
    assert net.evaluate(X, labels) == np.mean(ref.predict(W, b, net.activations, X).argmax(1)
                                              == labels)  # fmt: skip


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the simulator's NumPy
@pytest.mark.parametrize("strategy", GPU_STRATEGIES)
def test_divergence_stops_where_the_cpu_stops(strategy, rng):
    sizes = [3, 4, 2]
    X, Y, _ = make_data(rng, sizes, 9)
    X *= 1e3
    cpu_net, gpu_net = pair(sizes, np.float64, seed=0, activation="identity")
    kw = dict(epochs=3, batch_size=2, eta=1e30, shuffle=False)
    with pytest.raises(FloatingPointError) as cpu_err:
        cpu_net.fit(X, Y, **kw)
    with pytest.raises(FloatingPointError) as gpu_err:
        gpu_net.fit(X, Y, strategy=strategy, **kw)
    assert str(gpu_err.value) == str(cpu_err.value)
    # Both restored the parameters from the start of the diverging epoch.
    assert np.isfinite(gpu_net.params).all()
    assert_close(gpu_net.params, cpu_net.params, np.float64)
    assert gpu_net.step[0] == cpu_net.step[0]


def test_validation_and_callback_see_each_epochs_parameters(rng):
    sizes = [4, 3, 2]
    X, _, labels = make_data(rng, sizes, 6)
    seen = {}
    for device in ("cpu", "cuda"):
        net = nb.Network(sizes, seed=3, device=device, dtype="float64")
        snaps = []
        h = net.fit(X, labels, epochs=2, batch_size=4, eta=1.0, seed=1,
                    validation_data=(X, labels),
                    callback=lambda e, hist, n=net, s=snaps: s.append(n.params.copy()))  # fmt: skip
        seen[device] = (snaps, h)
    for a, b in zip(seen["cuda"][0], seen["cpu"][0], strict=True):
        assert_close(a, b, np.float64)
    assert_close(seen["cuda"][1]["val_cost"], seen["cpu"][1]["val_cost"], np.float64)
    assert seen["cuda"][1]["val_accuracy"] == seen["cpu"][1]["val_accuracy"]


def test_parameters_come_back_in_place():
    net = nb.Network([3, 2], seed=0, device="cuda")
    assert net.dtype == np.float32  # the GPU default
    views = [net.weights[0], net.biases[0]]
    before = net.params.copy()
    net.fit(np.ones((4, 3)), np.array([0, 1, 0, 1]), epochs=1, batch_size=2, eta=0.5)
    assert not np.array_equal(net.params, before)
    assert np.shares_memory(views[0], net.params) and views[0] is net.weights[0]
    np.testing.assert_array_equal(net.weights[0].ravel(), net.params[:6])


def test_device_override_in_fit(rng):
    sizes = [4, 3, 2]
    X, _, labels = make_data(rng, sizes, 5)
    a = nb.Network(sizes, seed=2, device="cpu")
    b = nb.Network(sizes, seed=2)  # auto: tiny work, so the CPU
    a.fit(X, labels, epochs=1, batch_size=2, eta=1.0, seed=0)
    b.fit(X, labels, epochs=1, batch_size=2, eta=1.0, seed=0, device="cuda")
    assert_close(b.params, a.params, np.float64)


def test_plan_explains_the_gpu_choice(monkeypatch):
    net = nb.Network([6, 5, 4], device="cuda")
    p = net.plan(8)
    assert p.device == "cuda" and all(lp.variant == "fused" for lp in p.layers)
    text = str(p)
    assert "fused_backprop" in text and "device='cuda' requested" in text
    assert "2 launches per mini-batch" in text
    layered = net.plan(8, strategy="layered")
    assert all(lp.variant == "layered" for lp in layered.layers)
    assert "forced by strategy='layered'" in str(layered)
    monkeypatch.setattr(orchestration, "FUSED_MAX_WIDTH", 4)
    wide = net.plan(8)
    assert wide.layers[0].variant == "layered" and "too wide" in str(wide)
    with pytest.raises(ValueError, match="strategy='fused' cannot run"):
        net.plan(8, strategy="fused")
    with pytest.raises(ValueError, match="CPU strategy"):
        net.plan(8, strategy="serial")
    assert net.plan(8, device="cpu").device == "cpu"


def test_auto_never_takes_the_simulator(monkeypatch):
    monkeypatch.setattr(orchestration, "AUTO_CUDA_MIN_MACS", 1)
    p = nb.Network([6, 5, 4]).plan(8)
    assert p.device == "cpu" and "simulator" in str(p)


def test_gpu_check_script_correctness_part_runs_simulated(capsys):
    """benchmarks/gpu_check.py --simulate: its kernel and strategy checks pass here."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[2] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    assert gpu_check.main(["--simulate"]) == 0  # the fixture restores the launch settings
    out = capsys.readouterr().out
    assert "all checks passed" in out and "fused" in out and "adam_update" in out


@pytest.mark.parametrize("strategy", GPU_STRATEGIES)
def test_schedules_early_stopping_monitors_and_continuation_match_cpu(strategy, rng, tmp_path):
    """fit's per-epoch machinery sees the GPU's parameters each epoch, as on the CPU."""
    sizes = [4, 5, 3]
    X, _, labels = make_data(rng, sizes, 12)
    cpu_net, gpu_net = pair(sizes, np.float64, seed=6)
    kw = dict(batch_size=4, eta=0.3, seed=2, optimizer="adam", schedule="invscaling",
              monitor=("train_accuracy", "val_cost"), early_stopping=True, patience=1,
              restore_best=True)  # fmt: skip
    h_cpu = cpu_net.fit(X, labels, epochs=3, **kw)
    h = gpu_net.fit(X, labels, epochs=3, strategy=strategy, checkpoint=tmp_path / "c.npz", **kw)
    assert h.keys() == h_cpu.keys() and h["epoch"] == h_cpu["epoch"] and h["eta"] == h_cpu["eta"]
    for key in ("train_cost", "val_cost", "train_accuracy"):
        assert_close(h[key], h_cpu[key], np.float64)
    assert_close(gpu_net.params, cpu_net.params, np.float64)
    # Continuation: optimiser state, step and epoch count carry into the next fit.
    more = dict(batch_size=4, eta=0.3, optimizer="adam", shuffle=False)
    cpu_net.fit(X, labels, epochs=1, **more)
    gpu_net.fit(X, labels, epochs=1, strategy=strategy, **more)
    assert gpu_net.step[0] == cpu_net.step[0] and gpu_net.epochs_trained == cpu_net.epochs_trained
    assert_close(gpu_net.params, cpu_net.params, np.float64)
    assert_close(gpu_net.opt_state, cpu_net.opt_state, np.float64)
