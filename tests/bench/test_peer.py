"""The peer the benchmark holds mopar against: plain onnxruntime with its default options, in a
process of its own; and the turns the three servings take."""

from __future__ import annotations

import asyncio
import statistics

import onnxruntime as ort

from mopar.bench.peer import Peer, described
from mopar.bench.serving import MoparServing, _alternate
from mopar.model.modelfile import load_model
from mopar.plan import planfile
from mopar.plan.planner import Constraints
from mopar.plan.planning import plan_model, whole_plan
from mopar.profile.profiler import profile_model
from mopar.slice.slicer import slice_model
from slice_runtime import v2
from slice_runtime.sessions import open_session
from slice_runtime.tensors import random_inputs


def test_the_peer_runs_onnxruntimes_defaults_in_its_own_process(small_model) -> None:
    peer = Peer(small_model("mobilenetv2"), threads=1)
    try:
        times, wall = peer.run(6)
        parallel, _ = peer.run(4, concurrency=2)
        stats = peer.stats()
    finally:
        peer.close()
    assert len(times) == 6 and all(t > 0 for t in times) and wall >= sum(times) * 0.99
    assert len(parallel) == 4
    defaults = ort.SessionOptions()
    defaults.intra_op_num_threads = 1  # the one setting the benchmark gives it
    assert stats["options"] == described(defaults)
    assert stats["peak_rss_bytes"] > 40 * 2**20  # its own process: an interpreter and onnxruntime


def test_the_servings_take_turns(small_model, tmp_path) -> None:
    model = load_model(small_model("mobilenetv2"))
    profile = profile_model(model, runs=2, warmup=1, measure_memory=False, measure_splits=False)
    partitioned = plan_model(model, profile, Constraints(slices=2))
    directories = {}
    for label, chosen in (("whole", whole_plan(partitioned)), ("partitioned", partitioned)):
        slice_model(model, planfile.to_json(chosen, profile.model, profile.tensor_specs, {}), tmp_path / label)
        directories[label] = tmp_path / label
    feeds = random_inputs(model.inputs)
    reference = dict(zip([o.name for o in model.outputs], open_session(model.serialized()).run(None, feeds)))
    body, headers = v2.encode_request(feeds, binary=True)
    model_file = tmp_path / "model.onnx"
    model_file.write_bytes(model.serialized())

    async def drive() -> list[str]:
        import aiohttp

        turns: list[str] = []
        peers = {"peer": Peer(model_file), "peer_best": Peer(model_file, threads=2)}
        servings = [MoparServing(directories[label], "shm", label) for label in ("whole", "partitioned")]
        try:
            async with aiohttp.ClientSession() as session:
                for serving in servings:
                    await serving.start(session, body, headers)
                served = await _alternate(peers, servings, reference, 4, 1, 1, lambda *_: None, turns)
                for label in peers:
                    assert len(served[label].latencies_ms) == 4 and statistics.median(served[label].latencies_ms) > 0
                assert all(len(s.served.latencies_ms) == 4 and s.served.mismatches == 0 for s in servings)
        finally:
            for peer in peers.values():
                peer.close()
            for serving in servings:
                await serving.stop()
        return turns

    assert asyncio.run(drive()) == ["peer", "peer_best", "whole", "partitioned"] * 4
