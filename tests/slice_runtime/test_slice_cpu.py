"""Each slice's planned CPU reaches the processes that run it: the plan's `cpu` and `threads`
go into the manifest, a worker opens its session with the slice's threads, and `mopar serve`
starts each worker with them, at most --cores."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from mopar.plan import planfile
from slice_runtime import manifest as manifests
from slice_runtime.errors import ManifestError
from slice_runtime.local import LocalServer, free_port
from slice_runtime.sessions import session_options
from slice_runtime.tensors import TensorSpec
from tests.support import ServerThread
from tests.support.slicing import negate_twice, sliced

PLANNED = {"s0": (2.5, 3), "s1": (0.25, 1)}  # slice id: (cpu, threads)


def _entry(**extra: Any) -> manifests.SliceEntry:
    spec = TensorSpec("x", "float32", (1, 4))
    return manifests.SliceEntry("s0", "s0.onnx", "0" * 64, [spec], [], [], **extra)


def test_a_manifest_entry_keeps_its_cpu_and_threads_through_json() -> None:
    entry = _entry(cpu=0.25, threads=1, memory_mb=256)
    data = json.loads(json.dumps(entry.to_json()))
    assert (data["cpu"], data["threads"]) == (0.25, 1)
    assert manifests.SliceEntry.from_json(data) == entry
    assert manifests.SliceEntry.from_json(_entry(cpu=2.5, threads=3).to_json()).threads == 3


def test_an_entry_written_before_cpu_was_planned_runs_one_thread() -> None:
    data = _entry().to_json()
    del data["cpu"], data["threads"]
    entry = manifests.SliceEntry.from_json(data)
    assert (entry.cpu, entry.threads) == (None, 1)


def test_a_planned_slice_reads_its_cpu_and_threads_and_defaults_to_one_thread() -> None:
    data = {"id": "s0", "nodes": ["a"], "inputs": ["x"], "outputs": ["y"], "memory_mb": 128, "cpu": 1.5, "threads": 2}
    assert (planfile.PlannedSlice.from_json(data).cpu, planfile.PlannedSlice.from_json(data).threads) == (1.5, 2)
    old = {**data, "cpu": 1.0}
    del old["threads"]
    assert (planfile.PlannedSlice.from_json(old).cpu, planfile.PlannedSlice.from_json(old).threads) == (1.0, 1)


@pytest.mark.parametrize(("threads", "spinning"), [(1, ("0", None)), (2, ("1", "1")), (4, ("1", "1"))])
def test_several_threads_spin_during_a_run_and_stop_after_one_thread_never_spins(
    threads: int, spinning: tuple[str, str | None]
) -> None:
    options = session_options(threads)
    assert options.intra_op_num_threads == threads
    read = tuple(_entry_of(options, key) for key in ("session.intra_op.allow_spinning", "session.force_spinning_stop"))
    assert read == spinning


def _entry_of(options: Any, key: str) -> str | None:
    try:
        return str(options.get_session_config_entry(key))
    except RuntimeError:  # onnxruntime's answer for an entry never set
        return None


def _plan_cpu(plan: dict[str, Any]) -> None:
    for planned in plan["slices"]:
        planned["cpu"], planned["threads"] = PLANNED[planned["id"]]


@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("cpu")
    return sliced(negate_twice(work / "negate.onnx", 65536), work / "slices", slices=2, edit=_plan_cpu)


def test_the_slicer_writes_each_slices_planned_cpu_and_threads(planned: Path) -> None:
    manifest = manifests.load(planned)
    assert {e.id: (e.cpu, e.threads) for e in manifest.slices} == PLANNED


def test_a_manifest_with_no_threads_is_refused(planned: Path, tmp_path: Path) -> None:
    data = json.loads((planned / manifests.FILE_NAME).read_text())
    data["slices"][0]["threads"] = 0
    with pytest.raises(ManifestError, match="slice s0 needs threads of at least 1"):
        manifests.parse(data, planned)


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/stats", timeout=10) as response:
        return dict(json.loads(response.read()))


@pytest.mark.parametrize(("pinned", "cores", "expected"), [(None, 2, {"s0": 2, "s1": 1}), (3, 8, {"s0": 3, "s1": 3})])
def test_local_workers_run_their_planned_threads_within_the_cores(
    planned: Path, pinned: int | None, cores: int, expected: dict[str, int]
) -> None:
    """s0 is planned 3 threads: on 2 cores it gets 2; --threads pins every worker."""
    server = LocalServer(planned, transport="shm", port=free_port(), threads=pinned, cores=cores)
    thread = ServerThread(server)
    try:
        for slice_id, worker in server.workers.items():
            assert worker.process is not None
            args = list(worker.process.args)  # type: ignore[arg-type]
            assert args[args.index("--threads") + 1] == str(expected[slice_id])
            assert _environ(worker.process.pid)["OMP_NUM_THREADS"] == str(expected[slice_id])
            assert _stats(worker.url)["threads"] == expected[slice_id]  # the session's, read back
    finally:
        thread.stop()
