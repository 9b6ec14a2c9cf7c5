"""Across hosts: Redis, the gateway and every slice on hosts of their own (network namespaces
joined by 200 Mbit/s links, `tests/support/topology.py`). A partitioned model served there
answers as the whole model does; `mopar calibrate` measures the link, not this machine's
loopback; `mopar bench` serves the same slices once per codec across the links."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mopar.bench.topology import parse_rate
from mopar.model.modelfile import load_model
from mopar.plan import graph as graphs
from mopar.plan import planfile, pricing
from mopar.plan.linkmodel import LinkModel
from mopar.plan.memory import MB, MemoryModel
from mopar.plan.planner import Constraints, Coster, Plan
from mopar.plan.segments import sweep
from mopar.profile.profiler import profile_model
from mopar.slice.slicer import slice_model
from tests.support import ROOT
from tests.support.topology import RATE, WORKERS, Hosts

LINK_BYTES_PER_MS = parse_rate(RATE) / 8 / 1000


def _mopar_on(hosts: Hosts, host: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    done = hosts.network.run(
        host, [sys.executable, "-m", "mopar", *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def sliced(small_model, tmp_path_factory) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    """The small ResNet cut into three slices at a third and two thirds of its cut positions.
    Cut by the planner, this model's measured milliseconds are noise, and its slices may pass on
    a 2 KB pooled vector: nothing for a codec to show across a link."""
    path = small_model("resnet50")
    model = load_model(path)
    profile = profile_model(model, runs=2, measure_memory=False, measure_splits=False)
    graph = graphs.from_model(model.proto, profile)
    positions = graph.cut_positions()
    cuts = [0, positions[len(positions) // 3], positions[2 * len(positions) // 3], len(graph)]
    constraints = Constraints(slices=3, split=False)
    link = LinkModel.load()
    coster = Coster(graph, MemoryModel(90 * MB), link, pricing.LAMBDA, constraints)
    options = [coster.option(next(sweep(graph, a, [b]))) for a, b in zip(cuts, cuts[1:])]
    assert all(options)
    plan = Plan(graph, constraints, pricing.LAMBDA, link, MemoryModel(90 * MB), options, options[0], 0.0)  # type: ignore[arg-type]
    directory = tmp_path_factory.mktemp("across") / "slices"
    slice_model(model, planfile.to_json(plan, profile.model, profile.tensor_specs, {}), directory)
    return directory, path


@pytest.fixture(scope="module")
def link_json(hosts: Hosts, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """The link model `mopar calibrate` measures from the gateway's host across the topology."""
    path = tmp_path_factory.mktemp("link") / "link.json"
    worker = hosts.topology.worker_host("w0")
    _mopar_on(hosts, "gw", "calibrate", "--transport", hosts.redis_url, "--worker-host", worker, "--repeat", "3",
              "-o", str(path))  # fmt: skip
    return path


def test_every_link_is_rate_limited_both_ways(hosts: Hosts) -> None:
    topology = hosts.topology
    for index, host in enumerate(topology.hosts):
        for namespace, device in ((topology.namespace(host), "eth0"), (topology.switch, f"p{index}")):
            shown = subprocess.run(["tc", "-n", namespace, "qdisc", "show", "dev", device], capture_output=True,
                                   text=True, check=True).stdout  # fmt: skip
            assert "tbf" in shown and "rate 200Mbit" in shown, (host, device, shown)


def test_a_model_served_across_hosts_answers_as_the_whole_model(hosts: Hosts, sliced) -> None:  # type: ignore[no-untyped-def]
    directory, model = sliced
    counted = {host: hosts.network.link_bytes(host) for host in hosts.topology.hosts}
    placed = [hosts.topology.worker_host(host) for host in WORKERS]
    done = hosts.network.run(
        "gw",
        [sys.executable, "-m", "tests.support.serve_across", str(directory), str(model), hosts.redis_url, "zstd1",
         *placed],
        capture_output=True, text=True, cwd=ROOT, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert [a["seed"] for a in result["answers"]] == [1, 2, 3]
    for answer in result["answers"]:  # every output of every request, against onnxruntime on the whole model
        assert answer["outputs"] == result["expected_outputs"] and answer["close"], answer
    stats = result["stats"]
    assert sorted(stats) == ["s0", "s1", "s2"]
    moved_by_host = {}
    for slice_id, host in zip(sorted(stats), WORKERS):
        worker = stats[slice_id]
        assert worker["url"].startswith(f"http://{hosts.topology.address(host)}:")  # on its own host
        assert worker["runs"] == 3
        moved_by_host[host] = worker["read_wire_bytes"] + worker["write_wire_bytes"]
    compressed = [s for s in ("s0", "s1") if stats[s]["write_wire_bytes"] < stats[s]["write_raw_bytes"]]
    assert compressed == ["s0", "s1"]  # their activations crossed the links compressed (logits are too small)
    after = {host: hosts.network.link_bytes(host) for host in hosts.topology.hosts}
    for host, moved in moved_by_host.items():  # what each worker read and wrote crossed its own link
        received, sent = (b - a for a, b in zip(counted[host], after[host]))
        assert received + sent >= moved > 0
    written = sum(stats[s]["write_wire_bytes"] for s in stats)
    assert after["redis"][0] - counted["redis"][0] >= written  # ... and reached Redis on its host


def test_calibrate_measures_the_link_not_this_machine(link_json: Path, hosts: Hosts) -> None:
    link = json.loads(link_json.read_text())
    # Nothing crosses a 200 Mbit/s link faster than 200 Mbit/s; this machine's loopback moves
    # about 1 GB/s (40 times as much).
    assert 0 < link["bytes_per_ms"] <= 1.1 * LINK_BYTES_PER_MS
    assert 0 < link["call_bytes_per_ms"] <= 1.1 * LINK_BYTES_PER_MS
    assert hosts.redis_url in link["source"] and hosts.topology.worker_host("w0") in link["source"]
    assert {"zstd1", "zstd-5"} <= set(link["codecs"])


def test_bench_serves_the_same_slices_once_per_codec_across_hosts(
    hosts: Hosts, link_json: Path, small_model, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "result.json"
    _mopar_on(
        hosts, "gw", "bench", str(small_model("resnet50")), "--slices", "3", "--no-split", "--link", str(link_json),
        "--transport", hosts.redis_url, *hosts.worker_hosts(), "--inline-kb", "0", "--codec", "auto",
        "--codec", "zstd:1", "--requests", "3", "--warmup", "1", "-o", str(out),
    )  # fmt: skip
    result = json.loads(out.read_text())
    settings = result["settings"]
    assert settings["codecs"] == ["auto", "zstd1"] and settings["inline_bytes"] == 0
    assert settings["worker_hosts"] == [hosts.topology.address(h) for h in WORKERS]
    assert settings["turns"][:5] == ["peer", "peer_best", "whole", "partitioned", "partitioned[zstd1]"]
    assert result["ratios"]["codec_p50"]["zstd1"] > 0
    for side in ("whole", "partitioned"):
        assert result[side]["mismatched_outputs"] == 0
    for name, figures in result["codecs"].items():
        assert figures["mismatched_outputs"] == 0, name
        transfer = figures["transfer"]
        assert transfer["predicted_ms"] > 0 and transfer["measured_ms"] > 0
        assert set(transfer["per_function"]) == {"s0", "s1", "s2"}
    auto, forced = (result["codecs"][name]["transfer"] for name in ("auto", "zstd1"))
    assert auto["bytes_raw_per_request"] == forced["bytes_raw_per_request"] > 0  # the same slices, the same tensors
