"""PyTorch autograd as an independent oracle for backprop (skipped without torch)."""

import numpy as np
import pytest

import nbbackprop as nb

torch = pytest.importorskip("torch")

ACT = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "identity": lambda z: z,
    "softmax": lambda z: torch.softmax(z, dim=1),
}


def torch_mean_cost(net, X, Y):
    Ws = [torch.tensor(W, dtype=torch.float64, requires_grad=True) for W in net.weights]
    bs = [torch.tensor(b, dtype=torch.float64, requires_grad=True) for b in net.biases]
    a = torch.tensor(X, dtype=torch.float64)
    y = torch.tensor(Y, dtype=torch.float64)
    for W, b, name in zip(Ws, bs, net.activations, strict=True):
        a = ACT[name](a @ W.T + b)
    if net.cost_name == "quadratic":
        per_sample = 0.5 * ((a - y) ** 2).sum(dim=1)
    elif net.cost_name == "cross_entropy":
        per_sample = -(y * torch.log(a) + (1 - y) * torch.log(1 - a)).sum(dim=1)
    else:
        per_sample = -(y * torch.log(a)).sum(dim=1)
    C = per_sample.mean()
    C.backward()
    return C.item(), [W.grad.numpy() for W in Ws], [b.grad.numpy() for b in bs]


@pytest.mark.parametrize(
    "sizes, activation, cost",
    [
        ([5, 4, 3], "sigmoid", "quadratic"),
        ([6, 7, 5, 3], "tanh", "quadratic"),
        ([4, 8, 2], ["relu", "identity"], "quadratic"),
        ([5, 6, 4], "sigmoid", "cross_entropy"),
        ([5, 6, 4], "tanh", "log_likelihood"),
        ([3, 5, 4], ["sigmoid", "softmax"], "quadratic"),
    ],
)
def test_backprop_matches_torch_autograd(sizes, activation, cost):
    rng = np.random.default_rng(8)
    net = nb.Network(sizes, activation=activation, cost=cost, seed=4)
    X = rng.random((9, sizes[0]))
    Y = np.eye(sizes[-1])[rng.integers(0, sizes[-1], 9)]
    c_ref, gw_ref, gb_ref = torch_mean_cost(net, X, Y)
    nabla_w, nabla_b = net.backprop(X, Y)
    assert net.cost(X, Y) == pytest.approx(c_ref, rel=1e-12)
    for l in range(len(sizes) - 1):
        np.testing.assert_allclose(nabla_w[l], gw_ref[l], rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(nabla_b[l], gb_ref[l], rtol=1e-9, atol=1e-13)
