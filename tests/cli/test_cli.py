"""The command line: --help everywhere; bad input is one line on stderr and exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from mopar.cli.main import build_parser, main
from tests.support import ROOT, run_cli


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


def _symbolic_model(path: Path, features: int | str = 4) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", features])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path


def _assert_one_line_error(done, *fragments: str) -> None:  # type: ignore[no-untyped-def]
    """Exit status 2, no traceback, and the error on one line (after any progress lines)."""
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and done.stderr.strip().splitlines()[-1] == errors[0], done.stderr
    for fragment in fragments:
        assert fragment in errors[0]


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
    """A symbolic leading dimension is the batch (profiled at 1); any other needs --input-shape."""
    path = _symbolic_model(tmp_path / "dynamic.onnx", features="features")
    _assert_one_line_error(run_cli("profile", str(path)), "'x'", "symbolic", "(1xfeatures)", "--input-shape x=")


def test_symbolic_input_with_input_shape_profiles(tmp_path) -> None:
    path = _symbolic_model(tmp_path / "dynamic.onnx")
    done = run_cli("profile", str(path), "--input-shape", "x=3x4", "--runs", "2", "--no-memory")
    assert done.returncode == 0, done.stderr
    assert "relu" in done.stdout


def test_max_batch_sizes_the_plan_of_a_model_with_a_symbolic_batch(tmp_path) -> None:
    path, plan = _symbolic_model(tmp_path / "dynamic.onnx"), tmp_path / "plan.json"
    done = run_cli("plan", str(path), "--max-batch", "4", "-o", str(plan))
    assert done.returncode == 0, done.stderr
    assert "memory for batches up to 4" in done.stdout  # the title (rich wraps the rest)
    data = json.loads(plan.read_text())
    assert data["batch"] == {
        "profiled": 1,
        "max": 4,
        "memory_scale": 4.0,
        "inputs": ["x"],
        "axes": {"x": [0], "y": [0]},
    }
    assert data["memory_model"]["batch_scale"] == 4.0
    done = run_cli("plan", str(path), "--input-shape", "x=2x4", "--max-batch", "1")
    _assert_one_line_error(done, "--max-batch 1 is below the batch of 2 the model was profiled at")


def test_max_batch_of_a_model_without_a_symbolic_batch_is_a_usage_error(small_model) -> None:
    done = run_cli("plan", str(small_model("mobilenetv2")), "--max-batch", "4")
    _assert_one_line_error(done, "--max-batch 4", "has no symbolic batch dimension")


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


def test_plan_slice_verify_end_to_end(small_model, tmp_path) -> None:
    model = str(small_model("resnet50"))
    plan, slices = tmp_path / "plan.json", tmp_path / "slices"
    done = run_cli("plan", model, "--objective", "latency", "-o", str(plan))
    assert done.returncode == 0, done.stderr
    assert "predicted, per request" in done.stdout and "resource efficiency" in done.stdout
    done = run_cli("slice", model, "--plan", str(plan), "-o", str(slices))
    assert done.returncode == 0, done.stderr
    assert (slices / "manifest.json").exists()
    done = run_cli("verify", str(slices), "--model", model, "--trials", "2")
    assert done.returncode == 0, done.stderr
    assert "within tolerance" in done.stdout


def test_verify_fails_with_exit_1_when_a_slice_computes_something_else(small_model, tmp_path) -> None:
    import json

    import numpy as np
    from onnx import numpy_helper

    from slice_runtime.manifest import sha256_file

    model = str(small_model("mobilenetv2"))
    plan, slices = tmp_path / "plan.json", tmp_path / "slices"
    assert run_cli("plan", model, "--objective", "latency", "--max-slices", "3", "-o", str(plan)).returncode == 0
    assert run_cli("slice", model, "--plan", str(plan), "-o", str(slices)).returncode == 0
    manifest = json.loads((slices / "manifest.json").read_text())
    first = slices / manifest["slices"][0]["file"]
    proto = onnx.load(str(first))
    weight = proto.graph.initializer[0]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(1.01), weight.name))
    onnx.save_model(proto, str(first))
    manifest["slices"][0]["sha256"] = sha256_file(first)
    (slices / "manifest.json").write_text(json.dumps(manifest))
    done = run_cli("verify", str(slices), "--model", model, "--trials", "1")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "NO" in done.stdout and "beyond tolerance" in done.stderr


def test_a_corrupt_slice_file_is_refused(small_model, tmp_path) -> None:
    model = str(small_model("lstm"))
    plan, slices = tmp_path / "plan.json", tmp_path / "slices"
    assert run_cli("plan", model, "-o", str(plan)).returncode == 0
    assert run_cli("slice", model, "--plan", str(plan), "-o", str(slices)).returncode == 0
    target = next(slices.glob("s*.onnx"))
    target.write_bytes(target.read_bytes()[:-10])
    _assert_one_line_error(run_cli("verify", str(slices), "--model", model), target.name, "sha256")


def test_unsatisfiable_plans_name_the_bound(small_model) -> None:
    model = str(small_model("bert-base"))
    _assert_one_line_error(run_cli("plan", model, "--max-slice-memory", "100"), "memory bound of 100 MB")
    _assert_one_line_error(
        run_cli("plan", model, "--objective", "slo", "--slo-ms", "0.001"), "below the fastest possible latency"
    )
    _assert_one_line_error(run_cli("plan", model, "--objective", "slo"), "--slo-ms")


def test_serve_answers_v2_requests_and_stops_cleanly_on_ctrl_c(small_model, tmp_path) -> None:
    import json
    import signal
    import subprocess
    import sys
    import urllib.request

    from mopar.model.modelfile import load_model
    from slice_runtime import v2
    from slice_runtime.local import free_port
    from slice_runtime.tensors import random_inputs
    from tests.support.serving import wait_until_ready

    model = str(small_model("mobilenetv2"))
    plan, slices = tmp_path / "plan.json", tmp_path / "slices"
    assert run_cli("plan", model, "-o", str(plan)).returncode == 0
    assert run_cli("slice", model, "--plan", str(plan), "-o", str(slices)).returncode == 0
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mopar", "serve", str(slices), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", server, 60, "mopar serve")
        body, headers = v2.encode_request(random_inputs(load_model(model).inputs))
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v2/models/mobilenetv2/infer", data=body, headers=headers, method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read())["outputs"][0]["shape"] == [1, 1000]
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(30) == 0
    assert "stopping" in server.stderr.read().decode()  # type: ignore[union-attr]


def test_bench_writes_the_documented_result(small_model, tmp_path) -> None:
    import json

    out = tmp_path / "result.json"
    done = run_cli(
        "bench",
        str(small_model("resnet50")),
        "--requests",
        "5",
        "--objective",
        "latency",
        "--max-slices",
        "3",
        "-o",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert {"model", "machine", "settings", "peer", "whole", "partitioned", "ratios", "predicted", "limit"} <= set(
        result
    )
    assert result["settings"]["turns"][:4] == ["peer", "peer_best", "whole", "partitioned"]
    # The peer at its best for latency: every core; served with the threads it reports.
    best = result["peer_best"]["threads"]
    assert best == result["settings"]["peer_threads"]["peer_best"] == int(result["settings"]["max_cpu"])
    assert result["settings"]["peer_options"]["peer_best"]["intra_op_num_threads"] == best
    assert result["settings"]["peer_options"]["peer"]["intra_op_num_threads"] == 1
    for side in ("whole", "partitioned"):  # what the plan predicted, beside what was measured
        assert {"latency_ms", "cost_per_million_usd", "measured_latency_ms", "latency_error"} <= set(
            result["predicted"][side]
        )
    assert set(result["ratios"]["vs_peer"]) == set(result["ratios"]["vs_peer_best"]) == {"whole", "partitioned"}
    assert {"saving", "share_reached", "measured_saving"} <= set(result["limit"])
    for side in ("peer", "peer_best", "whole", "partitioned"):
        figures = result[side]
        assert {
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "throughput_rps",
            "memory_mb",
            "gb_seconds",
            "cost_per_million_usd",
            "resource_efficiency",
        } <= set(figures)
        assert set(figures["cost_per_million_usd"]) == {"kubernetes"}  # the plan's own table
        assert figures.get("mismatched_outputs", 0) == 0
    for entry in result["partitioned"]["slices"]:
        assert {"rss_mb", "time_ms", "bytes_raw", "bytes_compressed"} <= set(entry)
        assert entry["rss_mb"] > 50  # measured from the worker process, not guessed
    assert {"cost", "latency_p50", "resource_efficiency"} <= set(result["ratios"])


def _custom_domain_model(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    node = helper.make_node("Foo", ["x"], ["y"], domain="com.example", name="foo")
    graph = helper.make_graph([node], "g", [x], [y])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path


def _string_model(path: Path) -> Path:
    s = helper.make_tensor_value_info("s", TensorProto.STRING, [1])
    o = helper.make_tensor_value_info("o", TensorProto.STRING, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["s"], ["o"], name="id")], "g", [s], [o])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path


def _escaping_external_data_model(path: Path) -> Path:
    import numpy as np
    from onnx import numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g", [x], [y], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path), save_as_external_data=True, location="w.data", size_threshold=0)
    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../../etc/hostname"
    onnx.save_model(proto, str(path))
    return path


@pytest.mark.parametrize(
    "make, fragments",
    [
        (_custom_domain_model, ("operator Foo of domain 'com.example'", "custom operator")),
        (_string_model, ("'s' is a STRING tensor",)),
        (_escaping_external_data_model, ("'../../etc/hostname'", "outside the model's folder")),
    ],
    ids=["custom-domain", "string-input", "external-data-outside"],
)
def test_models_mopar_cannot_serve_are_one_line(make, fragments, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = make(tmp_path / "model.onnx")
    _assert_one_line_error(run_cli("profile", str(path), "--no-memory", "--runs", "1"), *fragments)


@pytest.mark.parametrize(
    "option, fragment",
    [
        (["--dominance", "-1"], "--dominance: must be at least 0"),
        (["--dominance", "1.5"], "--dominance: must be at most 1"),
        (["--slo-ms", "nan"], "--slo-ms: expected a finite number"),
        (["--slo-ms", "-5"], "--slo-ms: must be above 0"),
        (["--max-slices", "0"], "--max-slices: must be at least 1"),
        (["--threads", "0"], "--threads: must be at least 1"),
    ],
)
def test_numeric_options_are_finite_and_in_range(option: list[str], fragment: str, capsys) -> None:
    # Parsing alone: the parser refuses before the (missing) model is looked at.
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["plan", "model.onnx", *option])
    assert exit_info.value.code == 2
    assert fragment in capsys.readouterr().err


def test_numeric_option_errors_are_one_line() -> None:
    _assert_one_line_error(run_cli("plan", "model.onnx", "--slo-ms", "nan"), "--slo-ms: expected a finite number")
    _assert_one_line_error(run_cli("serve", "dir", "--grace", "-1"), "--grace: must be at least 0")


def test_calibrate_takes_the_store_as_transport_or_redis() -> None:
    for option in ("--transport", "--redis"):
        args = build_parser().parse_args(["calibrate", option, "redis://10.77.0.1:6379/0", "-o", "link.json"])
        assert args.transport == "redis://10.77.0.1:6379/0" and args.worker_host is None


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["bench", "m.onnx", "--codec", "zstd:99"], "zstd level must be in -7..22"),
        (["bench", "m.onnx", "--codec", "gzip"], "--codec 'gzip'"),
        (["bench", "m.onnx", "--worker-host", "w0"], "NETNS=ADDRESS"),
        (["bench", "m.onnx", "--inline-kb", "-1"], "--inline-kb must be 0 or more"),
        (["bench", "m.onnx", "--link", "missing.json"], "missing.json: not a link model"),
        (["plan", "m.onnx", "--link", "missing.json"], "missing.json: not a link model"),
        (["calibrate", "--transport", "ftp://h/0", "-o", "link.json"], "unsupported store URL"),
        (["calibrate", "--worker-host", "10.77.0.3", "-o", "link.json"], "NETNS=ADDRESS"),
        (["calibrate", "--repeat", "0", "-o", "link.json"], "--repeat must be at least 1"),
    ],
)
def test_link_options_are_checked_before_any_work(args: list[str], fragment: str, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mopar: error:") and fragment in lines[0], lines


def test_calibrate_names_an_unreachable_store(tmp_path) -> None:
    from tests.support import free_port

    done = run_cli("calibrate", "--transport", f"redis://127.0.0.1:{free_port()}/0", "-o", str(tmp_path / "l.json"))
    _assert_one_line_error(done, "cannot reach Redis", "PING")
    assert not (tmp_path / "l.json").exists()


def test_a_model_no_partition_beats_is_said_to_stay_whole(small_model, tmp_path) -> None:
    # On a synthetic profile, so the plan is the same on every machine: on one core no cut
    # can run in parallel, and each pays a call.
    from mopar.model.modelfile import load_model
    from tests.support.profiles import synthetic_profile

    path = small_model("mobilenetv2")
    synthetic_profile(load_model(path)).save(tmp_path / "profile.json")
    done = run_cli(
        "plan", str(path), "--profile", str(tmp_path / "profile.json"), "--objective", "latency", "--cores", "1"
    )
    assert done.returncode == 0, done.stderr
    assert "no partition of mobilenetv2 is faster than the model served whole on 1 core" in done.stderr
    assert "it stays whole" in done.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["plan", "{model}", "--pricing", "nosuch"], "--pricing: 'nosuch'"),
        (["plan", "{model}", "--objective", "slo"], "--slo-ms"),
        (["plan", "{model}", "--slices", "3", "--max-slices", "2", "-o", "{tmp}/no/plan.json"], "no directory"),
        (["bench", "{model}", "--pricing", "nosuch"], "--pricing: 'nosuch'"),
        (["bench", "{model}", "--inline-kb", "-1"], "--inline-kb must be 0 or more"),
        (["profile", "{model}", "-o", "{tmp}/no/profile.json"], "no directory"),
        (["profile", "{model}", "--input-shape", "x=1xfour"], "--input-shape wants"),
        (["slice", "{model}", "--plan", "{tmp}/missing.json", "-o", "{tmp}/s"], "missing.json: no such file"),
        (["plan", "{model}", "--profile", "{tmp}/missing.json"], "missing.json: no such file"),
        (["demo", "--model", "alexnet", "--out", "{tmp}/demo"], "alexnet"),
    ],
)
def test_every_argument_is_checked_before_the_model_is_even_read(args: list[str], fragment: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The model is not ONNX at all: an error about the argument proves nothing was loaded or profiled.
    model = tmp_path / "not-a-model.onnx"
    model.write_bytes(b"\x00" * 64)
    done = run_cli(*(a.format(model=model, tmp=tmp_path) for a in args))
    _assert_one_line_error(done, fragment)
    assert not (tmp_path / "demo").exists()


def test_the_operator_without_any_kubernetes_api_is_one_line(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "MOPAR_KUBE"))}
    env["HOME"] = str(tmp_path)  # no ~/.kube/config
    done = subprocess.run([sys.executable, "-m", "mopar", "operator", "--health-port", "0"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env=env, check=False)  # fmt: skip
    _assert_one_line_error(done, "no Kubernetes API to watch", "kubeconfig")


def test_the_demo_keeps_what_it_lists_and_lists_what_it_keeps(tmp_path) -> None:
    out = tmp_path / "demo"
    done = run_cli("demo", "--model", "mobilenetv2", "--scale", "0.25", "--runs", "2", "--requests", "2",
                   "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    listed = done.stdout.split("files: ")[-1].split("(", 1)[1].split(")", 1)[0]
    names = sorted(name.strip().rstrip("/") for name in listed.split(","))  # the console may wrap the line
    assert names == sorted(path.name for path in out.iterdir())
