"""A manifest is checked before anything is served: `mopar serve` and a worker refuse a tampered
slice directory with one line and exit status 2, as real processes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from slice_runtime.manifest import sha256_file
from tests.support import ROOT, free_port, run_cli
from tests.support.slicing import negate_twice, sliced


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("manifests")
    directory = sliced(negate_twice(work / "negate.onnx", 65536), work / "slices", slices=2)
    assert [s["id"] for s in json.loads((directory / "manifest.json").read_text())["slices"]] == ["s0", "s1"]
    return directory


def _outside_file(manifest: dict, directory: Path) -> None:  # type: ignore[type-arg]
    outside = directory.parent / "outside"
    outside.mkdir()
    shutil.copy(directory / "s0.onnx", outside / "s0.onnx")  # the same bytes: its sha256 matches
    manifest["slices"][0]["file"] = "../outside/s0.onnx"


def _absolute_file(manifest: dict, directory: Path) -> None:  # type: ignore[type-arg]
    manifest["slices"][0]["file"] = str((directory / "s0.onnx").resolve())


def _symlink_out(manifest: dict, directory: Path) -> None:  # type: ignore[type-arg]
    outside = directory.parent / "elsewhere.onnx"
    shutil.move(directory / "s0.onnx", outside)
    (directory / "s0.onnx").symlink_to(outside)


def _same_id(manifest: dict, directory: Path) -> None:  # type: ignore[type-arg]
    manifest["slices"][1]["id"] = "s0"
    manifest["slices"][1]["depends_on"] = []


def _cycle(manifest: dict, directory: Path) -> None:  # type: ignore[type-arg]
    manifest["slices"][0]["depends_on"] = ["s1"]


def _unknown_dependency(manifest: dict, directory: Path) -> None:  # type: ignore[type-arg]
    manifest["slices"][1]["depends_on"] = ["nope"]


def _swapped(manifest: dict, directory: Path) -> None:  # type: ignore[type-arg]
    first, second = manifest["slices"]
    first["file"], second["file"] = second["file"], first["file"]
    first["sha256"], second["sha256"] = second["sha256"], first["sha256"]


def _traversing_id(manifest: dict, directory: Path) -> None:  # type: ignore[type-arg]
    manifest["slices"][1]["id"] = "../../x"


def _wrong_digest(manifest: dict, directory: Path) -> None:  # type: ignore[type-arg]
    manifest["slices"][0]["sha256"] = sha256_file(directory / "s1.onnx")


CASES = {
    "file outside the directory": (_outside_file, "'../outside/s0.onnx' must be a relative path inside"),
    "absolute file": (_absolute_file, "must be a relative path inside the slice directory"),
    "symlink out of the directory": (_symlink_out, "leads outside the slice directory"),
    "two slices with one id": (_same_id, "two slices have the id 's0'"),
    "dependency cycle": (_cycle, "slice s0 depends on 's1', which is not a slice before it"),
    "unknown dependency": (_unknown_dependency, "slice s1 depends on 'nope', which is not a slice before it"),
    "swapped files and hashes": (_swapped, "are not slice s0's"),
    "id with ../": (_traversing_id, "slice id '../../x' is not"),
    "wrong sha256": (_wrong_digest, "sha256 does not match"),
}


def _tampered(original: Path, tmp_path: Path, case: str) -> Path:
    directory = tmp_path / case.replace(" ", "-").replace("/", "") / "slices"
    shutil.copytree(original, directory, symlinks=True)
    manifest = json.loads((directory / "manifest.json").read_text())
    CASES[case][0](manifest, directory)
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def _one_line(done: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr[-1500:])
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and fragment in lines[0], done.stderr[-1500:]


def test_serve_refuses_every_tampered_manifest_with_one_line(original, tmp_path) -> None:
    directories = {case: _tampered(original, tmp_path, case) for case in CASES}
    with ThreadPoolExecutor(len(CASES)) as pool:  # one process each, side by side
        done = dict(
            zip(
                directories,
                pool.map(
                    lambda d: run_cli("serve", str(d), "--port", str(free_port()), timeout=60), directories.values()
                ),
            )
        )
    for case, result in done.items():
        _one_line(result, CASES[case][1])


@pytest.mark.parametrize("case", ["symlink out of the directory", "swapped files and hashes"])
def test_a_worker_refuses_a_tampered_slice_at_start(original, tmp_path, case: str) -> None:
    directory = _tampered(original, tmp_path, case)
    done = subprocess.run(
        [sys.executable, "-m", "slice_runtime.worker", "--manifest", str(directory), "--slice", "s0",
         "--transport", "shm", "--port", str(free_port())],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip
    _one_line(done, CASES[case][1])
    assert "mopar worker: error:" in done.stderr
