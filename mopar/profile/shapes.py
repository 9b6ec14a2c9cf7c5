"""The dtype and shape of every tensor in a graph, which cutting and sizing need.

Shape inference first; where it leaves a shape unknown (common in transformer graphs
even with static inputs), one real run with those tensors exposed as extra outputs.
For a model with a symbolic batch, the same at one batch more tells which dimensions of
every tensor are the batch (`batch_axes`): the slices keep exactly those symbolic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from mopar.model.modelfile import ModelFile, weightless
from slice_runtime.sessions import open_session
from slice_runtime.tensors import TensorSpec, random_inputs


def tensor_specs(
    model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], optimization: str = "disable"
) -> dict[str, TensorSpec]:
    """Specs of all graph inputs, node outputs and graph outputs of `model` (static inputs)."""
    inferred = onnx.shape_inference.infer_shapes(weightless(model))
    graph = inferred.graph
    specs: dict[str, TensorSpec] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            spec = TensorSpec.of_value_info(value)
            if spec.static:
                specs[value.name] = spec
    produced = [out for node in model.graph.node for out in node.output if out]
    unknown = [name for name in produced if name not in specs]
    if unknown:
        specs.update(_measure(model, unknown, feeds, optimization))
    return specs


# Initializers up to this many elements keep their values for shape inference (shape vectors,
# scales, axes); larger ones are weights, whose dims are all inference needs.
def _measure(
    model: onnx.ModelProto, names: list[str], feeds: Mapping[str, np.ndarray], optimization: str
) -> dict[str, TensorSpec]:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in existing)
    # Optimisations could fuse away the very tensors we ask for; run the graph as written.
    session = open_session(probe.SerializeToString(), optimization=optimization)
    wanted = [o.name for o in session.get_outputs() if o.name in set(names)]
    arrays = session.run(wanted, dict(feeds))
    return {name: TensorSpec.of_array(name, array) for name, array in zip(wanted, arrays)}


def batch_axes(
    model: onnx.ModelProto,
    specs: Mapping[str, TensorSpec],
    batch_inputs: Sequence[str],
    batch_size: int,
    ranges: Mapping[str, tuple[int, int]],
    optimization: str = "disable",
) -> dict[str, list[int]]:
    """Which dimensions of each tensor are the batch: those that change when the batch inputs'
    leading dimension goes from `batch_size` (`specs`, measured there) to one more. Shape
    inference or a real run at the second batch, like `tensor_specs`."""
    wider = onnx.ModelProto()
    wider.CopyFrom(model)
    inputs = []
    for value in wider.graph.input:
        if value.name in batch_inputs:
            value.type.tensor_type.shape.dim[0].dim_value = batch_size + 1
        if value.name in specs:
            inputs.append(TensorSpec.of_value_info(value))
    others = tensor_specs(wider, random_inputs(inputs, seed=0, ranges=ranges), optimization)
    axes: dict[str, list[int]] = {}
    for name, spec in specs.items():
        other = others.get(name)
        if other is not None and len(other.shape) == len(spec.shape):
            changed = [axis for axis, (a, b) in enumerate(zip(spec.shape, other.shape)) if a != b]
            if changed:
                axes[name] = changed
    return axes


def batch_facts(model: ModelFile, specs: Mapping[str, TensorSpec]) -> dict[str, object]:
    """`Profile.batch` of `model`: the batch profiled, its inputs and outputs, and each
    tensor's batch dimensions; empty for a model with a fixed batch."""
    if not model.batched:
        return {}
    return {
        "size": model.batch_size,
        "inputs": list(model.batch_inputs),
        "outputs": [o.name for o in model.outputs],
        "axes": batch_axes(model.proto, specs, model.batch_inputs, model.batch_size, model.input_ranges),
    }
