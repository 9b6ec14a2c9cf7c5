"""A small graph builder for the model zoo: onnx.helper with seeded weights.

Every zoo model is written in code with this builder, so a model is reproducible
from its name, its options and a seed, and nothing is downloaded. Weights are
random (He-initialised, so activations keep a sane scale through deep stacks);
`params` counts the learned weights only, not constants such as anchor grids.
"""

from __future__ import annotations

import contextvars
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mopar.errors import UsageError

OPSET = 17
# onnx >= 1.19 stamps a newer IR version than onnxruntime reads; opset 17 is IR 8.
IR_VERSION = 8

# When False, weights are not drawn: initializers carry shapes but no data. Enough to
# count parameters of a 138M-parameter model in milliseconds; such a model cannot run.
_DRAW_WEIGHTS: contextvars.ContextVar[bool] = contextvars.ContextVar("draw_weights", default=True)


@contextmanager
def architecture_only() -> Iterator[None]:
    """Build models without drawing their weights (for counting parameters)."""
    token = _DRAW_WEIGHTS.set(False)
    try:
        yield
    finally:
        _DRAW_WEIGHTS.reset(token)


_DTYPES = {
    "float32": TensorProto.FLOAT,
    "int64": TensorProto.INT64,
    "int32": TensorProto.INT32,
    "bool": TensorProto.BOOL,
}


class GraphBuilder:
    """Accumulates nodes, initializers and graph inputs/outputs with unique names."""

    def __init__(self, name: str, seed: int = 0) -> None:
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.params = 0
        self._nodes: list[onnx.NodeProto] = []
        self._initializers: list[onnx.TensorProto] = []
        self._inputs: list[onnx.ValueInfoProto] = []
        self._outputs: list[onnx.ValueInfoProto] = []
        self._names: Counter[str] = Counter()
        self._metadata: dict[str, str] = {}
        self.draw_weights = _DRAW_WEIGHTS.get()

    # -- names -------------------------------------------------------------------
    def unique(self, name: str) -> str:
        """Return `name`, suffixed where it was taken, so node and tensor names never clash."""
        count = self._names[name]
        self._names[name] += 1
        return name if count == 0 else f"{name}_{count}"

    # -- graph boundary ----------------------------------------------------------
    def input(self, name: str, shape: Sequence[int | str], dtype: str = "float32") -> str:
        self._inputs.append(helper.make_tensor_value_info(self.unique(name), _DTYPES[dtype], shape))
        return name

    def output(self, tensor: str, name: str, dtype: str = "float32") -> str:
        """Expose `tensor` as a graph output called `name` (through an Identity)."""
        out = self.unique(name)
        self._nodes.append(helper.make_node("Identity", [tensor], [out], name=self.unique(f"{name}/Identity")))
        self._outputs.append(helper.make_tensor_value_info(out, _DTYPES[dtype], None))
        return out

    def metadata(self, key: str, value: str) -> None:
        self._metadata[key] = value

    def input_range(self, name: str, low: int, high: int) -> None:
        """Record the valid values [low, high) of an integer input (token ids, masks),
        so random test inputs stay meaningful (see `modelfile.random_inputs`)."""
        self._metadata[f"mopar.input_range.{name}"] = f"{low},{high}"

    # -- initializers ------------------------------------------------------------
    def param(self, name: str, array: np.ndarray) -> str:
        """A learned weight: stored as an initializer and counted in `params`."""
        self.params += int(array.size)
        if self.draw_weights:
            return self.const(name, array)
        unique = self.unique(name)
        dtype = helper.np_dtype_to_tensor_dtype(array.dtype)
        self._initializers.append(TensorProto(name=unique, data_type=dtype, dims=array.shape))
        return unique

    def const(self, name: str, array: np.ndarray) -> str:
        """A constant (shape vectors, anchor grids): an initializer not counted in `params`."""
        unique = self.unique(name)
        self._initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), unique))
        return unique

    def ints(self, name: str, values: Sequence[int]) -> str:
        return self.const(name, np.asarray(values, dtype=np.int64))

    def scalar(self, name: str, value: float) -> str:
        return self.const(name, np.asarray(value, dtype=np.float32))

    def he(self, shape: Sequence[int], fan_in: int, gain: float = 1.0) -> np.ndarray:
        """He-normal weights: variance 2/fan_in keeps ReLU-like activations from growing."""
        std = gain * math.sqrt(2.0 / max(fan_in, 1))
        if not self.draw_weights:
            return np.zeros(tuple(shape), np.float32)
        return self._normal(shape, std)

    def small(self, shape: Sequence[int], scale: float = 0.02) -> np.ndarray:
        if not self.draw_weights:
            return np.zeros(tuple(shape), np.float32)
        return self._normal(shape, scale)

    def _normal(self, shape: Sequence[int], std: float) -> np.ndarray:
        values = self.rng.standard_normal(tuple(shape), dtype=np.float32)
        values *= np.float32(std)  # in place: a VGG's weights are half a gigabyte
        return values

    # -- nodes -------------------------------------------------------------------
    def node(self, op_type: str, inputs: Sequence[str], name: str, outputs: int = 1, **attrs: Any) -> str:
        """Add a node; returns its (first) output tensor name. Use `node_multi` for several.

        `attrs` are the node's ONNX attributes (ints, floats, strings, lists of them, tensors),
        typed `Any` as `onnx.helper.make_node` takes them.
        """
        return self.node_multi(op_type, inputs, name, outputs, **attrs)[0]

    def node_multi(self, op_type: str, inputs: Sequence[str], name: str, outputs: int = 1, **attrs: Any) -> list[str]:
        node_name = self.unique(f"{name}/{op_type}")
        out_names = [f"{node_name}_output_{i}" for i in range(outputs)]
        self._nodes.append(helper.make_node(op_type, list(inputs), out_names, name=node_name, **attrs))
        return out_names

    # -- layers ------------------------------------------------------------------
    def conv(
        self,
        x: str,
        cin: int,
        cout: int,
        kernel: int | tuple[int, int],
        name: str,
        stride: int = 1,
        pad: int | None = None,
        group: int = 1,
        dilation: int = 1,
        gain: float = 1.0,
    ) -> str:
        """Conv with bias (batch norm folded in, as exported inference graphs have it)."""
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        ph, pw = (dilation * (kh - 1) // 2, dilation * (kw - 1) // 2) if pad is None else (pad, pad)
        fan_in = cin // group * kh * kw
        w = self.param(f"{name}.weight", self.he((cout, cin // group, kh, kw), fan_in, gain))
        b = self.param(f"{name}.bias", self.small((cout,), 0.01))
        return self.node(
            "Conv",
            [x, w, b],
            name,
            kernel_shape=[kh, kw],
            strides=[stride, stride],
            pads=[ph, pw, ph, pw],
            group=group,
            dilations=[dilation, dilation],
        )

    def gemm(self, x: str, fin: int, fout: int, name: str, gain: float = 1.0) -> str:
        """Fully connected layer as Gemm (weights stored [out, in] with transB, as torch exports it)."""
        w = self.param(f"{name}.weight", self.he((fout, fin), fin, gain))
        b = self.param(f"{name}.bias", self.small((fout,), 0.01))
        return self.node("Gemm", [x, w, b], name, transB=1)

    def linear(self, x: str, fin: int, fout: int, name: str, gain: float = 1.0) -> str:
        """MatMul + Add on a [..., fin] tensor (the transformer form of a dense layer)."""
        w = self.param(f"{name}.weight", self.he((fin, fout), fin, gain))
        b = self.param(f"{name}.bias", self.small((fout,), 0.01))
        y = self.node("MatMul", [x, w], name)
        return self.node("Add", [y, b], name)

    def relu(self, x: str, name: str) -> str:
        return self.node("Relu", [x], name)

    def silu(self, x: str, name: str) -> str:
        """x * sigmoid(x), as exporters write SiLU before opset 24."""
        return self.node("Mul", [x, self.node("Sigmoid", [x], name)], name)

    def concat(self, xs: Sequence[str], name: str, axis: int = 1) -> str:
        return self.node("Concat", list(xs), name, axis=axis)

    # -- result ------------------------------------------------------------------
    def build(self, doc: str = "") -> onnx.ModelProto:
        graph = helper.make_graph(self._nodes, self.name, self._inputs, self._outputs, self._initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="mopar-zoo",
            doc_string=doc,
        )
        model.ir_version = IR_VERSION
        _type_outputs(model)
        self._metadata.setdefault("mopar.params", str(self.params))
        helper.set_model_props(model, self._metadata)
        return model


def _type_outputs(model: onnx.ModelProto) -> None:
    """Give graph outputs the types shape inference finds (the checker wants them)."""
    from mopar.model.modelfile import weightless

    inferred = onnx.shape_inference.infer_shapes(weightless(model), strict_mode=True)
    types = {v.name: v.type for v in [*inferred.graph.value_info, *inferred.graph.output]}
    for output in model.graph.output:
        if output.name in types:
            output.type.CopyFrom(types[output.name])


def batch_dim(batch: int | str) -> int | str:
    """An input's leading dimension for a zoo option `batch`: a fixed size, or "dynamic" for the
    symbolic `batch` exporters write with dynamic axes."""
    if batch == "dynamic":
        return "batch"
    if isinstance(batch, int) and not isinstance(batch, bool) and batch >= 1:
        return batch
    raise UsageError(f"batch must be a positive integer or 'dynamic', got {batch!r}")
