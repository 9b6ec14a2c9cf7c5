"""The servings `mopar bench` drives, and the turns they take (I/O).

Every serving is up at once and they take turns, request by request (peer, whole,
partitioned, peer, ...), so the machine's drift hits all of them alike. A mopar serving is a
sliced model behind a local gateway (`slice_runtime.local`), its workers here or on other
hosts, driven over HTTP as a client would; every response is checked against the whole
model's outputs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from mopar.bench.peer import Peer
from mopar.errors import UsageError
from slice_runtime import calls, v2
from slice_runtime.gateway.batching import BatchingPolicy
from slice_runtime.local import Host, LocalServer, free_port

Report = Callable[[str, int, int], None]


@dataclass
class Served:
    """What one serving measured."""

    latencies_ms: list[float] = field(default_factory=list)
    busy_s: float = 0.0  # wall time of its turns: throughput is requests / busy
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # per slice id, the worker's /stats
    mismatches: int = 0
    runs_before: dict[str, int] = field(default_factory=dict)  # per slice id, runs of the warm-up


class MoparServing:
    """A sliced model behind a local gateway, driven over HTTP as a client would."""

    def __init__(
        self,
        directory: Path,
        transport: str,
        label: str,
        *,
        codec: str = "auto",
        hosts: Mapping[str, Host] | None = None,
        inline_limit: int = calls.DEFAULT_INLINE_LIMIT,
        namespace: str | None = None,
        batching: BatchingPolicy | None = None,
        cores: int | None = None,
    ) -> None:
        # Each worker runs its slice's planned threads, at most `cores` (the run's CPUs).
        self._server = partial(
            LocalServer,
            directory,
            transport=transport,
            namespace=namespace or f"bench-{label}",
            worker_args=["--codec", codec],
            hosts=dict(hosts or {}),
            inline_limit=inline_limit,
            batching=batching,
            cores=cores,
        )
        self.server: LocalServer | None = None
        self.label = label
        self.codec = codec
        self.served = Served()

    async def start(self, session: aiohttp.ClientSession, body: bytes, headers: Mapping[str, str]) -> None:
        # Ports are taken when the servings start, one after another: taken earlier, one could be
        # handed out meanwhile to another serving's worker or to a client connection.
        self.server = self._server(port=free_port())
        await self.server.start()
        assert self.server.plane is not None
        self.url = f"{self.server.url}/v2/models/{self.server.plane.name}/infer"
        self.session, self.body, self.headers = session, body, dict(headers)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()

    async def one(self, reference: Mapping[str, np.ndarray]) -> float:
        started = time.perf_counter()
        async with self.session.post(self.url, data=self.body, headers=self.headers) as response:
            payload = await response.read()
            elapsed = (time.perf_counter() - started) * 1000.0
            if response.status != 200:
                raise UsageError(f"{self.label}: the gateway answered {response.status}: {payload[:200]!r}")
            outputs = v2.decode_response(payload, response.headers.get(v2.HEADER_LENGTH))
        if any(not np.allclose(outputs[k], v, rtol=1e-4, atol=1e-5) for k, v in reference.items()):
            self.served.mismatches += 1
        return elapsed

    async def turn(self, count: int, concurrency: int, reference: Mapping[str, np.ndarray], record: bool) -> None:
        slots = asyncio.Semaphore(concurrency)

        async def bounded() -> float:
            async with slots:
                return await self.one(reference)

        started = time.perf_counter()
        latencies = await asyncio.gather(*(bounded() for _ in range(count)))
        if record:
            self.served.busy_s += time.perf_counter() - started
            self.served.latencies_ms += latencies

    async def worker_stats(self, reset: bool = False) -> None:
        assert self.server is not None, "started"
        for slice_id, worker in self.server.workers.items():
            if reset:  # a reset clears the medians and bytes, not the count of runs
                async with self.session.get(f"{worker.url}/stats") as response:
                    self.served.runs_before[slice_id] = int((await response.json())["runs"])
                async with self.session.post(f"{worker.url}/stats/reset"):
                    pass
            else:
                async with self.session.get(f"{worker.url}/stats") as response:
                    self.served.stats[slice_id] = await response.json()


# After a peer's turn its idle intra-op threads spin on (onnxruntime's default): a pause lets
# them stop before the next serving's turn, so they do not steal its cores.
PEER_SETTLE_S = 0.1


async def _alternate(
    peers: Mapping[str, Peer],
    mopar: list[MoparServing],
    reference: Mapping[str, np.ndarray],
    requests: int,
    concurrency: int,
    warmup: int,
    report: Report,
    turns: list[str],
) -> dict[str, Served]:
    """Turns in the order the peers, then `mopar` in order, until each has served `requests`; a
    turn is one request at concurrency 1, else a block of 4 x concurrency with `concurrency` in
    flight. `turns` records who had each turn."""
    peer_served = {label: Served() for label in peers}
    block = 1 if concurrency == 1 else 4 * concurrency
    for serving in mopar:
        await serving.turn(warmup, 1, reference, record=False)
        await serving.worker_stats(reset=True)
    for peer in peers.values():
        peer.run(max(warmup, 1))
    done = 0
    while done < requests:
        count = min(block, requests - done)
        for label, peer in peers.items():
            times, wall_ms = await asyncio.to_thread(peer.run, count, concurrency)
            turns.append(label)
            peer_served[label].latencies_ms += times
            peer_served[label].busy_s += wall_ms / 1000.0
            await asyncio.sleep(PEER_SETTLE_S)
        for serving in mopar:
            await serving.turn(count, concurrency, reference, record=True)
            turns.append(serving.label)
        done += count
        report("requests", done, requests)
    for serving in mopar:
        await serving.worker_stats()
    return peer_served


async def serve_all(
    model_file: Path,
    servings: Sequence[MoparServing],
    peer_threads: Mapping[str, int],
    body: bytes,
    headers: Mapping[str, str],
    **drive: Any,
) -> tuple[dict[str, Served], dict[str, dict[str, Any]]]:
    """Start the peers (label: intra-op threads) and every serving, let them take turns
    (`_alternate`), stop them all; what each served, and each peer's stats."""
    peers: dict[str, Peer] = {}
    try:
        for label, threads in peer_threads.items():
            peers[label] = await asyncio.to_thread(Peer, model_file, threads)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            for serving in servings:
                await serving.start(session, body, headers)
            peer_served = await _alternate(peers, list(servings), **drive)
        peer_stats = {label: await asyncio.to_thread(peer.stats) for label, peer in peers.items()}
        for label, served in peer_served.items():
            served.stats = {label: peer_stats[label]}
    finally:
        for peer in peers.values():
            peer.close()
        for serving in servings:
            await serving.stop()
    return {**peer_served, **{s.label: s.served for s in servings}}, peer_stats
