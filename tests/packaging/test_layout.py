"""The layout's promises that a static check cannot see: what a slice pod and the operator
really load, and the one version everything reports."""

from __future__ import annotations

import subprocess
import sys

import onnx
import yaml

from slice_runtime import tensors
from slice_runtime.version import version
from tests.support import ROOT


def _loaded_after(statement: str) -> set[str]:
    code = f"{statement}; import sys; print(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return set(done.stdout.split())


def test_a_slice_worker_loads_neither_onnx_nor_the_control_plane() -> None:
    loaded = _loaded_after("import slice_runtime.worker.entry, slice_runtime.gateway.entry")
    assert "onnxruntime" in loaded  # the worker's own dependency, for contrast
    assert "onnx" not in loaded
    assert not {m for m in loaded if m == "mopar" or m.startswith("mopar.")}


def test_a_worker_on_shared_memory_does_not_load_the_redis_client() -> None:
    loaded = _loaded_after(
        "import slice_runtime.worker.entry; from slice_runtime.store import open_transport as o; o('shm', 'n', 'm')"
    )
    assert "redis" not in loaded


def test_the_operators_handlers_load_no_ml_stack() -> None:
    loaded = _loaded_after("import mopar.operator.handlers")
    assert {"kopf", "mopar.operator.reconcile"} <= loaded
    assert not {"onnx", "onnxruntime", "mopar.profile", "mopar.slice", "mopar.operator.prepare"} & loaded


def test_element_types_match_onnx() -> None:
    # slice_runtime keeps ONNX's element type numbers itself, so that slice pods need no onnx.
    for elem_type in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13):
        name = onnx.TensorProto.DataType.Name(elem_type)
        expected = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
        assert tensors.dtype_of_onnx(elem_type) == ("object" if name == "STRING" else str(expected)), name


def test_the_chart_and_the_package_report_one_version() -> None:
    chart = yaml.safe_load((ROOT / "charts" / "mopar" / "Chart.yaml").read_text())
    assert str(chart["appVersion"]) == version()
