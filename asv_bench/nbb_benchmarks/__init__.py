"""asv benchmarks for nbbackprop: whole workloads (W1-W4) and each kernel.

They benchmark the nbbackprop of the checkout they live in (its root goes first on
``sys.path``), whatever else the interpreter has installed. Compilation is kept out
of every timing: each ``setup`` calls the code once, which compiles it or loads it
from Numba's on-disk cache.
"""

import pathlib
import sys

_ROOT = pathlib.Path(__file__).resolve().parents[2]
if (_ROOT / "nbbackprop" / "__init__.py").exists() and str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))
