"""YOLOv5s (Ultralytics release v6.0): CSP backbone, SPPF, PANet neck, 3-scale Detect head.

Published: 7,225,885 parameters for the fused model (batch norm folded into the
convolutions, as `model.fuse()` reports it); this graph has exactly those. The Detect
decode (sigmoid, grid offsets, anchor scaling) is written out as the official export
does with `inplace=False`; grids and anchor grids are constants, not parameters.
"""

from __future__ import annotations

import numpy as np
import onnx

from mopar.errors import UsageError
from mopar.model.zoo.builder import GraphBuilder

PUBLISHED_PARAMS = 7_225_885
ANCHORS = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))
STRIDES = (8, 16, 32)
# He init assumes ReLU; SiLU passes less energy near zero, so with gain 1 random activations
# fade ~50x by P5, and with the exact SiLU gain (1.19) they blow up. 1.05 keeps them O(0.1-1).
SILU_GAIN = 1.05


def build(scale: float = 1.0, image: int = 640, classes: int = 80, seed: int = 0) -> onnx.ModelProto:
    """`scale` multiplies every channel width (1.0 is the published YOLOv5s); `image` is
    the square input size, a multiple of the largest stride (32)."""
    if image <= 0 or image % STRIDES[-1]:
        raise UsageError(f"yolov5s image size must be a positive multiple of 32, got {image}")
    b = GraphBuilder("yolov5s", seed)

    # Widths below are already YOLOv5s' (width_multiple 0.50 applied); rounding to a
    # multiple of 8 is YOLOv5's own make_divisible and keeps every halving exact.
    def w(c: int) -> int:
        return max(8, int(round(c * scale / 8)) * 8)

    x = b.input("images", [1, 3, image, image])
    x = _conv(b, x, 3, w(32), 6, "model.0", stride=2, pad=2)
    x = _conv(b, x, w(32), w(64), 3, "model.1", stride=2)
    x = _c3(b, x, w(64), w(64), 1, True, "model.2")
    x = _conv(b, x, w(64), w(128), 3, "model.3", stride=2)
    p4_in = x = _c3(b, x, w(128), w(128), 2, True, "model.4")
    x = _conv(b, x, w(128), w(256), 3, "model.5", stride=2)
    p6_in = x = _c3(b, x, w(256), w(256), 3, True, "model.6")
    x = _conv(b, x, w(256), w(512), 3, "model.7", stride=2)
    x = _c3(b, x, w(512), w(512), 1, True, "model.8")
    x = _sppf(b, x, w(512), w(512), "model.9")

    l10 = x = _conv(b, x, w(512), w(256), 1, "model.10")
    x = b.concat([_upsample(b, x, "model.11"), p6_in], "model.12")
    x = _c3(b, x, w(512), w(256), 1, False, "model.13")
    l14 = x = _conv(b, x, w(256), w(128), 1, "model.14")
    x = b.concat([_upsample(b, x, "model.15"), p4_in], "model.16")
    p3 = x = _c3(b, x, w(256), w(128), 1, False, "model.17")
    x = b.concat([_conv(b, x, w(128), w(128), 3, "model.18", stride=2), l14], "model.19")
    p4 = x = _c3(b, x, w(256), w(256), 1, False, "model.20")
    x = b.concat([_conv(b, x, w(256), w(256), 3, "model.21", stride=2), l10], "model.22")
    p5 = _c3(b, x, w(512), w(512), 1, False, "model.23")

    levels = [
        _detect_level(b, f, c, image, classes, i, "model.24")
        for i, (f, c) in enumerate(((p3, w(128)), (p4, w(256)), (p5, w(512))))
    ]
    b.output(b.concat(levels, "model.24", axis=1), "output")
    return b.build("YOLOv5s v6.0 object detector with inference decode (random weights)")


def _conv(
    b: GraphBuilder,
    x: str,
    cin: int,
    cout: int,
    k: int,
    name: str,
    stride: int = 1,
    pad: int | None = None,
    gain: float = SILU_GAIN,
) -> str:
    """YOLOv5 Conv: Conv2d + BN (folded into the bias) + SiLU."""
    return b.silu(b.conv(x, cin, cout, k, f"{name}.conv", stride=stride, pad=pad, gain=gain), name)


def _c3(b: GraphBuilder, x: str, c1: int, c2: int, n: int, shortcut: bool, name: str) -> str:
    """CSP bottleneck with 3 convolutions: cv3(concat(m(cv1(x)), cv2(x)))."""
    c_ = c2 // 2
    y = _conv(b, x, c1, c_, 1, f"{name}.cv1")
    for i in range(n):
        # A small gain on the residual branch keeps the stacked sums from growing with
        # random weights (trained BN scales do this in the real network).
        h = _conv(b, y, c_, c_, 1, f"{name}.m.{i}.cv1")
        h = _conv(b, h, c_, c_, 3, f"{name}.m.{i}.cv2", gain=0.5 if shortcut else SILU_GAIN)
        y = b.node("Add", [y, h], f"{name}.m.{i}") if shortcut else h
    skip = _conv(b, x, c1, c_, 1, f"{name}.cv2")
    return _conv(b, b.concat([y, skip], name), 2 * c_, c2, 1, f"{name}.cv3")


def _sppf(b: GraphBuilder, x: str, c1: int, c2: int, name: str, k: int = 5) -> str:
    """Spatial pyramid pooling, fast: three chained 5x5 max pools instead of 5/9/13 in parallel."""
    ys = [_conv(b, x, c1, c1 // 2, 1, f"{name}.cv1")]
    for _ in range(3):
        ys.append(b.node("MaxPool", [ys[-1]], f"{name}.m", kernel_shape=[k, k], strides=[1, 1], pads=[k // 2] * 4))
    return _conv(b, b.concat(ys, name), 4 * (c1 // 2), c2, 1, f"{name}.cv2")


def _upsample(b: GraphBuilder, x: str, name: str) -> str:
    """nn.Upsample(scale_factor=2, mode='nearest') as torch exports it."""
    scales = b.const(f"{name}.scales", np.array([1, 1, 2, 2], dtype=np.float32))
    return b.node(
        "Resize",
        [x, "", scales],
        name,
        mode="nearest",
        coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
    )


def _detect_level(b: GraphBuilder, x: str, cin: int, image: int, classes: int, i: int, name: str) -> str:
    """One Detect level: 1x1 conv to 3*(classes+5), then the v6.0 export's box decode."""
    no, na, stride = classes + 5, len(ANCHORS[i]) // 2, STRIDES[i]
    ny = nx = image // stride
    n = f"{name}.m.{i}"
    # The Detect convs are plain nn.Conv2d (real bias, no BN, no activation).
    y = b.conv(x, cin, na * no, 1, n)
    y = b.node("Reshape", [y, b.ints(f"{n}.shape", [1, na, no, ny, nx])], n)
    y = b.node("Sigmoid", [b.node("Transpose", [y], n, perm=[0, 1, 3, 4, 2])], n)

    def part(start: int, end: int) -> str:
        bounds = [b.ints(f"{n}.starts", [start]), b.ints(f"{n}.ends", [end])]
        return b.node("Slice", [y, *bounds, b.ints(f"{n}.axes", [4])], n)

    # Grid cells hold (x, y) - 0.5: v6.0's xy = (s * 2 - 0.5 + grid) * stride, offset baked in.
    yv, xv = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    grid = (np.stack((xv, yv), 2).reshape(1, 1, ny, nx, 2) - 0.5).astype(np.float32)
    # Anchors are in pixels (anchors / stride * stride); broadcast over the grid.
    anchor_grid = np.array(ANCHORS[i], dtype=np.float32).reshape(1, na, 1, 1, 2)
    two = b.scalar(f"{n}.two", 2.0)
    xy = b.node("Add", [b.node("Mul", [part(0, 2), two], n), b.const(f"{n}.grid", grid)], n)
    xy = b.node("Mul", [xy, b.scalar(f"{n}.stride", float(stride))], n)
    wh = b.node("Pow", [b.node("Mul", [part(2, 4), two], n), two], n)
    wh = b.node("Mul", [wh, b.const(f"{n}.anchor_grid", anchor_grid)], n)
    y = b.concat([xy, wh, part(4, no)], n, axis=4)
    return b.node("Reshape", [y, b.ints(f"{n}.out_shape", [1, na * ny * nx, no])], n)
