"""`mopar bench MODEL`: the model served whole and partitioned, same machine, same run.

Both are served the same way (`slice_runtime.local`: the same gateway, transport and
one-thread workers; the whole model is a plan of one slice), warmed up, then sent the
same requests. Reported: client-side latency percentiles and throughput; per function
its measured peak RSS and its median handling time (read + compute + write, what a
platform bills); from those, per pricing table, the allocated memory (peak RSS rounded
up to the platform's step, never a guess), GB-seconds and cost per million requests;
bytes moved raw and on the wire; and the ratios.

Resource efficiency = memory used over time / memory allocated over time. "Used" is what
the function's nodes touch while they run (the runtime, each node's own weights, the
live activations; `planner.Option.touched_byte_ms`), scaled to the measured duration;
"allocated" is the measured allocation times the billed duration.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from mopar.errors import UsageError
from mopar.model.modelfile import ModelFile
from mopar.plan import planfile, pricing
from mopar.plan.memory import MB
from mopar.plan.planner import Option, Plan
from mopar.profile.profiler import Profile, machine_facts
from mopar.slice.slicer import slice_model
from slice_runtime import manifest as manifests
from slice_runtime import v2
from slice_runtime.local import LocalServer, free_port
from slice_runtime.sessions import open_session
from slice_runtime.tensors import random_inputs

TABLES = ("lambda", "lambda-cpu-scaled", "knative")
Report = Callable[[str, int, int], None]


@dataclass
class Served:
    """What one serving of a sliced model measured."""

    latencies_ms: list[float]
    wall_s: float
    stats: dict[str, dict[str, Any]]  # per slice id, the worker's /stats after the run
    mismatches: int


async def _drive(
    server: LocalServer,
    body: bytes,
    headers: Mapping[str, str],
    reference: Mapping[str, np.ndarray],
    requests: int,
    concurrency: int,
    warmup: int,
    report: Report,
    label: str,
) -> Served:
    assert server.plane is not None
    url = f"{server.url}/v2/models/{server.plane.name}/infer"
    latencies: list[float] = []
    mismatches = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> float:
            nonlocal mismatches
            started = time.perf_counter()
            async with session.post(url, data=body, headers=dict(headers)) as response:
                payload = await response.read()
                if response.status != 200:
                    raise UsageError(f"{label}: the gateway answered {response.status}: {payload[:200]!r}")
                elapsed = (time.perf_counter() - started) * 1000.0
                outputs = v2.decode_response(payload, response.headers.get(v2.HEADER_LENGTH))
            if any(not np.allclose(outputs[k], v, rtol=1e-4, atol=1e-5) for k, v in reference.items()):
                mismatches += 1
            return elapsed

        for _ in range(warmup):
            await one()
        for worker in server.workers.values():
            async with session.post(f"{worker.url}/stats/reset"):
                pass
        slots = asyncio.Semaphore(concurrency)
        done = 0

        async def bounded() -> None:
            nonlocal done
            async with slots:
                latencies.append(await one())
            done += 1
            report(label, done, requests)

        started = time.perf_counter()
        await asyncio.gather(*(bounded() for _ in range(requests)))
        wall = time.perf_counter() - started
        stats = {}
        for slice_id, worker in server.workers.items():
            async with session.get(f"{worker.url}/stats") as response:
                stats[slice_id] = await response.json()
    return Served(latencies, wall, stats, mismatches)


async def _serve(directory: Path, transport: str, **drive: Any) -> Served:
    server = LocalServer(directory, transport=transport, port=free_port(), namespace="bench")
    await server.start()
    try:
        return await _drive(server, **drive)
    finally:
        await server.stop()


def _functions(plan: Plan, manifest: manifests.Manifest, served: Served) -> list[dict[str, Any]]:
    """One row per function (slice or sub-slice): measured RSS and time, planned touch."""
    by_group: dict[str, Option] = {manifests.slice_id(i): option for i, option in enumerate(plan.slices)}
    rows = []
    for entry in manifest.slices:
        option = by_group[entry.group or entry.id]
        stats = served.stats[entry.id]
        measured_ms = float(stats["total_ms"])
        rows.append(
            {
                "id": entry.id,
                "rss_mb": round(stats["peak_rss_bytes"] / MB, 1),
                "time_ms": round(measured_ms, 3),
                "compute_ms": stats["compute_ms"],
                "read_ms": stats["read_ms"],
                "write_ms": stats["write_ms"],
                "runs": stats["runs"],
                "bytes_raw": stats["read_raw_bytes"] + stats["write_raw_bytes"],
                "bytes_compressed": stats["read_wire_bytes"] + stats["write_wire_bytes"],
                "touched_byte_ms": option.touched_byte_ms / option.parts * measured_ms / max(option.duration_ms, 1e-9),
            }
        )
    return rows


def _figures(served: Served, functions: list[dict[str, Any]], requests: int) -> dict[str, Any]:
    latencies = sorted(served.latencies_ms)
    figures: dict[str, Any] = {
        "p50_ms": round(float(np.percentile(latencies, 50)), 3),
        "p95_ms": round(float(np.percentile(latencies, 95)), 3),
        "p99_ms": round(float(np.percentile(latencies, 99)), 3),
        "throughput_rps": round(requests / served.wall_s, 3),
        "functions": len(functions),
        "memory_mb": {},
        "gb_seconds": {},
        "cost_per_million_usd": {},
        "resource_efficiency": {},
        "mismatched_outputs": served.mismatches,
    }
    for name in TABLES:
        table = pricing.load(name)
        memory = [table.allocate_mb(f["rss_mb"]) for f in functions]
        figures["memory_mb"][name] = memory
        figures["gb_seconds"][name] = round(
            sum(table.gb_seconds(m, f["time_ms"]) for m, f in zip(memory, functions)), 8
        )
        figures["cost_per_million_usd"][name] = round(
            1e6 * sum(table.invocation_usd(m, f["time_ms"]) for m, f in zip(memory, functions)), 6
        )
        allocated = sum(m * MB * table.billed_ms(f["time_ms"], m) for m, f in zip(memory, functions))
        figures["resource_efficiency"][name] = round(sum(f["touched_byte_ms"] for f in functions) / allocated, 4)
    return figures


def bench(
    model: ModelFile,
    profile: Profile,
    plan: Plan,
    whole_plan: Plan,
    requests: int = 50,
    concurrency: int = 1,
    transport: str = "shm",
    warmup: int = 3,
    work_dir: Path | None = None,
    progress: Report | None = None,
) -> dict[str, Any]:
    report = progress or (lambda phase, done, total: None)
    if requests < 1 or concurrency < 1:
        raise UsageError("--requests and --concurrency must be at least 1")
    work = Path(work_dir or tempfile.mkdtemp(prefix="mopar-bench-"))
    feeds = random_inputs(model.inputs, seed=0, ranges=model.input_ranges)
    reference = dict(zip([o.name for o in model.outputs], open_session(model.serialized()).run(None, feeds)))
    body, headers = v2.encode_request(feeds, binary=True, binary_outputs=True)
    results = {}
    for label, chosen in (("whole", whole_plan), ("partitioned", plan)):
        data = planfile.to_json(chosen, profile.model, profile.tensor_specs, profile.settings.get("input_shapes", {}))
        manifest = slice_model(model, data, work / label)
        served = asyncio.run(
            _serve(
                work / label,
                transport,
                body=body,
                headers=headers,
                reference=reference,
                requests=requests,
                concurrency=concurrency,
                warmup=warmup,
                report=report,
                label=label,
            )
        )
        functions = _functions(chosen, manifest, served)
        results[label] = {**_figures(served, functions, requests), "slices": functions}
    whole, ours = results["whole"], results["partitioned"]
    ratios = {
        "cost": {t: round(whole["cost_per_million_usd"][t] / ours["cost_per_million_usd"][t], 4) for t in TABLES},
        "latency_p50": round(ours["p50_ms"] / whole["p50_ms"], 4),
        "resource_efficiency": {
            t: round(ours["resource_efficiency"][t] / whole["resource_efficiency"][t], 4) for t in TABLES
        },
        "throughput": round(ours["throughput_rps"] / whole["throughput_rps"], 4),
    }
    transfer = _transfer_overhead(ours["slices"])
    return {
        "model": {"name": model.name, "sha256": model.sha256, "weights_mb": round(model.weight_bytes / MB, 1)},
        "machine": machine_facts(1, "all"),
        "settings": {
            "requests": requests,
            "concurrency": concurrency,
            "warmup": warmup,
            "transport": transport,
            "objective": plan.constraints.objective,
            "pricing": plan.pricing.name,
            "threads_per_function": 1,
        },
        "plan": {
            "slices": len(plan.slices),
            "subslices": [o.parts for o in plan.slices],
            "predicted_cost_ratio": round(plan.whole.cost_usd / max(plan.cost_usd, 1e-15), 4),
        },
        "whole": whole,
        "partitioned": ours,
        "ratios": ratios,
        "transfer_overhead": transfer,
    }


def _transfer_overhead(slices: list[dict[str, Any]]) -> dict[str, Any]:
    """Per function: (read + write) / compute — the cost of a cut against the work it separates."""
    shares = {s["id"]: round((s["read_ms"] + s["write_ms"]) / max(s["compute_ms"], 1e-9), 4) for s in slices}
    return {
        "per_function": shares,
        "max": max(shares.values()) if shares else 0.0,
        "median": statistics.median(shares.values()) if shares else 0.0,
    }


def save(result: Mapping[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(result, indent=1) + "\n")
