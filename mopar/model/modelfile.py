"""Reading a model file the user hands us, with one clear error for each way it can be wrong.

A `ModelFile` is an ONNX model with static input shapes (symbolic dimensions fixed by
`--input-shape NAME=1x3x224x224`), its name (the file stem), the sha256 of the file
and the specs of its inputs and outputs. A symbolic leading dimension of an input is the
batch (as in Triton's `max_batch_size` models): it defaults to 1 for profiling, every batch
input gets the same, and `batch_inputs` names them so the slices keep it symbolic.
Every stage finds nodes by name (profile timings, plan cuts, slice members), and ONNX
allows empty ones: unnamed nodes get a generated name unique in the graph,
`{op_type}_{index}`, on the proto every stage reads, so all of them agree. Two nodes that
share a name are refused, as onnxruntime refuses them.
Refused with one line, before anything runs: weights kept outside the model's folder,
operators of domains onnxruntime does not implement (custom-op libraries are not loaded),
and tensors the data plane cannot carry (STRING, which V2 calls BYTES, and element types
numpy has no dtype for).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import onnx
from google.protobuf.message import DecodeError

from mopar.errors import ModelError, UsageError
from slice_runtime.tensors import TensorSpec, input_ranges


@dataclass
class ModelFile:
    path: Path
    proto: onnx.ModelProto
    sha256: str
    name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # Inputs whose leading dimension is the model's symbolic batch, and the batch it is profiled at.
    batch_inputs: tuple[str, ...] = ()
    batch_size: int = 1

    @property
    def batched(self) -> bool:
        return bool(self.batch_inputs)

    @property
    def metadata(self) -> dict[str, str]:
        return {p.key: p.value for p in self.proto.metadata_props}

    @property
    def input_ranges(self) -> dict[str, tuple[int, int]]:
        return input_ranges(self.metadata)

    @property
    def weight_bytes(self) -> int:
        return sum(_tensor_bytes(t) for t in self.proto.graph.initializer)

    def serialized(self) -> bytes:
        return self.proto.SerializeToString()


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """'input_ids=1x128' -> ('input_ids', (1, 128))."""
    name, sep, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        shape = ()
    if not sep or not name or not shape or any(d < 1 for d in shape):
        raise UsageError(f"--input-shape wants NAME=DIMxDIM..., e.g. input=1x3x224x224, got {text!r}")
    return name, shape


def load_model(
    path: str | Path, input_shapes: Mapping[str, Sequence[int]] | None = None, check: bool = True
) -> ModelFile:
    """Load and check `path`; raise ModelError naming the file and the problem."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if path.is_dir():
        raise ModelError(f"{path}: is a directory, expected an ONNX model file")
    data = path.read_bytes()
    try:
        proto = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as error:
        raise ModelError(f"{path}: not an ONNX model ({_first_line(error)})") from None
    if not proto.graph.node:
        raise ModelError(f"{path}: not an ONNX model (no graph nodes)")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        _check_external_data(proto, path)
        try:
            onnx.load_external_data_for_model(proto, str(path.parent))
        except (onnx.checker.ValidationError, OSError, ValueError) as error:
            raise ModelError(f"{path}: cannot read its external weights: {_first_line(error)}") from None
    _check_operators(proto, path)
    _name_nodes(proto.graph, path)
    if check:
        try:
            # Checking by path also works past protobuf's 2 GB limit.
            onnx.checker.check_model(str(path))
        except onnx.checker.ValidationError as error:
            raise ModelError(f"{path}: invalid ONNX model: {_first_line(error)}") from None
    shapes = {name: tuple(int(d) for d in dims) for name, dims in (input_shapes or {}).items()}
    batch_inputs, batch_size = _batch(proto, shapes, path)
    _fix_input_shapes(proto, shapes, path, {n: batch_size for n in batch_inputs if n not in shapes})
    return ModelFile(
        path=path,
        proto=proto,
        sha256=hashlib.sha256(data).hexdigest(),
        name=path.stem,
        inputs=[_tensor_spec(v, "input", path) for v in _graph_inputs(proto)],
        outputs=[_tensor_spec(v, "output", path) for v in proto.graph.output],
        input_shapes=shapes,
        batch_inputs=batch_inputs,
        batch_size=batch_size,
    )


# Operator domains onnxruntime's CPU build implements; anything else needs a custom-op library.
ORT_DOMAINS = frozenset(
    {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc", "ai.onnx.preview.training"}
)


def _check_external_data(proto: onnx.ModelProto, path: Path) -> None:
    for tensor in proto.graph.initializer:
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        parts = PurePath(location).parts
        if not location or PurePath(location).is_absolute() or ".." in parts:
            raise ModelError(
                f"{path}: weights of {tensor.name!r} are kept at {location[:120]!r}, outside the model's folder"
            )
        target = (path.parent / location).resolve()
        if not target.is_relative_to(path.parent.resolve()):
            raise ModelError(f"{path}: weights of {tensor.name!r} lead outside the model's folder (a symlink)")


def _nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node, those of subgraphs (If, Loop, Scan bodies) included."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for sub in [attribute.g, *attribute.graphs] if attribute.HasField("g") else attribute.graphs:
                yield from _nodes(sub)


def _check_operators(proto: onnx.ModelProto, path: Path) -> None:
    functions = {(f.domain, f.name) for f in proto.functions}  # model-local functions onnxruntime inlines
    for node in _nodes(proto.graph):
        if node.domain not in ORT_DOMAINS and (node.domain, node.op_type) not in functions:
            raise ModelError(
                f"{path}: node {node.name or node.op_type!r} is operator {node.op_type} of domain {node.domain!r}, "
                "which onnxruntime does not implement (custom operator libraries are not supported)"
            )


def _name_nodes(graph: onnx.GraphProto, path: Path) -> None:
    """Name the unnamed nodes of `graph` `{op_type}_{index}` (then `_2`, `_3`... past a taken
    name); refuse two nodes sharing a name."""
    taken: set[str] = set()
    for node in graph.node:
        if node.name in taken:
            raise ModelError(f"{path}: two nodes are named {node.name!r}; node names must be unique")
        if node.name:
            taken.add(node.name)
    for index, node in enumerate(graph.node):
        if node.name:
            continue
        name, suffix = f"{node.op_type}_{index}", 1
        while name in taken:
            suffix += 1
            name = f"{node.op_type}_{index}_{suffix}"
        node.name = name
        taken.add(name)


def _tensor_spec(value: onnx.ValueInfoProto, what: str, path: Path) -> TensorSpec:
    elem_type = value.type.tensor_type.elem_type
    if elem_type == onnx.TensorProto.STRING:
        raise ModelError(f"{path}: {what} {value.name!r} is a STRING tensor; mopar serves numeric tensors only")
    try:
        return TensorSpec.of_value_info(value)
    except ValueError:
        kind = onnx.TensorProto.DataType.Name(elem_type) if elem_type in onnx.TensorProto.DataType.values() else "no"
        raise ModelError(f"{path}: {what} {value.name!r} has element type {kind}, which mopar cannot serve") from None


_KEEP_VALUES_UP_TO = 4096


def weightless(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose large initializers carry only their shapes: shape inference
    serialises the model it is given, and half a gigabyte of VGG weights takes seconds."""
    graph = model.graph
    initializers = [
        t
        if math.prod(t.dims) <= _KEEP_VALUES_UP_TO
        else onnx.TensorProto(name=t.name, data_type=t.data_type, dims=t.dims)
        for t in graph.initializer
    ]
    light = onnx.helper.make_graph(
        list(graph.node),
        graph.name,
        list(graph.input),
        list(graph.output),
        initializers,
        value_info=list(graph.value_info),
    )
    copy = onnx.helper.make_model(light, opset_imports=list(model.opset_import), functions=list(model.functions))
    copy.ir_version = model.ir_version
    return copy


def _graph_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are real inputs (old exporters also list initializers here)."""
    initializers = {t.name for t in proto.graph.initializer}
    return [v for v in proto.graph.input if v.name not in initializers]


def _batch(proto: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]], path: Path) -> tuple[tuple[str, ...], int]:
    """The inputs whose leading dimension is symbolic (the batch), and the one batch they are
    profiled at: what --input-shape gives them, else 1."""
    inputs = {v.name: v for v in _graph_inputs(proto)}
    for name in shapes:
        if name not in inputs:
            raise UsageError(f"--input-shape names {name!r}, but {path.name} has inputs: {', '.join(inputs)}")
    batched = tuple(
        name
        for name, value in inputs.items()
        if value.type.tensor_type.shape.dim and not value.type.tensor_type.shape.dim[0].HasField("dim_value")
    )
    given = {shapes[name][0] for name in batched if name in shapes and shapes[name]}
    if len(given) > 1:
        raise UsageError(f"--input-shape gives the batch inputs {', '.join(batched)} different batches {sorted(given)}")
    return batched, given.pop() if given else 1


def _fix_input_shapes(
    proto: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]], path: Path, batches: Mapping[str, int]
) -> None:
    """Fix the inputs' dimensions to `shapes`, and the leading one of those in `batches`."""
    inputs = {v.name: v for v in _graph_inputs(proto)}
    for name, value in inputs.items():
        dims = value.type.tensor_type.shape.dim
        if name in batches:
            dims[0].Clear()
            dims[0].dim_value = batches[name]
        if name in shapes:
            if len(shapes[name]) != len(dims):
                raise UsageError(
                    f"--input-shape {name} has {len(shapes[name])} dimensions, the model's input has {len(dims)}"
                )
            for dim, size in zip(dims, shapes[name]):
                if dim.HasField("dim_value") and dim.dim_value != size:
                    raise UsageError(
                        f"--input-shape {name}: dimension {dim.dim_value} of the model cannot become {size}"
                    )
                dim.Clear()
                dim.dim_value = size
        elif any(not d.HasField("dim_value") for d in dims):
            shown = "x".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)
            raise ModelError(
                f"{path}: input {name!r} has symbolic dimensions ({shown}); give them with --input-shape {name}=1x..."
            )


def _tensor_bytes(tensor: onnx.TensorProto) -> int:
    n = 1
    for d in tensor.dims:
        n *= d
    return n * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:200]
