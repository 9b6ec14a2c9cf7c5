"""`mopar bench --batching` as a user runs it: whole and partitioned served again with dynamic
batching, every answer checked against the whole model, a request costing its functions less
than one run each."""

from __future__ import annotations

import json

import onnx

from mopar.model import zoo
from tests.support import run_cli


def test_bench_with_batching_reports_both_and_merges(tmp_path) -> None:
    model = tmp_path / "resnet.onnx"
    onnx.save_model(zoo.build("resnet50", scale=0.125, image=32, batch="dynamic"), str(model))
    out = tmp_path / "result.json"
    done = run_cli(
        "bench", str(model), "--max-batch", "4", "--batching", "--concurrency", "8", "--requests", "16",
        "--slices", "2", "--warmup", "1", "-o", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "dynamic batching: concurrency 8, max batch 4" in done.stdout
    result = json.loads(out.read_text())
    for label in ("whole", "partitioned"):
        plain, batched = result[label], result["batched"][label]
        assert plain["mismatched_outputs"] == batched["mismatched_outputs"] == 0
        assert plain["slices"][0]["runs_per_request"] == 1.0
        # Eight in flight, at most two batches per stage at once: the others wait and merge.
        assert batched["slices"][0]["runs_per_request"] < 1.0, batched["slices"]
    assert result["partitioned"]["functions"] == 2


def test_bench_batching_needs_a_maximum_batch(tmp_path) -> None:
    model = tmp_path / "resnet.onnx"
    onnx.save_model(zoo.build("resnet50", scale=0.125, image=32, batch="dynamic"), str(model))
    done = run_cli("bench", str(model), "--batching", "--requests", "2")
    assert done.returncode == 2
    assert "--batching needs a model with a symbolic batch and --max-batch of 2 or more" in done.stderr
