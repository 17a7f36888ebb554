"""nbbackprop: backpropagation for fully-connected networks as explicitly looped Numba kernels.

>>> import nbbackprop as nb
>>> net = nb.Network([64, 30, 10], seed=0)
"""

from . import datasets
from .network import Network

__version__ = "0.1.0"
__all__ = ["Network", "datasets", "__version__"]
