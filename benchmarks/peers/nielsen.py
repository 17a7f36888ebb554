"""Michael Nielsen's network.py (Neural Networks and Deep Learning, ch. 1-2), per-sample loop.

A faithful port of ``Network.update_mini_batch`` and ``Network.backprop``: column vectors,
one backprop per sample, gradients summed over the mini-batch with list comprehensions, then
``w - (eta/len(mini_batch)) * nw``. Two deliberate deviations, both needed for the comparison:

* mini-batches are taken in order (no ``random.shuffle``), as in every peer;
* gradient accumulators are ``np.zeros_like`` instead of ``np.zeros(shape)`` (the latter is
  float64 and would silently promote float32 parameters to float64 after the first update).

It is slow (Python per sample): ``slow = True``; time a subset of the samples
(``suggested_samples``) and report samples/s.
"""

from __future__ import annotations

import numpy as np

from ._base import PeerBase, as_dtype


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def sigmoid_prime(z):
    return sigmoid(z) * (1 - sigmoid(z))


class Peer(PeerBase):
    name = "nielsen"
    slow = True
    suggested_samples = 5_000

    def setup(self, weights, biases, dtype) -> None:
        self.dtype = as_dtype(dtype)
        self.weights = [np.array(w, dtype=self.dtype, copy=True) for w in weights]
        self.biases = [np.array(b, dtype=self.dtype, copy=True).reshape(-1, 1) for b in biases]
        self.num_layers = len(self.weights) + 1

    # -- data ------------------------------------------------------------------------------
    def prepare(self, X, Y=None):
        """Nielsen's data format: a list of ``(x, y)`` column-vector tuples (``x`` alone for
        inference)."""
        if isinstance(X, list):
            return X, None
        dt = self.dtype
        X = np.asarray(X, dtype=dt)
        if Y is None:
            return [x.reshape(-1, 1) for x in X], None
        Y = np.asarray(Y, dtype=dt)
        return list(
            zip([x.reshape(-1, 1) for x in X], [y.reshape(-1, 1) for y in Y], strict=True)
        ), None

    # -- Nielsen's code ----------------------------------------------------------------------
    def feedforward(self, a):
        for b, w in zip(self.biases, self.weights, strict=True):
            a = sigmoid(np.dot(w, a) + b)
        return a

    def update_mini_batch(self, mini_batch, eta):
        nabla_b = [np.zeros_like(b) for b in self.biases]
        nabla_w = [np.zeros_like(w) for w in self.weights]
        for x, y in mini_batch:
            delta_nabla_b, delta_nabla_w = self.backprop(x, y)
            nabla_b = [nb + dnb for nb, dnb in zip(nabla_b, delta_nabla_b, strict=True)]
            nabla_w = [nw + dnw for nw, dnw in zip(nabla_w, delta_nabla_w, strict=True)]
        self.weights = [
            w - (eta / len(mini_batch)) * nw for w, nw in zip(self.weights, nabla_w, strict=True)
        ]
        self.biases = [
            b - (eta / len(mini_batch)) * nb for b, nb in zip(self.biases, nabla_b, strict=True)
        ]

    def backprop(self, x, y):
        nabla_b = [None] * len(self.biases)
        nabla_w = [None] * len(self.weights)
        activation = x
        activations = [x]
        zs = []
        for b, w in zip(self.biases, self.weights, strict=True):
            z = np.dot(w, activation) + b
            zs.append(z)
            activation = sigmoid(z)
            activations.append(activation)
        delta = self.cost_derivative(activations[-1], y) * sigmoid_prime(zs[-1])
        nabla_b[-1] = delta
        nabla_w[-1] = np.dot(delta, activations[-2].transpose())
        for l in range(2, self.num_layers):
            z = zs[-l]
            sp = sigmoid_prime(z)
            delta = np.dot(self.weights[-l + 1].transpose(), delta) * sp
            nabla_b[-l] = delta
            nabla_w[-l] = np.dot(delta, activations[-l - 1].transpose())
        return nabla_b, nabla_w

    def cost_derivative(self, output_activations, y):
        return output_activations - y

    # -- peer interface ----------------------------------------------------------------------
    def train_epoch(self, X, Y, batch_size: int, eta: float) -> None:
        training_data = X if isinstance(X, list) else self.prepare(X, Y)[0]
        n = len(training_data)
        bs = int(batch_size)
        with np.errstate(over="ignore"):
            for k in range(0, n, bs):
                self.update_mini_batch(training_data[k : k + bs], eta)

    def infer(self, X) -> np.ndarray:
        xs = X if isinstance(X, list) else self.prepare(X)[0]
        if xs and isinstance(xs[0], tuple):
            xs = [x for x, _ in xs]
        with np.errstate(over="ignore"):
            out = [self.feedforward(x).reshape(-1) for x in xs]
        return np.array(out, dtype=self.dtype)

    def params(self):
        return ([w.copy() for w in self.weights], [b.reshape(-1).copy() for b in self.biases])
