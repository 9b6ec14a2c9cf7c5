"""The dtype and shape of every tensor in a graph, which cutting and sizing need.

Shape inference first; where it leaves a shape unknown (common in transformer graphs
even with static inputs), one real run with those tensors exposed as extra outputs.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from mopar.model.modelfile import weightless
from slice_runtime.sessions import open_session
from slice_runtime.tensors import TensorSpec


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
