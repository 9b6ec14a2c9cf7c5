"""LSTM sentence classifier: embedding, stacked unidirectional LSTMs, a linear head.

There is no published reference network for this model (PUBLISHED_PARAMS is None): it is
the classic text-classification baseline, sized like a typical one (vocabulary 20,000,
embedding 256, 2 layers of 512). At the defaults it has 8,799,234 parameters: embedding
5,120,000, LSTM 1,576,960 + 2,101,248, classifier 1,026. Each layer is one ONNX `LSTM`
op with torch's two bias vectors stacked as B [1, 8H], as torch exports nn.LSTM.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from mopar.errors import UsageError
from mopar.model.zoo.builder import GraphBuilder

PUBLISHED_PARAMS = None


def build(
    scale: float = 1.0,
    seed: int = 0,
    vocab: int = 20000,
    embed: int = 256,
    hidden: int = 512,
    layers: int = 2,
    seq: int = 128,
    classes: int = 2,
) -> onnx.ModelProto:
    """`scale` multiplies the embedding and hidden widths (1.0 is the default size)."""
    if layers < 1:
        raise UsageError(f"lstm: layers must be at least 1, got {layers}")
    embed, hidden = (max(8, int(round(c * scale))) for c in (embed, hidden))
    b = GraphBuilder("lstm", seed)
    tokens = b.input("tokens", [1, seq], "int64")
    b.input_range("tokens", 0, vocab)
    # nn.Embedding's init: standard normal.
    table = b.param("embeddings.word.weight", b.rng.standard_normal((vocab, embed), np.float32))
    x = b.node("Gather", [table, tokens], "embeddings.word", axis=0)
    # ONNX LSTM at layout 0 wants [seq, batch, input].
    x = b.node("Transpose", [x], "lstm.input", perm=[1, 0, 2])
    cin, h_last = embed, ""
    for i in range(layers):
        if i > 0:
            # Y is [seq, directions=1, batch, H]; drop the direction axis for the next layer.
            x = b.node("Squeeze", [x, b.ints(f"lstm.{i - 1}.squeeze_axes", [1])], f"lstm.{i - 1}")
        x, h_last = _lstm(b, x, cin, hidden, f"lstm.{i}")
        cin = hidden
    # Y_h of the last layer is the final time step's hidden state, [directions=1, batch, H].
    h = b.node("Reshape", [h_last, b.ints("last_hidden_shape", [1, hidden])], "last_hidden")
    b.output(b.gemm(h, hidden, classes, "classifier"), "logits")
    return b.build("LSTM sentence classifier (random weights)")


def _lstm(b: GraphBuilder, x: str, cin: int, hidden: int, name: str) -> tuple[str, str]:
    """One unidirectional LSTM layer; returns (Y, Y_h). Gate order is ONNX's i, o, f, c."""
    bound = 1.0 / math.sqrt(hidden)  # torch's nn.LSTM init: uniform(-1/sqrt(H), 1/sqrt(H))

    def uniform(shape: tuple[int, ...]) -> np.ndarray:
        return b.rng.uniform(-bound, bound, shape).astype(np.float32)

    w = b.param(f"{name}.weight_ih", uniform((1, 4 * hidden, cin)))
    r = b.param(f"{name}.weight_hh", uniform((1, 4 * hidden, hidden)))
    bias = b.param(f"{name}.bias", uniform((1, 8 * hidden)))
    y, y_h = b.node_multi("LSTM", [x, w, r, bias], name, outputs=2, hidden_size=hidden, layout=0)
    return y, y_h
