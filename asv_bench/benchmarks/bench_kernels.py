"""Each CPU kernel (one equation each) on its own, parallel and serial, at a few sizes.

Shapes are (samples m, inputs n_in, outputs n_out) of one layer. ``setup`` calls each
kernel once so that compilation stays out of the timings.
"""

import numpy as np

from nbbackprop.kernels import cpu

SHAPES = ["10x784x30", "32x784x100", "256x1024x1024"]
VARIANTS = ["parallel", "serial"]


def _kernel(name, variant):
    return getattr(cpu, name if variant == "parallel" else name + "_serial")


class Kernels:
    params = (SHAPES, VARIANTS, ["float32", "float64"])
    param_names = ["m_nin_nout", "variant", "dtype"]
    number = 5
    repeat = (1, 10, 20.0)

    def setup(self, shape, variant, dtype):
        m, n_in, n_out = (int(s) for s in shape.split("x"))
        rng = np.random.default_rng(0)
        self.W = rng.standard_normal((n_out, n_in)).astype(dtype) / np.sqrt(n_in)
        self.b = rng.standard_normal(n_out).astype(dtype)
        self.a_prev = rng.random((m, n_in)).astype(dtype)
        self.z = np.empty((m, n_out), dtype)
        self.a = np.empty((m, n_out), dtype)
        self.y = np.eye(n_out, dtype=dtype)[rng.integers(0, n_out, m)]
        self.delta = rng.standard_normal((m, n_out)).astype(dtype)
        self.delta_prev = np.empty((m, n_in), dtype)
        self.costs = np.empty(m)
        self.nabla_w = np.empty((n_out, n_in), dtype)
        self.nabla_b = np.empty(n_out, dtype)
        self.params_flat = rng.standard_normal(n_out * (n_in + 1)).astype(dtype)
        self.grads_flat = rng.standard_normal(n_out * (n_in + 1)).astype(dtype)
        self.n_w = n_out * n_in
        self.k = {name: _kernel(name, variant) for name in (
            "weighted_sums", "output_delta", "hidden_delta", "bias_grads", "weight_grads",
            "sgd_update")}  # fmt: skip
        for name in self.k:
            getattr(self, "time_" + name)(shape, variant, dtype)

    def time_weighted_sums(self, shape, variant, dtype):
        self.k["weighted_sums"](self.W, self.b, self.a_prev, self.z, self.a, 0)

    def time_output_delta(self, shape, variant, dtype):
        self.k["output_delta"](self.a, self.y, self.delta, self.costs, 0, 0)

    def time_hidden_delta(self, shape, variant, dtype):
        self.k["hidden_delta"](self.W, self.delta, self.a_prev, self.delta_prev, 0)

    def time_bias_grads(self, shape, variant, dtype):
        self.k["bias_grads"](self.delta, self.nabla_b)

    def time_weight_grads(self, shape, variant, dtype):
        self.k["weight_grads"](self.delta, self.a_prev, self.nabla_w)

    def time_sgd_update(self, shape, variant, dtype):
        self.k["sgd_update"](self.params_flat, self.grads_flat, 1e-9, 0.1, 0.0, self.n_w)
