"""Serve a sliced model with its workers on other hosts and check every answer against the whole
model; run on the gateway's host (`ip netns exec GW python -m tests.support.serve_across ...`),
since the gateway runs in this process and the client beside it.

    python -m tests.support.serve_across DIR MODEL.onnx TRANSPORT CODEC NETNS=ADDRESS...

Prints one JSON object: per seed the largest difference from the whole model and whether it is
within tolerance, and the workers' /stats.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import aiohttp
import numpy as np

from mopar.bench.topology import parse_host
from mopar.model.modelfile import load_model
from slice_runtime import manifest as manifests
from slice_runtime import v2
from slice_runtime.local import LocalServer, free_port
from slice_runtime.sessions import open_session
from slice_runtime.tensors import random_inputs

SEEDS = (1, 2, 3)


async def check(directory: Path, model_path: Path, transport: str, codec: str, hosts: list[str]) -> dict[str, object]:
    model = load_model(model_path)
    whole = open_session(model.serialized())
    placed = [parse_host(h) for h in hosts]
    slices = manifests.load(directory).slices
    server = LocalServer(
        directory,
        transport=transport,
        port=free_port(),
        namespace="across",
        inline_limit=0,  # every activation through the store, across the links
        worker_args=["--codec", codec],
        hosts={entry.id: placed[i % len(placed)] for i, entry in enumerate(slices)},
    )
    await server.start()
    answers = []
    try:
        assert server.plane is not None
        url = f"{server.url}/v2/models/{server.plane.name}/infer"
        async with aiohttp.ClientSession() as session:
            for seed in SEEDS:
                feeds = random_inputs(model.inputs, seed=seed)
                expected = dict(zip([o.name for o in model.outputs], whole.run(None, feeds)))
                body, headers = v2.encode_request(feeds, binary=True, binary_outputs=True)
                async with session.post(url, data=body, headers=headers) as response:
                    payload = await response.read()
                    assert response.status == 200, payload[:300]
                    outputs = v2.decode_response(payload, response.headers.get(v2.HEADER_LENGTH))
                answers.append(
                    {
                        "seed": seed,
                        "outputs": sorted(outputs),
                        "max_diff": max(float(np.max(np.abs(outputs[k] - v))) for k, v in expected.items()),
                        "close": all(np.allclose(outputs[k], v, rtol=1e-4, atol=1e-5) for k, v in expected.items()),
                    }
                )
            stats = {}
            for slice_id, worker in server.workers.items():
                async with session.get(f"{worker.url}/stats") as response:
                    stats[slice_id] = {**await response.json(), "url": worker.url}
    finally:
        await server.stop()
    return {"answers": answers, "expected_outputs": sorted(o.name for o in model.outputs), "stats": stats}


def main() -> None:
    directory, model, transport, codec, *hosts = sys.argv[1:]
    print(json.dumps(asyncio.run(check(Path(directory), Path(model), transport, codec, hosts))))


if __name__ == "__main__":
    main()
