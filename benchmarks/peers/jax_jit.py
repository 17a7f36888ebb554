"""JAX: the whole epoch is one jitted function; ``lax.scan`` over the full mini-batches
(``lax.dynamic_slice`` of the resident data, so the data are not copied into batches), then one
step on the short last batch (its size is static, so it is traced separately inside the same
jit). The gradient comes from ``jax.grad`` of the summed quadratic cost. Parameter buffers are
donated to the epoch call.

The first ``train_epoch``/``infer`` for a given (n, batch size, dtype, sizes) compiles
(``compiles = True``): time after a warm-up call with the same shapes. float64 needs
``jax_enable_x64``, which ``setup`` switches on when asked for float64 (a process-wide flag).
Calls block until the result is ready.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

from ._base import PeerBase, as_dtype


@functools.cache
def _jax_fns():
    import jax
    import jax.numpy as jnp
    from jax import lax

    def forward(params, x):
        Ws, bs_ = params
        a = x
        for W, b in zip(Ws, bs_, strict=True):
            a = jax.nn.sigmoid(a @ W.T + b)
        return a

    def cost(params, x, y):
        a = forward(params, x)
        return 0.5 * jnp.sum((y - a) ** 2)

    grad = jax.grad(cost)

    def step(params, x, y, eta):
        g = grad(params, x, y)
        scale = eta / x.shape[0]
        return jax.tree.map(lambda p, gp: p - scale * gp, params, g)

    @functools.partial(jax.jit, static_argnames=("batch_size",), donate_argnums=(0,))
    def epoch(params, X, Y, eta, batch_size):
        n = X.shape[0]
        nb, rem = divmod(n, batch_size)

        def body(p, i):
            start = i * batch_size
            xb = lax.dynamic_slice_in_dim(X, start, batch_size, axis=0)
            yb = lax.dynamic_slice_in_dim(Y, start, batch_size, axis=0)
            return step(p, xb, yb, eta), None

        if nb:
            params, _ = lax.scan(body, params, jnp.arange(nb, dtype=jnp.int32))
        if rem:
            params = step(params, X[nb * batch_size :], Y[nb * batch_size :], eta)
        return params

    infer = jax.jit(forward)
    return jax, jnp, epoch, infer


class Peer(PeerBase):
    name = "jax_jit"
    compiles = True

    @classmethod
    def available(cls) -> bool:
        try:
            _jax_fns()
        except Exception:
            return False
        return True

    def setup(self, weights, biases, dtype) -> None:
        jax, jnp, self._epoch, self._infer = _jax_fns()
        self.jax, self.jnp = jax, jnp
        self.dtype = as_dtype(dtype)
        if self.dtype == np.float64 and not jax.config.jax_enable_x64:
            jax.config.update("jax_enable_x64", True)
        Ws = tuple(jnp.array(np.asarray(w, dtype=self.dtype)) for w in weights)
        bs_ = tuple(jnp.array(np.asarray(b, dtype=self.dtype).reshape(-1)) for b in biases)
        self._params = (Ws, bs_)

    def prepare(self, X, Y=None):
        jax = self.jax

        def conv(A):
            if A is None:
                return None
            if isinstance(A, jax.Array):
                return A
            return jax.device_put(np.ascontiguousarray(A, dtype=self.dtype))

        Xj, Yj = conv(X), conv(Y)
        jax.block_until_ready((Xj, Yj))
        return Xj, Yj

    def train_epoch(self, X, Y, batch_size: int, eta: float) -> None:
        Xj, Yj = self.prepare(X, Y)
        eta_arr = np.asarray(eta, dtype=self.dtype)
        with warnings.catch_warnings():
            # CPU backends without donation support warn; donation is only an optimisation
            warnings.filterwarnings("ignore", message=".*donated buffers.*")
            params = self._epoch(self._params, Xj, Yj, eta_arr, batch_size=int(batch_size))
        self._params = self.jax.block_until_ready(params)

    def infer(self, X) -> np.ndarray:
        Xj, _ = self.prepare(X)
        out = self.jax.block_until_ready(self._infer(self._params, Xj))
        return np.asarray(out)

    def params(self):
        Ws, bs_ = self._params
        return [np.array(w) for w in Ws], [np.array(b) for b in bs_]
