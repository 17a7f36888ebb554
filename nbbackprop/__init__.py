"""nbbackprop: backpropagation for fully-connected networks as explicitly looped Numba kernels.

>>> import nbbackprop as nb
>>> net = nb.Network([64, 30, 10], seed=0)
"""

from . import datasets

__version__ = "0.1.0"

from ._guards import DivergenceError, DivergenceWarning  # noqa: E402
from .network import Network  # noqa: E402
from .persistence import load  # noqa: E402

__all__ = [
    "DivergenceError",
    "DivergenceWarning",
    "MLPClassifier",
    "MLPRegressor",
    "Network",
    "datasets",
    "load",
    "__version__",
]


def __getattr__(name):
    # The estimators import scikit-learn, an optional extra: only when asked for.
    if name in ("MLPClassifier", "MLPRegressor"):
        from . import sklearn as _sk

        return getattr(_sk, name)
    raise AttributeError(f"module 'nbbackprop' has no attribute {name!r}")
