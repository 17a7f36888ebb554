"""Each CPU kernel (forward pass, BP1–BP4, the updates) and variant at a few sizes.

Sizes are the first layers of the workloads: ``small`` = W1's 784→30 on 10 samples in
float64, ``medium`` = W2's 784→100 on 32 samples in float32, ``large`` = W3's
1024→1024 on 256 samples in float32. Variants: the per-equation kernels serial and
parallel, the tiled ones serial and parallel. Compilation happens in ``setup``.
"""

import numpy as np

from nbbackprop import functions as fn
from nbbackprop.kernels import cpu, cpu_tiled

SIZES = {
    "small": (10, 784, 30, "float64"),
    "medium": (32, 784, 100, "float32"),
    "large": (256, 1024, 1024, "float32"),
}
VARIANTS = ["serial", "parallel", "tiled", "tiled-parallel"]
SIGMOID = fn.ACTIVATIONS["sigmoid"]


def _kernel(name, variant):
    module = cpu_tiled if variant.startswith("tiled") else cpu
    tiled = "_tiled" if variant.startswith("tiled") else ""
    serial = "" if variant.endswith("parallel") else "_serial"
    return getattr(module, name + tiled + serial)


class _Layer:
    params = (list(SIZES), VARIANTS)
    param_names = ["size", "variant"]
    number = 1
    repeat = (3, 20, 10.0)
    warmup_time = 0.0

    def setup(self, size, variant):
        m, n_in, n_out, dtype = SIZES[size]
        rng = np.random.default_rng(0)
        self.W = (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(dtype)
        self.b = rng.standard_normal(n_out).astype(dtype)
        self.a_prev = rng.random((m, n_in)).astype(dtype)
        self.z = np.empty((m, n_out), dtype=dtype)
        self.a = np.empty((m, n_out), dtype=dtype)
        self.delta = (rng.standard_normal((m, n_out)) * 0.01).astype(dtype)
        self.delta_prev = np.empty((m, n_in), dtype=dtype)
        self.nabla_w = np.empty_like(self.W)
        self.nabla_b = np.empty_like(self.b)
        self.variant = variant
        self.prepare()
        self.call()  # compile outside the timings

    def prepare(self):
        """Extra inputs a kernel needs, set before its first call."""

    def call(self):
        raise NotImplementedError

    def time_kernel(self, size, variant):
        self.call()

    def peakmem_kernel(self, size, variant):
        self.call()


class WeightedSums(_Layer):
    """Equations (1)–(3): weighted_sums[_tiled]."""

    def call(self):
        _kernel("weighted_sums", self.variant)(self.W, self.b, self.a_prev, self.z, self.a, SIGMOID)


class HiddenDelta(_Layer):
    """BP2: hidden_delta[_tiled], carrying δ of this layer down to its inputs."""

    def call(self):
        k = _kernel("hidden_delta", self.variant)
        args = (self.W, self.delta, self.a_prev, self.delta_prev, SIGMOID)
        if self.variant.startswith("tiled"):
            k(*args, self.nabla_w.reshape(-1))
        else:
            k(*args)


class WeightGrads(_Layer):
    """BP4: weight_grads[_tiled]."""

    def call(self):
        k = _kernel("weight_grads", self.variant)
        args = (self.delta, self.a_prev, self.nabla_w)
        k(*args)


class BiasGrads(_Layer):
    """BP3: bias_grads (no tiled variant: the tiled ones use the per-equation kernel)."""

    params = (list(SIZES), ["serial", "parallel"])

    def call(self):
        _kernel("bias_grads", self.variant)(self.delta, self.nabla_b)


class OutputDelta(_Layer):
    """BP1 with the quadratic cost: output_delta on the layer's outputs as a^L."""

    params = (list(SIZES), ["serial", "parallel"])

    def prepare(self):
        self.a[...] = np.random.default_rng(1).random(self.a.shape)  # outputs in (0, 1)
        self.y = np.zeros_like(self.a)
        self.y[:, 0] = 1
        self.costs = np.zeros(self.a.shape[0])

    def call(self):
        _kernel("output_delta", self.variant)(
            self.a, self.y, self.delta, self.costs, SIGMOID, fn.COSTS["quadratic"]
        )


class SgdUpdate(_Layer):
    """The update: sgd_update over the layer's flat parameters (per-equation), or
    sgd_layer_update_tiled, which folds BP3 and BP4 into it (tiled)."""

    def call(self):
        if self.variant.startswith("tiled"):
            _kernel("sgd_layer_update", self.variant)(
                self.W, self.b, self.delta, self.a_prev, 1e-6, 1.0 / self.a_prev.shape[0],
                0.0,
            )  # fmt: skip
        else:
            _kernel("sgd_update", self.variant)(
                self.W.reshape(-1), self.nabla_w.reshape(-1), 1e-6, 0.1, 0.0, self.W.size
            )
