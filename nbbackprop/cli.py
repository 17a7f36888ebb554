"""The ``nbbackprop`` command line.

``nbbackprop train`` with no arguments trains Nielsen's [64, 30, 10] sigmoid
network on the bundled UCI digits and prints the test accuracy.
"""

from __future__ import annotations

import sys

import click

from . import __version__

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
@click.option("--quiet", is_flag=True, help="Print only the final accuracy.")
def train(sizes, epochs, batch_size, eta, dtype, seed, data, quiet) -> None:
    """Train a sigmoid network and print the test accuracy."""
    from tqdm.auto import tqdm

    from ._guards import DivergenceError
    from .network import Network

    try:
        (X, y), (Xt, yt) = load_data(data, dtype, seed)
        layer_sizes = _parse_sizes(sizes) if sizes else [X.shape[1], 30, 10]
        if layer_sizes[0] != X.shape[1]:
            raise ValueError(
                f"--sizes: the first width must be the data's {X.shape[1]} features, "
                f"got {layer_sizes[0]}"
            )
        net = Network(layer_sizes, dtype=dtype, seed=seed)
        # A live bar on a terminal; one line per epoch when the output is a file or pipe.
        interactive = sys.stdout.isatty()
        bar = tqdm(total=epochs, desc="training", unit="epoch", disable=quiet or not interactive)

        def report(epoch, history):
            acc = history["val_accuracy"][-1]
            cost = history["train_cost"][-1]
            bar.set_postfix(cost=f"{cost:.4f}", test_acc=f"{acc:.4f}")
            bar.update(1)
            if not quiet and not interactive:
                click.echo(f"epoch {epoch + 1}/{epochs}: cost {cost:.5f}, test accuracy {acc:.4f}")

        net.fit(
            X, y, epochs=epochs, batch_size=batch_size, eta=eta, validation_data=(Xt, yt),
            seed=seed, callback=report,
        )  # fmt: skip
        bar.close()
    except (ValueError, TypeError, OSError) as exc:
        raise UsageFailure(str(exc)) from None
    except DivergenceError as exc:  # a run-time failure, not a usage error: exit status 1
        raise click.ClickException(str(exc)) from None
    click.echo(f"test accuracy: {net.evaluate(Xt, yt):.4f} ({len(Xt)} samples)")


@main.command()
def info() -> None:
    """Versions, threads and the kernel plan for a small network."""
    import numba
    import numpy

    from .network import Network

    click.echo(f"nbbackprop {__version__}, numba {numba.__version__}, numpy {numpy.__version__}")
    click.echo(f"threads: {numba.get_num_threads()}")
    click.echo(str(Network([64, 30, 10]).plan(10)))


if __name__ == "__main__":  # pragma: no cover
    main()
