"""Cutting a model into slice files by its plan, and writing DIR/manifest.json.

A slice's graph is exactly its planned nodes, the initializers they read, its planned
inputs and outputs; nothing is pulled in by reachability, so a slice never recomputes
what an earlier one did. (`onnx.utils.Extractor` would infer shapes over the whole
model once per slice and follow reachability from the outputs; building the graph
from the plan's node list is exact and linear.) Nodes are never cut inside: an
If/Loop/Scan body stays in its node, and its outer-scope reads are the slice's inputs.

A split slice becomes k sub-slice files, each computing a contiguous share of the
dominant operator's output channels: Conv along its output channels (weights axis 0),
Gemm and MatMul along N; per-channel constants of the channel-wise tail are split with
them. The share of sub-slice i is written as tensor `NAME__partI`, and every consumer
starts with a Concat of the parts (the gateway joins parts of the model's outputs).

A model with a symbolic batch keeps it in every slice: the dimensions the plan names as batch
dimensions (`batch.axes`, measured by the profiler) are written as the symbolic `batch`, in
the files and as -1 in the manifest, whose `max_batch_size` is the plan's maximum.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx
from onnx import helper

from mopar.errors import UsageError
from mopar.model.modelfile import ModelFile
from mopar.model.splitting import channel_bounds, split_nodes
from mopar.plan import planfile
from mopar.plan.graph import outer_scope_reads
from slice_runtime import manifest as manifests
from slice_runtime.tensors import TensorSpec, onnx_of_dtype

EXTERNAL_DATA_ABOVE = 1_800_000_000  # protobuf cannot hold 2 GB; keep weights beside the file past this
BATCH = "batch"  # the symbolic dimension's name in the slice files


def slice_model(
    model: ModelFile,
    plan: Mapping[str, Any],
    out_dir: str | Path,
    progress: Callable[[int, int], None] | None = None,
    external_data_above: int = EXTERNAL_DATA_ABOVE,
) -> manifests.Manifest:
    """Write the slice files of `plan` into `out_dir` with its manifest; return the manifest.
    A slice whose weights exceed `external_data_above` bytes keeps them in FILE.data beside it."""
    planfile.check_model(plan, model.sha256, "the plan")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    graph = model.proto.graph
    nodes = {n.name: n for n in graph.node}
    initializers = {t.name: t for t in graph.initializer}
    specs = {name: TensorSpec.from_json(s) for name, s in plan["tensors"].items()}
    specs.update({s.name: s for s in [*model.inputs, *model.outputs]})
    batch = plan.get("batch") or {}
    axes: dict[str, list[int]] = {t: list(a) for t, a in batch.get("axes", {}).items()}
    planned = planfile.slices(plan)
    missing = [name for s in planned for name in s.nodes if name not in nodes]
    if missing:
        raise UsageError(f"the plan names nodes this model does not have: {', '.join(missing[:3])}")

    joins: dict[str, manifests.Join] = {}  # split tensor -> its parts and axis
    producers: dict[str, str] = {}  # tensor (or part) -> slice id
    entries: list[manifests.SliceEntry] = []
    for index, planned_slice in enumerate(planned):
        if progress:
            progress(index, len(planned))
        members = [nodes[name] for name in planned_slice.nodes]
        if planned_slice.split is None:
            proto = _plain_slice(model, planned_slice, members, initializers, specs, joins)
            _batched(proto, axes)
            entries.append(_write(proto, planned_slice.id, None, out, producers, plan, external_data_above))
            continue
        for part, bounds in enumerate(channel_bounds(planned_slice.split.channels, planned_slice.split.k)):
            proto = _sub_slice(model, planned_slice, members, initializers, specs, joins, part, bounds)
            _batched(proto, axes)
            slice_id = manifests.subslice_id(planned_slice.id, part)
            entries.append(_write(proto, slice_id, planned_slice.id, out, producers, plan, external_data_above))
        for tensor in planned_slice.outputs:
            parts = [manifests.part_tensor(tensor, i) for i in range(planned_slice.split.k)]
            joins[tensor] = manifests.Join(planned_slice.split.axis, parts)
    if progress:
        progress(len(planned), len(planned))
    manifest = manifests.Manifest(
        name=model.name,
        sha256=model.sha256,
        model_file=model.path.name,
        inputs=[_variable(s, axes) for s in model.inputs],
        outputs=[_variable(specs.get(s.name, s), axes) for s in model.outputs],
        max_batch_size=batch.get("max"),
        input_ranges=dict(model.input_ranges),
        slices=entries,
        joins={t: j for t, j in joins.items() if t in {o.name for o in model.outputs}},
        plan=plan,
        directory=out,
    )
    manifest.save(out)
    return manifest


def _plain_slice(
    model: ModelFile,
    planned: planfile.PlannedSlice,
    members: Sequence[onnx.NodeProto],
    initializers: Mapping[str, onnx.TensorProto],
    specs: Mapping[str, TensorSpec],
    joins: Mapping[str, manifests.Join],
) -> onnx.ModelProto:
    inputs, concats = _joined_inputs(planned.inputs, specs, joins)
    used = _initializers_read(members, initializers)
    outputs = [specs[t] for t in planned.outputs]
    return _model(model, planned.id, [*concats, *members], inputs, outputs, [initializers[n] for n in used])


def _joined_inputs(
    names: Sequence[str], specs: Mapping[str, TensorSpec], joins: Mapping[str, manifests.Join]
) -> tuple[list[TensorSpec], list[onnx.NodeProto]]:
    """A slice's inputs, reading tensors made in parts as their parts, each joined by a Concat."""
    inputs: list[TensorSpec] = []
    concats: list[onnx.NodeProto] = []
    for tensor in names:
        if tensor not in joins:
            inputs.append(specs[tensor])
            continue
        join = joins[tensor]
        for i, part in enumerate(join.parts):
            inputs.append(_part_spec(specs[tensor], part, join.axis, i, len(join.parts)))
        concats.append(helper.make_node("Concat", join.parts, [tensor], name=f"{tensor}/mopar_join", axis=join.axis))
    return inputs, concats


def _sub_slice(
    model: ModelFile,
    planned: planfile.PlannedSlice,
    members: Sequence[onnx.NodeProto],
    initializers: Mapping[str, onnx.TensorProto],
    specs: Mapping[str, TensorSpec],
    joins: Mapping[str, manifests.Join],
    part: int,
    bounds: tuple[int, int],
) -> onnx.ModelProto:
    assert planned.split is not None
    split = planned.split
    final = planned.outputs[0]
    try:
        body, weights = split_nodes(members, initializers, split.axis, split.channels, len(specs[final].shape), bounds)
    except ValueError as error:
        raise UsageError(f"slice {planned.id}: {error}") from None
    part_tensor = manifests.part_tensor(final, part)
    body = [_rename_output(n, final, part_tensor) for n in body]
    inputs, concats = _joined_inputs(planned.inputs, specs, joins)  # every part reads its whole input
    output = _part_spec(specs[final], part_tensor, split.axis, part, split.k, bounds)
    return _model(model, manifests.subslice_id(planned.id, part), [*concats, *body], inputs, [output], weights)


def _variable(spec: TensorSpec, axes: Mapping[str, Sequence[int]]) -> TensorSpec:
    """`spec` with its batch dimensions variable (-1)."""
    batch_axes = axes.get(manifests.whole_tensor(spec.name), ())
    return TensorSpec(spec.name, spec.dtype, tuple(-1 if i in batch_axes else d for i, d in enumerate(spec.shape)))


def _batched(proto: onnx.ModelProto, axes: Mapping[str, Sequence[int]]) -> None:
    """Make the batch dimensions of a slice's inputs and outputs symbolic (a part of a joined
    tensor has its whole's)."""
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        for axis in axes.get(manifests.whole_tensor(value.name), ()):
            dims[axis].Clear()
            dims[axis].dim_param = BATCH


def _part_spec(
    spec: TensorSpec, name: str, axis: int, index: int, k: int, bounds: tuple[int, int] | None = None
) -> TensorSpec:
    axis = axis if axis >= 0 else len(spec.shape) + axis
    start, stop = bounds or channel_bounds(spec.shape[axis], k)[index]
    shape = list(spec.shape)
    shape[axis] = stop - start
    return TensorSpec(name, spec.dtype, tuple(shape))


def _rename_output(node: onnx.NodeProto, old: str, new: str) -> onnx.NodeProto:
    if old in node.output:
        node.output[list(node.output).index(old)] = new
    return node


def _initializers_read(members: Sequence[onnx.NodeProto], initializers: Mapping[str, onnx.TensorProto]) -> list[str]:
    names: dict[str, None] = {}
    for node in members:
        for name in [*node.input, *outer_scope_reads(node)]:
            if name in initializers:
                names.setdefault(name)
    return list(names)


def _value_info(spec: TensorSpec) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(spec.name, onnx_of_dtype(spec.dtype), list(spec.shape))


def _model(
    source: ModelFile,
    name: str,
    body: Sequence[onnx.NodeProto],
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    initializers: Sequence[onnx.TensorProto],
) -> onnx.ModelProto:
    graph = helper.make_graph(
        list(body),
        f"{source.name}.{name}",
        [_value_info(s) for s in inputs],
        [_value_info(s) for s in outputs],
        list(initializers),
    )
    proto = helper.make_model(graph, opset_imports=list(source.proto.opset_import), producer_name="mopar-slicer")
    proto.ir_version = source.proto.ir_version  # never the newer default onnx stamps (see DESIGN.md facts)
    # Keep what the model records of itself (valid ranges of integer inputs, ...): measuring
    # a slice on token ids of 0 and 1 would miss the memory real ids touch.
    helper.set_model_props(proto, {p.key: p.value for p in source.proto.metadata_props})
    return proto


def _write(
    proto: onnx.ModelProto,
    slice_id: str,
    group: str | None,
    out: Path,
    producers: dict[str, str],
    plan: Mapping[str, Any],
    external_data_above: int,
) -> manifests.SliceEntry:
    path = out / f"{slice_id}.onnx"
    weights = sum(len(t.raw_data) for t in proto.graph.initializer)
    data_name = data_sha256 = None
    if weights > external_data_above:
        data_name = f"{slice_id}.onnx.data"
        onnx.save_model(proto, str(path), save_as_external_data=True, location=data_name, size_threshold=0)
        data_sha256 = manifests.sha256_file(out / data_name)
    else:
        onnx.save_model(proto, str(path))
    inputs = [TensorSpec.of_value_info(v) for v in proto.graph.input]
    outputs = [TensorSpec.of_value_info(v) for v in proto.graph.output]
    planned: Mapping[str, Any] = next((s for s in plan["slices"] if s["id"] == (group or slice_id)), {})
    codecs = planned.get("codecs", {})
    entry = manifests.SliceEntry(
        id=slice_id,
        file=path.name,
        sha256=manifests.sha256_file(path),
        inputs=inputs,
        outputs=outputs,
        depends_on=manifests.depends_on(inputs, producers),
        group=group,
        codecs={o.name: codecs.get(manifests.whole_tensor(o.name), "none") for o in outputs},
        memory_mb=planned.get("memory_mb"),
        prepack=bool(planned.get("prepack", True)),
        cpu=None if planned.get("cpu") is None else float(planned["cpu"]),
        threads=int(planned.get("threads", 1)),  # a plan of before CPU was planned: one thread
        data_file=data_name,
        data_sha256=data_sha256,
    )
    for output in outputs:
        producers[output.name] = slice_id
    return entry
