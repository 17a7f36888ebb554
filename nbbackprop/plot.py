"""Learning curves with matplotlib (an optional extra: ``pip install 'nbbackprop[plot]'``).

:func:`plot_history` draws the history that :meth:`nbbackprop.Network.fit`
returns: cost per epoch on the left (training, and validation when monitored),
accuracy on the right. It uses matplotlib's object API with the Agg canvas, so it
needs no display and leaves pyplot's global state alone.
"""

from __future__ import annotations

import os

INSTALL_HINT = (
    "plotting needs matplotlib: pip install 'nbbackprop[plot]' (or pip install matplotlib)"
)

_LABELS = {
    "train_cost": "training (mean of mini-batches)",
    "val_cost": "validation",
    "train_accuracy": "training",
    "val_accuracy": "validation",
}


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return Figure, FigureCanvasAgg, MaxNLocator


def plot_history(history: dict, path=None, *, title: str | None = None, val_label=None):
    """Draw cost and accuracy per epoch; save to ``path`` (PNG, SVG, PDF...) when given.

    Parameters
    ----------
    history : dict
        As returned by ``fit``: ``"epoch"``, ``"train_cost"`` and any of
        ``"val_cost"``, ``"train_accuracy"``, ``"val_accuracy"``.
    path : path, optional
        Where to save the figure; the format follows the suffix.
    title : str, optional
        A title over both panels.
    val_label : str, optional
        The legend's name for the validation figures (e.g. ``"test"``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    Figure, FigureCanvasAgg, MaxNLocator = _matplotlib()
    epochs = [e + 1 for e in history["epoch"]]
    accuracy = [k for k in ("train_accuracy", "val_accuracy") if history.get(k)]
    fig = Figure(figsize=(9.0, 3.6) if accuracy else (4.8, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if accuracy else 1, squeeze=False)[0]
    panels = [("cost", ("train_cost", "val_cost"))]
    if accuracy:
        panels.append(("accuracy", ("train_accuracy", "val_accuracy")))
    for ax, (name, keys) in zip(axes, panels, strict=True):
        for key in keys:
            if history.get(key):
                label = _LABELS[key]
                if key.startswith("val_") and val_label:
                    label = val_label
                ax.plot(epochs, history[key], marker="." if len(epochs) <= 60 else None,
                        label=label)  # fmt: skip
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    if path is not None:
        fig.savefig(os.fspath(path), dpi=100)
    return fig
