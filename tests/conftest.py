"""Shared fixtures: zoo models written once per session, the `mopar` CLI as a subprocess."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest

from mopar_operator import zoo

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`small_model(name)` -> path of the zoo model's small variant, built once per session."""
    directory = tmp_path_factory.mktemp("zoo")
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            path = directory / f"{name}.onnx"
            onnx.save_model(zoo.build_small(name), str(path))
            built[name] = path
        return built[name]

    return get


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run `mopar ARGS...` as a user would, in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "mopar_operator", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )
