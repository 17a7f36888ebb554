"""The ``nbbackprop`` command line.

``nbbackprop train`` with no arguments trains Nielsen's [64, 30, 10] sigmoid
network on the bundled UCI digits and prints the test accuracy; its options
cover every feature of :meth:`nbbackprop.Network.fit`, ``--save`` writes the
model, ``--plot`` the learning curves, ``--json`` a machine-readable summary.
``nbbackprop evaluate MODEL`` prints accuracy and a confusion matrix;
``nbbackprop predict MODEL INPUT.npy`` prints a label per row.
"""

from __future__ import annotations

import json
import sys

import click
import numpy as np

from . import __version__
from .orchestration import DEVICES, STRATEGIES

DATA_HELP = "'digits' (bundled, the default) or 'mnist:DIR' (the MNIST IDX files in DIR)."


class UsageFailure(click.UsageError):
    """A bad argument or missing file found by the library: one line, exit status 2."""

    def show(self, file=None) -> None:
        click.echo(f"Error: {self.format_message()}", file=file or sys.stderr, err=True)


class OneLineGroup(click.Group):
    """A command group whose usage errors are one line, ``Error: ...``, exit status 2.

    Click prints a usage banner and a help hint above its own parsing errors (an
    unknown option, a value that is not a number); here every usage error, Click's
    or the library's, looks the same: one line on stderr, no traceback.
    """

    @staticmethod
    def _one_line(exc: click.UsageError) -> click.UsageError:
        if isinstance(exc, UsageFailure) or type(exc).__name__ == "NoArgsIsHelpError":
            return exc  # already one line, or a request for help
        return UsageFailure(exc.format_message())

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise self._one_line(exc) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise self._one_line(exc) from None


def _parse_sizes(value: str) -> list[int]:
    try:
        sizes = [int(s) for s in value.replace(" ", "").split(",") if s]
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated layer widths such as 64,30,10, got {value!r}"
        ) from None
    return sizes


def _parse_threads(value: str) -> int | str:
    """``--threads``: "auto" or a count (its range is checked by ``fit``)."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(
            f"expected 'auto' or a number of threads, got {value!r}", param_hint="'--threads'"
        ) from None


def load_data(data: str, dtype: str, seed: int):
    """``(train, test)`` pairs for a ``--data`` value."""
    from . import datasets

    if data == "digits":
        return datasets.load_digits(dtype=dtype, seed=seed)
    if data.startswith("mnist:"):
        return datasets.load_mnist(data[len("mnist:") :], dtype=dtype)
    raise click.BadParameter(f"expected {DATA_HELP} Got {data!r}", param_hint="--data")


@click.group(cls=OneLineGroup)
@click.version_option(__version__, prog_name="nbbackprop")
def main() -> None:
    """Train fully-connected networks by backpropagation with Numba kernels."""


def _names(value: str | None):
    if value is None:
        return None
    names = [s.strip() for s in value.split(",") if s.strip()]
    return names[0] if len(names) == 1 else names


CHOICE_ACT = click.Choice(["sigmoid", "tanh", "relu", "identity", "softmax"])


@main.command()
@click.option("--sizes", default=None, help="Layer widths, e.g. 64,30,10 (default: input,30,10).")
@click.option("--epochs", default=30, show_default=True, type=int)
@click.option("--batch-size", default=10, show_default=True, type=int)
@click.option("--eta", default=3.0, show_default=True, type=float, help="Learning rate.")
@click.option(
    "--dtype", default="float64", show_default=True, type=click.Choice(["float64", "float32"])
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--data", default="digits", show_default=True, help=DATA_HELP)
@click.option(
    "--activation", default="sigmoid", show_default=True,
    help="sigmoid, tanh, relu or identity; one name, or one per layer separated by commas.",
)  # fmt: skip
@click.option(
    "--output-activation",
    default=None,
    type=CHOICE_ACT,
    help="Activation of the output layer (softmax with --cost log_likelihood).",
)
@click.option(
    "--cost",
    default="quadratic",
    show_default=True,
    type=click.Choice(["quadratic", "cross_entropy", "log_likelihood"]),
)
@click.option(
    "--init",
    default="default",
    show_default=True,
    type=click.Choice(["default", "large", "glorot", "he"]),
)
@click.option(
    "--lmbda",
    default=0.0,
    show_default=True,
    type=float,
    help="L2 regularisation (Nielsen's λ: weight decay 1 - eta*lmbda/n).",
)
@click.option(
    "--optimizer",
    default="sgd",
    show_default=True,
    type=click.Choice(["sgd", "momentum", "nesterov", "adam"]),
)
@click.option("--momentum", default=0.9, show_default=True, type=float)
@click.option("--beta1", default=0.9, show_default=True, type=float)
@click.option("--beta2", default=0.999, show_default=True, type=float)
@click.option("--epsilon", default=1e-8, show_default=True, type=float)
@click.option(
    "--schedule",
    default="constant",
    show_default=True,
    type=click.Choice(["constant", "invscaling", "step", "plateau"]),
    help="Learning-rate schedule.",
)
@click.option("--power-t", default=0.5, show_default=True, type=float, help="invscaling power.")
@click.option("--step-size", default=10, show_default=True, type=int, help="step: epochs per step.")
@click.option(
    "--gamma", default=0.5, show_default=True, type=float, help="step/plateau: factor on eta."
)
@click.option("--plateau-patience", default=5, show_default=True, type=int)
@click.option(
    "--early-stopping",
    is_flag=True,
    help="Stop when the validation figure stops improving (on a split of the "
    "training data; the test set is only used at the end).",
)
@click.option("--patience", default=10, show_default=True, type=int)
@click.option("--tol", default=0.0, show_default=True, type=float)
@click.option(
    "--metric",
    default=None,
    type=click.Choice(["val_cost", "val_accuracy", "train_cost", "train_accuracy"]),
    help="Figure watched by early stopping and the plateau schedule.",
)
@click.option("--validation-fraction", default=0.1, show_default=True, type=float)
@click.option("--restore-best", is_flag=True, help="With early stopping, keep the best epoch.")
@click.option(
    "--monitor-train-accuracy",
    is_flag=True,
    help="Also record the accuracy on the training data each epoch.",
)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    type=click.Choice(DEVICES),
    help="'auto' takes a usable GPU when the work is large enough, else the CPU.",
)
@click.option(
    "--strategy",
    default=None,
    type=click.Choice(STRATEGIES),
    help="Force a kernel strategy (see 'nbbackprop info' and docs/cuda.md).",
)
@click.option(
    "--threads",
    default="auto",
    show_default=True,
    help="CPU threads: 'auto' (timed: all of Numba's or fewer) or a fixed count.",
)
@click.option(
    "--save",
    "save_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="Save the trained model (.npz) here.",
)
@click.option(
    "--checkpoint",
    default=None,
    type=click.Path(dir_okay=False),
    help="Checkpoint the run here every --checkpoint-every epochs.",
)
@click.option("--checkpoint-every", default=1, show_default=True, type=int)
@click.option(
    "--resume",
    default=None,
    type=click.Path(dir_okay=False),
    help="Finish the run saved in this checkpoint (same options).",
)
@click.option(
    "--plot",
    "plot_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="Save a figure of the learning curves (needs matplotlib).",
)
@click.option("--quiet", is_flag=True, help="Print only the final accuracy.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object (accuracy, history, paths) and nothing else.",
)
def train(sizes, epochs, batch_size, eta, dtype, seed, data, activation, output_activation,
          cost, init, lmbda, optimizer, momentum, beta1, beta2, epsilon, schedule, power_t,
          step_size, gamma, plateau_patience, early_stopping, patience, tol, metric,
          validation_fraction, restore_best, monitor_train_accuracy, device, strategy,
          threads, save_path, checkpoint, checkpoint_every, resume, plot_path, quiet,
          as_json) -> None:  # fmt: skip
    """Train a network and print the test accuracy.

    With no options: Nielsen's chapter 1 network ([64, 30, 10] sigmoid, quadratic
    cost, eta 3.0, 30 epochs, mini-batches of 10) on the bundled digits.
    """
    from tqdm.auto import tqdm

    from ._guards import DivergenceError
    from .devices import CudaUnavailableError
    from .network import Network

    if plot_path is not None:
        from . import plot

        try:
            plot._matplotlib()
        except ImportError as exc:
            raise UsageFailure(f"--plot: {exc}") from None
    quiet = quiet or as_json
    threads = _parse_threads(threads)
    try:
        (X, y), (Xt, yt) = load_data(data, dtype, seed)
        layer_sizes = _parse_sizes(sizes) if sizes else [X.shape[1], 30, 10]
        if layer_sizes[0] != X.shape[1]:
            raise ValueError(
                f"--sizes: the first width must be the data's {X.shape[1]} features, "
                f"got {layer_sizes[0]}"
            )
        net = Network(layer_sizes, activation=_names(activation), cost=cost, dtype=dtype,
                      seed=seed, output_activation=output_activation, init=init,
                      device=device)  # fmt: skip
        # Early stopping watches a split of the training data, never the test set.
        validation = None if early_stopping else (Xt, yt)
        val_name = "validation" if early_stopping else "test"
        monitor = ["val_accuracy", "val_cost"]
        if monitor_train_accuracy:
            monitor.append("train_accuracy")
        # A live bar on a terminal; one line per epoch when the output is a file or pipe.
        interactive = sys.stdout.isatty()
        bar = tqdm(total=epochs, desc="training", unit="epoch", disable=quiet or not interactive)

        def report(epoch, history):
            acc = history["val_accuracy"][-1]
            cost_ = history["train_cost"][-1]
            bar.set_postfix({"cost": f"{cost_:.4f}", f"{val_name}_acc": f"{acc:.4f}"})
            bar.update(1)
            if not quiet and not interactive:
                click.echo(
                    f"epoch {epoch + 1}/{epochs}: cost {cost_:.5f}, {val_name} accuracy {acc:.4f}"
                )

        history = net.fit(
            X, y, epochs=epochs, batch_size=batch_size, eta=eta, validation_data=validation,
            seed=seed, callback=report, lmbda=lmbda, optimizer=optimizer, momentum=momentum,
            beta1=beta1, beta2=beta2, epsilon=epsilon, schedule=schedule, power_t=power_t,
            step_size=step_size, gamma=gamma, plateau_patience=plateau_patience,
            early_stopping=early_stopping, patience=patience, tol=tol, metric=metric,
            validation_fraction=validation_fraction, restore_best=restore_best,
            monitor=monitor, strategy=strategy, checkpoint=checkpoint,
            checkpoint_every=checkpoint_every, resume=resume, threads=threads,
        )  # fmt: skip
        bar.close()
        if save_path is not None:
            net.save(save_path)
        if plot_path is not None:
            from . import plot

            plot.plot_history(history, plot_path, val_label=val_name,
                              title=f"{list(net.sizes)} {cost}, eta {eta}")  # fmt: skip
    except (ValueError, TypeError, OSError, CudaUnavailableError) as exc:
        raise UsageFailure(str(exc)) from None
    except DivergenceError as exc:  # a run-time failure, not a usage error: exit status 1
        raise click.ClickException(str(exc)) from None
    accuracy = net.evaluate(Xt, yt)
    if as_json:
        click.echo(json.dumps({
            "test_accuracy": accuracy, "n_test": len(Xt), "epochs_trained": net.epochs_trained,
            "sizes": list(net.sizes), "activations": list(net.activations), "cost": cost,
            "history": history, "saved": save_path, "plot": plot_path,
        }))  # fmt: skip
        return
    click.echo(f"test accuracy: {accuracy:.4f} ({len(Xt)} samples)")
    if not quiet:
        if save_path is not None:
            click.echo(f"model saved to {save_path}")
        if plot_path is not None:
            click.echo(f"learning curves saved to {plot_path}")


def _confusion(labels, predicted, n):
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", default="digits", show_default=True, help=DATA_HELP)
@click.option("--seed", default=0, show_default=True, type=int,
              help="The digits split's seed (train uses its --seed).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate(model, data, seed, as_json) -> None:
    """Accuracy and confusion matrix of a saved MODEL on the test split of --data."""
    from . import persistence

    try:
        net = persistence.load(model)
        _, (Xt, yt) = load_data(data, net.dtype.name, seed)
        if Xt.shape[1] != net.sizes[0]:
            raise ValueError(
                f"{model} takes {net.sizes[0]} inputs, the data has {Xt.shape[1]} features"
            )
        predicted = net.predict(Xt)
    except (ValueError, TypeError, OSError) as exc:
        raise UsageFailure(str(exc)) from None
    n = max(net.sizes[-1], int(yt.max()) + 1)
    matrix = _confusion(yt, predicted, n)
    accuracy = float(np.mean(predicted == yt))
    if as_json:
        click.echo(json.dumps({"accuracy": accuracy, "n": len(yt),
                               "confusion_matrix": matrix.tolist()}))  # fmt: skip
        return
    click.echo(f"accuracy: {accuracy:.4f} ({int(np.sum(predicted == yt))}/{len(yt)})")
    click.echo("confusion matrix (rows: true label, columns: predicted):")
    width = max(3, len(str(matrix.max())) + 1)
    click.echo(" " * 4 + "".join(f"{j:>{width}}" for j in range(n)))
    for i in range(n):
        click.echo(f"{i:>3} " + "".join(f"{c:>{width}}" for c in matrix[i]))


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("inputs", type=click.Path(dir_okay=False))
@click.option("--outputs", "raw", is_flag=True, help="Print the output activations, not labels.")
@click.option(
    "--out",
    "out_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="Write the predictions to this .npy file instead of printing them.",
)
def predict(model, inputs, raw, out_path) -> None:
    """Predict labels for the rows of INPUTS (a .npy array, one sample per row)."""
    from . import persistence

    try:
        net = persistence.load(model)
        try:
            X = np.load(inputs, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{inputs}: not a readable .npy array ({exc})") from None
        if not isinstance(X, np.ndarray):
            raise ValueError(f"{inputs}: expected a .npy array, got a .npz archive")
        if X.ndim == 1:
            X = X.reshape(1, -1)
        result = net.feedforward(X) if raw else net.predict(X)
    except (ValueError, TypeError, OSError) as exc:
        raise UsageFailure(str(exc)) from None
    if out_path is not None:
        np.save(out_path, result)
        return
    for row in result:
        click.echo(" ".join(f"{v:.6g}" for v in row) if raw else str(int(row)))


@main.command()
def info() -> None:
    """Versions, threads, devices and the kernel plan for a small network."""
    import numba
    import numpy

    from . import devices
    from .network import Network

    click.echo(f"nbbackprop {__version__}, numba {numba.__version__}, numpy {numpy.__version__}")
    click.echo(f"threads: {numba.get_num_threads()}")
    click.echo("devices:")
    for line in devices.describe():
        click.echo(f"  {line}")
    net = Network([64, 30, 10])
    click.echo(str(net.plan(10)))
    if devices.cuda_status().usable:
        click.echo(str(net.plan(10, device="cuda")))


if __name__ == "__main__":  # pragma: no cover
    main()
