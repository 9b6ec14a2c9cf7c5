"""MobileNetV2 (Sandler et al. 2018), width 1.0, torchvision layout, batch norm folded.

Published: 3,504,872 parameters with batch norm (torchvision); folding each norm's scale
and shift into one conv bias leaves 3,487,816 here (-0.5 %). ReLU6 is `Clip(0, 6)` and
the classifier's dropout is omitted, as inference exports have it.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx

from mopar.model.zoo.builder import GraphBuilder

PUBLISHED_PARAMS = 3_504_872
# Inverted residual settings: (expansion t, output channels c, repeats n, first stride s).
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's `_make_divisible`: round to a multiple of 8, never more than 10 % down."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def build(scale: float = 1.0, image: int = 224, classes: int = 1000, seed: int = 0) -> onnx.ModelProto:
    """`scale` is the width multiplier (1.0 is the published network)."""
    b = GraphBuilder("mobilenetv2", seed)
    # One pair of clip bounds serves every ReLU6 (initializer inputs, as opset >= 11 wants).
    bounds = (b.scalar("relu6.min", 0.0), b.scalar("relu6.max", 6.0))

    def relu6(x: str, name: str) -> str:
        return b.node("Clip", [x, *bounds], name)

    x = b.input("input", [1, 3, image, image])
    cin = make_divisible(32 * scale)
    x = relu6(b.conv(x, 3, cin, 3, "features.0", stride=2), "features.0")
    index = 1
    for t, c, n, s in SETTINGS:
        cout = make_divisible(c * scale)
        for i in range(n):
            stride = s if i == 0 else 1
            x = _inverted_residual(b, relu6, x, cin, cout, stride, t, f"features.{index}")
            cin, index = cout, index + 1
    # torchvision keeps the last conv at 1280 for widths below 1.0.
    last = make_divisible(1280 * max(1.0, scale))
    x = relu6(b.conv(x, cin, last, 1, f"features.{index}"), f"features.{index}")
    x = b.node("GlobalAveragePool", [x], "avgpool")
    x = b.node("Flatten", [x], "flatten", axis=1)
    x = b.gemm(x, last, classes, "classifier.1")
    b.output(x, "logits")
    return b.build("MobileNetV2 image classifier (random weights)")


def _inverted_residual(
    b: GraphBuilder,
    relu6: Callable[[str, str], str],
    x: str,
    cin: int,
    cout: int,
    stride: int,
    t: int,
    name: str,
) -> str:
    hidden = int(round(cin * t))
    y = x
    if t != 1:
        y = relu6(b.conv(y, cin, hidden, 1, f"{name}.expand"), f"{name}.expand")
    y = relu6(b.conv(y, hidden, hidden, 3, f"{name}.dw", stride=stride, group=hidden), f"{name}.dw")
    residual = stride == 1 and cin == cout
    # The projection is linear, so He's factor 2 for ReLU is undone (gain 0.7); with a skip a
    # smaller gain keeps the sum from growing block after block (zero-init BN's role).
    y = b.conv(y, hidden, cout, 1, f"{name}.project", gain=0.3 if residual else 0.7)
    return b.node("Add", [x, y], f"{name}.add") if residual else y
