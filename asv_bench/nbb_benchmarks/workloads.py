"""One training epoch (or one inference pass) of the workloads W1–W4, per CPU strategy.

The workloads of ``docs/performance.md``; W3 runs on 2,048 samples (8 mini-batches) so
that a repeat stays short. Timed through the public API (``Network.fit`` with its
input validation and divergence guard, ``Network.feedforward``); the setup runs one
epoch first, which compiles the kernels or loads them from Numba's cache.

``peakmem_epoch`` is the process's peak RSS: the interpreter with NumPy and Numba
loaded (~160 MB), the data (W1: 50,000 × 784 float64 = 314 MB) and the network with
its buffers; the data are generated in place to keep temporaries out of the peak.
``NBB_ASV_SAMPLES`` caps the samples of every workload (the CI smoke run uses 2,000).
"""

import os

import numpy as np

import nbbackprop as nb

#: name: (sizes, batch size (None: inference), dtype, samples)
WORKLOADS = {
    "W1": ((784, 30, 10), 10, "float64", 50_000),
    "W2": ((784, 100, 10), 32, "float32", 50_000),
    "W3": ((784, 1024, 1024, 10), 256, "float32", 2_048),
    "W4": ((784, 100, 10), None, "float32", 50_000),
}
ETA = {"W1": 3.0, "W2": 3.0, "W3": 0.5}
STRATEGIES = ["auto", "tiled", "serial", "parallel"]


def make_data(n, n_in, n_out, dtype, seed=0):
    """MNIST-shaped data like benchmarks/peers': ~80 % zero pixels, one-hot targets."""
    rng = np.random.default_rng(seed)
    X = rng.random((n, n_in), dtype=dtype)
    X -= 0.8
    X /= 0.2
    np.clip(X, 0.0, 1.0, out=X)
    Y = np.zeros((n, n_out), dtype=dtype)
    Y[np.arange(n), rng.integers(0, n_out, n)] = 1.0
    return X, Y


class Epoch:
    params = (list(WORKLOADS), STRATEGIES)
    param_names = ["workload", "strategy"]
    number = 1
    repeat = (1, 5, 60.0)
    warmup_time = 0.0
    timeout = 600

    def setup(self, workload, strategy):
        sizes, batch, dtype, n = WORKLOADS[workload]
        n = min(n, int(os.environ.get("NBB_ASV_SAMPLES", n)))
        self.X, self.Y = make_data(n, sizes[0], sizes[-1], dtype)
        self.batch = batch
        self.eta = ETA.get(workload)
        self.net = nb.Network(sizes, dtype=dtype, seed=1, strategy=strategy, device="cpu")
        self.params0 = self.net.params.copy()
        self._run()

    def _run(self):
        if self.batch is None:
            self.net.feedforward(self.X)
        else:
            self.net.params[...] = self.params0
            self.net.fit(self.X, self.Y, epochs=1, batch_size=self.batch, eta=self.eta,
                         shuffle=False)  # fmt: skip

    def time_epoch(self, workload, strategy):
        self._run()

    def peakmem_epoch(self, workload, strategy):
        self._run()
