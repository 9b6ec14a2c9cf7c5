"""The Open Inference Protocol (KServe V2) request and response bodies (pure).

JSON tensors (`data` flattened row-major, or nested) and the binary-tensor extension:
the JSON header's length in the `Inference-Header-Content-Length` HTTP header, the
tensors' bytes appended after it in input order, `"parameters": {"binary_data_size": N}`
on each binary input; `"parameters": {"binary_data": true}` on a requested output (or
`"binary_data_output": true` in the request's parameters) asks for binary outputs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from slice_runtime import jsonbody
from slice_runtime.errors import InvalidInput
from slice_runtime.tensors import TensorSpec, dtype_of_v2, v2_datatype

HEADER_LENGTH = "Inference-Header-Content-Length"
# Exactly this, no `; charset=...`: KServe's client reads an error's text only for this type.
JSON_TYPE = "application/json"
# The one version of a model a gateway serves: what its metadata reports, and what the
# `/versions/{version}` routes and gRPC `model_version` accept (besides none at all).
MODEL_VERSION = "1"
EXTENSIONS = ["binary_tensor_data"]
BINARY_TYPE = "application/octet-stream"


@dataclass
class InferRequest:
    inputs: dict[str, np.ndarray]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    requested: list[str] | None = None  # output names asked for (None: all)
    binary_outputs: set[str] = field(default_factory=set)
    binary_all: bool = False
    json_outputs: set[str] = field(default_factory=set)  # binary_data: false, which overrides binary_all

    def binary(self, name: str) -> bool:
        return name in self.binary_outputs or (self.binary_all and name not in self.json_outputs)


# A shape's limits: numpy arrays have at most 64 dimensions and no tensor a V2 body can carry
# comes near 2**40 elements; past these a shape is a mistake, not a tensor.
MAX_DIMS = 32
MAX_ELEMENTS = 2**40


def parse_request(body: bytes, header_length: str | None) -> InferRequest:
    """Decode an infer request body; InvalidInput (a 400) on anything malformed."""
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise InvalidInput(f"{HEADER_LENGTH} must be an integer, got {header_length[:40]!r}") from None
        if not 0 < length <= len(body):
            raise InvalidInput(f"{HEADER_LENGTH} {length} does not fit a body of {len(body)} bytes")
        head, binary = body[:length], memoryview(body)[length:]
    else:
        head, binary = body, memoryview(b"")
    document = jsonbody.loads(head)
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list) or not document["inputs"]:
        raise InvalidInput("request needs a non-empty 'inputs' list")
    parameters = _parameters(document, "the request")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput(f"'id' must be a string, got {_kind(request_id)}")
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
    json_outputs: set[str] = set()
    if document.get("outputs") is not None:
        if not isinstance(document["outputs"], list):
            raise InvalidInput("'outputs' must be a list")
        requested = []
        for item in document["outputs"]:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise InvalidInput("each requested output needs a 'name'")
            if item["name"] in requested:
                raise InvalidInput(f"output {item['name']!r} is requested twice")
            requested.append(item["name"])
            output_parameters = _parameters(item, f"output {item['name']!r}")
            check_output_parameters(item["name"], output_parameters)
            if _flag(output_parameters, "binary_data", item["name"]):
                binary_outputs.add(item["name"])
            elif "binary_data" in output_parameters:
                json_outputs.add(item["name"])
    return InferRequest(
        inputs=inputs,
        id=request_id,
        parameters=parameters,
        requested=requested,
        binary_outputs=binary_outputs,
        binary_all=_flag(parameters, "binary_data_output", None),
        json_outputs=json_outputs,
    )


# The parameters of a requested output this server acts on; any other (Triton's
# `classification`, say) would be ignored and the output answered as if it were not there.
OUTPUT_PARAMETERS = frozenset({"binary_data"})


def check_output_parameters(name: str, parameters: Iterable[str]) -> None:
    """InvalidInput naming the parameters of requested output `name` this server does not implement."""
    unsupported = sorted(set(parameters) - OUTPUT_PARAMETERS)
    if unsupported:
        raise InvalidInput(
            f"output {name!r}: parameter(s) {', '.join(repr(p[:40]) for p in unsupported[:5])} not supported "
            f"(this server implements: {', '.join(sorted(OUTPUT_PARAMETERS))})"
        )


def _kind(value: Any) -> str:
    kinds = {bool: "a boolean", str: "a string", list: "a list", dict: "an object"}
    return kinds.get(type(value), type(value).__name__)


def _parameters(item: Mapping[str, Any], what: str) -> dict[str, Any]:
    """`item`'s parameters: absent or an object (the protocol's `$parameters`)."""
    parameters = item.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise InvalidInput(f"'parameters' of {what} must be an object, got {_kind(parameters)}")
    return parameters


def _flag(parameters: Mapping[str, Any], key: str, output: str | None) -> bool:
    """A boolean parameter of the binary tensor extension: true, false or absent, nothing else
    (a string "false" must not mean yes)."""
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        where = f" of output {output!r}" if output is not None else ""
        raise InvalidInput(f"parameter {key!r}{where} must be true or false, got {_kind(value)}")
    return value


def tensor_dtype(name: str, datatype: str) -> np.dtype[Any]:
    """The numpy dtype of input `name`'s V2 datatype; InvalidInput (a 400) when there is none."""
    if datatype == "BYTES":
        raise InvalidInput(f"input {name!r}: BYTES tensors are not supported; send numeric tensors")
    try:
        return np.dtype(dtype_of_v2(datatype))
    except KeyError:
        raise InvalidInput(f"input {name!r} has unknown datatype {datatype[:40]!r}") from None


def tensor_shape(name: str, shape: Any) -> tuple[list[int], int]:
    """The shape and its element count, exactly (Python integers: no product wraps to 0)."""
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise InvalidInput(f"input {name!r} needs a 'shape' of non-negative integers")
    if len(shape) > MAX_DIMS:
        raise InvalidInput(f"input {name!r} has {len(shape)} dimensions; at most {MAX_DIMS} are supported")
    if any(d < 0 for d in shape):
        raise InvalidInput(f"input {name!r} needs a 'shape' of non-negative integers, got {shape}")
    count = math.prod(shape)
    if count > MAX_ELEMENTS or any(d > MAX_ELEMENTS for d in shape):
        raise InvalidInput(f"input {name!r}: shape {shape} is far larger than any request can carry")
    return shape, count


def _input_tensor(item: Any, binary: memoryview, offset: int) -> tuple[np.ndarray, int]:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise InvalidInput("each input needs a 'name'")
    name = item["name"]
    shape, count = tensor_shape(name, item.get("shape"))
    datatype = item.get("datatype")
    if not isinstance(datatype, str):
        raise InvalidInput(f"input {name!r} needs a 'datatype' string")
    dtype = tensor_dtype(name, datatype)
    size = _parameters(item, f"input {name!r}").get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size != count * dtype.itemsize:
            raise InvalidInput(
                f"input {name!r}: binary_data_size {str(size)[:40]} is not {count} x {dtype.itemsize} bytes "
                f"of {datatype}"
            )
        if offset + size > len(binary):
            raise InvalidInput(f"input {name!r}: binary data ends after {len(binary) - offset} of {size} bytes")
        array = np.frombuffer(binary[offset : offset + size], dtype=dtype).reshape(shape)
        return array, size
    if "data" not in item:
        raise InvalidInput(f"input {name!r} has neither 'data' nor binary_data_size")
    data = item["data"]
    try:
        if isinstance(data, jsonbody.NumberText):
            array = data.to_array(dtype, count)
        else:
            array = np.asarray(data, dtype=dtype)
    except (TypeError, ValueError, OverflowError, RecursionError) as error:
        raise InvalidInput(f"input {name!r}: data does not fit datatype {datatype} ({_first_line(error)})") from None
    if array.size != count:
        raise InvalidInput(f"input {name!r}: {array.size} values for shape {shape} ({count} expected)")
    return array.reshape(shape), 0


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0][:200]


def check_outputs(request: InferRequest, specs: Sequence[TensorSpec]) -> None:
    """Requested outputs against the model's, before anything runs."""
    known = [s.name for s in specs]
    for name in request.requested or []:
        if name not in known:
            raise InvalidInput(f"unknown output {name!r}; the model's outputs are: {', '.join(known)}")


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


def check_batch(inputs: Mapping[str, np.ndarray], batch_inputs: Sequence[str], max_batch: int | None) -> int:
    """The request's batch: the leading dimension of the batch inputs, the same in each, from 1 up
    to `max_batch` (1 for a model without a variable batch); InvalidInput otherwise."""
    if max_batch is None or not batch_inputs:
        return 1
    batches = {name: int(inputs[name].shape[0]) for name in batch_inputs}
    if len(set(batches.values())) > 1:
        shown = ", ".join(f"{name} {size}" for name, size in batches.items())
        raise InvalidInput(f"the batch inputs disagree on the batch: {shown}")
    batch = next(iter(batches.values()))
    if not 1 <= batch <= max_batch:
        raise InvalidInput(f"a batch of {batch}: this model takes batches of 1 to {max_batch}")
    return batch


def encode_response(
    model: str, request: InferRequest, outputs: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]
) -> tuple[bytes, dict[str, str]]:
    """The response body and its HTTP headers (binary outputs where asked for)."""
    check_outputs(request, specs)
    names = request.requested if request.requested is not None else [s.name for s in specs]
    items, chunks = _tensors({n: outputs[n] for n in names}, request.binary)
    document: dict[str, Any] = {"model_name": model, "model_version": MODEL_VERSION, "outputs": items}
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
            item["data"] = _json_values(array)
        items.append(item)
    return items, chunks


# JSON has no NaN or infinities (RFC 8259, section 6): Python's json writes bare NaN and
# Infinity tokens, which strict parsers (browsers, Go, orjson and KServe's clients) refuse.
# They travel as the strings "NaN", "Infinity" and "-Infinity" instead: valid JSON for
# every parser, and numpy (so tritonclient's `as_numpy`) turns them back into the values.
NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _json_values(array: np.ndarray) -> list[Any] | np.ndarray:
    """The tensor's `data`: numbers as a flat array, which orjson writes itself (no Python
    number each, floats at their own precision's shortest); a list where a value needs care."""
    flat = array.reshape(-1)
    if array.dtype.kind in "biu" or (array.dtype.kind == "f" and np.isfinite(flat).all()):
        return flat
    values: list[Any] = flat.tolist()
    if array.dtype.kind == "f":
        for index in np.flatnonzero(~np.isfinite(flat)):
            values[index] = NON_FINITE[str(values[index])]
    return values


def _tolist(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _body(document: Mapping[str, Any], chunks: Sequence[bytes]) -> tuple[bytes, dict[str, str]]:
    """The JSON header and the binary chunks after it, with the headers that describe them."""
    try:
        head = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)  # no bare NaN: `_json_values`
    except orjson.JSONEncodeError:  # a string that is not Unicode (an id with a lone surrogate): escape it
        head = json.dumps(document, separators=(",", ":"), allow_nan=False, default=_tolist).encode()
    if not chunks:
        return head, {"Content-Type": JSON_TYPE}
    return head + b"".join(chunks), {"Content-Type": BINARY_TYPE, HEADER_LENGTH: str(len(head))}


def model_metadata(name: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> dict[str, Any]:
    def tensors(specs: Sequence[TensorSpec]) -> list[dict[str, Any]]:
        return [{"name": s.name, "datatype": v2_datatype(s.dtype), "shape": list(s.shape)} for s in specs]

    return {
        "name": name,
        "versions": [MODEL_VERSION],
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
