"""A plain-NumPy, per-sample reference of the algorithm, Nielsen-style: slow, obviously right.

Column vectors, one sample at a time, the four equations written as NumPy
expressions. It shares no code with the kernels it checks.
"""

from __future__ import annotations

import numpy as np


def act(z, name):
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "identity":
        return z
    if name == "softmax":
        e = np.exp(z - z.max())
        return e / e.sum()
    raise ValueError(name)


def act_prime(z, name):
    if name == "sigmoid":
        s = act(z, "sigmoid")
        return s * (1 - s)
    if name == "tanh":
        return 1 - np.tanh(z) ** 2
    if name == "relu":
        return (z > 0).astype(z.dtype)
    if name == "identity":
        return np.ones_like(z)
    raise ValueError(name)


def sample_cost(a, y, cost):
    if cost == "quadratic":
        return 0.5 * float(np.sum((a - y) ** 2))
    if cost == "cross_entropy":
        return float(np.sum(np.nan_to_num(-y * np.log(a) - (1 - y) * np.log(1 - a))))
    if cost == "log_likelihood":
        return float(-np.sum(np.nan_to_num(y * np.log(a))))
    raise ValueError(cost)


def feedforward(weights, biases, activations, x):
    """x: (n_in, 1) column; returns the list of z and a per layer."""
    a, zs, acts = x, [], [x]
    for W, b, name in zip(weights, biases, activations, strict=True):
        z = W @ a + b.reshape(-1, 1)
        a = act(z, name)
        zs.append(z)
        acts.append(a)
    return zs, acts


def backprop_sample(weights, biases, activations, cost, x, y):
    """Gradients of C_x for one sample (column vectors), by BP1-BP4."""
    zs, acts = feedforward(weights, biases, activations, x)
    aL, zL, out = acts[-1], zs[-1], activations[-1]
    if cost == "quadratic":
        g = aL - y
        if out == "softmax":
            J = np.diagflat(aL) - aL @ aL.T  # softmax Jacobian
            delta = J @ g
        else:
            delta = g * act_prime(zL, out)  # BP1
    elif cost == "cross_entropy":
        delta = aL - y  # sigmoid output: sigma' cancels
    else:
        delta = aL * y.sum() - y  # softmax + log-likelihood
    nabla_w = [None] * len(weights)
    nabla_b = [None] * len(weights)
    nabla_b[-1] = delta.ravel()  # BP3
    nabla_w[-1] = delta @ acts[-2].T  # BP4
    for l in range(len(weights) - 2, -1, -1):
        delta = (weights[l + 1].T @ delta) * act_prime(zs[l], activations[l])  # BP2
        nabla_b[l] = delta.ravel()
        nabla_w[l] = delta @ acts[l].T
    return nabla_w, nabla_b, sample_cost(aL, y, cost)


def mean_gradients(weights, biases, activations, cost, X, Y):
    nw = [np.zeros_like(W) for W in weights]
    nb = [np.zeros_like(b) for b in biases]
    total = 0.0
    for x, y in zip(X, Y, strict=True):
        dw, db, c = backprop_sample(
            weights, biases, activations, cost, x.reshape(-1, 1), y.reshape(-1, 1)
        )
        for l in range(len(weights)):
            nw[l] += dw[l]
            nb[l] += db[l]
        total += c
    m = len(X)
    return [w / m for w in nw], [b / m for b in nb], total / m


def sgd_epoch(weights, biases, activations, cost, X, Y, batch_size, eta, lmbda=0.0, order=None):
    """One epoch of mini-batch SGD in the given sample order; updates in place.

    Returns the mean of the mini-batch costs (each computed before its update).
    """
    n = len(X)
    order = np.arange(n) if order is None else order
    costs = []
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        nw, nb, c = mean_gradients(weights, biases, activations, cost, X[idx], Y[idx])
        costs.append(c)
        for l in range(len(weights)):
            weights[l][...] = (1 - eta * lmbda / n) * weights[l] - eta * nw[l]
            biases[l][...] = biases[l] - eta * nb[l]
    return float(np.mean(costs))


def predict(weights, biases, activations, X):
    return np.array(
        [feedforward(weights, biases, activations, x.reshape(-1, 1))[1][-1].ravel() for x in X]
    )
