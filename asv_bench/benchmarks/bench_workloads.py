"""One training epoch (W1–W3) and one inference pass (W4), per CPU strategy.

Compilation is kept out of the timings: ``setup`` trains/infers once on a few rows.
Set ``NBBACKPROP_ASV_SAMPLES`` to shrink the data (the CI smoke run does).
"""

import os

from nbbackprop import orchestration

from ._data import WORKLOADS, data, network

SCALE = int(os.environ.get("NBBACKPROP_ASV_SAMPLES", "0"))
CPU_STRATEGIES = [s for s in orchestration.CPU_STRATEGIES]


def _samples(n):
    return min(n, SCALE) if SCALE else n


class TrainEpoch:
    params = (["W1", "W2", "W3"], CPU_STRATEGIES)
    param_names = ["workload", "strategy"]
    timeout = 600
    number = 1
    repeat = (1, 5, 60.0)

    def setup(self, workload, strategy):
        sizes, batch, dtype, n = WORKLOADS[workload]
        self.X, self.Y = data(_samples(n), sizes[0], sizes[-1], dtype)
        self.net = network(sizes, dtype, strategy)
        self.batch = batch
        self.net.fit(self.X[: 2 * batch], self.Y[: 2 * batch], epochs=1, batch_size=batch,
                     eta=0.1, shuffle=False)  # fmt: skip

    def time_epoch(self, workload, strategy):
        self.net.fit(self.X, self.Y, epochs=1, batch_size=self.batch, eta=0.1, shuffle=False)

    def peakmem_epoch(self, workload, strategy):
        self.net.fit(self.X, self.Y, epochs=1, batch_size=self.batch, eta=0.1, shuffle=False)

    def track_samples_per_second(self, workload, strategy):
        import time

        t = time.perf_counter()
        self.net.fit(self.X, self.Y, epochs=1, batch_size=self.batch, eta=0.1, shuffle=False)
        return self.X.shape[0] / (time.perf_counter() - t)

    track_samples_per_second.unit = "samples/s"


class Inference:
    params = (["W4"], CPU_STRATEGIES)
    param_names = ["workload", "strategy"]
    number = 1
    repeat = (1, 5, 60.0)

    def setup(self, workload, strategy):
        sizes, _, dtype, n = WORKLOADS[workload]
        self.X, _ = data(_samples(n), sizes[0], sizes[-1], dtype)
        self.net = network(sizes, dtype, strategy)
        self.net.feedforward(self.X[:10])

    def time_feedforward(self, workload, strategy):
        self.net.feedforward(self.X)

    def peakmem_feedforward(self, workload, strategy):
        self.net.feedforward(self.X)
