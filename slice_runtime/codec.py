"""Tensor framing and compression for activations moving between slices (pure).

A frame is a small header (magic, flags, dtype, shape, raw size, zstd level) and the
payload: the tensor's bytes, optionally byte-shuffled (the n-th byte of every element
together, which lets zstd see the slowly varying exponent bytes of floats as runs)
and optionally zstd-compressed. Tensors smaller than the threshold are sent raw:
compressing them costs more than the bytes it saves.

Compression contexts are expensive to create, so each thread keeps one per level.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass

import numpy as np
import zstandard

MAGIC = b"MPR1"
_HEADER = struct.Struct("<4sBBBbQ")  # magic, flags, dtype code, ndim, level, raw byte count
_FLAG_ZSTD = 1
_FLAG_SHUFFLE = 2
_DTYPES = (
    "float32", "float64", "float16", "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64", "bool",
)  # fmt: skip
_CODE = {name: code for code, name in enumerate(_DTYPES)}
DEFAULT_THRESHOLD_BYTES = 4096


class CodecError(ValueError):
    """A frame that cannot be decoded (corrupt, truncated, or not ours)."""


@dataclass(frozen=True)
class CodecSetting:
    """How one tensor is sent: zstd `level` (None: uncompressed) and byte-shuffling."""

    level: int | None = None
    shuffle: bool = False

    @property
    def name(self) -> str:
        if self.level is None:
            return "none"
        return f"zstd{self.level}" + ("+shuffle" if self.shuffle else "")

    @classmethod
    def parse(cls, name: str) -> CodecSetting:
        """'none', 'zstd1', 'zstd-5', 'zstd3+shuffle' -> a setting."""
        if name == "none":
            return cls()
        body, plus, suffix = name.partition("+")
        if not body.startswith("zstd") or (plus and suffix != "shuffle"):
            raise ValueError(f"unknown codec setting {name!r}; use none, zstdN or zstdN+shuffle (N may be negative)")
        try:
            level = int(body[4:])
        except ValueError:
            raise ValueError(f"unknown codec setting {name!r}: the zstd level must be an integer") from None
        if not -7 <= level <= 22:
            raise ValueError(f"zstd level must be in -7..22, got {level}")
        return cls(level, bool(plus))


NONE = CodecSetting()
# The settings the planner weighs for each cut: raw, fast negative levels, the usual
# levels, each with and without shuffling.
CANDIDATES = (
    NONE,
    CodecSetting(-5),
    CodecSetting(1),
    CodecSetting(3),
    CodecSetting(-5, True),
    CodecSetting(1, True),
    CodecSetting(3, True),
)

_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache = _local.__dict__.setdefault("compressors", {})
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level)
    return cache[level]  # type: ignore[no-any-return]


def _decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_local, "decompressor"):
        _local.decompressor = zstandard.ZstdDecompressor()
    return _local.decompressor  # type: ignore[no-any-return]


def encode(array: np.ndarray, setting: CodecSetting = NONE, threshold: int = DEFAULT_THRESHOLD_BYTES) -> bytes:
    """Frame `array` (any shape, a dtype of `_DTYPES`) with `setting`."""
    array = np.asarray(array)
    dtype, shape = str(array.dtype), array.shape
    if dtype not in _CODE:
        raise ValueError(f"cannot frame tensors of dtype {dtype}")
    raw = np.ascontiguousarray(array).tobytes()  # (ascontiguousarray alone would make a scalar 1-d)
    flags, payload, level = 0, raw, 0
    if setting.level is not None and len(raw) >= threshold:
        data = raw
        if setting.shuffle and array.itemsize > 1:
            data = np.frombuffer(raw, np.uint8).reshape(-1, array.itemsize).T.tobytes()
            flags |= _FLAG_SHUFFLE
        compressed = _compressor(setting.level).compress(data)
        if len(compressed) < len(raw):  # incompressible data goes raw
            flags |= _FLAG_ZSTD
            payload, level = compressed, setting.level
        else:
            flags = 0
    header = _HEADER.pack(MAGIC, flags, _CODE[dtype], len(shape), level, len(raw))
    return header + struct.pack(f"<{len(shape)}Q", *shape) + payload


def decode(frame: bytes | memoryview) -> np.ndarray:
    """The tensor in `frame`; raises CodecError on anything malformed."""
    view = memoryview(frame)
    if len(view) < _HEADER.size:
        raise CodecError("frame shorter than its header")
    magic, flags, code, ndim, _, raw_size = _HEADER.unpack_from(view)
    if magic != MAGIC or code >= len(_DTYPES):
        raise CodecError("not a mopar tensor frame")
    dims_end = _HEADER.size + 8 * ndim
    if len(view) < dims_end:
        raise CodecError("frame truncated inside its shape")
    shape = struct.unpack_from(f"<{ndim}Q", view, _HEADER.size)
    dtype = np.dtype(_DTYPES[code])
    if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != raw_size:
        raise CodecError("frame's shape and size disagree")
    payload = view[dims_end:]
    if flags & _FLAG_ZSTD:
        try:
            data: bytes | memoryview = _decompressor().decompress(payload, max_output_size=raw_size)
        except zstandard.ZstdError as error:
            raise CodecError(f"corrupt compressed payload: {error}") from None
        if flags & _FLAG_SHUFFLE:
            data = np.frombuffer(data, np.uint8).reshape(dtype.itemsize, -1).T.tobytes()
    else:
        data = payload
    if len(data) != raw_size:
        raise CodecError(f"frame holds {len(data)} bytes, its header says {raw_size}")
    return np.frombuffer(data, dtype).reshape(shape)


def frame_info(frame: bytes | memoryview) -> tuple[int, int]:
    """(raw byte count, bytes on the wire) of a frame, for metrics."""
    view = memoryview(frame)
    return _HEADER.unpack_from(view)[5], len(view)
