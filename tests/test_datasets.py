"""Tests for nbbackprop.datasets: the bundled digits, MNIST loading and the IDX reader."""

from __future__ import annotations

import gzip
import math
import os
import struct
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbbackprop.datasets import _read_digits_table, load_digits, load_mnist, read_idx
from nbbackprop.datasets._idx import IDX_DTYPES

# --------------------------------------------------------------------------- helpers

MNIST_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CODE_OF = {np.dtype(v).newbyteorder("=").str: k for k, v in IDX_DTYPES.items()}


def idx_bytes(arr: np.ndarray, code: int | None = None) -> bytes:
    """Serialise `arr` as an IDX file (type code from its dtype unless given)."""
    arr = np.asarray(arr)
    if code is None:
        code = CODE_OF[arr.dtype.newbyteorder("=").str]
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write(path, data: bytes, gz: bool = False):
    if gz:
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def make_mnist(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255  # make sure both ends of the range occur
    labels = (np.arange(n) % 10).astype(np.uint8)
    rng.shuffle(labels)
    return images, labels


@pytest.fixture
def mnist_data():
    train = make_mnist(20, 1)
    test = make_mnist(7, 2)
    return {
        "train_images": train[0],
        "train_labels": train[1],
        "test_images": test[0],
        "test_labels": test[1],
    }


def write_mnist(directory, data, gz=False, names=None, override=None):
    names = dict(MNIST_NAMES) if names is None else names
    override = override or {}
    for key, name in names.items():
        raw = override.get(key, idx_bytes(data[key]))
        write(directory / (name + (".gz" if gz else "")), raw, gz=gz)
    return directory


# --------------------------------------------------------------------------- digits


def test_digits_shapes_dtypes_ranges():
    (X_train, y_train), (X_test, y_test) = load_digits()
    assert X_train.shape == (1437, 64) and X_test.shape == (360, 64)
    assert y_train.shape == (1437,) and y_test.shape == (360,)
    for X in (X_train, X_test):
        assert X.dtype == np.float64
        assert X.flags.c_contiguous
        assert X.min() == 0.0 and X.max() == 1.0
        # pixels are k/16 for integers k
        np.testing.assert_array_equal(X * 16, np.round(X * 16))
    for y in (y_train, y_test):
        assert y.dtype == np.int64
        assert set(np.unique(y)) == set(range(10))


@pytest.mark.parametrize("dtype", ["float32", np.float32, np.dtype("float32")])
def test_digits_float32(dtype):
    (X_train, _), (X_test, _) = load_digits(dtype=dtype)
    assert X_train.dtype == np.float32 and X_test.dtype == np.float32
    assert X_train.flags.c_contiguous and X_test.flags.c_contiguous
    assert 0.0 <= X_train.min() and X_train.max() <= 1.0


def test_digits_split_is_a_partition_of_the_data():
    (X_train, y_train), (X_test, y_test) = load_digits(test_size=0.25, seed=3)
    table = _read_digits_table()
    full = np.column_stack([table[:, :-1] / 16, table[:, -1]])
    got = np.vstack([np.column_stack([X_train, y_train]), np.column_stack([X_test, y_test])])
    assert got.shape == full.shape
    np.testing.assert_array_equal(got[np.lexsort(got.T[::-1])], full[np.lexsort(full.T[::-1])])


def test_digits_split_uses_seeded_permutation():
    (X_train, y_train), (X_test, y_test) = load_digits(test_size=0.2, seed=5)
    table = _read_digits_table()
    order = np.random.default_rng(5).permutation(1797)
    np.testing.assert_array_equal(y_train, table[order[:1437], -1])
    np.testing.assert_array_equal(y_test, table[order[1437:], -1])
    np.testing.assert_array_equal(X_test, table[order[1437:], :-1] / 16)


def test_digits_deterministic_and_seed_dependent():
    a = load_digits(seed=7)
    b = load_digits(seed=7)
    c = load_digits(seed=8)
    for (Xa, ya), (Xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(Xa, Xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][1], c[0][1])
    assert not np.array_equal(a[1][0], c[1][0])


def test_digits_returns_fresh_arrays():
    (X_train, y_train), _ = load_digits()
    X_train[:] = -1.0
    y_train[:] = -1
    (X_again, y_again), _ = load_digits()
    assert X_again.min() == 0.0 and y_again.min() == 0


@pytest.mark.parametrize(("test_size", "n_test"), [(0.5, 899), (0.1, 180), (0.001, 2)])
def test_digits_test_size(test_size, n_test):
    (X_train, _), (X_test, _) = load_digits(test_size=test_size)
    assert X_test.shape[0] == n_test == math.ceil(test_size * 1797)
    assert X_train.shape[0] == 1797 - n_test


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"test_size": 0.0}, "test_size"),
        ({"test_size": 1.0}, "test_size"),
        ({"test_size": -0.1}, "test_size"),
        ({"test_size": 1.5}, "test_size"),
        ({"test_size": float("nan")}, "test_size"),
        ({"test_size": True}, "test_size"),
        ({"test_size": "0.2"}, "test_size"),
        ({"test_size": 0.99999}, "test_size"),  # leaves no training image
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"seed": "0"}, "seed"),
        ({"dtype": "int32"}, "dtype"),
        ({"dtype": "float16"}, "dtype"),
        ({"dtype": None}, "dtype"),
        ({"dtype": "no-such-type"}, "dtype"),
    ],
)
def test_digits_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name) as info:
        load_digits(**kwargs)
    assert "expected" in str(info.value) and "got" in str(info.value)


def test_digits_resource_is_package_data():
    from nbbackprop.datasets import _digits_resource

    assert _digits_resource().is_file()


def _digits_csv(table: np.ndarray) -> bytes:
    lines = [",".join(str(int(v)) for v in row) for row in table]
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize(
    "damage",
    ["not-gzip", "truncated-gzip", "short", "pixel-17", "label-10", "text", "fraction", "empty"],
)
def test_digits_damaged_file_is_reported(tmp_path, damage):
    table = _read_digits_table()
    good = _digits_csv(table)
    path = tmp_path / "digits.csv.gz"
    if damage == "not-gzip":
        path.write_bytes(good)
    elif damage == "truncated-gzip":
        path.write_bytes(gzip.compress(good)[:-100])
    elif damage == "short":
        path.write_bytes(gzip.compress(_digits_csv(table[:-1])))
    elif damage == "empty":
        path.write_bytes(gzip.compress(b""))
    else:
        bad = table.copy()
        if damage == "pixel-17":
            bad[3, 5] = 17
            data = _digits_csv(bad)
        elif damage == "label-10":
            bad[3, -1] = 10
            data = _digits_csv(bad)
        elif damage == "text":
            data = good.replace(b"0,", b"x,", 1)
        else:
            data = good.replace(b"0,", b"0.5,", 1)
        path.write_bytes(gzip.compress(data))
    with pytest.raises(ValueError, match="damaged"):
        _read_digits_table(path)


def test_digits_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        _read_digits_table(tmp_path / "nope.csv.gz")


def test_digits_table_roundtrip(tmp_path):
    table = _read_digits_table()
    path = write(tmp_path / "d.csv.gz", _digits_csv(table), gz=True)
    np.testing.assert_array_equal(_read_digits_table(path), table)


# --------------------------------------------------------------------------- MNIST


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mnist_loads(tmp_path, mnist_data, gz, dtype):
    write_mnist(tmp_path, mnist_data, gz=gz)
    (X_train, y_train), (X_test, y_test) = load_mnist(tmp_path, dtype=dtype)
    assert X_train.shape == (20, 784) and X_test.shape == (7, 784)
    for X, key in ((X_train, "train_images"), (X_test, "test_images")):
        assert X.dtype == np.dtype(dtype) and X.flags.c_contiguous
        assert X.min() >= 0.0 and X.max() <= 1.0
        expected = mnist_data[key].reshape(-1, 784).astype(dtype) / np.asarray(255, dtype)
        np.testing.assert_array_equal(X, expected)
    assert X_train.min() == 0.0 and X_train.max() == 1.0
    for y, key in ((y_train, "train_labels"), (y_test, "test_labels")):
        assert y.dtype == np.int64
        np.testing.assert_array_equal(y, mnist_data[key])


def test_mnist_accepts_str_and_variant_names(tmp_path, mnist_data):
    names = {k: v.replace("-idx", ".idx") for k, v in MNIST_NAMES.items()}
    write_mnist(tmp_path, mnist_data, names=names)
    (X_train, _), (X_test, _) = load_mnist(str(tmp_path))
    assert X_train.shape == (20, 784) and X_test.shape == (7, 784)


def test_mnist_mixed_plain_and_gz(tmp_path, mnist_data):
    write_mnist(tmp_path, mnist_data)
    os.remove(tmp_path / MNIST_NAMES["train_images"])
    write(tmp_path / "train-images.idx3-ubyte.gz", idx_bytes(mnist_data["train_images"]), gz=True)
    (X_train, _), _ = load_mnist(tmp_path)
    np.testing.assert_array_equal(X_train * 255, mnist_data["train_images"].reshape(20, 784))


def test_mnist_validation_split(tmp_path, mnist_data):
    write_mnist(tmp_path, mnist_data, gz=True)
    (X_train, y_train), (X_val, y_val), (X_test, y_test) = load_mnist(tmp_path, validation_size=5)
    assert X_train.shape == (15, 784) and X_val.shape == (5, 784) and X_test.shape == (7, 784)
    images = mnist_data["train_images"].reshape(20, 784) / 255
    np.testing.assert_array_equal(X_train, images[:15])
    np.testing.assert_array_equal(X_val, images[15:])  # split off the end, like Nielsen
    np.testing.assert_array_equal(y_val, mnist_data["train_labels"][15:])
    for X in (X_train, X_val, X_test):
        assert X.flags.c_contiguous
    assert len(load_mnist(tmp_path, validation_size=0)) == 2


@pytest.mark.parametrize("validation_size", [-1, 20, 21, 1.5, True, "5"])
def test_mnist_rejects_bad_validation_size(tmp_path, mnist_data, validation_size):
    write_mnist(tmp_path, mnist_data)
    with pytest.raises(ValueError, match="validation_size"):
        load_mnist(tmp_path, validation_size=validation_size)


def test_mnist_rejects_bad_dtype(tmp_path, mnist_data):
    write_mnist(tmp_path, mnist_data)
    with pytest.raises(ValueError, match="dtype"):
        load_mnist(tmp_path, dtype="uint8")


def test_mnist_missing_file_is_named(tmp_path, mnist_data):
    write_mnist(tmp_path, mnist_data)
    os.remove(tmp_path / MNIST_NAMES["test_labels"])
    os.remove(tmp_path / MNIST_NAMES["train_images"])
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(tmp_path)
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte" in message
    assert "train-images-idx3-ubyte" in message
    assert "train-labels" not in message
    assert str(tmp_path) in message
    assert "mnist" in message.lower() and "http" in message


def test_mnist_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist") as info:
        load_mnist(tmp_path / "nowhere")
    assert "train-images-idx3-ubyte" in str(info.value) and "http" in str(info.value)


def test_mnist_image_label_count_mismatch(tmp_path, mnist_data):
    override = {"train_labels": idx_bytes(mnist_data["train_labels"][:19])}
    write_mnist(tmp_path, mnist_data, override=override)
    with pytest.raises(ValueError, match="20 images.*19 labels"):
        load_mnist(tmp_path)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_label_out_of_range(tmp_path, mnist_data, gz):
    labels = mnist_data["test_labels"].copy()
    labels[4] = 10
    write_mnist(tmp_path, mnist_data, gz=gz, override={"test_labels": idx_bytes(labels)})
    with pytest.raises(ValueError, match=r"t10k-labels.*0\.\.9.*10 at index 4"):
        load_mnist(tmp_path)


@pytest.mark.parametrize(
    "bad_images",
    [
        np.zeros((20, 28, 27), np.uint8),  # wrong image size
        np.zeros((20, 784), np.uint8),  # flattened
        np.zeros((20, 28, 28), np.int16),  # wrong type code
    ],
)
def test_mnist_rejects_non_mnist_images(tmp_path, mnist_data, bad_images):
    write_mnist(tmp_path, mnist_data, override={"train_images": idx_bytes(bad_images)})
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.*expected MNIST images"):
        load_mnist(tmp_path)


def test_mnist_rejects_2d_labels(tmp_path, mnist_data):
    override = {"train_labels": idx_bytes(mnist_data["train_labels"].reshape(20, 1))}
    write_mnist(tmp_path, mnist_data, override=override)
    with pytest.raises(ValueError, match="expected MNIST labels"):
        load_mnist(tmp_path)


def test_mnist_hostile_file_is_named(tmp_path, mnist_data):
    raw = idx_bytes(mnist_data["test_images"])
    write_mnist(tmp_path, mnist_data, override={"test_images": raw[:-1]})
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.*truncated"):
        load_mnist(tmp_path)


# --------------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4), (2, 1, 3, 2)])
def test_read_idx_roundtrip(tmp_path, gz, dtype, shape):
    rng = np.random.default_rng(0)
    arr = (rng.standard_normal(shape) * 100).astype(dtype)
    path = write(tmp_path / "a.idx", idx_bytes(arr), gz=gz)
    out = read_idx(path)
    assert out.shape == shape
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert out.flags.c_contiguous and out.flags.writeable
    np.testing.assert_array_equal(out, arr)
    np.testing.assert_array_equal(read_idx(str(path)), arr)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent-idx1-ubyte")


GOOD = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)


def _hostile_cases() -> dict[str, tuple[bytes, str]]:
    good = idx_bytes(GOOD)
    return {
        "empty": (b"", "too short"),
        "short-magic": (b"\x00\x00", "too short"),
        "wrong-magic": (b"\x01" + good[1:], "two zero bytes"),
        "wrong-magic-2": (b"\x00\x01" + good[2:], "two zero bytes"),
        "type-code-0x0a": (good[:2] + b"\x0a" + good[3:], "type code 0x0a"),
        "type-code-0xff": (good[:2] + b"\xff" + good[3:], "type code 0xff"),
        "ndim-0": (good[:3] + b"\x00" + good[4:], "dimensions 0"),
        "ndim-5": (good[:3] + b"\x05" + good[4:], "dimensions 5"),
        "truncated-header": (good[:9], "truncated IDX header"),
        "zero-dim": (bytes([0, 0, 8, 2]) + struct.pack(">2I", 0, 3), "zero dimension"),
        "truncated-payload": (good[:-1], "truncated"),
        "header-only": (good[:16], "truncated"),
        "trailing-garbage": (good + b"\x00", "trailing"),
        "dims-too-small": (
            bytes([0, 0, 8, 3]) + struct.pack(">3I", 2, 3, 3) + good[16:],
            "trailing",
        ),
    }


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("case", sorted(_hostile_cases()))
def test_read_idx_rejects_hostile_files(tmp_path, gz, case):
    data, match = _hostile_cases()[case]
    path = write(tmp_path / "bad-idx3-ubyte", data, gz=gz)
    with pytest.raises(ValueError, match=match) as info:
        read_idx(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("max_bytes", [None, 10**13])
def test_read_idx_huge_header_does_not_allocate(tmp_path, gz, max_bytes):
    # The header claims 10**12 unsigned bytes; the file holds 24.
    data = bytes([0, 0, 8, 3]) + struct.pack(">3I", 10**6, 1000, 1000) + GOOD.tobytes()
    path = write(tmp_path / "huge-idx3-ubyte", data, gz=gz)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match="1000000000000 data bytes") as info:
            read_idx(path, max_bytes=max_bytes)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 2.0
    assert peak < 8 * 2**20, f"peak traced allocation {peak} bytes"
    assert "truncated" in str(info.value)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_max_bytes_refuses_before_reading(tmp_path, gz):
    data = bytes([0, 0, 8, 3]) + struct.pack(">3I", 10**6, 1000, 1000) + GOOD.tobytes()
    path = write(tmp_path / "huge-idx3-ubyte", data, gz=gz)
    with pytest.raises(ValueError, match="more than max_bytes=1073741824"):
        read_idx(path)
    with pytest.raises(ValueError, match="more than max_bytes=23"):
        read_idx(write(tmp_path / "ok", idx_bytes(GOOD)), max_bytes=23)
    assert read_idx(write(tmp_path / "ok", idx_bytes(GOOD)), max_bytes=24).shape == (2, 3, 4)


@pytest.mark.parametrize("max_bytes", [-1, 1.5, "10", True])
def test_read_idx_rejects_bad_max_bytes(tmp_path, max_bytes):
    path = write(tmp_path / "ok", idx_bytes(GOOD))
    with pytest.raises(ValueError, match="max_bytes"):
        read_idx(path, max_bytes=max_bytes)


def test_read_idx_corrupt_gzip(tmp_path):
    packed = bytearray(gzip.compress(idx_bytes(np.arange(3000, dtype=np.uint8) % 7)))
    crc_broken = bytearray(packed)
    crc_broken[-8] ^= 0xFF  # CRC32 of the trailer
    with pytest.raises(ValueError, match="corrupt gzip"):
        read_idx(write(tmp_path / "crc.gz", bytes(crc_broken)))
    truncated = packed[: len(packed) // 2]
    with pytest.raises(ValueError, match="gzip|truncated"):
        read_idx(write(tmp_path / "trunc.gz", bytes(truncated)))


def test_read_idx_gzip_trailing_member(tmp_path):
    # Data split over two concatenated gzip members is valid gzip; garbage after it is not.
    raw = idx_bytes(GOOD)
    two = gzip.compress(raw[:10]) + gzip.compress(raw[10:])
    np.testing.assert_array_equal(read_idx(write(tmp_path / "two.gz", two)), GOOD)
    with pytest.raises(ValueError, match=r"gzip|trailing"):
        read_idx(write(tmp_path / "junk.gz", gzip.compress(raw) + b"junk!"))


# --------------------------------------------------------------------------- fuzzing


def _expected_from(data: bytes) -> np.ndarray | None:
    """Independent, naive parse: the array `data` encodes, or None if it is not valid IDX."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        return None
    ndim = data[3]
    if not 1 <= ndim <= 4 or len(data) < 4 + 4 * ndim:
        return None
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dtype = IDX_DTYPES[data[2]]
    payload = data[4 + 4 * ndim :]
    if 0 in shape or math.prod(shape) * dtype.itemsize != len(payload):
        return None
    return np.frombuffer(payload, dtype=dtype).reshape(shape)


FUZZ_SEEDS = [
    idx_bytes(GOOD),
    idx_bytes(np.arange(12, dtype=">i2").reshape(3, 4)),
    idx_bytes(np.linspace(-1, 1, 6).astype("f8")),
]


@settings(max_examples=100, deadline=None)
@given(
    seed=st.sampled_from(range(len(FUZZ_SEEDS))),
    mode=st.sampled_from(["plain", "gzip-before-mutating", "gzip-after-mutating"]),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=0, max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
    extra=st.binary(max_size=4),
)
def test_read_idx_fuzz(tmp_path_factory, seed, mode, edits, cut, extra):
    data = bytearray(FUZZ_SEEDS[seed])
    if mode == "gzip-before-mutating":
        data = bytearray(gzip.compress(bytes(data), mtime=0))
    for pos, value in edits:
        if data:
            data[pos % len(data)] = value
    if cut is not None and data:
        del data[cut % (len(data) + 1) :]
    data += extra
    file_bytes = bytes(data)
    if mode == "gzip-after-mutating":
        file_bytes = gzip.compress(file_bytes, mtime=0)
    path = tmp_path_factory.mktemp("fuzz") / "f-idx-ubyte"
    path.write_bytes(file_bytes)

    try:
        out = read_idx(path)
    except ValueError:
        return  # the only acceptable failure
    # It returned: the file must really have been a valid IDX file holding exactly `out`.
    plain = gzip.decompress(file_bytes) if file_bytes[:2] == b"\x1f\x8b" else file_bytes
    expected = _expected_from(plain)
    assert expected is not None
    assert out.shape == expected.shape
    assert out.dtype == expected.dtype.newbyteorder("=")
    np.testing.assert_array_equal(out, expected)
