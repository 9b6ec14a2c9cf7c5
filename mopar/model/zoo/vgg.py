"""VGG-16 (Simonyan & Zisserman 2015, configuration D), torchvision layout.

Published: 138,357,544 parameters; this graph has exactly those (no batch norm).
"""

from __future__ import annotations

import onnx

from mopar.errors import UsageError
from mopar.model.zoo.builder import GraphBuilder

PUBLISHED_PARAMS = 138_357_544
CONFIG_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def build(scale: float = 1.0, image: int = 224, classes: int = 1000, seed: int = 0) -> onnx.ModelProto:
    """`scale` multiplies every width, convolutional and fully connected (1.0 is published)."""
    b = GraphBuilder("vgg16", seed)
    width = lambda c: max(8, int(round(c * scale)))  # noqa: E731
    x = b.input("input", [1, 3, image, image])
    cin, size, conv_index, pool_index = 3, image, 0, 0
    for item in CONFIG_D:
        if item == "M":
            x = b.node("MaxPool", [x], f"features.pool{pool_index}", kernel_shape=[2, 2], strides=[2, 2])
            size //= 2
            pool_index += 1
            continue
        cout = width(int(item))
        x = b.relu(b.conv(x, cin, cout, 3, f"features.conv{conv_index}"), f"features.conv{conv_index}")
        cin, conv_index = cout, conv_index + 1
    # torchvision pools to 7x7 before the classifier; at 224 input the map already is
    # 7x7. Small test inputs (under 224) feed their smaller map to the classifier as is.
    pooled = min(size, 7)
    if size > 7:
        if size % 7:
            raise UsageError(f"vgg16 image size must be 32 x 7 x k or below 224, got {image}")
        k = size // 7
        x = b.node("AveragePool", [x], "avgpool", kernel_shape=[k, k], strides=[k, k])
    x = b.node("Flatten", [x], "flatten", axis=1)
    hidden = width(4096)
    x = b.relu(b.gemm(x, cin * pooled * pooled, hidden, "classifier.fc1"), "classifier.fc1")
    x = b.relu(b.gemm(x, hidden, hidden, "classifier.fc2"), "classifier.fc2")
    x = b.gemm(x, hidden, classes, "classifier.fc3")
    b.output(x, "logits")
    return b.build("VGG-16 image classifier (random weights)")
