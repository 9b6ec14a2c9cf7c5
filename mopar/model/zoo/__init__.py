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
from types import ModuleType

import onnx

from mopar.errors import UsageError
from mopar.model.zoo.builder import architecture_only


@dataclass(frozen=True)
class ZooModel:
    name: str
    category: str
    module: str  # module of this package holding `build` and `PUBLISHED_PARAMS`
    description: str
    small: dict[str, object]  # options of a narrow, fast variant for tests and quick trials

    def _module(self) -> ModuleType:
        return importlib.import_module(f"{__name__}.{self.module}")

    @property
    def published_params(self) -> int | None:
        return self._module().PUBLISHED_PARAMS

    @property
    def builder(self) -> Callable[..., onnx.ModelProto]:
        return self._module().build


MODELS: tuple[ZooModel, ...] = (
    ZooModel("resnet50", "image classification", "resnet", "ResNet-50, 224x224", {"scale": 0.25, "image": 64}),
    ZooModel("vgg16", "image classification", "vgg", "VGG-16 (config D), 224x224", {"scale": 0.125, "image": 64}),
    ZooModel(
        "mobilenetv2", "image classification", "mobilenet", "MobileNetV2 1.0, 224x224", {"scale": 0.25, "image": 64}
    ),
    ZooModel(
        "yolov5s", "object detection", "yolo", "YOLOv5s v6.0, 3-scale head, 640x640", {"scale": 0.25, "image": 128}
    ),
    ZooModel(
        "bert-base",
        "language",
        "bert",
        "BERT-base, 12x768, 12 heads, seq 128",
        {"scale": 0.25, "layers": 2, "seq": 32, "vocab": 1000},
    ),
    ZooModel(
        "lstm",
        "language",
        "lstm",
        "2-layer LSTM 512, embedding 256, seq 128",
        {"scale": 0.25, "seq": 32, "vocab": 1000},
    ),
    ZooModel(
        "edgestereo",
        "dense prediction",
        "edgestereo",
        "EdgeStereo-style, 2 views 256x512, D=40",
        {"scale": 0.25, "height": 64, "width": 128, "max_disp": 8},
    ),
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
    try:
        return get(name).builder(scale=scale, seed=seed, **options)
    except TypeError as error:
        if "unexpected keyword" in str(error):
            raise UsageError(f"{name}: {error}".replace("build() got an ", "")) from None
        raise


def build_small(name: str, seed: int = 0) -> onnx.ModelProto:
    """The model's small variant (see `ZooModel.small`)."""
    return build(name, seed=seed, **get(name).small)  # type: ignore[arg-type]


def architecture_params(name: str, **options: object) -> int:
    """Parameters of a zoo model, counted from its architecture without drawing weights."""
    with architecture_only():
        return count_params(build(name, **options))  # type: ignore[arg-type]


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
