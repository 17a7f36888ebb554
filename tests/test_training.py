"""Costs, activations, inits, L2, optimisers, schedules, early stopping, partial_fit, monitoring.

Oracles: the plain-NumPy reference (tests/reference.py), central differences for
every cost x output activation x hidden activation, NumPy transcriptions of the
update rules, and PyTorch (when installed) for the gradients and optimiser steps.
"""

import itertools

import numpy as np
import pytest
import reference as ref
from conftest import assert_close, numeric_grads

import nbbackprop as nb
from nbbackprop import functions as fn

HIDDEN = ("sigmoid", "tanh", "relu", "identity")
COMBOS = [(cost, out) for cost, outs in fn.COST_OUTPUTS.items() for out in outs]


def targets(rng, cost, m, n):
    """Targets each cost is meant for: one-hot rows for the log-likelihood, (0, 1) otherwise."""
    if cost == "log_likelihood":
        return np.eye(n)[rng.integers(0, n, m)]
    if cost == "cross_entropy":
        return rng.random((m, n))
    return rng.standard_normal((m, n))


def net_for(cost, out, hidden, sizes=(3, 4, 3), seed=11, dtype="float64"):
    return nb.Network(list(sizes), activation=hidden, output_activation=out, cost=cost,
                      seed=seed, dtype=dtype)  # fmt: skip


def flat_grads(net, X, Y):
    nabla_w, nabla_b = net.backprop(X, Y)
    return np.concatenate([g.ravel() for g in nabla_w] + [g.ravel() for g in nabla_b])


def far_from_kinks(net, X, h):
    """ReLU's derivative jumps at z = 0: a difference step must not cross it."""
    W = [w.copy() for w in net.weights]
    b = [c.copy() for c in net.biases]
    for x in X:
        zs, _ = ref.feedforward(W, b, net.activations, x.reshape(-1, 1))
        for z, name in zip(zs, net.activations, strict=True):
            # A step h in one parameter moves z by at most h * (1 + max |input|) ≤ ~10 h.
            if name == "relu" and np.min(np.abs(z)) < 100 * h:
                return False
    return True


# ------------------------------------------------------------------ gradients


@pytest.mark.parametrize(("cost", "out"), COMBOS)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_gradients_match_finite_differences(cost, out, hidden, rng):
    X = rng.standard_normal((4, 3))
    Y = targets(rng, cost, 4, 3)
    h = 1e-6
    for seed in range(11, 60):
        net = net_for(cost, out, hidden, seed=seed)
        if far_from_kinks(net, X, h):
            break
    else:  # pragma: no cover - the seeds above always contain one
        pytest.fail("no seed without a ReLU pre-activation near 0")
    assert net.activations == (hidden, out)
    np.testing.assert_allclose(flat_grads(net, X, Y), numeric_grads(net, X, Y, h),
                               rtol=1e-6, atol=1e-8)  # fmt: skip


@pytest.mark.parametrize(("cost", "out"), COMBOS)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_gradients_and_cost_match_reference(cost, out, hidden, rng):
    net = net_for(cost, out, hidden, sizes=(5, 4, 3, 3))
    X = rng.standard_normal((6, 5))
    Y = targets(rng, cost, 6, 3)
    W = [w.copy() for w in net.weights]
    b = [c.copy() for c in net.biases]
    nw, nbias, c = ref.mean_gradients(W, b, net.activations, cost, X, Y)
    gw, gb = net.backprop(X, Y)
    for l in range(len(W)):
        assert_close(gw[l], nw[l], np.float64, scale=10)
        assert_close(gb[l], nbias[l], np.float64, scale=10)
    assert_close(net.cost(X, Y), c, np.float64)


def test_cross_entropy_sigmoid_output_delta_is_a_minus_y(rng):
    """BP1 for cross-entropy with a sigmoid output: δ^L = a^L − y (σ' cancels)."""
    net = nb.Network([3, 2], activation="sigmoid", cost="cross_entropy", seed=0)
    X = rng.standard_normal((5, 3))
    Y = rng.random((5, 2))
    a = net.feedforward(X)
    _, nabla_b = net.backprop(X, Y)
    np.testing.assert_allclose(nabla_b[0], np.mean(a - Y, axis=0), rtol=1e-12)


def test_softmax_log_likelihood_output_delta_is_a_minus_y(rng):
    net = nb.Network([3, 4], cost="log_likelihood", seed=0)
    assert net.activations == ("softmax",)
    X = rng.standard_normal((5, 3))
    Y = np.eye(4)[[0, 1, 2, 3, 1]]
    a = net.feedforward(X)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-12)
    _, nabla_b = net.backprop(X, Y)
    np.testing.assert_allclose(nabla_b[0], np.mean(a - Y, axis=0), rtol=1e-12)


def test_activations_per_layer_and_output_override():
    net = nb.Network([4, 5, 6, 3], activation=["relu", "tanh", "identity"])
    assert net.activations == ("relu", "tanh", "identity")
    net = nb.Network([4, 5, 3], activation="tanh", output_activation="sigmoid")
    assert net.activations == ("tanh", "sigmoid")
    with pytest.raises(ValueError, match="cross_entropy"):
        nb.Network([4, 5, 3], activation="relu", cost="cross_entropy")
    with pytest.raises(ValueError, match="activation"):
        nb.Network([4, 5, 3], activation="swish")
    with pytest.raises(ValueError, match="one name or 2 names"):
        nb.Network([4, 5, 3], activation=["relu"])


# -------------------------------------------------------------- initialisation


@pytest.mark.parametrize("init", ["large", "default", "glorot", "he"])
def test_initialisation_distributions(init):
    n_in, n_out = 400, 300
    net = nb.Network([n_in, n_out], init=init, seed=3)
    W, b = net.weights[0], net.biases[0]
    expected_std = {
        "large": 1.0,
        "default": 1 / np.sqrt(n_in),
        "glorot": np.sqrt(6 / (n_in + n_out)) / np.sqrt(3),
        "he": np.sqrt(2 / n_in),
    }[init]
    assert W.std() == pytest.approx(expected_std, rel=0.02)
    assert abs(W.mean()) < 0.01 * expected_std * 10
    if init == "glorot":
        assert np.abs(W).max() <= np.sqrt(6 / (n_in + n_out))
    if init in ("large", "default"):
        assert b.std() == pytest.approx(1.0, rel=0.2)
    else:
        assert not b.any()
    again = nb.Network([n_in, n_out], init=init, seed=3)
    assert np.array_equal(net.params, again.params)
    assert not np.array_equal(net.params, nb.Network([n_in, n_out], init=init, seed=4).params)


# ----------------------------------------------------------------- L2 and cost


@pytest.mark.parametrize("batch_size", [1, 4, 13])
def test_l2_epoch_matches_reference(batch_size, rng):
    net = nb.Network([5, 4, 3], seed=7)
    X = rng.random((13, 5))
    Y = np.eye(3)[rng.integers(0, 3, 13)]
    W = [w.copy() for w in net.weights]
    b = [c.copy() for c in net.biases]
    ref_cost = ref.sgd_epoch(W, b, net.activations, "quadratic", X, Y, batch_size, 0.7, lmbda=2.5)
    hist = net.fit(X, Y, epochs=1, batch_size=batch_size, eta=0.7, lmbda=2.5, shuffle=False)
    for l in range(2):
        assert_close(net.weights[l], W[l], np.float64, scale=10)
        assert_close(net.biases[l], b[l], np.float64, scale=10)
    assert_close(hist["train_cost"][0], ref_cost, np.float64)


def test_regularised_cost_adds_half_lambda_over_n_sum_of_squares(rng):
    net = nb.Network([5, 4, 3], seed=1)
    X = rng.random((8, 5))
    Y = np.eye(3)[rng.integers(0, 3, 8)]
    sq = sum(float(np.sum(w**2)) for w in net.weights)
    assert net.cost(X, Y, lmbda=3.0) == pytest.approx(net.cost(X, Y) + 0.5 * 3.0 / 8 * sq)


# ------------------------------------------------------------------ optimisers


def one_batch_run(net, X, Y, steps, **kw):
    """Train with the whole data as one batch: one update per epoch, no shuffling."""
    net.fit(X, Y, epochs=steps, batch_size=len(X), shuffle=False, **kw)


def reference_steps(net, X, Y, steps, optimizer, eta, lmbda, mu=0.9, b1=0.9, b2=0.999, eps=1e-8):
    """The update rules transcribed from their papers/scikit-learn, on the NumPy reference."""
    W = [w.copy() for w in net.weights]
    b = [c.copy() for c in net.biases]
    params = W + b
    vel = [np.zeros_like(p) for p in params]
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    n = len(X)
    for t in range(1, steps + 1):
        gw, gb, _ = ref.mean_gradients(W, b, net.activations, net.cost_name, X, Y)
        grads = [g + lmbda / n * w for g, w in zip(gw, W, strict=True)] + gb
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            if optimizer == "momentum":
                vel[i] = mu * vel[i] - eta * g
                p += vel[i]
            elif optimizer == "nesterov":
                vel[i] = mu * vel[i] - eta * g
                p += mu * vel[i] - eta * g
            else:
                m1[i] = b1 * m1[i] + (1 - b1) * g
                m2[i] = b2 * m2[i] + (1 - b2) * g * g
                p -= eta * (m1[i] / (1 - b1**t)) / (np.sqrt(m2[i] / (1 - b2**t)) + eps)
    return W, b


@pytest.mark.parametrize("optimizer", ["momentum", "nesterov", "adam"])
def test_optimizers_match_reference(optimizer, rng):
    net = nb.Network([4, 5, 3], activation="tanh", seed=2)
    X = rng.standard_normal((9, 4))
    Y = np.eye(3)[rng.integers(0, 3, 9)]
    eta = 0.01 if optimizer == "adam" else 0.3
    W, b = reference_steps(net, X, Y, 4, optimizer, eta, lmbda=0.5)
    one_batch_run(net, X, Y, 4, eta=eta, lmbda=0.5, optimizer=optimizer)
    assert net.step[0] == 4
    for l in range(2):
        assert_close(net.weights[l], W[l], np.float64, scale=10)
        assert_close(net.biases[l], b[l], np.float64, scale=10)


def test_changing_optimizer_resets_its_state(rng):
    net = nb.Network([4, 3], seed=0)
    X = rng.random((6, 4))
    net.fit(X, X[:, :3], epochs=1, batch_size=3, eta=0.1, optimizer="adam")
    assert net.opt_state.shape == (2, net.n_params) and net.step[0] == 2
    net.fit(X, X[:, :3], epochs=1, batch_size=3, eta=0.1, optimizer="momentum")
    assert net.opt_state.shape == (1, net.n_params) and net.step[0] == 2


# ----------------------------------------------------- PyTorch as an oracle


def torch_forward(torch, W, b, acts, X):
    f = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
         "identity": lambda z: z, "softmax": lambda z: torch.softmax(z, dim=1)}  # fmt: skip
    a = X
    for w, c, name in zip(W, b, acts, strict=True):
        a = f[name](a @ w.T + c)
    return a


def torch_cost(torch, a, Y, cost):
    if cost == "quadratic":
        return 0.5 * ((a - Y) ** 2).sum(dim=1).mean()
    if cost == "cross_entropy":
        return torch.nn.functional.binary_cross_entropy(a, Y, reduction="sum") / len(Y)
    return -(Y * torch.log(a)).sum(dim=1).mean()


@pytest.mark.parametrize(("cost", "out"), COMBOS)
def test_gradients_match_torch(cost, out, rng):
    torch = pytest.importorskip("torch")
    net = net_for(cost, out, "tanh", sizes=(5, 6, 4))
    X = rng.standard_normal((7, 5))
    Y = targets(rng, cost, 7, 4)
    W = [torch.tensor(w, requires_grad=True) for w in net.weights]
    b = [torch.tensor(c, requires_grad=True) for c in net.biases]
    loss = torch_cost(torch, torch_forward(torch, W, b, net.activations, torch.tensor(X)),
                      torch.tensor(Y), cost)  # fmt: skip
    loss.backward()
    gw, gb = net.backprop(X, Y)
    assert net.cost(X, Y) == pytest.approx(loss.item(), rel=1e-12)
    for l in range(2):
        np.testing.assert_allclose(gw[l], W[l].grad.numpy(), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(gb[l], b[l].grad.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("optimizer", ["momentum", "nesterov", "adam"])
def test_optimizer_steps_match_torch(optimizer, rng):
    """Three steps against torch.optim, with L2 on the weights as torch's weight_decay."""
    torch = pytest.importorskip("torch")
    net = nb.Network([4, 5, 3], activation="sigmoid", cost="cross_entropy", seed=4)
    X = rng.standard_normal((8, 4))
    Y = np.eye(3)[rng.integers(0, 3, 8)]
    eta, lmbda, n = (0.01 if optimizer == "adam" else 0.5), 0.4, len(X)
    W = [torch.tensor(w, requires_grad=True) for w in net.weights]
    b = [torch.tensor(c, requires_grad=True) for c in net.biases]
    groups = [{"params": W, "weight_decay": lmbda / n}, {"params": b, "weight_decay": 0.0}]
    if optimizer == "adam":
        opt = torch.optim.Adam(groups, lr=eta, betas=(0.9, 0.999), eps=1e-8)
    else:
        opt = torch.optim.SGD(groups, lr=eta, momentum=0.9, nesterov=optimizer == "nesterov")
    for _ in range(3):
        opt.zero_grad()
        a = torch_forward(torch, W, b, net.activations, torch.tensor(X))
        torch_cost(torch, a, torch.tensor(Y), "cross_entropy").backward()
        opt.step()
    one_batch_run(net, X, Y, 3, eta=eta, lmbda=lmbda, optimizer=optimizer)
    for l in range(2):
        np.testing.assert_allclose(net.weights[l], W[l].detach().numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(net.biases[l], b[l].detach().numpy(), rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------- schedules


@pytest.fixture
def data(rng):
    X = rng.random((30, 4))
    labels = rng.integers(0, 3, 30)
    return X, labels


@pytest.mark.parametrize(
    ("schedule", "kw", "expected"),
    [
        ("constant", {}, [1.0] * 5),
        ("invscaling", {"power_t": 0.5}, [1 / np.sqrt(e + 1) for e in range(5)]),
        ("step", {"step_size": 2, "gamma": 0.1}, [1.0, 1.0, 0.1, 0.1, 0.01]),
    ],
)
def test_schedules_set_eta_per_epoch(schedule, kw, expected, data):
    X, labels = data
    net = nb.Network([4, 5, 3], seed=0)
    h = net.fit(X, labels, epochs=3, batch_size=5, eta=1.0, schedule=schedule, **kw)
    h2 = net.fit(X, labels, epochs=2, batch_size=5, eta=1.0, schedule=schedule, **kw)
    np.testing.assert_allclose(h["eta"] + h2["eta"], expected, rtol=1e-15)
    assert h["epoch"] + h2["epoch"] == [0, 1, 2, 3, 4]


def test_step_schedule_applies_eta_to_the_update(rng):
    """With γ = 0 after the first epoch, η = 0 freezes the parameters."""
    net = nb.Network([4, 3], seed=0)
    X = rng.random((6, 4))
    Y = X[:, :3]
    net.fit(X, Y, epochs=1, batch_size=3, eta=0.5)
    frozen = net.params.copy()
    h = net.fit(X, Y, epochs=2, batch_size=3, eta=0.5, schedule="step", step_size=1,
                gamma=1e-300)  # fmt: skip
    assert h["eta"][0] < 1e-290
    np.testing.assert_allclose(net.params, frozen, rtol=1e-12)


def test_plateau_schedule_multiplies_eta_after_patience(data):
    X, labels = data
    net = nb.Network([4, 5, 3], seed=0)
    # tol is huge, so no epoch after the first counts as an improvement.
    h = net.fit(X, labels, epochs=6, batch_size=5, eta=1.0, schedule="plateau",
                plateau_patience=2, gamma=0.5, tol=1e9)  # fmt: skip
    # Epoch 0 sets the best; epochs 1, 2 fail (η halves after 2), then 3, 4 (halves again).
    assert h["eta"] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25]
    assert net.schedule_state["eta_scale"] == 0.25 and net.schedule_state["bad"] == 1


def test_plateau_keeps_eta_while_improving(data):
    X, labels = data
    net = nb.Network([4, 5, 3], seed=0)
    h = net.fit(X, labels, epochs=5, batch_size=5, eta=0.5, schedule="plateau",
                plateau_patience=1, validation_data=(X, labels))  # fmt: skip
    assert all(np.diff(h["val_cost"]) < 0)
    assert h["eta"] == [0.5] * 5


# ------------------------------------------------------------ early stopping


def test_early_stopping_after_patience_and_restores_best(data):
    X, labels = data
    net = nb.Network([4, 5, 3], seed=0)
    seen = []
    h = net.fit(X, labels, epochs=50, batch_size=5, eta=0.5, validation_data=(X, labels),
                early_stopping=True, patience=3, tol=1e9, restore_best=True,
                callback=lambda e, hist: seen.append(net.params.copy()))  # fmt: skip
    assert len(h["epoch"]) == 4  # the first epoch improves, then 3 that do not count
    best = int(np.argmin(h["val_cost"]))
    assert np.array_equal(net.params, seen[best])


def test_early_stopping_stops_when_validation_worsens(rng):
    # A network that overfits 12 noisy samples while the validation cost rises.
    X = rng.standard_normal((12, 6))
    Xv = rng.standard_normal((200, 6))
    net = nb.Network([6, 40, 2], seed=0)
    h = net.fit(X, rng.integers(0, 2, 12), epochs=500, batch_size=4, eta=2.0,
                validation_data=(Xv, rng.integers(0, 2, 200)), early_stopping=True,
                patience=5)  # fmt: skip
    assert len(h["epoch"]) < 500
    best = int(np.argmin(h["val_cost"]))
    assert len(h["epoch"]) == best + 1 + 5


def test_early_stopping_holds_out_a_validation_split(data):
    X, labels = data
    net = nb.Network([4, 5, 3], seed=0)
    h = net.fit(X, labels, epochs=3, batch_size=5, eta=0.5, early_stopping=True,
                validation_fraction=0.2, seed=1)  # fmt: skip
    assert len(h["val_cost"]) == 3
    # 6 of the 30 samples held out, drawn from the network's stream after reseeding.
    perm = np.random.default_rng(1).permutation(30)
    net3 = nb.Network([4, 5, 3], seed=0)
    net3.rng = np.random.default_rng(1)
    net3.rng.permutation(30)
    h3 = net3.fit(X[perm[6:]], labels[perm[6:]], epochs=3, batch_size=5, eta=0.5,
                  validation_data=(X[perm[:6]], labels[perm[:6]]))  # fmt: skip
    assert np.array_equal(net.params, net3.params)
    assert h["val_cost"] == h3["val_cost"]


# ---------------------------------------------- partial_fit, monitor, continuing


def test_partial_fit_equals_fit(data):
    X, labels = data
    a = nb.Network([4, 5, 3], seed=0)
    a.fit(X, labels, epochs=3, batch_size=4, eta=0.5, seed=9, optimizer="adam")
    b = nb.Network([4, 5, 3], seed=0)
    b.partial_fit(X, labels, batch_size=4, eta=0.5, seed=9, optimizer="adam")
    for _ in range(2):
        b.partial_fit(X, labels, batch_size=4, eta=0.5, optimizer="adam")
    assert np.array_equal(a.params, b.params)
    assert b.epochs_trained == 3
    with pytest.raises(TypeError, match="epochs"):
        b.partial_fit(X, labels, epochs=2)


def test_monitor_is_opt_in(data):
    X, labels = data
    net = nb.Network([4, 5, 3], seed=0)
    h = net.fit(X, labels, epochs=2, batch_size=5, eta=0.5)
    assert set(h) == {"epoch", "eta", "train_cost"}
    h = net.fit(X, labels, epochs=2, batch_size=5, eta=0.5, validation_data=(X, labels),
                monitor=("train_accuracy", "val_accuracy"))  # fmt: skip
    assert set(h) == {"epoch", "eta", "train_cost", "train_accuracy", "val_accuracy"}
    assert h["train_accuracy"][-1] == net.evaluate(X, labels) == h["val_accuracy"][-1]
    with pytest.raises(ValueError, match="monitor"):
        net.fit(X, labels, epochs=1, monitor=("train_f1",))


OPTIONS = [
    {"optimizer": "sgd", "lmbda": 1.0},
    {"optimizer": "momentum", "schedule": "invscaling"},
    {"optimizer": "nesterov", "schedule": "step", "step_size": 2},
    {"optimizer": "adam", "eta": 0.01, "schedule": "plateau", "plateau_patience": 1},
]


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fit_continues_exactly(options, dtype, data):
    X, labels = data
    kw = {"batch_size": 4, "eta": 0.5, "validation_data": (X, labels), **options}
    a = nb.Network([4, 6, 3], seed=0, dtype=dtype)
    ha = a.fit(X, labels, epochs=5, seed=3, **kw)
    b = nb.Network([4, 6, 3], seed=0, dtype=dtype)
    hb = b.fit(X, labels, epochs=2, seed=3, **kw)
    hb2 = b.fit(X, labels, epochs=3, **kw)
    assert np.array_equal(a.params, b.params)
    for key in ha:
        assert ha[key] == hb[key] + hb2[key]


def test_fit_argument_errors(data):
    X, labels = data
    net = nb.Network([4, 5, 3], seed=0)
    for kw, match in [
        ({"schedule": "cosine"}, "schedule"),
        ({"metric": "f1"}, "metric"),
        ({"patience": 0}, "patience"),
        ({"early_stopping": 1}, "early_stopping"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"gamma": 0.0}, "gamma"),
        ({"optimizer": "rmsprop"}, "optimizer"),
    ]:
        with pytest.raises((ValueError, TypeError), match=match):
            net.fit(X, labels, epochs=1, **kw)


def test_every_option_combination_trains(data):
    """Every cost x output x optimiser runs end to end and lowers the cost."""
    X, labels = data
    Y = np.eye(3)[labels]
    for (cost, out), opt in itertools.product(COMBOS, ["sgd", "nesterov", "adam"]):
        hidden = "relu" if out == "identity" else "tanh"
        net = nb.Network([4, 8, 3], activation=hidden, output_activation=out, cost=cost,
                         init="glorot", seed=1)  # fmt: skip
        eta = 0.01 if opt == "adam" else 0.1
        h = net.fit(X, Y, epochs=10, batch_size=5, eta=eta, optimizer=opt, seed=0)
        assert h["train_cost"][-1] < h["train_cost"][0], (cost, out, opt)
