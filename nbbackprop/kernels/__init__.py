"""Kernels: one module per device with the same names and argument order.

:mod:`.cpu` holds the CPU kernels, :mod:`.cpu_train` the compiled drivers that chain
them, :mod:`.cuda` and :mod:`.cuda_train` the CUDA twins (imported only on demand).
"""

# The compiled drivers call ``parallel=True`` kernels. When a driver and its kernels are
# loaded from Numba's on-disk cache, nothing compiles a parallel region in the process,
# so the thread pool those regions call into is not started until someone asks for it.
# With such a cache (numba 0.68) we saw a direct driver call segfault, and compiling a
# driver over cached kernels abort with "LLVM ERROR: Symbol not found: allocate_sched".
# Starting the pool up front (about 3 ms) cured both.
import os

# libgomp (Numba's "omp" threading layer) spins for GOMP_SPINCOUNT iterations before a
# waiting thread sleeps; unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is set it uses a
# throttled count of 1,000 whenever it counts more threads than CPUs, which it did on the
# 2-CPU reference machine in some processes but not others. Then every parallel region
# woke a sleeping thread: W1 trained at ~180k samples/s in those processes and ~330k in
# the others. 300,000 is libgomp's documented default; it must be set before libgomp
# starts (a library loaded earlier, e.g. PyTorch's libgomp, keeps its own setting).
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "300000"

from numba.np.ufunc.parallel import _launch_threads  # noqa: E402

_launch_threads()
