"""The inputs and outputs an ONNX file declares, read straight from its protobuf encoding.

A slice pod never imports `onnx` (its memory is billed for every millisecond it runs), and
opening an onnxruntime session only to list a file's tensors would load its weights. The
few fields needed are read from the wire format (protobuf's encoding guide: a key is
`field << 3 | wire type`, varints little-endian base 128, length-delimited fields
prefixed by their size) over a memory map, skipping nodes and weights without reading
them. Field numbers are onnx.proto3's: ModelProto.graph 7; GraphProto.initializer 5,
input 11, output 12; ValueInfoProto name 1, type 2; TypeProto.tensor_type 1;
Tensor elem_type 1, shape 2; TensorShapeProto.dim 1; Dimension dim_value 1;
TensorProto.name 8.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from slice_runtime.tensors import TensorSpec, dtype_of_onnx

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


class NotOnnx(ValueError):
    """The file is not an ONNX model this reader understands."""


@dataclass(frozen=True)
class GraphIO:
    inputs: list[TensorSpec]  # the graph's inputs that are not initializers
    outputs: list[TensorSpec]


def graph_io(path: Path) -> GraphIO:
    """The tensors `path` declares as its graph's inputs and outputs."""
    try:
        with path.open("rb") as file:
            # Not closed by hand: views of it may live on in a traceback; it goes with its last one.
            mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    except ValueError:  # an empty file cannot be mapped
        raise NotOnnx(f"{path.name}: not an ONNX model (empty)") from None
    try:
        return _graph_io(memoryview(mapped))
    except (IndexError, ValueError) as error:  # UnicodeDecodeError is a ValueError
        raise NotOnnx(f"{path.name}: not an ONNX model ({error})") from None


def _graph_io(data: memoryview) -> GraphIO:
    graph = next((value for field, value in _fields(data) if field == 7 and isinstance(value, memoryview)), None)
    if graph is None:
        raise ValueError("no graph")
    initializers: set[str] = set()
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    for field, value in _fields(graph):
        if not isinstance(value, memoryview):
            continue
        if field == 5:
            initializers.add(_tensor_name(value))
        elif field == 11:
            inputs.append(_value_info(value))
        elif field == 12:
            outputs.append(_value_info(value))
    return GraphIO([s for s in inputs if s.name not in initializers], outputs)


def _varint(data: memoryview, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (value - (1 << 64) if value >= 1 << 63 else value), at  # int64 two's complement
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(data: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """(field number, value) of each field: an int for varints, the bytes of length-delimited ones."""
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, at = _varint(data, at)
            yield field, value
        elif wire == _BYTES:
            size, at = _varint(data, at)
            if at + size > len(data):
                raise ValueError("truncated field")
            yield field, data[at : at + size]
            at += size
        elif wire in (_FIXED64, _FIXED32):
            at += 8 if wire == _FIXED64 else 4
        else:
            raise ValueError(f"unexpected wire type {wire}")


def _tensor_name(tensor: memoryview) -> str:
    for field, value in _fields(tensor):
        if field == 8 and isinstance(value, memoryview):
            return bytes(value).decode()
    return ""


def _value_info(info: memoryview) -> TensorSpec:
    name, elem_type, dims = "", 0, []
    for field, value in _fields(info):
        if field == 1 and isinstance(value, memoryview):
            name = bytes(value).decode()
        elif field == 2 and isinstance(value, memoryview):
            for type_field, tensor in _fields(value):
                if type_field != 1 or not isinstance(tensor, memoryview):
                    continue
                for tensor_field, part in _fields(tensor):
                    if tensor_field == 1 and isinstance(part, int):
                        elem_type = part
                    elif tensor_field == 2 and isinstance(part, memoryview):
                        dims = [_dimension(d) for f, d in _fields(part) if f == 1 and isinstance(d, memoryview)]
    if not elem_type:
        raise ValueError(f"tensor {name!r} is not a tensor of a known element type")
    return TensorSpec(name, dtype_of_onnx(elem_type), tuple(dims))


def _dimension(dimension: memoryview) -> int:
    for field, value in _fields(dimension):
        if field == 1 and isinstance(value, int):
            return value
    return -1  # a named (dim_param) or unknown dimension
