"""A hostile-input safe reader for the IDX file format used by MNIST.

An IDX file is a 4-byte magic number, ``ndim`` big-endian ``uint32``
dimension sizes and then the data, row-major and big-endian::

    0x00 0x00 <type code> <ndim>  <dim 0> ... <dim ndim-1>  <data>

The reader checks the whole header and compares the number of bytes the
header promises with the number the file really holds *before* it allocates
anything of the promised size, so a damaged or malicious header cannot make
it allocate huge buffers. Gzip-compressed files are decompressed with a
bounded, incremental read.
"""

from __future__ import annotations

import gzip
import math
import numbers
import os
import struct
import zlib
from typing import BinaryIO

import numpy as np

__all__ = ["DEFAULT_MAX_BYTES", "IDX_DTYPES", "read_idx"]

#: Data types of the IDX format, by type code (the third byte of the magic number).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_TYPE_NAMES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}

#: Default upper bound on the data size ``read_idx`` accepts (1 GiB; MNIST needs 47 MB).
DEFAULT_MAX_BYTES = 1 << 30

_MAX_NDIM = 4
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


def read_idx(
    path: str | os.PathLike[str], *, max_bytes: int | None = DEFAULT_MAX_BYTES
) -> np.ndarray:
    """Read an IDX file (plain or gzip-compressed) into a NumPy array.

    Parameters
    ----------
    path : str or os.PathLike
        File to read. Gzip compression is recognised by the content (the gzip
        magic bytes), not by the file name.
    max_bytes : int or None, optional
        Largest data size, in bytes, that the header may announce; larger
        claims are refused before anything is read. Bounds the memory that a
        gzip "bomb" can make the reader use. ``None`` disables the limit. The
        default is 1 GiB.

    Returns
    -------
    numpy.ndarray
        A new, writable, C-contiguous array in native byte order whose shape
        is the one given in the header. Its dtype follows the type code:
        ``uint8`` (0x08), ``int8`` (0x09), ``int16`` (0x0B), ``int32`` (0x0C),
        ``float32`` (0x0D) or ``float64`` (0x0E).

    Raises
    ------
    FileNotFoundError
        If `path` does not exist.
    ValueError
        If the file is not a well-formed IDX file: bad magic number, unknown
        type code, ``ndim`` outside 1..4, a zero dimension, a data size that
        differs from what the header promises (truncated file or trailing
        bytes), a data size above `max_bytes`, or a corrupt gzip stream. The
        message names the file and the problem.
    OSError
        For other I/O failures (for example, `path` is a directory).

    Notes
    -----
    For a plain file the size promised by the header is compared with the
    file size before the data are read. For a gzip file the data are
    decompressed in chunks and at most ``expected + 1`` bytes are ever held,
    so memory use is bounded by the smaller of the real and the promised size.
    """
    if max_bytes is not None and (
        isinstance(max_bytes, bool) or not isinstance(max_bytes, numbers.Integral) or max_bytes < 0
    ):
        raise ValueError(f"max_bytes: expected a non-negative integer or None, got {max_bytes!r}")
    path = os.fspath(path)
    name = os.fsdecode(path)
    with open(path, "rb") as raw:
        is_gzip = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        if not is_gzip:
            size = os.fstat(raw.fileno()).st_size
            return _read_stream(raw, name, max_bytes, size)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                return _read_stream(stream, name, max_bytes, None)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise ValueError(f"{name}: corrupt gzip stream: {exc}") from exc


def _read_stream(f: BinaryIO, name: str, max_bytes: int | None, size: int | None) -> np.ndarray:
    """Parse an IDX stream; `size` is the total byte count if known (plain files)."""
    magic = _read_upto(f, 4)
    if len(magic) < 4:
        raise ValueError(
            f"{name}: not an IDX file: {len(magic)} bytes is too short for the 4-byte magic number"
        )
    if magic[0] != 0 or magic[1] != 0:
        raise ValueError(
            f"{name}: not an IDX file: the magic number must start with two zero bytes, "
            f"got {magic[:2].hex(' ')}"
        )
    code, ndim = magic[2], magic[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x} ({_TYPE_NAMES[c]})" for c in IDX_DTYPES)
        raise ValueError(f"{name}: unsupported IDX type code 0x{code:02x}; expected one of {known}")
    if not 1 <= ndim <= _MAX_NDIM:
        raise ValueError(
            f"{name}: unsupported number of dimensions {ndim} in the IDX header; "
            f"expected 1 to {_MAX_NDIM}"
        )
    raw_dims = _read_upto(f, 4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise ValueError(
            f"{name}: truncated IDX header: {ndim} dimensions need {4 * ndim} bytes after "
            f"the magic number, got {len(raw_dims)}"
        )
    shape = struct.unpack(f">{ndim}I", raw_dims)
    if 0 in shape:
        raise ValueError(f"{name}: IDX header has a zero dimension, shape {shape}")
    dtype = IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize  # Python int: cannot overflow
    header_len = 4 + 4 * ndim
    if max_bytes is not None and expected > max_bytes:
        raise ValueError(
            f"{name}: IDX header claims shape {shape} of {_TYPE_NAMES[code]} = {expected} data "
            f"bytes, more than max_bytes={max_bytes}"
        )

    if size is not None:
        payload = size - header_len
        if payload != expected:
            what = "truncated file" if payload < expected else "trailing bytes after the data"
            raise ValueError(
                f"{name}: IDX header claims shape {shape} of {_TYPE_NAMES[code]} = {expected} "
                f"data bytes, but the file holds {payload} bytes after the {header_len}-byte "
                f"header ({what})"
            )
        buf = bytearray(expected)
        got = _readinto_full(f, buf)
        if got != expected or f.read(1):
            raise ValueError(f"{name}: file size changed while it was being read")
    else:
        buf = _read_upto(f, expected + 1)
        if len(buf) != expected:
            what = "truncated data" if len(buf) < expected else "trailing bytes after the data"
            got_text = f"{len(buf)}" if len(buf) < expected else "more"
            raise ValueError(
                f"{name}: IDX header claims shape {shape} of {_TYPE_NAMES[code]} = {expected} "
                f"data bytes, but the decompressed stream holds {got_text} ({what})"
            )

    arr = np.frombuffer(buf, dtype=dtype).reshape(shape)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _read_upto(f: BinaryIO, n: int) -> bytearray:
    """Read up to `n` bytes, in bounded chunks, stopping early only at end of file."""
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(min(_CHUNK, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


def _readinto_full(f: BinaryIO, buf: bytearray) -> int:
    """Fill `buf` from `f`; return the number of bytes read (less only at end of file)."""
    view = memoryview(buf)
    filled = 0
    while filled < len(buf):
        n = f.readinto(view[filled:])
        if not n:
            break
        filled += n
    return filled
