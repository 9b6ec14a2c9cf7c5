"""EdgeStereo-style stereo matching (Song et al., ACCV 2018 / IJCV 2020), dense prediction.

A shared trunk runs on both views with the same weights (DispNetC's conv1-conv2 plus two
3x3 convs at 1/4); a correlation layer builds a cost volume at 1/4 resolution; an HED-style
edge branch on the left features yields an edge map (second output `edges`) and edge
features that join the cost volume and a 1x1-reduced left feature in a DispNet-like
encoder-decoder, whose 1/4 disparity is resized to full resolution and scaled by 4.

Published: no single figure for this configuration (the papers combine a DispNetC-style
backbone, HED and a residual pyramid; DispNetC alone is ~38M), so `PUBLISHED_PARAMS` is
None. Ours at the defaults: 41,437,944 parameters. Approximations: one-scale edge branch
(HED fuses several side outputs), ReLU throughout, and one-stage disparity refinement in
place of EdgeStereo's residual pyramid.
"""

from __future__ import annotations

import onnx

from mopar.errors import UsageError
from mopar.model.zoo.builder import GraphBuilder

PUBLISHED_PARAMS = None
# Shared trunk: (name, output channels, kernel, stride); ends at 1/4 resolution.
TRUNK = (("conv1", 64, 7, 2), ("conv2", 128, 5, 2), ("conv3a", 128, 3, 1), ("conv3b", 128, 3, 1))
EDGE = (64, 64, 64)  # edge branch 3x3 convs at 1/4
ENCODER = ((256, 1), (512, 2), (512, 1), (512, 2), (512, 1), (1024, 2), (1024, 1))  # (ch, stride)
DECODER = (512, 256, 128)  # upconv widths 1/32 -> 1/16 -> 1/8 -> 1/4


def build(
    scale: float = 1.0,
    height: int = 256,
    width: int = 512,
    max_disp: int = 40,
    seed: int = 0,
) -> onnx.ModelProto:
    """`scale` multiplies every feature width; `max_disp` is the cost volume depth at 1/4."""
    if height % 32 or width % 32:
        raise UsageError(f"edgestereo needs height and width divisible by 32, got {height}x{width}")
    if max_disp < 1:
        raise UsageError(f"max_disp must be positive, got {max_disp}")
    b = GraphBuilder("edgestereo", seed)
    ch = lambda c: max(8, int(round(c * scale)))  # noqa: E731
    left = b.input("left", [1, 3, height, width])
    right = b.input("right", [1, 3, height, width])

    # Shared trunk: weights are created once and both views' Conv nodes name them.
    layers: list[tuple[str, str, str, int, int]] = []
    cin = 3
    for name, c, k, s in TRUNK:
        w = b.param(f"{name}.weight", b.he((ch(c), cin, k, k), cin * k * k))
        bias = b.param(f"{name}.bias", b.small((ch(c),), 0.01))
        layers.append((name, w, bias, k, s))
        cin = ch(c)
    feats = []
    for view, x in (("left", left), ("right", right)):
        for name, w, bias, k, s in layers:
            x = b.node("Conv", [x, w, bias], f"{view}.{name}", kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4)
            x = b.relu(x, f"{view}.{name}")
        feats.append(x)
    fl, fr = feats

    cost = _correlation(b, fl, fr, width // 4, max_disp)

    # Edge branch (HED-style): edge features for the head and a sigmoid edge map.
    e, ec = fl, cin
    for i, c in enumerate(EDGE):
        e = b.relu(b.conv(e, ec, ch(c), 3, f"edge.conv{i + 1}"), f"edge.conv{i + 1}")
        ec = ch(c)
    edges = b.node("Sigmoid", [b.conv(e, ec, 1, 1, "edge.score")], "edge.score")
    redir = b.relu(b.conv(fl, cin, ch(64), 1, "conv_redir"), "conv_redir")
    x = b.concat([cost, redir, e], "head.concat")
    cin = max_disp + ch(64) + ec

    # Encoder down to 1/32; the stride-1 conv closing each scale is a decoder skip.
    level = 2  # level k is 1/2**k resolution
    skips: dict[int, tuple[str, int]] = {}  # level -> (tensor, channels)
    for i, (c, s) in enumerate(ENCODER):
        x = b.relu(b.conv(x, cin, ch(c), 3, f"enc.conv{i}", stride=s), f"enc.conv{i}")
        cin, level = ch(c), level + (s == 2)
        if s == 1 and level < 5:
            skips[level] = (x, cin)

    # Decoder: a prediction at each scale, upsampled with the features (DispNet's refinement).
    pred = b.conv(x, cin, 1, 3, "dec.pred5", gain=0.5)
    for i, c in enumerate(DECODER):
        level = 4 - i
        up = b.relu(_upconv(b, x, cin, ch(c), f"dec.upconv{level}"), f"dec.upconv{level}")
        pred_up = _upconv(b, pred, 1, 1, f"dec.uppred{level}")
        skip, skip_ch = skips[level]
        x = b.concat([up, skip, pred_up], f"dec.concat{level}")
        cin = ch(c) + skip_ch + 1
        x = b.relu(b.conv(x, cin, ch(c), 3, f"dec.iconv{level}"), f"dec.iconv{level}")
        cin = ch(c)
        pred = b.conv(x, cin, 1, 3, f"dec.pred{level}", gain=0.5)

    # Full resolution: bilinear resize, and disparities grow with the 4x wider grid.
    sizes = b.ints("disp.sizes", [1, 1, height, width])
    full = b.node(
        "Resize", [pred, "", "", sizes], "disp.resize", mode="linear", coordinate_transformation_mode="half_pixel"
    )
    disparity = b.node("Mul", [full, b.scalar("disp.scale", 4.0)], "disp.scale")
    b.output(disparity, "disparity")
    b.output(edges, "edges")
    b.metadata("mopar.max_disp", str(max_disp))
    return b.build("EdgeStereo-style stereo matching network (random weights)")


def _correlation(b: GraphBuilder, fl: str, fr: str, w4: int, max_disp: int) -> str:
    """Cost volume [1, D, H/4, W/4]: channel-mean of left * right shifted d pixels right."""
    # Pad the right view once on the left; the slice starting at D-1-d is the shift by d.
    pads = b.ints("corr.pads", [0, 0, 0, max_disp - 1, 0, 0, 0, 0])
    padded = b.node("Pad", [fr, pads], "corr.pad", mode="constant")
    axes = b.ints("corr.axes", [3])
    maps = []
    for d in range(max_disp):
        start = max_disp - 1 - d
        shifted = b.node(
            "Slice",
            [padded, b.ints(f"corr.start{d}", [start]), b.ints(f"corr.end{d}", [start + w4]), axes],
            f"corr.shift{d}",
        )
        prod = b.node("Mul", [fl, shifted], f"corr.mul{d}")
        maps.append(b.node("ReduceMean", [prod], f"corr.mean{d}", axes=[1], keepdims=1))
    return b.concat(maps, "corr.concat")


def _upconv(b: GraphBuilder, x: str, cin: int, cout: int, name: str) -> str:
    """ConvTranspose 4x4 stride 2 pad 1: exactly doubles height and width."""
    # Each output sees cin * (4/2)^2 inputs, the fan-in for He scaling.
    w = b.param(f"{name}.weight", b.he((cin, cout, 4, 4), cin * 4))
    bias = b.param(f"{name}.bias", b.small((cout,), 0.01))
    return b.node("ConvTranspose", [x, w, bias], name, kernel_shape=[4, 4], strides=[2, 2], pads=[1, 1, 1, 1])
