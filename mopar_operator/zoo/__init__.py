"""The built-in model zoo: ONNX graphs written in code, random weights from a fixed seed.

Four categories, as in the reference evaluation: image classification, object
detection, language, and dense prediction (stereo matching). `build(name)` returns
an `onnx.ModelProto`; `scale` shrinks widths for fast tests, 1.0 is the published
architecture that benchmarks use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import onnx

from ..errors import UsageError


@dataclass(frozen=True)
class ZooModel:
    name: str
    category: str
    module: str  # module of this package holding `build` and `PUBLISHED_PARAMS`
    description: str

    def _module(self):  # type: ignore[no-untyped-def]
        return importlib.import_module(f"{__name__}.{self.module}")

    @property
    def published_params(self) -> int | None:
        return self._module().PUBLISHED_PARAMS  # type: ignore[no-any-return]

    @property
    def builder(self) -> Callable[..., onnx.ModelProto]:
        return self._module().build  # type: ignore[no-any-return]


MODELS: tuple[ZooModel, ...] = (
    ZooModel("resnet50", "image classification", "resnet", "ResNet-50, 224x224, 1000 classes"),
    ZooModel("vgg16", "image classification", "vgg", "VGG-16 (config D), 224x224, 1000 classes"),
    ZooModel("mobilenetv2", "image classification", "mobilenet", "MobileNetV2 (width 1.0), 224x224, 1000 classes"),
    ZooModel("yolov5s", "object detection", "yolo", "YOLOv5s v6: CSP backbone, SPPF, PANet neck, 3-scale head, 640x640"),
    ZooModel("bert-base", "language", "bert", "BERT-base encoder, 12 layers, 768 hidden, 12 heads, sequence 128, 2-class head"),
    ZooModel("lstm", "language", "lstm", "LSTM sentence classifier: embedding, 2-layer LSTM, 2-class head, sequence 128"),
    ZooModel("edgestereo", "dense prediction", "edgestereo", "EdgeStereo-style stereo matching with an edge branch, 2x256x512"),
)


def names() -> list[str]:
    return [m.name for m in MODELS]


def get(name: str) -> ZooModel:
    for model in MODELS:
        if model.name == name:
            return model
    raise UsageError(f"unknown zoo model {name!r}; choose one of: {', '.join(names())}")


def build(name: str, scale: float = 1.0, seed: int = 0, **options: object) -> onnx.ModelProto:
    """Build zoo model `name`; `scale` < 1 narrows it for quick tests."""
    if not 0 < scale <= 1:
        raise UsageError(f"--scale must be in (0, 1], got {scale}")
    return get(name).builder(scale=scale, seed=seed, **options)


def count_params(model: onnx.ModelProto) -> int:
    """Learned parameters as the builder counted them (constants excluded)."""
    props = {p.key: p.value for p in model.metadata_props}
    if "mopar.params" in props:
        return int(props["mopar.params"])
    return sum(_numel(t.dims) for t in model.graph.initializer)


def _numel(dims: object) -> int:
    n = 1
    for d in dims:  # type: ignore[attr-defined]
        n *= int(d)
    return n
