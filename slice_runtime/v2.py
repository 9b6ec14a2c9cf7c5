"""The Open Inference Protocol (KServe V2) request and response bodies (pure).

JSON tensors (`data` flattened row-major, or nested) and the binary-tensor extension:
the JSON header's length in the `Inference-Header-Content-Length` HTTP header, the
tensors' bytes appended after it in input order, `"parameters": {"binary_data_size": N}`
on each binary input; `"parameters": {"binary_data": true}` on a requested output (or
`"binary_data_output": true` in the request's parameters) asks for binary outputs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slice_runtime.errors import InvalidInput
from slice_runtime.tensors import TensorSpec, dtype_of_v2, v2_datatype

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"


@dataclass
class InferRequest:
    inputs: dict[str, np.ndarray]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    requested: list[str] | None = None  # output names asked for (None: all)
    binary_outputs: set[str] = field(default_factory=set)
    binary_all: bool = False


def parse_request(body: bytes, header_length: str | None) -> InferRequest:
    """Decode an infer request body; InvalidInput (a 400) on anything malformed."""
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise InvalidInput(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 < length <= len(body):
            raise InvalidInput(f"{HEADER_LENGTH} {length} does not fit a body of {len(body)} bytes")
        head, binary = body[:length], memoryview(body)[length:]
    else:
        head, binary = body, memoryview(b"")
    try:
        document = json.loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidInput(f"request body is not valid JSON: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list) or not document["inputs"]:
        raise InvalidInput("request needs a non-empty 'inputs' list")
    parameters = document.get("parameters") or {}
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for item in document["inputs"]:
        array, used = _input_tensor(item, binary, offset)
        offset += used
        if item["name"] in inputs:
            raise InvalidInput(f"input {item['name']!r} is given twice")
        inputs[item["name"]] = array
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    requested = None
    binary_outputs: set[str] = set()
    if document.get("outputs") is not None:
        if not isinstance(document["outputs"], list):
            raise InvalidInput("'outputs' must be a list")
        requested = []
        for item in document["outputs"]:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise InvalidInput("each requested output needs a 'name'")
            requested.append(item["name"])
            if (item.get("parameters") or {}).get("binary_data"):
                binary_outputs.add(item["name"])
    return InferRequest(
        inputs=inputs,
        id=None if document.get("id") is None else str(document["id"]),
        parameters=parameters,
        requested=requested,
        binary_outputs=binary_outputs,
        binary_all=bool(parameters.get("binary_data_output")),
    )


def _input_tensor(item: Any, binary: memoryview, offset: int) -> tuple[np.ndarray, int]:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise InvalidInput("each input needs a 'name'")
    name = item["name"]
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidInput(f"input {name!r} needs a 'shape' of non-negative integers")
    datatype = item.get("datatype")
    if datatype == "BYTES":
        raise InvalidInput(f"input {name!r}: BYTES tensors are not supported; send numeric tensors")
    try:
        dtype = np.dtype(dtype_of_v2(str(datatype)))
    except KeyError:
        raise InvalidInput(f"input {name!r} has unknown datatype {datatype!r}") from None
    count = int(np.prod(shape, dtype=np.int64))
    size = (item.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size != count * dtype.itemsize:
            raise InvalidInput(
                f"input {name!r}: binary_data_size {size} is not {count} x {dtype.itemsize} bytes of {datatype}"
            )
        if offset + size > len(binary):
            raise InvalidInput(f"input {name!r}: binary data ends after {len(binary) - offset} of {size} bytes")
        array = np.frombuffer(binary[offset : offset + size], dtype=dtype).reshape(shape)
        return array, size
    if "data" not in item:
        raise InvalidInput(f"input {name!r} has neither 'data' nor binary_data_size")
    try:
        array = np.asarray(item["data"], dtype=dtype)
    except (TypeError, ValueError) as error:
        raise InvalidInput(f"input {name!r}: data does not fit datatype {datatype} ({error})") from None
    if array.size != count:
        raise InvalidInput(f"input {name!r}: {array.size} values for shape {shape} ({count} expected)")
    return array.reshape(shape), 0


def check_inputs(inputs: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]) -> None:
    """Names, dtypes and shapes against the model's metadata; InvalidInput naming the first problem."""
    expected = {s.name: s for s in specs}
    unknown = [name for name in inputs if name not in expected]
    if unknown:
        raise InvalidInput(f"unknown input {unknown[0]!r}; the model's inputs are: {', '.join(expected)}")
    missing = [name for name in expected if name not in inputs]
    if missing:
        raise InvalidInput(f"missing input {missing[0]!r}; the model's inputs are: {', '.join(expected)}")
    for name, array in inputs.items():
        problem = expected[name].accepts(array)
        if problem:
            raise InvalidInput(problem)


def encode_response(
    model: str, request: InferRequest, outputs: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]
) -> tuple[bytes, dict[str, str]]:
    """The response body and its HTTP headers (binary outputs where asked for)."""
    names = request.requested if request.requested is not None else [s.name for s in specs]
    known = {s.name for s in specs}
    for name in names:
        if name not in known:
            raise InvalidInput(f"unknown output {name!r}; the model's outputs are: {', '.join(known)}")
    items, chunks = _tensors(
        {n: outputs[n] for n in names}, lambda n: request.binary_all or n in request.binary_outputs
    )
    document: dict[str, Any] = {"model_name": model, "outputs": items}
    if request.id is not None:
        document["id"] = request.id
    return _body(document, chunks)


def _tensors(
    arrays: Mapping[str, np.ndarray], binary: Callable[[str], bool]
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Tensor items of a body: JSON data, or binary data (sizes in the items, bytes returned apart)."""
    items, chunks = [], []
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        item: dict[str, Any] = {"name": name, "shape": list(array.shape), "datatype": v2_datatype(str(array.dtype))}
        if binary(name):
            data = array.tobytes()
            item["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            item["data"] = array.reshape(-1).tolist()
        items.append(item)
    return items, chunks


def _body(document: Mapping[str, Any], chunks: Sequence[bytes]) -> tuple[bytes, dict[str, str]]:
    """The JSON header and the binary chunks after it, with the headers that describe them."""
    head = json.dumps(document, separators=(",", ":")).encode()
    if not chunks:
        return head, {"Content-Type": JSON_TYPE}
    return head + b"".join(chunks), {"Content-Type": BINARY_TYPE, HEADER_LENGTH: str(len(head))}


def model_metadata(name: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> dict[str, Any]:
    def tensors(specs: Sequence[TensorSpec]) -> list[dict[str, Any]]:
        return [{"name": s.name, "datatype": v2_datatype(s.dtype), "shape": list(s.shape)} for s in specs]

    return {
        "name": name,
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": tensors(inputs),
        "outputs": tensors(outputs),
    }


def encode_request(
    inputs: Mapping[str, np.ndarray],
    binary: bool = False,
    outputs: Sequence[str] | None = None,
    binary_outputs: bool = False,
    request_id: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """A client's request body (for tests, the benchmark and the demo)."""
    items, chunks = _tensors(inputs, lambda _: binary)
    document: dict[str, Any] = {"inputs": items}
    if request_id is not None:
        document["id"] = request_id
    if outputs is not None:
        document["outputs"] = [{"name": n, "parameters": {"binary_data": binary_outputs}} for n in outputs]
    elif binary_outputs:
        document["parameters"] = {"binary_data_output": True}
    return _body(document, chunks)


def decode_response(body: bytes, header_length: str | None) -> dict[str, np.ndarray]:
    """Outputs of a response body (JSON or binary), for clients."""
    length = int(header_length) if header_length is not None else len(body)
    document = json.loads(body[:length])
    binary = memoryview(body)[length:]
    offset, outputs = 0, {}
    for item in document["outputs"]:
        dtype = np.dtype(dtype_of_v2(item["datatype"]))
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            outputs[item["name"]] = np.frombuffer(binary[offset : offset + size], dtype).reshape(item["shape"])
            offset += size
        else:
            outputs[item["name"]] = np.asarray(item["data"], dtype=dtype).reshape(item["shape"])
    return outputs
