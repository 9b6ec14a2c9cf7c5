"""The command line: --help everywhere; bad input is one line on stderr and exit status 2."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from mopar_operator.cli import build_parser

from .conftest import run_cli


def _subcommand_paths() -> list[list[str]]:
    paths: list[list[str]] = []

    def walk(parser, prefix: list[str]) -> None:  # type: ignore[no-untyped-def]
        for action in parser._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                for name, sub in action.choices.items():
                    paths.append([*prefix, name])
                    walk(sub, [*prefix, name])

    walk(build_parser(), [])
    return paths


@pytest.mark.parametrize("path", _subcommand_paths(), ids=lambda p: " ".join(p))
def test_every_subcommand_has_help(path: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*path, "--help"])
    assert exit_info.value.code == 0
    assert "usage: mopar" in capsys.readouterr().out


def _symbolic_model(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path


def _assert_one_line_error(done, *fragments: str) -> None:  # type: ignore[no-untyped-def]
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_file(tmp_path) -> None:
    _assert_one_line_error(run_cli("profile", str(tmp_path / "nope.onnx")), "nope.onnx", "no such file")


def test_file_that_is_not_onnx(tmp_path) -> None:
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n" * 20)
    _assert_one_line_error(run_cli("profile", str(text)), "notes.onnx", "not an ONNX model")


def test_random_bytes_are_not_onnx(tmp_path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(bytes(range(256)) * 8)
    _assert_one_line_error(run_cli("profile", str(junk)), "junk.onnx")


def test_symbolic_input_without_input_shape(tmp_path) -> None:
    path = _symbolic_model(tmp_path / "dynamic.onnx")
    _assert_one_line_error(run_cli("profile", str(path)), "'x'", "symbolic", "--input-shape x=")


def test_symbolic_input_with_input_shape_profiles(tmp_path) -> None:
    path = _symbolic_model(tmp_path / "dynamic.onnx")
    done = run_cli("profile", str(path), "--input-shape", "x=3x4", "--runs", "2", "--no-memory")
    assert done.returncode == 0, done.stderr
    assert "relu" in done.stdout


@pytest.mark.parametrize(
    "shape, fragment",
    [("x=3by4", "NAME=DIM"), ("nosuch=3x4", "'nosuch'"), ("x=3x4x5", "2"), ("x=3x5", "cannot become 5")],
)
def test_bad_input_shapes(tmp_path, shape: str, fragment: str) -> None:
    path = _symbolic_model(tmp_path / "dynamic.onnx")
    _assert_one_line_error(run_cli("profile", str(path), "--input-shape", shape), fragment)


def test_unknown_zoo_name(tmp_path) -> None:
    _assert_one_line_error(run_cli("models", "build", "alexnet", "-o", str(tmp_path / "a.onnx")), "alexnet", "resnet50")


def test_usage_mistakes_are_one_line_too() -> None:
    _assert_one_line_error(run_cli("profile"), "model")
    _assert_one_line_error(run_cli("profile", "x.onnx", "--runs", "many"), "--runs")
