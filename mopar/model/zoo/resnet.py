"""ResNet-50 (He et al. 2016), torchvision layout, batch norm folded into the convolutions.

Published: 25,557,032 parameters with batch norm; folding it leaves one bias per
channel instead of scale and shift, 25,530,472 here (-0.1 %).
"""

from __future__ import annotations

import onnx

from mopar.model.zoo.builder import GraphBuilder, batch_dim

PUBLISHED_PARAMS = 25_557_032
STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))  # (bottleneck width, blocks)
EXPANSION = 4


def build(
    scale: float = 1.0, image: int = 224, classes: int = 1000, seed: int = 0, batch: int | str = 1
) -> onnx.ModelProto:
    """`scale` multiplies every channel width (1.0 is the published network); `batch` "dynamic"
    makes the batch dimension symbolic, as exporters write it with dynamic axes."""
    b = GraphBuilder("resnet50", seed)
    width = lambda c: max(8, int(round(c * scale)))  # noqa: E731
    x = b.input("input", [batch_dim(batch), 3, image, image])
    stem = width(64)
    x = b.relu(b.conv(x, 3, stem, 7, "conv1", stride=2, pad=3), "conv1")
    x = b.node("MaxPool", [x], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = stem
    for stage, (planes, blocks) in enumerate(STAGES, start=1):
        for block in range(blocks):
            stride = 2 if block == 0 and stage > 1 else 1
            x = _bottleneck(b, x, cin, width(planes), stride, f"layer{stage}.{block}")
            cin = width(planes) * EXPANSION
    x = b.node("GlobalAveragePool", [x], "avgpool")
    x = b.node("Flatten", [x], "flatten", axis=1)
    x = b.gemm(x, cin, classes, "fc")
    b.output(x, "logits")
    return b.build("ResNet-50 image classifier (random weights)")


def _bottleneck(b: GraphBuilder, x: str, cin: int, planes: int, stride: int, name: str) -> str:
    cout = planes * EXPANSION
    y = b.relu(b.conv(x, cin, planes, 1, f"{name}.conv1"), f"{name}.conv1")
    y = b.relu(b.conv(y, planes, planes, 3, f"{name}.conv2", stride=stride), f"{name}.conv2")
    # A small gain on the last conv of the branch keeps the residual sum from growing
    # block after block with random weights (the role zero-initialised BN plays in training).
    y = b.conv(y, planes, cout, 1, f"{name}.conv3", gain=0.3)
    shortcut = x
    if stride != 1 or cin != cout:
        shortcut = b.conv(x, cin, cout, 1, f"{name}.downsample", stride=stride)
    return b.relu(b.node("Add", [y, shortcut], f"{name}.add"), f"{name}.add")
