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
from numba.np.ufunc.parallel import _launch_threads

_launch_threads()
