"""FLOP counts of single nodes, against hand arithmetic."""

from __future__ import annotations

from onnx import helper

from mopar.profile.flops import node_flops


def test_conv_counts_two_ops_per_multiply_add() -> None:
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=1)
    shapes = {"x": (1, 3, 8, 8), "w": (16, 3, 3, 3), "b": (16,), "y": (1, 16, 8, 8)}
    assert node_flops(node, shapes) == 2 * (16 * 8 * 8) * (3 * 3 * 3)


def test_depthwise_conv_uses_channels_per_group() -> None:
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=32)
    shapes = {"x": (1, 32, 8, 8), "w": (32, 1, 3, 3), "y": (1, 32, 8, 8)}
    assert node_flops(node, shapes) == 2 * 32 * 64 * 9


def test_gemm_and_matmul() -> None:
    gemm = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
    assert node_flops(gemm, {"x": (1, 512), "w": (10, 512), "y": (1, 10)}) == 2 * 10 * 512
    matmul = helper.make_node("MatMul", ["a", "b"], ["y"])
    assert node_flops(matmul, {"a": (1, 12, 128, 64), "b": (1, 12, 64, 128), "y": (1, 12, 128, 128)}) == (
        2 * 12 * 128 * 128 * 64
    )


def test_data_movement_is_free_and_unknown_ops_are_not_guessed() -> None:
    assert node_flops(helper.make_node("Reshape", ["x", "s"], ["y"]), {"y": (4,)}) == 0
    assert node_flops(helper.make_node("NonMaxSuppression", ["a", "b"], ["y"]), {"y": (4, 3)}) is None
