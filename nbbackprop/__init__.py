"""nbbackprop: backpropagation for fully-connected networks as explicitly looped Numba kernels.

>>> import nbbackprop as nb
>>> net = nb.Network([64, 30, 10], seed=0)
"""

from . import datasets
from ._guards import DivergenceError, DivergenceWarning
from .network import Network

__version__ = "0.1.0"
__all__ = ["DivergenceError", "DivergenceWarning", "Network", "datasets", "__version__"]
