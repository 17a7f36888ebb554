"""Activation functions and costs: names, codes and the scalar formulas.

The formulas are plain Python on scalars so that each device module compiles the
same source for its own target: :mod:`nbbackprop.kernels.cpu` with
``numba.njit(inline="always")`` and :mod:`nbbackprop.kernels.cuda` with
``numba.cuda.jit(device=True)``. Kernels receive an integer code, never a Python
callable, so one compiled kernel serves every activation and cost and can be
cached on disk.

The derivative σ'(z) is computed from the activation a = σ(z) itself, which is
cheaper than recomputing σ and means the kernels never need to keep z for BP2:

========== ================================ ======================
name       σ(z)                             σ'(z) from a
========== ================================ ======================
sigmoid    1 / (1 + exp(-z))                a (1 - a)
tanh       tanh z                           1 - a²
relu       max(z, 0)                        1 if a > 0 else 0
identity   z                                1
softmax    exp(z_j) / Σ_i exp(z_i) (a row)  Jacobian, output only
========== ================================ ======================
"""

from __future__ import annotations

import math

SIGMOID, TANH, RELU, IDENTITY, SOFTMAX = 0, 1, 2, 3, 4
ACTIVATIONS: dict[str, int] = {
    "sigmoid": SIGMOID,
    "tanh": TANH,
    "relu": RELU,
    "identity": IDENTITY,
    "softmax": SOFTMAX,
}

QUADRATIC, CROSS_ENTROPY, LOG_LIKELIHOOD = 0, 1, 2
COSTS: dict[str, int] = {
    "quadratic": QUADRATIC,
    "cross_entropy": CROSS_ENTROPY,
    "log_likelihood": LOG_LIKELIHOOD,
}

#: The output activations each cost is defined for. Cross-entropy needs outputs in
#: (0, 1) read independently; the log-likelihood needs a probability distribution.
COST_OUTPUTS: dict[str, tuple[str, ...]] = {
    "quadratic": ("sigmoid", "tanh", "relu", "identity", "softmax"),
    "cross_entropy": ("sigmoid",),
    "log_likelihood": ("softmax",),
}


def activate(z, act):
    """σ(z) for an elementwise activation code (softmax is done per row elsewhere)."""
    if act == SIGMOID:
        # Two branches so that exp never overflows.
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)
    if act == TANH:
        return math.tanh(z)
    if act == RELU:
        return z if z > 0 else 0.0 * z
    return z


def derivative(a, act):
    """σ'(z) written in terms of a = σ(z)."""
    if act == SIGMOID:
        return a * (1.0 - a)
    if act == TANH:
        return 1.0 - a * a
    if act == RELU:
        return 1.0 if a > 0 else 0.0
    return 1.0


def xlogy(y, a):
    """y·ln(a) with the convention 0·ln(0) = 0 (Nielsen's ``nan_to_num``)."""
    if y == 0:
        return 0.0
    return y * math.log(a)
