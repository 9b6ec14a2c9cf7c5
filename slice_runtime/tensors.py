"""Tensor specs and dtype names shared by every stage: ONNX, numpy and the V2 protocol (without onnx).

A `TensorSpec` is what the manifest records for every tensor crossing a border:
name, numpy dtype name and shape (ints; -1 where a dimension is variable).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# ONNX element type (TensorProto.DataType, fixed by the ONNX standard) -> (numpy dtype name,
# Open Inference Protocol datatype). Numbers, not `onnx.TensorProto`: a slice pod never loads onnx.
_BY_ONNX: dict[int, tuple[str, str]] = {
    1: ("float32", "FP32"),  # FLOAT
    11: ("float64", "FP64"),  # DOUBLE
    10: ("float16", "FP16"),  # FLOAT16
    3: ("int8", "INT8"),  # INT8
    5: ("int16", "INT16"),  # INT16
    6: ("int32", "INT32"),  # INT32
    7: ("int64", "INT64"),  # INT64
    2: ("uint8", "UINT8"),  # UINT8
    4: ("uint16", "UINT16"),  # UINT16
    12: ("uint32", "UINT32"),  # UINT32
    13: ("uint64", "UINT64"),  # UINT64
    9: ("bool", "BOOL"),  # BOOL
    8: ("object", "BYTES"),  # STRING
}
_V2_BY_DTYPE = {dtype: v2 for dtype, v2 in _BY_ONNX.values()}
_DTYPE_BY_V2 = {v2: dtype for dtype, v2 in _BY_ONNX.values()}
_ONNX_BY_DTYPE = {dtype: elem for elem, (dtype, _) in _BY_ONNX.items()}


def dtype_of_onnx(elem_type: int) -> str:
    if elem_type not in _BY_ONNX:
        raise ValueError(f"unsupported ONNX element type {elem_type}")
    return _BY_ONNX[elem_type][0]


def onnx_of_dtype(dtype: str) -> int:
    return _ONNX_BY_DTYPE[dtype]


def v2_datatype(dtype: str) -> str:
    return _V2_BY_DTYPE[dtype]


def dtype_of_v2(datatype: str) -> str:
    """numpy dtype name of a V2 datatype; KeyError if the protocol has no such type."""
    return _DTYPE_BY_V2[datatype]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]  # -1 marks a variable dimension

    @property
    def static(self) -> bool:
        return all(d >= 0 for d in self.shape)

    @property
    def nbytes(self) -> int:
        """Size of one tensor of this spec (variable dimensions count as 1)."""
        n = 1
        for d in self.shape:
            n *= max(d, 1)
        return n * np.dtype(self.dtype).itemsize if self.dtype != "object" else n * 8

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TensorSpec:
        return cls(str(data["name"]), str(data["dtype"]), tuple(int(d) for d in data["shape"]))

    @classmethod
    def of_value_info(cls, value_info: Any) -> TensorSpec:
        """Spec of an ONNX ValueInfoProto; symbolic or missing dims become -1."""
        tensor_type = value_info.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
        return cls(value_info.name, dtype_of_onnx(tensor_type.elem_type), dims)

    @classmethod
    def of_ort(cls, node_arg: Any) -> TensorSpec:
        """Spec of an onnxruntime NodeArg (session.get_inputs() / get_outputs())."""
        shape = tuple(d if isinstance(d, int) else -1 for d in node_arg.shape)
        return cls(node_arg.name, dtype_of_ort(node_arg.type), shape)

    @classmethod
    def of_array(cls, name: str, array: np.ndarray) -> TensorSpec:
        return cls(name, str(array.dtype), tuple(int(d) for d in array.shape))

    def accepts(self, array: np.ndarray) -> str | None:
        """None if `array` fits this spec, else why not (one line, for a 4xx)."""
        if str(array.dtype) != self.dtype:
            return f"input {self.name!r} has dtype {array.dtype}, expected {self.dtype}"
        if len(array.shape) != len(self.shape) or any(
            want >= 0 and got != want for got, want in zip(array.shape, self.shape)
        ):
            want_shape = "x".join("?" if d < 0 else str(d) for d in self.shape)
            got_shape = "x".join(str(d) for d in array.shape)
            return f"input {self.name!r} has shape {got_shape}, expected {want_shape}"
        return None


def random_inputs(
    specs: Sequence[TensorSpec], seed: int = 0, ranges: Mapping[str, tuple[int, int]] | None = None
) -> dict[str, np.ndarray]:
    """Seeded inputs for `specs`: standard normal floats; integers uniform in the
    input's recorded range ([0, 2) where none is recorded, which is safe for masks)."""
    rng = np.random.default_rng(seed)
    ranges = ranges or {}
    arrays: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = tuple(max(d, 1) for d in spec.shape)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            arrays[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            low, high = ranges.get(spec.name, (0, 2))
            arrays[spec.name] = rng.integers(low, high, size=shape).astype(dtype)
        elif dtype.kind == "b":
            arrays[spec.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise ValueError(f"cannot make random values for input {spec.name!r} of dtype {spec.dtype}")
    return arrays


def input_ranges(metadata: Mapping[str, str]) -> dict[str, tuple[int, int]]:
    """Integer input ranges recorded in model metadata as `mopar.input_range.NAME = low,high`."""
    prefix = "mopar.input_range."
    ranges: dict[str, tuple[int, int]] = {}
    for key, value in metadata.items():
        if key.startswith(prefix):
            low, high = value.split(",")
            ranges[key[len(prefix) :]] = (int(low), int(high))
    return ranges


def dtype_of_ort(type_name: str) -> str:
    """numpy dtype name of an onnxruntime type string such as 'tensor(float)'."""
    inner = type_name.removeprefix("tensor(").removesuffix(")")
    aliases = {"float": "float32", "double": "float64", "float16": "float16", "string": "object"}
    return aliases.get(inner, inner)
