import numpy as np
import pytest

#: Relative tolerances by dtype, for results that are the same arithmetic done in
#: another order (loop kernels vs NumPy/BLAS). float64: ~1e-16 per operation, a few
#: thousand operations, conditioning of a short training run -> 1e-9 is generous
#: yet catches any real error. float32: ~6e-8 per operation -> 1e-4.
RTOL = {np.float64: 1e-9, np.float32: 1e-4}
ATOL = {np.float64: 1e-12, np.float32: 1e-5}


def assert_close(actual, expected, dtype, scale=1.0):
    dtype = np.dtype(dtype).type
    np.testing.assert_allclose(actual, expected, rtol=RTOL[dtype] * scale, atol=ATOL[dtype] * scale)


def assert_backprop_matches_reference(net, X, Y, dtype):
    """``net.backprop`` and ``net.cost`` against the float64 NumPy reference
    (``reference.mean_gradients``) for ``net``'s present parameters."""
    import reference as ref

    W = [w.astype(np.float64) for w in net.weights]
    b = [v.astype(np.float64) for v in net.biases]
    nw_ref, nb_ref, c_ref = ref.mean_gradients(
        W, b, net.activations, net.cost_name, X.astype(np.float64), Y.astype(np.float64)
    )
    nabla_w, nabla_b = net.backprop(X, Y)
    for l in range(len(W)):
        assert nabla_w[l].shape == W[l].shape and nabla_b[l].shape == b[l].shape
        assert_close(nabla_w[l], nw_ref[l], dtype, scale=10)
        assert_close(nabla_b[l], nb_ref[l], dtype, scale=10)
    assert_close(net.cost(X, Y), c_ref, dtype)


def numeric_grads(net, X, Y, h=1e-6, indices=None):
    """Float64 central differences of ``net.cost(X, Y)`` for the parameters in ``indices``.

    ``net.params`` is the buffer behind ``weights`` and ``biases``, in the order of
    ``np.concatenate`` of the flattened weights, then the biases.
    """
    indices = range(net.n_params) if indices is None else indices
    out = np.empty(len(indices))
    for n, i in enumerate(indices):
        keep = net.params[i]
        net.params[i] = keep + h
        up = net.cost(X, Y)
        net.params[i] = keep - h
        down = net.cost(X, Y)
        net.params[i] = keep
        out[n] = (up - down) / (2 * h)
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def _cuda_tests_enabled() -> bool:
    # tests/cuda runs under NVIDIA's simulator (NUMBA_ENABLE_CUDASIM=1, its own pytest
    # process: the variable must be set before numba is imported) or on a usable GPU.
    from nbbackprop import devices

    return devices.simulator_requested() or devices.cuda_status().usable


# Not a tests/cuda/conftest.py: a second top-level module named "conftest" would shadow
# this one for ``from conftest import assert_close``.
collect_ignore = [] if _cuda_tests_enabled() else ["cuda"]
