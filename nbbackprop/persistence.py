"""Saving and loading networks: a documented, versioned ``.npz`` format.

A file holds everything training depends on, so that training resumed from it
continues exactly as if it had not stopped: sizes, activations, cost, dtype,
the parameter buffer, the optimiser's state and step, the random stream, the
epoch count and the schedule's memory (and, in a checkpoint written by
``fit(..., checkpoint=...)``, the state of that run).

Format, version 1 (``docs/training.md`` has the full specification)
---------------------------------------------------------------------
An uncompressed NumPy ``.npz`` archive with exactly these members:

``meta``
    ``uint8`` 1-D array: UTF-8 JSON object with ``"format": "nbbackprop.network"``,
    ``"format_version": 1`` and the declared sizes and state (see
    :func:`_meta`).
``params``
    ``(n_params,)`` array of the declared dtype: all weights, layer by layer,
    each ``W[l]`` row-major of shape ``(sizes[l+1], sizes[l])``, then all biases.
``opt_state``
    ``(rows, n_params)`` array of the declared dtype: no rows for ``"sgd"`` or
    an untrained network, the velocity for ``"momentum"``/``"nesterov"``,
    Adam's first and second moments for ``"adam"``.
``best_params`` (checkpoints with ``restore_best`` only)
    ``(n_params,)``: the parameters of the best epoch so far.

Writes are atomic: the archive is written to a temporary file in the target's
directory, flushed and fsynced, then renamed over the target with
:func:`os.replace`, so a crash mid-save leaves the previous file intact.
Loading never unpickles (``allow_pickle=False``) and checks every array against
the declared sizes before it is used.
"""

from __future__ import annotations

import json
import lzma
import os
import tempfile
import warnings
import zipfile
import zlib

import numpy as np

from . import __version__
from . import _validation as v
from ._aligned import aligned_copy

FORMAT = "nbbackprop.network"
#: The version this module writes, and the only one it reads.
FORMAT_VERSION = 1
_MEMBERS = {"meta", "params", "opt_state"}
_OPTIONAL = {"best_params"}
#: Room for a .npy header in a member, beyond its data.
_HEADER_SLACK = 1 << 16
_MAX_META_BYTES = 64 << 20


class ModelFileError(ValueError):
    """A file that is not a valid nbbackprop model file of a version this library reads."""


# ----------------------------------------------------------------------------- save


def _meta(net, run: dict | None) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "nbbackprop_version": __version__,
        "sizes": list(net.sizes),
        "activations": list(net.activations),
        "cost": net.cost_name,
        "dtype": net.dtype.name,
        "init": net.init,
        "strategy": net.strategy,
        "n_weights": net.n_weights,
        "n_params": net.n_params,
        "optimizer": net.optimizer,
        "step": int(net.step[0]),
        "epochs_trained": int(net.epochs_trained),
        "schedule_state": net.schedule_state,
        "rng": net.rng.bit_generator.state,
        "run": run,
    }


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write) -> None:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then rename it to ``path``.

    The data is fsynced before the rename and the directory after it; on any
    error the temporary file is removed and ``path`` is left as it was.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.exists(path):
        mode = os.stat(path).st_mode & 0o777
    else:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)  # fmt: skip
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable; not every platform can open a directory
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def save(net, path, *, run: dict | None = None, best_params=None) -> None:
    """Write ``net`` to ``path`` (used as given; no suffix is added), atomically.

    ``run`` and ``best_params`` are the state of a ``fit`` in progress, for
    checkpoints; :meth:`nbbackprop.Network.save` passes neither.
    """
    meta = json.dumps(_meta(net, run), allow_nan=True).encode("utf-8")
    arrays = {
        "meta": np.frombuffer(meta, dtype=np.uint8),
        "params": net.params,
        "opt_state": net.opt_state,
    }
    if best_params is not None:
        arrays["best_params"] = np.asarray(best_params, dtype=net.dtype)
    atomic_write(path, lambda f: np.savez(f, **arrays))


# ----------------------------------------------------------------------------- load


def _fail(path, why: str) -> ModelFileError:
    return ModelFileError(f"{os.fspath(path)}: {why}")


#: What reading a damaged archive can raise besides ValueError and OSError: a flipped
#: compression-method or flag field makes zipfile try a codec or refuse an "encrypted"
#: member (found by tests/test_properties.py::test_model_file_fuzz_bytes).
_DAMAGE = (
    zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, NotImplementedError,
    RuntimeError, OverflowError, zlib.error, lzma.LZMAError,
)  # fmt: skip


def _npy_header(z, name: str):
    """``(shape, dtype)`` from the .npy header of member ``name``, reading no data.

    NumPy allocates the whole array a header declares before reading it, so a
    header claiming 10^12 items in a file of a few bytes must be refused first.
    """
    with z.zip.open(name + ".npy") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"member {name!r} has .npy format version {version}")
    return shape, dtype


def _read(path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and check a model file; return ``(meta, arrays)``."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such model file")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as exc:
        raise _fail(path, f"cannot be read: {exc}") from None
    if magic.startswith(b"\x93NUMPY"):
        # np.load would read (and allocate) the whole array before we could look at it.
        raise _fail(path, "not an nbbackprop model file (a .npy array, not a .npz archive)")
    if not magic.startswith(b"PK"):
        raise _fail(path, "not an nbbackprop model file (not an .npz archive)")
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise _fail(path, "not an nbbackprop model file (a .npy array, not a .npz archive)")
        with z:
            names = set(z.files)
            missing = _MEMBERS - names
            extra = names - _MEMBERS - _OPTIONAL
            if missing or extra:
                raise _fail(
                    path,
                    "not an nbbackprop model file: expected the arrays "
                    f"{sorted(_MEMBERS)}, missing {sorted(missing)}, unexpected {sorted(extra)}",
                )
            sizes_in_zip = {info.filename[:-4]: info.file_size for info in z.zip.infolist()}
            if sizes_in_zip.get("meta", 0) > _MAX_META_BYTES:
                raise _fail(path, "the metadata is implausibly large")
            shape, dtype = _npy_header(z, "meta")
            if dtype != np.uint8 or len(shape) != 1 or shape[0] > _MAX_META_BYTES:
                raise _fail(path, f"'meta' should be a 1-D uint8 array, got {dtype} {shape}")
            meta = _decode_meta(path, z["meta"])
            expected = _expected_shapes(path, meta)
            # Compare the stored sizes with the declared ones before reading any
            # array, so a hostile header cannot make us allocate a huge buffer.
            itemsize = np.dtype(meta["dtype"]).itemsize
            for name, shape in expected.items():
                if name in names:
                    limit = int(np.prod(shape)) * itemsize + _HEADER_SLACK
                    if sizes_in_zip.get(name, 0) > limit:
                        raise _fail(
                            path, f"array {name!r} is larger than its declared shape {shape}"
                        )
                    stored, dtype = _npy_header(z, name)
                    if stored != shape or dtype != np.dtype(meta["dtype"]):
                        raise _fail(
                            path,
                            f"array {name!r} disagrees with the declared sizes: expected "
                            f"{meta['dtype']} of shape {shape}, got {dtype} of shape {stored}",
                        )
            arrays = {name: z[name] for name in names - {"meta"}}
    except ModelFileError:
        raise
    except _DAMAGE as exc:
        raise _fail(path, f"not a readable nbbackprop model file (truncated or damaged?): {exc}"
                    ) from None  # fmt: skip
    for name, shape in expected.items():
        if name not in arrays:
            continue
        arr = arrays[name]
        if arr.dtype != np.dtype(meta["dtype"]) or arr.shape != shape:
            raise _fail(
                path,
                f"array {name!r} disagrees with the declared sizes: expected {meta['dtype']} of "
                f"shape {shape}, got {arr.dtype} of shape {arr.shape}",
            )
    return meta, arrays


def _decode_meta(path, raw: np.ndarray) -> dict:
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise _fail(path, f"'meta' should be a 1-D uint8 array, got {raw.dtype} {raw.shape}")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(path, f"the metadata is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _fail(path, f"not an nbbackprop model file (no 'format': {FORMAT!r} in the metadata)")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise _fail(
            path,
            f"format version {version!r}; this nbbackprop ({__version__}) reads version "
            f"{FORMAT_VERSION} only",
        )
    return meta


def _expected_shapes(path, meta: dict) -> dict[str, tuple[int, ...]]:
    from .network import _STATE_ROWS, OPTIMIZERS

    try:
        sizes = v.check_sizes(meta["sizes"])
        dtype = v.check_dtype(meta["dtype"])
        optimizer = meta["optimizer"]
        if optimizer is not None:
            v.check_choice(optimizer, "optimizer", OPTIMIZERS)
        for key in ("n_weights", "n_params", "step", "epochs_trained"):
            v.check_int(meta[key], key, minimum=0)
    except (KeyError, TypeError, ValueError) as exc:
        raise _fail(path, f"bad metadata: {exc}") from None
    n_weights = sum(sizes[l] * sizes[l + 1] for l in range(len(sizes) - 1))
    n_params = n_weights + sum(sizes[1:])
    if meta["n_weights"] != n_weights or meta["n_params"] != n_params:
        raise _fail(
            path,
            f"the metadata disagrees with itself: sizes {list(sizes)} make {n_params} "
            f"parameters ({n_weights} weights), it declares {meta['n_params']} "
            f"({meta['n_weights']})",
        )
    del dtype
    rows = 0 if optimizer is None else _STATE_ROWS[optimizer]
    return {
        "params": (n_params,),
        "opt_state": (rows, n_params),
        "best_params": (n_params,),
    }


def _generator(path, state, what: str) -> np.random.Generator:
    """A generator set to ``state``, or a ModelFileError if the state is unusable."""
    try:
        rng = np.random.default_rng()
        rng.bit_generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise _fail(path, f"bad metadata: the {what} state is unusable ({exc})") from None
    return rng


def _restore(net, path, meta: dict, arrays: dict) -> None:
    """Copy the training state of a checked file into a network of the same architecture.

    Everything is checked before anything is copied, so a bad file leaves ``net`` as
    it was (a missing key, a step beyond int64, an unusable random state).
    """
    try:
        optimizer, step = meta["optimizer"], meta["step"]
        epochs_trained, state, rng_state = (
            meta["epochs_trained"], meta["schedule_state"], meta["rng"]
        )  # fmt: skip
    except KeyError as exc:
        raise _fail(path, f"bad metadata: missing {exc}") from None
    if step > np.iinfo(np.int64).max:
        raise _fail(path, f"bad metadata: step {step} does not fit in int64")
    if not isinstance(state, dict) or set(state) != {"schedule", "eta_scale", "best", "bad"}:
        raise _fail(path, f"bad metadata: schedule_state {state!r}")
    rng = _generator(path, rng_state, "random generator")
    net.params[...] = arrays["params"]
    net._opt_name = optimizer
    net.opt_state = aligned_copy(arrays["opt_state"])
    net.step[0] = step
    net.epochs_trained = epochs_trained
    net.schedule_state = dict(state)
    net.rng = rng


def load(path, *, device: str = "auto", strategy: str | None = None):
    """Read a network written by :meth:`nbbackprop.Network.save` (or a checkpoint).

    Parameters
    ----------
    path : str or path-like
        The ``.npz`` file.
    device : str
        The loaded network's device (``"auto"``, ``"cpu"`` or ``"cuda"``); the file
        does not tie a model to the machine that trained it.
    strategy : str, optional
        The kernel strategy; by default the saved one. A saved GPU-only strategy
        (``"layered"``, ``"fused"``) on a machine without a usable GPU becomes
        ``"auto"``, with a warning, so a model trained on a GPU loads anywhere.

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    ModelFileError (a ValueError)
        If the file is truncated or damaged, not an nbbackprop model file, of
        another format version, or holds arrays that disagree with its
        declared sizes.
    """
    from . import devices, orchestration
    from .network import Network

    meta, arrays = _read(path)
    if strategy is None:
        strategy = meta.get("strategy", "auto")
        gpu_only = strategy in orchestration.CUDA_STRATEGIES and (
            strategy not in orchestration.CPU_STRATEGIES
        )
        if gpu_only and device != "cuda" and not devices.cuda_status().usable:
            warnings.warn(
                f"{os.fspath(path)}: saved with strategy={strategy!r}, which needs a GPU "
                f"({devices.cuda_status().reason}); loaded with strategy='auto'",
                UserWarning,
                stacklevel=2,
            )
            strategy = "auto"
    try:
        net = Network(
            meta["sizes"], activation=meta["activations"], cost=meta["cost"],
            dtype=meta["dtype"], init=meta["init"], strategy=strategy, device=device, seed=0,
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise _fail(path, f"bad metadata: {exc}") from None
    _restore(net, path, meta, arrays)
    return net


def read_meta(path) -> dict:
    """The checked metadata of a model file (sizes, activations, cost, state, run)."""
    return _read(path)[0]


def resume_into(net, path, settings: dict) -> dict:
    """Restore a checkpoint's state into ``net`` for ``fit(..., resume=path)``.

    Checks that the checkpoint was written by a fit of the same network with the
    same arguments; returns the run's record for ``fit`` to continue.
    """
    meta, arrays = _read(path)
    mine = {"sizes": list(net.sizes), "activations": list(net.activations),
            "cost": net.cost_name, "dtype": net.dtype.name}  # fmt: skip
    theirs = {key: meta.get(key) for key in mine}
    if mine != theirs:
        raise ValueError(f"resume: {os.fspath(path)} holds another network: {theirs}, not {mine}")
    run = meta.get("run")
    if not isinstance(run, dict):
        raise ValueError(
            f"resume: {os.fspath(path)} was written by save(), not by fit(..., checkpoint=...): "
            "it has no run to finish; load it and call fit instead"
        )
    now = json.loads(json.dumps(settings))
    before = run.get("settings")
    if not isinstance(before, dict):
        raise _fail(path, "bad metadata: the run has no settings")
    if now != before:
        diff = {k: (before.get(k), now.get(k)) for k in sorted(set(now) | set(before))
                if before.get(k) != now.get(k)}  # fmt: skip
        raise ValueError(
            "resume: fit was called with other arguments or data than the run that wrote "
            f"{os.fspath(path)}: (checkpoint, now) = {diff}"
        )
    record = _run_record(path, run, meta, arrays)
    _restore(net, path, meta, arrays)
    return record


def _run_record(path, run: dict, meta: dict, arrays: dict) -> dict:
    """The checked record of a checkpoint's run (before anything is restored from it)."""
    try:
        record = {
            "history": run["history"],
            "stop": run["stop"],
            "start_epoch": run["start_epoch"],
            "split_rng": run["split_rng"],
            "stopped": run["stopped"],
            "rng": meta["rng"],
            "best_params": arrays.get("best_params"),
        }
    except KeyError as exc:
        raise _fail(path, f"bad metadata: the run lacks {exc}") from None
    history, stop = record["history"], record["stop"]
    lists = isinstance(history, dict) and all(isinstance(x, list) for x in history.values())
    if not lists or not {"epoch", "eta", "train_cost"} <= set(history):
        raise _fail(path, "bad metadata: the run's history is not a table of lists")
    if not isinstance(stop, dict) or set(stop) != {"best", "bad"}:
        raise _fail(path, f"bad metadata: the run's stopping state {stop!r}")
    if not isinstance(record["stopped"], bool):
        raise _fail(path, "bad metadata: the run's 'stopped' is not true or false")
    try:
        v.check_int(record["start_epoch"], "start_epoch", minimum=0)
    except (TypeError, ValueError) as exc:
        raise _fail(path, f"bad metadata: {exc}") from None
    if record["split_rng"] is not None:
        _generator(path, record["split_rng"], "validation split's random")
    return record
