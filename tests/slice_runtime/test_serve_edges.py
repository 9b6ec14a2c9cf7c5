"""`mopar serve` at the edges a user meets first: a port in use and an ONNX file instead of a
slice directory are one line and exit 2, and no run leaves its temporary directory behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.serving import ServeProcess, workers_of
from tests.support.slicing import negate_twice, sliced


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    return negate_twice(tmp_path_factory.mktemp("edges") / "negate.onnx")


@pytest.fixture(scope="module")
def slices(model: Path) -> Path:
    return sliced(model, model.parent / "slices")


def _serve(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mopar", "serve", *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
        env={**os.environ, "TMPDIR": str(tmp)},
    )  # fmt: skip


def _one_line_error(done: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr[-1500:])
    assert "Traceback" not in done.stderr, done.stderr[-1500:]
    [line] = [line for line in done.stderr.splitlines() if "error:" in line]
    assert all(fragment in line for fragment in fragments), line
    return line


def test_a_port_in_use_is_one_line_before_any_worker_starts(slices: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _serve(str(slices), "--port", str(port), tmp=tmp_path)
    _one_line_error(done, f"port {port}", "in use", "--port")
    assert "starting" not in done.stderr  # no worker was started
    assert workers_of(slices) == []
    assert list(tmp_path.glob("mopar-serve-*")) == []  # nor a log directory left for them


def test_an_onnx_file_is_one_line_saying_what_to_run(model: Path, tmp_path: Path) -> None:
    line = _one_line_error(_serve(str(model), tmp=tmp_path), "is an ONNX model", "mopar slice MODEL", "-o DIR")
    assert "not JSON" not in line
    renamed = tmp_path / "model.bin"  # found by its bytes, whatever its name
    renamed.write_bytes(model.read_bytes())
    _one_line_error(_serve(str(renamed), tmp=tmp_path), "is an ONNX model")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_leaves_no_temporary_directory(slices: Path, tmp_path: Path, sig: int) -> None:
    serve = ServeProcess(slices, env={"TMPDIR": str(tmp_path)})
    try:
        assert len(list(tmp_path.glob("mopar-serve-*"))) == 1
        serve.signal(sig)
        assert serve.wait(60) == 0
        assert list(tmp_path.glob("mopar-serve-*")) == []
    finally:
        serve.kill()
