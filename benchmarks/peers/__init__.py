"""Peer implementations timed side by side with nbbackprop (see benchmarks/README.md).

Each module holds a class ``Peer`` with the interface of :class:`PeerBase`::

    Peer.available() -> bool                       # classmethod; False if the framework is missing
    peer.setup(weights, biases, dtype) -> None     # copies W[l] (n_out, n_in), b[l] (n_out,)
    peer.prepare(X, Y=None) -> (Xn, Yn)            # optional: native data, outside the timer
    peer.train_epoch(X, Y, batch_size, eta) -> None
    peer.infer(X) -> np.ndarray                    # (n, n_out)
    peer.params() -> (list[np.ndarray], list[np.ndarray])
    attributes: name, same_params, slow, suggested_samples, compiles

This package imports no framework at import time: torch, jax and sklearn are imported by the
peer that needs them, when ``available()`` or ``setup()`` is called.
"""

from __future__ import annotations

import importlib

from ._base import WORKLOADS, PeerBase, Workload, init_params, make_data

PEER_NAMES = (
    "numpy_minibatch",
    "nielsen",
    "torch_cpu",
    "torch_autograd",
    "jax_jit",
    "sklearn_mlp",
)

__all__ = [
    "PEER_NAMES",
    "WORKLOADS",
    "PeerBase",
    "Workload",
    "available_peers",
    "get_peer",
    "init_params",
    "make_data",
]


def get_peer(name: str) -> type[PeerBase]:
    """The ``Peer`` class of the named peer module."""
    if name not in PEER_NAMES:
        raise KeyError(f"unknown peer {name!r}; known: {', '.join(PEER_NAMES)}")
    return importlib.import_module(f"{__name__}.{name}").Peer


def available_peers(names=PEER_NAMES) -> list[type[PeerBase]]:
    """The ``Peer`` classes whose framework is importable here, in ``names`` order."""
    out = []
    for n in names:
        cls = get_peer(n)
        if cls.available():
            out.append(cls)
    return out
