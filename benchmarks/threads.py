"""Epoch times at every fixed thread count and at ``threads="auto"``, quiet or busy.

    python -m benchmarks.threads [--workload W1] [--rounds 8] [--busy 1]

Each round times one ``Network.fit(epochs=1)`` epoch at Numba's full thread count,
at ``threads="auto"`` and at each smaller count, in turn (one process, the same
arrays). ``--busy K`` starts K processes that spin on the CPU for the whole
measurement, as another program on a laptop would: then a parallel region waits for a
thread that the OS has handed to the spinner. The tuner's choices are printed at the
end (``nbbackprop/_threads.py``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time


def _spin(stop):  # pragma: no cover - runs in a child process
    while not stop.is_set():
        for _ in range(100_000):
            pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", default="W1", choices=("W1", "W2", "W3"))
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--busy", type=int, default=0, help="spinning processes beside the fit")
    args = ap.parse_args(argv)

    import numba

    import nbbackprop as nb
    from nbbackprop import _threads

    from .peers import WORKLOADS, make_data

    wl = WORKLOADS[args.workload]
    X, Y = make_data(wl.n_samples, wl.sizes[0], wl.sizes[-1], wl.dtype)
    net = nb.Network(list(wl.sizes), dtype=wl.dtype, seed=0, device="cpu")
    most = numba.get_num_threads()
    settings = [most, "auto", *range(most - 1, 0, -1)]
    for threads in settings:  # compile or load, outside the timings
        net.fit(X[:2048], Y[:2048], epochs=1, batch_size=wl.batch_size, eta=0.1,
                shuffle=False, threads=threads)  # fmt: skip
    stop = multiprocessing.Event()
    spinners = [multiprocessing.Process(target=_spin, args=(stop,)) for _ in range(args.busy)]
    for p in spinners:
        p.start()
    times: dict[str, list[float]] = {str(s): [] for s in settings}
    try:
        for r in range(args.rounds):
            row = {}
            for threads in settings:
                start = time.perf_counter()
                net.fit(X, Y, epochs=1, batch_size=wl.batch_size, eta=0.1, shuffle=False,
                        threads=threads)  # fmt: skip
                ms = (time.perf_counter() - start) * 1e3
                times[str(threads)].append(ms)
                row[str(threads)] = round(ms, 1)
            print(f"round {r + 1}: " + json.dumps(row), flush=True)
    finally:
        stop.set()
        for p in spinners:
            p.join()
    print(f"{args.workload}, {args.busy} busy process(es), medians in ms:",
          {k: round(statistics.median(v), 1) for k, v in times.items()})  # fmt: skip
    for key, summary in _threads.summaries().items():
        print("tuner", key[0][:2], summary)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
