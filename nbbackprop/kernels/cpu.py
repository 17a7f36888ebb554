"""CPU kernels: the backpropagation equations as explicitly looped Numba code.

Every kernel is one equation (or a named group of them) of
``docs/backpropagation.md``, written as loops over neurons and samples: the loops
*are* the matrix products, there is no call to BLAS. A mini-batch of ``m`` samples
is processed at once with samples as rows, so ``z`` and ``a`` have shape
``(m, n)`` — the transpose of Nielsen's column vectors.

Each kernel body is compiled twice (the pattern UMAP uses): ``name`` with
``parallel=True``, where ``prange`` splits the loop over the index the kernel
*writes* (never a ``+=`` into shared memory from two threads), and
``name_serial``, where ``prange`` is a plain ``range``, for work too small to
repay waking the thread pool. :mod:`nbbackprop.orchestration` decides which one
runs; the kernels only compute.

:mod:`nbbackprop.kernels.cpu_tiled` computes the same equations with
register-tiled, cache-blocked loops: the fast path, chosen by the ``"tiled"`` and
``"auto"`` strategies (see ``docs/performance.md`` for figures).

The kernels trust their inputs: shapes, dtypes and contiguity are checked by the
public API before any kernel runs, since Numba does not bounds-check.

:mod:`nbbackprop.kernels.cuda` holds the CUDA twins, with the same names and the
same argument order.
"""

from __future__ import annotations

import types

import numpy as np
from numba import njit, prange

from .. import functions as fn

#: fastmath without ``nnan``/``ninf``, so NaN and inf still propagate for the
#: divergence checks; ``reassoc`` lets LLVM vectorise the dot-product reductions.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
#: Kernels divide as NumPy does (x/0 is inf or NaN, caught by the divergence check):
#: Python's error model tests every division for zero, and that branch out of a loop
#: stops LLVM from vectorising it (a vectorised sigmoid ran 9× slower with it).
ERROR_MODEL = "numpy"

SIGMOID, TANH, RELU, IDENTITY, SOFTMAX = (
    fn.SIGMOID,
    fn.TANH,
    fn.RELU,
    fn.IDENTITY,
    fn.SOFTMAX,
)
QUADRATIC, CROSS_ENTROPY, LOG_LIKELIHOOD = fn.QUADRATIC, fn.CROSS_ENTROPY, fn.LOG_LIKELIHOOD

activate = njit(inline="always", fastmath=FASTMATH)(fn.activate)
derivative = njit(inline="always", fastmath=FASTMATH)(fn.derivative)
xlogy = njit(inline="always", fastmath=FASTMATH)(fn.xlogy)


def _compile_twice(body):
    """Return ``(parallel, serial)`` compilations of one kernel body.

    The serial copy gets its own function object and qualified name so that
    Numba's on-disk cache keeps the two compilations apart.
    """
    name = body.__name__.lstrip("_")
    serial_fn = types.FunctionType(
        body.__code__, body.__globals__, name + "_serial", body.__defaults__, body.__closure__
    )
    serial_fn.__qualname__ = name + "_serial"
    serial_fn.__doc__ = body.__doc__
    opts = {"cache": True, "fastmath": FASTMATH, "error_model": ERROR_MODEL}
    parallel = njit(parallel=True, **opts)(body)
    serial = njit(**opts)(serial_fn)
    return parallel, serial


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _softmax_row(z, a):
    # Subtracting the row maximum keeps exp from overflowing; it cancels out.
    top = z[0]
    for j in range(1, z.shape[0]):
        if z[j] > top:
            top = z[j]
    total = 0.0
    for j in range(z.shape[0]):
        e = np.exp(z[j] - top)
        a[j] = e
        total += e
    for j in range(z.shape[0]):
        a[j] = a[j] / total


def _weighted_sums(W, b, a_prev, z, a, act):
    r"""Forward pass of one layer: weighted inputs and activations.

    Parameters
    ----------
    W : ndarray, shape (n_out, n_in)
        Weights of layer l, ``W[j, k]`` = :math:`w^l_{jk}`.
    b : ndarray, shape (n_out,)
        Biases :math:`b^l_j`.
    a_prev : ndarray, shape (m, n_in)
        Activations of layer l-1, one sample per row.
    z, a : ndarray, shape (m, n_out)
        Outputs: weighted inputs and activations of layer l.
    act : int
        Activation code from :mod:`nbbackprop.functions`.

    Notes
    -----
    Equations (1)–(3):

    .. math:: z^l_j = \sum_k w^l_{jk} a^{l-1}_k + b^l_j, \qquad a^l_j = \sigma(z^l_j)

    For the softmax, :math:`a^L_j = e^{z^L_j} / \sum_i e^{z^L_i}` over each row.
    Parallel over the (sample, neuron) pairs written.
    """
    m = a_prev.shape[0]
    n_out, n_in = W.shape
    for t in prange(m * n_out):
        x = t // n_out
        j = t - x * n_out
        Wj = W[j]
        ax = a_prev[x]
        acc = b[j]
        for k in range(n_in):
            acc += Wj[k] * ax[k]
        z[x, j] = acc
        if act != SOFTMAX:
            a[x, j] = activate(acc, act)
    if act == SOFTMAX:
        for x in prange(m):
            _softmax_row(z[x], a[x])


def _output_delta(a, y, delta, costs, act, cost):
    r"""BP1: the output error, and each sample's cost.

    Parameters
    ----------
    a : ndarray, shape (m, n_L)
        Output activations :math:`a^L`.
    y : ndarray, shape (m, n_L)
        Targets.
    delta : ndarray, shape (m, n_L)
        Output: :math:`\delta^L`.
    costs : ndarray, shape (m,)
        Output: :math:`C_x` of each sample, equation (5) for the quadratic cost.
    act, cost : int
        Output activation and cost codes; the pairs allowed are
        :data:`nbbackprop.functions.COST_OUTPUTS`.

    Notes
    -----
    Equations (17), (20), (24):

    .. math:: \delta^L_j = \frac{\partial C_x}{\partial a^L_j}\, \sigma'(z^L_j)

    - quadratic, :math:`C_x = \tfrac12 \lVert y - a^L \rVert^2`:
      :math:`\partial C_x/\partial a^L_j = a^L_j - y_j`; with a softmax output the
      Jacobian gives :math:`\delta_j = a_j (g_j - \sum_i g_i a_i)`, g = a - y;
    - cross-entropy, :math:`C_x = -\sum_j [y_j \ln a_j + (1-y_j)\ln(1-a_j)]`, with
      a sigmoid output: :math:`\delta^L = a^L - y` (σ' cancels);
    - log-likelihood, :math:`C_x = -\sum_j y_j \ln a_j`, with a softmax output:
      :math:`\delta^L_j = a_j \sum_i y_i - y_j` (= a - y for one-hot y).
    """
    m, n = a.shape
    for x in prange(m):
        ax = a[x]
        yx = y[x]
        dx = delta[x]
        c = 0.0
        if cost == QUADRATIC:
            for j in range(n):
                g = ax[j] - yx[j]
                c += g * g
                dx[j] = g
            c *= 0.5
            if act == SOFTMAX:
                ga = 0.0
                for j in range(n):
                    ga += dx[j] * ax[j]
                for j in range(n):
                    dx[j] = ax[j] * (dx[j] - ga)
            else:
                for j in range(n):
                    dx[j] = dx[j] * derivative(ax[j], act)
        elif cost == CROSS_ENTROPY:
            for j in range(n):
                c -= xlogy(yx[j], ax[j]) + xlogy(1.0 - yx[j], 1.0 - ax[j])
                dx[j] = ax[j] - yx[j]
        else:
            ysum = 0.0
            for j in range(n):
                c -= xlogy(yx[j], ax[j])
                ysum += yx[j]
            for j in range(n):
                dx[j] = ax[j] * ysum - yx[j]
        costs[x] = c


def _hidden_delta(W_next, delta_next, a, delta, act):
    r"""BP2: the error of a hidden layer from the error of the layer above.

    Parameters
    ----------
    W_next : ndarray, shape (n_next, n)
        Weights :math:`w^{l+1}` of the layer above.
    delta_next : ndarray, shape (m, n_next)
        :math:`\delta^{l+1}`.
    a : ndarray, shape (m, n)
        Activations :math:`a^l` (σ' is computed from them).
    delta : ndarray, shape (m, n)
        Output: :math:`\delta^l`.
    act : int
        Activation code of layer l (elementwise activations only).

    Notes
    -----
    Equations (18), (19), (21), (25):

    .. math:: \delta^l_k = \Big(\sum_j w^{l+1}_{jk} \delta^{l+1}_j\Big) \sigma'(z^l_k)

    The sum runs over rows of :math:`w^{l+1}` so the innermost loop reads memory in
    order. Parallel over samples.
    """
    m, n = a.shape
    n_next = W_next.shape[0]
    for x in prange(m):
        dx = delta[x]
        for k in range(n):
            dx[k] = 0.0
        dnx = delta_next[x]
        for j in range(n_next):
            c = dnx[j]
            Wj = W_next[j]
            for k in range(n):
                dx[k] += c * Wj[k]
        ax = a[x]
        for k in range(n):
            dx[k] = dx[k] * derivative(ax[k], act)


def _bias_grads(delta, nabla_b):
    r"""BP3: bias gradients, summed over the mini-batch.

    Notes
    -----
    Equations (15), (22), (26): :math:`\partial C_x / \partial b^l_j = \delta^l_j`,
    so ``nabla_b[j]`` = :math:`\sum_x \delta^l_j(x)`. ``delta`` has shape (m, n),
    ``nabla_b`` shape (n,). Parallel over neurons.
    """
    m, n = delta.shape
    for j in prange(n):
        nabla_b[j] = 0.0
        for x in range(m):
            nabla_b[j] += delta[x, j]


def _weight_grads(delta, a_prev, nabla_w):
    r"""BP4: weight gradients, summed over the mini-batch.

    Notes
    -----
    Equations (16), (23), (27):
    :math:`\partial C_x / \partial w^l_{jk} = a^{l-1}_k \delta^l_j`, so
    ``nabla_w[j, k]`` = :math:`\sum_x \delta^l_j(x)\, a^{l-1}_k(x)`. ``delta`` has
    shape (m, n_out), ``a_prev`` (m, n_in), ``nabla_w`` (n_out, n_in). Parallel over
    output neurons, each thread owning whole rows of ``nabla_w``.
    """
    m, n_out = delta.shape
    n_in = a_prev.shape[1]
    for j in prange(n_out):
        row = nabla_w[j]
        for k in range(n_in):
            row[k] = 0.0
        for x in range(m):
            c = delta[x, j]
            ax = a_prev[x]
            for k in range(n_in):
                row[k] += c * ax[k]


def _sgd_update(params, grads, eta, inv_m, l2, n_w):
    r"""Gradient descent on a mini-batch, with optional L2 weight decay.

    Parameters
    ----------
    params, grads : ndarray, shape (P,)
        The flat parameter buffer (all weights first, then all biases) and the
        gradients summed over the mini-batch, in the same layout.
    eta : float
        Learning rate η.
    inv_m : float
        1/m for a mini-batch of m samples.
    l2 : float
        λ/n, the L2 coefficient (0 for none); applied to the weights only.
    n_w : int
        Number of weights: ``params[:n_w]`` are weights, the rest biases.

    Notes
    -----
    Equations (6)–(9) estimated on m samples:

    .. math:: w \to \Big(1 - \frac{\eta\lambda}{n}\Big) w
              - \frac{\eta}{m} \sum_x \frac{\partial C_x}{\partial w},
              \qquad b \to b - \frac{\eta}{m} \sum_x \frac{\partial C_x}{\partial b}
    """
    # Scalars in the parameters' dtype: a float64 scalar would make a float32 update
    # compute in float64.
    eta = params.dtype.type(eta)
    inv_m = params.dtype.type(inv_m)
    l2 = params.dtype.type(l2)
    for i in prange(params.shape[0]):
        g = grads[i] * inv_m
        if i < n_w:
            g += l2 * params[i]
        params[i] -= eta * g


def _momentum_update(params, grads, velocity, eta, inv_m, l2, n_w, mu, nesterov):
    r"""Momentum gradient descent (classical, or Nesterov's when ``nesterov``).

    Notes
    -----
    With g the mean gradient (plus the L2 term, as in :func:`sgd_update`):

    .. math:: v \to \mu v - \eta g, \qquad
              w \to w + v \;\;\text{(classical)}, \quad
              w \to w + \mu v - \eta g \;\;\text{(Nesterov)}

    the formulation of scikit-learn's ``SGDOptimizer``; PyTorch's ``SGD`` with
    momentum is the same update for a constant η.
    """
    eta = params.dtype.type(eta)
    inv_m = params.dtype.type(inv_m)
    l2 = params.dtype.type(l2)
    mu = params.dtype.type(mu)
    for i in prange(params.shape[0]):
        g = grads[i] * inv_m
        if i < n_w:
            g += l2 * params[i]
        v = mu * velocity[i] - eta * g
        velocity[i] = v
        if nesterov:
            params[i] += mu * v - eta * g
        else:
            params[i] += v


def _adam_update(params, grads, m1, m2, eta, inv_m, l2, n_w, beta1, beta2, eps, t):
    r"""Adam (Kingma & Ba, 2015), as PyTorch's ``torch.optim.Adam``.

    Notes
    -----
    With g the mean gradient (plus the L2 term) and t the 1-based step:

    .. math:: m \to \beta_1 m + (1-\beta_1) g, \quad
              v \to \beta_2 v + (1-\beta_2) g^2, \quad
              w \to w - \eta \frac{m / (1-\beta_1^t)}{\sqrt{v / (1-\beta_2^t)} + \epsilon}
    """
    c1 = params.dtype.type(1.0 - beta1**t)
    c2 = params.dtype.type(1.0 - beta2**t)
    one = params.dtype.type(1)
    eta = params.dtype.type(eta)
    inv_m = params.dtype.type(inv_m)
    l2 = params.dtype.type(l2)
    beta1 = params.dtype.type(beta1)
    beta2 = params.dtype.type(beta2)
    eps = params.dtype.type(eps)
    for i in prange(params.shape[0]):
        g = grads[i] * inv_m
        if i < n_w:
            g += l2 * params[i]
        mi = beta1 * m1[i] + (one - beta1) * g
        vi = beta2 * m2[i] + (one - beta2) * g * g
        m1[i] = mi
        m2[i] = vi
        params[i] -= eta * (mi / c1) / (np.sqrt(vi / c2) + eps)


weighted_sums, weighted_sums_serial = _compile_twice(_weighted_sums)
output_delta, output_delta_serial = _compile_twice(_output_delta)
hidden_delta, hidden_delta_serial = _compile_twice(_hidden_delta)
bias_grads, bias_grads_serial = _compile_twice(_bias_grads)
weight_grads, weight_grads_serial = _compile_twice(_weight_grads)
sgd_update, sgd_update_serial = _compile_twice(_sgd_update)
momentum_update, momentum_update_serial = _compile_twice(_momentum_update)
adam_update, adam_update_serial = _compile_twice(_adam_update)
