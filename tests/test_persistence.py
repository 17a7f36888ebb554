"""save/load: exact round trips, atomic writes, hostile and damaged files, checkpoint/resume."""

import json
import os
import pickle
import zipfile

import numpy as np
import pytest

import nbbackprop as nb
from nbbackprop import persistence


@pytest.fixture
def data(rng):
    X = rng.random((40, 5))
    labels = rng.integers(0, 3, 40)
    return X, labels


def trained(data, optimizer="adam", dtype="float64", **kw):
    X, labels = data
    net = nb.Network([5, 7, 3], activation=["relu", "softmax"], cost="log_likelihood",
                     dtype=dtype, init="he", seed=1)  # fmt: skip
    net.fit(X, labels, epochs=2, batch_size=8, eta=0.05, optimizer=optimizer, seed=4, **kw)
    return net


def assert_same_state(a, b):
    assert a.sizes == b.sizes and a.activations == b.activations
    assert a.cost_name == b.cost_name and a.dtype == b.dtype and a.init == b.init
    assert np.array_equal(a.params, b.params) and a.params.dtype == b.params.dtype
    assert a.optimizer == b.optimizer
    assert np.array_equal(a.opt_state, b.opt_state) and a.opt_state.dtype == b.opt_state.dtype
    assert a.step[0] == b.step[0] and a.epochs_trained == b.epochs_trained
    assert a.schedule_state == b.schedule_state
    assert a.rng.bit_generator.state == b.rng.bit_generator.state


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_round_trip_is_exact_and_training_continues_bit_for_bit(optimizer, dtype, data, tmp_path):
    X, labels = data
    kw = {"batch_size": 8, "eta": 0.05, "optimizer": optimizer, "schedule": "plateau",
          "plateau_patience": 1, "lmbda": 0.3}  # fmt: skip
    a = trained(data, optimizer, dtype)
    path = tmp_path / "model.npz"
    a.save(path)
    b = nb.load(path)
    assert_same_state(a, b)
    assert np.array_equal(a.weights[1], b.weights[1])
    assert np.shares_memory(b.weights[0], b.params)
    ha = a.fit(X, labels, epochs=3, **kw)
    hb = b.fit(X, labels, epochs=3, **kw)
    assert ha == hb
    assert np.array_equal(a.params, b.params)
    # ... and both equal one uninterrupted run.
    c = trained(data, optimizer, dtype)
    c.fit(X, labels, epochs=3, **kw)
    assert np.array_equal(a.params, c.params)


def test_untrained_network_round_trips(tmp_path):
    net = nb.Network([3, 2], activation="identity", seed=5)
    net.save(tmp_path / "m.npz")
    assert_same_state(net, nb.load(tmp_path / "m.npz"))


def test_file_is_plain_npz_with_json_metadata(data, tmp_path):
    net = trained(data)
    path = tmp_path / "m.npz"
    net.save(path)
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == {"meta", "params", "opt_state"}
        assert z["meta"].dtype == np.uint8
        meta = json.loads(z["meta"].tobytes().decode())
    assert meta["format"] == "nbbackprop.network" and meta["format_version"] == 1
    assert meta["sizes"] == [5, 7, 3] and meta["activations"] == ["relu", "softmax"]
    assert meta["optimizer"] == "adam" and meta["step"] == 10 and meta["epochs_trained"] == 2
    assert nb.persistence.read_meta(path)["cost"] == "log_likelihood"
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temporary file left


def test_crash_mid_save_keeps_the_previous_file(data, tmp_path, monkeypatch):
    net = trained(data)
    path = tmp_path / "m.npz"
    net.save(path)
    before = path.read_bytes()

    def crash(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crash)
    net.params[0] += 1
    with pytest.raises(KeyboardInterrupt):
        net.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


def test_save_keeps_the_mode_of_the_file_it_replaces(data, tmp_path):
    path = tmp_path / "m.npz"
    net = trained(data)
    net.save(path)
    os.chmod(path, 0o640)
    net.save(path)
    assert os.stat(path).st_mode & 0o777 == 0o640


@pytest.mark.parametrize("keep", [0, 10, 100, 0.5, -30, -1])
def test_truncated_files_are_rejected(keep, data, tmp_path):
    path = tmp_path / "m.npz"
    trained(data).save(path)
    raw = path.read_bytes()
    n = int(len(raw) * keep) if isinstance(keep, float) else keep
    path.write_bytes(raw[:n])
    with pytest.raises(persistence.ModelFileError, match="m.npz"):
        nb.load(path)


def test_corrupted_bytes_are_rejected(data, tmp_path):
    path = tmp_path / "m.npz"
    trained(data).save(path)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("params.npy")
    raw[info.header_offset + 200] ^= 0xFF  # inside the params data: the CRC catches it
    path.write_bytes(bytes(raw))
    with pytest.raises(persistence.ModelFileError, match="damaged"):
        nb.load(path)


def write_npz(path, meta=None, **arrays):
    if meta is not None:
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def good_parts(data):
    net = trained(data)
    meta = persistence._meta(net, None)
    return meta, {"params": net.params.copy(), "opt_state": net.opt_state.copy()}


def test_other_format_version_is_rejected(data, tmp_path):
    meta, arrays = good_parts(data)
    meta["format_version"] = 2
    write_npz(tmp_path / "m.npz", meta, **arrays)
    with pytest.raises(persistence.ModelFileError, match="format version 2"):
        nb.load(tmp_path / "m.npz")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda m, a: a.update(params=a["params"][:-1]), "disagrees with the declared sizes"),
        (lambda m, a: a.update(params=a["params"].astype(np.float32)), "disagrees"),
        (lambda m, a: a.update(opt_state=a["opt_state"][:1]), "opt_state"),
        (lambda m, a: m.update(sizes=[5, 8, 3]), "disagrees with itself"),
        (lambda m, a: m.update(optimizer="sgd"), "opt_state"),
        (lambda m, a: m.update(sizes=[5, 0, 3]), "bad metadata"),
        (lambda m, a: m.update(activations=["relu", "swish"]), "bad metadata"),
        (lambda m, a: m.update(rng={"bit_generator": "PCG64", "state": 3}), "random generator"),
        (lambda m, a: m.pop("cost"), "bad metadata"),
        (lambda m, a: m.update(format="something else"), "not an nbbackprop model file"),
        (lambda m, a: a.pop("opt_state"), "missing"),
        (lambda m, a: a.update(extra=np.zeros(3)), "unexpected"),
        (lambda m, a: a.update(params=np.zeros(10**6)), "larger than its declared shape"),
    ],
)
def test_inconsistent_files_are_rejected(change, match, data, tmp_path):
    meta, arrays = good_parts(data)
    change(meta, arrays)
    write_npz(tmp_path / "m.npz", meta, **arrays)
    with pytest.raises(persistence.ModelFileError, match=match):
        nb.load(tmp_path / "m.npz")


def test_pickled_objects_are_never_loaded(data, tmp_path):
    meta, arrays = good_parts(data)
    arrays["opt_state"] = np.array([{"evil": 1}], dtype=object)
    write_npz(tmp_path / "m.npz", meta, **arrays)
    with pytest.raises(persistence.ModelFileError, match="pickle"):
        nb.load(tmp_path / "m.npz")


def test_metadata_must_be_bytes_of_json(data, tmp_path):
    _, arrays = good_parts(data)
    write_npz(tmp_path / "a.npz", meta=None, meta_=np.zeros(1), **arrays)
    with pytest.raises(persistence.ModelFileError):
        nb.load(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", meta=np.frombuffer(b"\xff{", np.uint8), **arrays)
    with pytest.raises(persistence.ModelFileError, match="JSON"):
        nb.load(tmp_path / "b.npz")


def test_other_files_are_rejected(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros(3))
    (tmp_path / "t.txt").write_text("hello")
    for name in ("x.npy", "t.txt"):
        with pytest.raises(persistence.ModelFileError):
            nb.load(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="no such model file"):
        nb.load(tmp_path / "missing.npz")


def test_pickle_keeps_weights_as_views(data):
    net = trained(data)
    copy = pickle.loads(pickle.dumps(net))
    assert_same_state(net, copy)
    copy.weights[0][0, 0] = 99.0
    assert copy.params[0] == 99.0


# ------------------------------------------------------------- checkpoint/resume


class Interrupt(Exception):
    pass


def interrupt_after(n):
    def callback(epoch, history):
        if len(history["epoch"]) == n:
            raise Interrupt

    return callback


RUNS = [
    {"optimizer": "adam", "eta": 0.01, "schedule": "plateau", "plateau_patience": 1},
    {
        "optimizer": "nesterov",
        "eta": 0.3,
        "early_stopping": True,
        "patience": 2,
        "tol": 1e9,
        "restore_best": True,
    },  # fmt: skip
    {
        "optimizer": "momentum",
        "eta": 0.3,
        "validation_fraction": 0.25,
        "monitor": ("val_accuracy", "train_accuracy"),
    },  # fmt: skip
]


@pytest.mark.parametrize("options", RUNS)
@pytest.mark.parametrize("every", [1, 2])
def test_resume_finishes_the_run_exactly(options, every, data, tmp_path):
    X, labels = data
    kw = {"epochs": 6, "batch_size": 8, **options}
    whole = nb.Network([5, 7, 3], seed=1)
    h_whole = whole.fit(X, labels, seed=2, **kw)
    path = tmp_path / "ck.npz"
    part = nb.Network([5, 7, 3], seed=1)
    with pytest.raises(Interrupt):
        part.fit(X, labels, seed=2, checkpoint=path, checkpoint_every=every,
                 callback=interrupt_after(3), **kw)  # fmt: skip
    # A fresh process: a new network of the same architecture, any seed.
    again = nb.Network([5, 7, 3], seed=99)
    h_again = again.fit(X, labels, seed=2, resume=path, **kw)
    assert h_again == h_whole
    assert np.array_equal(again.params, whole.params)
    assert_same_state(again, whole)


def test_resume_checks_the_arguments_and_the_file(data, tmp_path):
    X, labels = data
    path = tmp_path / "ck.npz"
    net = nb.Network([5, 7, 3], seed=1)
    net.fit(X, labels, epochs=2, batch_size=8, eta=0.5, checkpoint=path)
    with pytest.raises(ValueError, match="eta"):
        nb.Network([5, 7, 3]).fit(X, labels, epochs=2, batch_size=8, eta=0.4, resume=path)
    with pytest.raises(ValueError, match="'n'"):
        nb.Network([5, 7, 3]).fit(X[:20], labels[:20], epochs=2, batch_size=8, eta=0.5,
                                  resume=path)  # fmt: skip
    with pytest.raises(ValueError, match="another network"):
        nb.Network([5, 6, 3]).fit(X, labels, epochs=2, batch_size=8, eta=0.5, resume=path)
    net.save(tmp_path / "plain.npz")
    with pytest.raises(ValueError, match="no run to finish"):
        nb.Network([5, 7, 3]).fit(X, labels, epochs=2, batch_size=8, eta=0.5,
                                  resume=tmp_path / "plain.npz")  # fmt: skip
    # A finished run resumes to nothing more; the checkpoint loads as a plain model.
    done = nb.Network([5, 7, 3])
    h = done.fit(X, labels, epochs=2, batch_size=8, eta=0.5, resume=path)
    assert len(h["epoch"]) == 2 and np.array_equal(done.params, net.params)
    assert np.array_equal(nb.load(path).params, net.params)


def test_a_model_saved_with_a_gpu_strategy_loads_without_a_gpu(tmp_path, monkeypatch):
    from nbbackprop import devices

    status = devices.CudaStatus(False, False, "no NVIDIA driver (test)")
    monkeypatch.setattr(devices, "cuda_status", lambda: status)
    net = nb.Network([4, 3, 2], seed=0)
    net.strategy = "fused"  # as a network trained on a GPU would have it
    net.save(tmp_path / "gpu.npz")
    with pytest.warns(UserWarning, match="strategy='fused', which needs a GPU"):
        back = nb.load(tmp_path / "gpu.npz")
    assert back.strategy == "auto"
    np.testing.assert_array_equal(back.params, net.params)
    assert nb.load(tmp_path / "gpu.npz", strategy="serial").strategy == "serial"
