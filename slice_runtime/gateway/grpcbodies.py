"""V2 gRPC messages to and from the data plane's tensors (pure: no server, no I/O).

A request carries each input either typed (`contents`, one repeated field per family of
datatypes) or raw (`raw_input_contents`, one entry per input, row-major bytes; FP16 only so),
never both. The response answers in kind: raw when the request was raw or an output has no
typed field (FP16), typed otherwise. Mistakes are `InvalidInput` naming the input, the same
checks as the REST bodies (`v2`): shapes, datatypes, sizes, values that fit their datatype.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from slice_runtime import v2
from slice_runtime.errors import InvalidInput
from slice_runtime.gateway import messages
from slice_runtime.tensors import TensorSpec, v2_datatype

# The typed field of each datatype (the protocol's InferTensorContents).
TYPED_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}
# The numpy type a typed field's values are read as, before they are narrowed to the input's.
_WIDE = {
    "bool_contents": np.bool_,
    "int_contents": np.int32,
    "int64_contents": np.int64,
    "uint_contents": np.uint32,
    "uint64_contents": np.uint64,
    "fp32_contents": np.float32,
    "fp64_contents": np.float64,
}


def parse_infer(request: Any) -> tuple[v2.InferRequest, bool]:
    """The request's tensors and outputs asked for, and whether it came raw."""
    if not request.inputs:
        raise InvalidInput("request needs at least one input")
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
    inputs: dict[str, np.ndarray] = {}
    for index, item in enumerate(request.inputs):
        if item.name in inputs:
            raise InvalidInput(f"input {item.name!r} is given twice")
        inputs[item.name] = _input(item, raw[index] if raw else None)
    requested = None
    if request.outputs:
        requested = []
        for output in request.outputs:
            if output.name in requested:
                raise InvalidInput(f"output {output.name!r} is requested twice")
            requested.append(output.name)
            v2.check_output_parameters(output.name, output.parameters.keys())
    return v2.InferRequest(inputs=inputs, id=request.id or None, requested=requested), bool(raw)


def _input(item: Any, raw: bytes | None) -> np.ndarray:
    name, datatype = item.name, item.datatype
    shape, count = v2.tensor_shape(name, list(item.shape))
    dtype = v2.tensor_dtype(name, datatype)
    if raw is not None:
        if item.HasField("contents"):
            raise InvalidInput(f"input {name!r} has both contents and raw_input_contents; send one")
        if len(raw) != count * dtype.itemsize:
            raise InvalidInput(
                f"input {name!r}: {len(raw)} bytes of raw_input_contents, not {count} x {dtype.itemsize} of {datatype}"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    field = TYPED_FIELD.get(datatype)
    if field is None:
        raise InvalidInput(f"input {name!r}: {datatype} has no typed contents; send it in raw_input_contents")
    values = getattr(item.contents, field)
    if len(values) != count:
        raise InvalidInput(f"input {name!r}: {len(values)} values in {field} for shape {shape} ({count} expected)")
    wide: np.ndarray = np.asarray(values, dtype=_WIDE[field])
    if dtype.kind in "iu" and wide.size and wide.dtype != dtype:
        limits = np.iinfo(dtype)
        if wide.min() < limits.min or wide.max() > limits.max:
            raise InvalidInput(f"input {name!r}: values outside the range of {datatype}")
    return wide.astype(dtype, copy=False).reshape(shape)


def infer_response(
    model: str, request: v2.InferRequest, raw: bool, outputs: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]
) -> Any:
    """The ModelInferResponse for the request's outputs (all of the model's, in order, when it
    asked for none)."""
    v2.check_outputs(request, specs)
    names = request.requested if request.requested is not None else [s.name for s in specs]
    arrays = {name: np.ascontiguousarray(outputs[name]) for name in names}
    datatypes = {name: v2_datatype(str(array.dtype)) for name, array in arrays.items()}
    raw = raw or any(datatype not in TYPED_FIELD for datatype in datatypes.values())
    response = messages.ModelInferResponse(model_name=model, model_version=v2.MODEL_VERSION, id=request.id or "")
    for name, array in arrays.items():
        tensor = response.outputs.add(name=name, datatype=datatypes[name], shape=list(array.shape))
        if raw:
            response.raw_output_contents.append(array.tobytes())
        else:
            getattr(tensor.contents, TYPED_FIELD[datatypes[name]]).extend(array.reshape(-1).tolist())
    return response


def metadata_response(metadata: Mapping[str, Any]) -> Any:
    """ModelMetadataResponse of the REST metadata document (`v2.model_metadata`)."""
    response = messages.ModelMetadataResponse(
        name=metadata["name"], versions=metadata["versions"], platform=metadata["platform"]
    )
    for key in ("inputs", "outputs"):
        for tensor in metadata[key]:
            getattr(response, key).add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
    return response
