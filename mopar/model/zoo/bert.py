"""BERT-base (Devlin et al. 2019) for sequence classification, as torch exports it at opset 17.

Published: 109,482,240 parameters for bert-base-uncased `BertModel` (embeddings, 12
encoder layers, pooler). This graph has exactly those plus the 2-label classifier
(1,538), 109,483,778 in all (+0.0014 %). Attention, GELU and the mask are written out
op by op (MatMul/Softmax/Erf), the unfused form an exporter emits before opset 20.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from mopar.errors import UsageError
from mopar.model.zoo.builder import GraphBuilder, batch_dim

PUBLISHED_PARAMS = 109_482_240
MAX_POSITIONS = 512
LN_EPS = 1e-12
INIT_STD = 0.02  # BERT's initializer_range


def build(
    scale: float = 1.0,
    seed: int = 0,
    layers: int = 12,
    hidden: int = 768,
    heads: int = 12,
    intermediate: int | None = None,
    seq: int = 128,
    vocab: int = 30522,
    labels: int = 2,
    batch: int | str = 1,
) -> onnx.ModelProto:
    """`scale` multiplies hidden and intermediate widths, hidden rounded to a multiple of heads;
    `batch` "dynamic" makes the batch dimension symbolic (the reshapes then copy it: 0, -1)."""
    if not 0 < seq <= MAX_POSITIONS:
        raise UsageError(f"bert: seq must be in 1..{MAX_POSITIONS}, got {seq}")
    inter = max(8, int(round((intermediate or 4 * hidden) * scale)))
    hidden = max(heads, int(round(hidden * scale / heads)) * heads)
    b = GraphBuilder("bert-base", seed)
    first = batch_dim(batch)
    ids = b.input("input_ids", [first, seq], "int64")
    mask = b.input("attention_mask", [first, seq], "int64")
    # Reshape targets: the fixed batch as the export writes it, or the input's (0 copies a dimension).
    kept = 1 if first == 1 else 0
    b.input_range("input_ids", 0, vocab)
    b.input_range("attention_mask", 0, 2)

    x = _embeddings(b, ids, vocab, hidden, seq)
    # Extended mask [1,1,1,seq]: 0 where attended, -10000 where padded (added to the scores).
    m = b.node("Unsqueeze", [mask, b.ints("mask_axes", [1, 2])], "extended_mask")
    m = b.node("Cast", [m], "extended_mask", to=onnx.TensorProto.FLOAT)
    m = b.node("Sub", [b.scalar("one", 1.0), m], "extended_mask")
    m = b.node("Mul", [m, b.scalar("mask_fill", -10000.0)], "extended_mask")
    for i in range(layers):
        x = _layer(b, x, m, hidden, heads, inter, seq, f"encoder.layer.{i}", kept)

    cls = b.node("Gather", [x, b.ints("cls_index", [0])], "pooler.first_token", axis=1)
    cls = b.node("Reshape", [cls, b.ints("pooler_shape", [kept or -1, hidden])], "pooler.first_token")
    pooled = b.node("Tanh", [_gemm(b, cls, hidden, hidden, "pooler.dense")], "pooler.activation")
    b.output(_gemm(b, pooled, hidden, labels, "classifier"), "logits")
    return b.build("BERT-base sequence classifier (random weights)")


def _gain(fin: int) -> float:
    """Gain that turns the builder's He std sqrt(2/fin) into BERT's fixed 0.02."""
    return INIT_STD / math.sqrt(2.0 / fin)


def _gemm(b: GraphBuilder, x: str, fin: int, fout: int, name: str) -> str:
    return b.gemm(x, fin, fout, name, gain=_gain(fin))


def _linear(b: GraphBuilder, x: str, fin: int, fout: int, name: str) -> str:
    return b.linear(x, fin, fout, name, gain=_gain(fin))


def _layer_norm(b: GraphBuilder, x: str, hidden: int, name: str) -> str:
    gamma = b.param(f"{name}.weight", np.ones(hidden, np.float32))
    beta = b.param(f"{name}.bias", np.zeros(hidden, np.float32))
    return b.node("LayerNormalization", [x, gamma, beta], name, axis=-1, epsilon=LN_EPS)


def _embeddings(b: GraphBuilder, ids: str, vocab: int, hidden: int, seq: int) -> str:
    word = b.param("embeddings.word.weight", b.small((vocab, hidden), INIT_STD))
    pos = b.param("embeddings.position.weight", b.small((MAX_POSITIONS, hidden), INIT_STD))
    # Full 2-row table is a learned weight; every token is type 0, so one row is gathered.
    tok = b.param("embeddings.token_type.weight", b.small((2, hidden), INIT_STD))
    x = b.node("Gather", [word, ids], "embeddings.word", axis=0)
    zero, end = b.ints("position_start", [0]), b.ints("position_end", [seq])
    p = b.node("Slice", [pos, zero, end, b.ints("position_axes", [0])], "embeddings.position")
    t = b.node("Gather", [tok, b.ints("token_type_id", [0])], "embeddings.token_type", axis=0)
    x = b.node("Add", [b.node("Add", [x, p], "embeddings.add"), t], "embeddings.add")
    return _layer_norm(b, x, hidden, "embeddings.LayerNorm")


def _layer(
    b: GraphBuilder, x: str, mask: str, hidden: int, heads: int, inter: int, seq: int, name: str, kept: int = 1
) -> str:
    head_dim = hidden // heads
    split = b.ints(f"{name}.split_heads", [kept, seq, heads, head_dim])
    att = f"{name}.attention"

    def heads_of(kind: str, perm: list[int]) -> str:
        y = _linear(b, x, hidden, hidden, f"{att}.self.{kind}")
        y = b.node("Reshape", [y, split], f"{att}.self.{kind}")
        return b.node("Transpose", [y], f"{att}.self.{kind}", perm=perm)

    q = heads_of("query", [0, 2, 1, 3])
    k = heads_of("key", [0, 2, 3, 1])  # K^T directly: [1, heads, head_dim, seq]
    v = heads_of("value", [0, 2, 1, 3])
    scores = f"{att}.self.scores"
    s = b.node("MatMul", [q, k], scores)
    s = b.node("Div", [s, b.scalar(f"{scores}.sqrt_d", math.sqrt(head_dim))], scores)
    s = b.node("Add", [s, mask], f"{att}.self.mask")
    s = b.node("Softmax", [s], f"{att}.self.softmax", axis=-1)
    ctx = f"{att}.self.context"
    c = b.node("MatMul", [s, v], ctx)
    c = b.node("Transpose", [c], ctx, perm=[0, 2, 1, 3])
    c = b.node("Reshape", [c, b.ints(f"{name}.merge_heads", [kept, seq, hidden])], ctx)
    y = _linear(b, c, hidden, hidden, f"{att}.output.dense")
    y = b.node("Add", [y, x], f"{att}.output.residual")
    x = _layer_norm(b, y, hidden, f"{att}.output.LayerNorm")

    h = _linear(b, x, hidden, inter, f"{name}.intermediate.dense")
    # Exact GELU, x * 0.5 * (1 + erf(x / sqrt 2)), in torch's export order.
    gelu = f"{name}.intermediate.gelu"
    g = b.node("Erf", [b.node("Div", [h, b.scalar(f"{gelu}.sqrt2", math.sqrt(2.0))], gelu)], gelu)
    g = b.node("Add", [g, b.scalar(f"{gelu}.one", 1.0)], gelu)
    g = b.node("Mul", [b.node("Mul", [h, g], gelu), b.scalar(f"{gelu}.half", 0.5)], gelu)
    y = _linear(b, g, inter, hidden, f"{name}.output.dense")
    y = b.node("Add", [y, x], f"{name}.output.residual")
    return _layer_norm(b, y, hidden, f"{name}.output.LayerNorm")
