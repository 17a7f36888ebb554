"""Reproduce the networks of Nielsen's *Neural Networks and Deep Learning*, chapters 1 and 3.

Chapter 1 (``network.py``): [784, 30, 10], sigmoid, quadratic cost, N(0, 1)
weights and biases ("large"), plain SGD, η = 3.0, 30 epochs, mini-batches of 10.
The book reports about 95% on MNIST.

Chapter 3 (``network2.py``): [784, 100, 10], sigmoid, cross-entropy cost,
N(0, 1/n_in) weights ("default"), L2 with λ = 5.0, η = 0.5, 30 epochs,
mini-batches of 10, trained on the first 50,000 MNIST images with the last
10,000 as validation data. The book reports about 98%.

Usage::

    python examples/reproduce_book.py digits [--plot docs/book-digits.png]
    python examples/reproduce_book.py mnist DIR [--plot book-mnist.png]

``DIR`` holds the four MNIST IDX files (``train-images-idx3-ubyte`` etc., plain
or ``.gz``); nothing is downloaded. On the bundled 8x8 digits the same
set-ups run with 64 inputs; ``docs/book.md`` records what they reach.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import nbbackprop as nb

SETUPS = {
    "chapter 1": dict(hidden=30, cost="quadratic", init="large", eta=3.0, lmbda=0.0),
    "chapter 3": dict(hidden=100, cost="cross_entropy", init="default", eta=0.5, lmbda=5.0),
    # The decay per update is 1 - ηλ/n: on a smaller training set the same λ
    # regularises far harder. This variant keeps the book's decay per update,
    # λ = 5.0 · n / 50,000 (identical to "chapter 3" on MNIST, so run on the digits only).
    "chapter 3, λ scaled to n": dict(
        hidden=100, cost="cross_entropy", init="default", eta=0.5, lmbda="scaled"
    ),
}


def load(source: str, directory: str | None):
    """(train, validation, test) pairs; validation is None for the digits."""
    if source == "digits":
        train, test = nb.datasets.load_digits(seed=0)
        return train, None, test
    train, val, test = nb.datasets.load_mnist(directory, validation_size=10_000)
    return train, val, test


def run(name, setup, train, val, test, epochs, seed):
    X, y = train
    lmbda = 5.0 * len(X) / 50_000 if setup["lmbda"] == "scaled" else setup["lmbda"]
    net = nb.Network([X.shape[1], setup["hidden"], 10], activation="sigmoid",
                     cost=setup["cost"], init=setup["init"], seed=seed)  # fmt: skip
    monitor = val if val is not None else test
    start = time.perf_counter()
    history = net.fit(
        X, y, epochs=epochs, batch_size=10, eta=setup["eta"], lmbda=lmbda,
        validation_data=monitor, monitor=("train_accuracy", "val_accuracy", "val_cost"),
        seed=seed,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    result = {
        "setup": name,
        "sizes": list(net.sizes),
        "lmbda": lmbda,
        "best_monitored_accuracy": max(history["val_accuracy"]),
        "final_test_accuracy": net.evaluate(*test),
        "seconds": seconds,
    }
    if val is not None:
        result["final_validation_accuracy"] = history["val_accuracy"][-1]
    return result, history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", choices=["digits", "mnist"])
    parser.add_argument("directory", nargs="?", help="the MNIST IDX files' directory")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=1, help="repeat with seeds 0..N-1")
    parser.add_argument("--plot", help="save the learning curves of seed 0 here (matplotlib)")
    args = parser.parse_args()
    if args.source == "mnist" and not args.directory:
        parser.error("mnist needs the directory of the IDX files")
    train, val, test = load(args.source, args.directory)
    histories = {}
    for name, setup in SETUPS.items():
        if setup["lmbda"] == "scaled" and args.source == "mnist":
            continue
        accs = []
        for seed in range(args.seeds):
            result, history = run(name, setup, train, val, test, args.epochs, seed)
            accs.append(result["final_test_accuracy"])
            if seed == 0:
                histories[name] = history
            print(
                f"{name}: {result['sizes']} λ={result['lmbda']:.4g} seed {seed}: test accuracy "
                f"{result['final_test_accuracy']:.4f} (best monitored "
                f"{result['best_monitored_accuracy']:.4f}) in {result['seconds']:.1f} s"
            )
        if args.seeds > 1:
            print(f"{name}: mean {np.mean(accs):.4f}, min {min(accs):.4f}, max {max(accs):.4f}")
    if args.plot:
        plot(histories, args.plot, args.source, "validation" if val is not None else "test")


def plot(histories, path, source, monitored):
    from nbbackprop.plot import _matplotlib

    Figure, FigureCanvasAgg, MaxNLocator = _matplotlib()
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax_cost, ax_acc = fig.subplots(1, 2)
    for name, h in histories.items():
        epochs = [e + 1 for e in h["epoch"]]
        line = ax_acc.plot(epochs, h["val_accuracy"], label=f"{name}, {monitored}")[0]
        ax_acc.plot(epochs, h["train_accuracy"], "--", color=line.get_color(),
                    label=f"{name}, training")  # fmt: skip
        ax_cost.plot(epochs, h["val_cost"], color=line.get_color(), label=f"{name}, {monitored}")
    ax_cost.set_ylabel(f"{monitored} cost (each set-up's own cost)")
    ax_acc.set_ylabel("accuracy")
    for ax in (ax_cost, ax_acc):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(f"Nielsen's chapter 1 and 3 networks on {source}")
    fig.savefig(path, dpi=80)
    print(f"learning curves saved to {path}")


if __name__ == "__main__":
    main()
