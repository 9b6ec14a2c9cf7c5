"""One slice's run logic, without HTTP: read the request's inputs from the store, run
onnxruntime, write the outputs under the request's id, and keep the figures `/stats` shows.

The slice file comes from the manifest's directory or, by its sha256, from the artifact
store (verified). onnxruntime runs in a thread so the event loop keeps answering health
checks; at most `concurrency` runs share the thread budget.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slice_runtime import calls, codec, metrics, probes
from slice_runtime import manifest as manifests
from slice_runtime.errors import ManifestError, MissingTensors, TransportError
from slice_runtime.footprint import peak_rss_bytes, rss_bytes
from slice_runtime.sessions import open_serving_session
from slice_runtime.store import Transport, open_transport

log = logging.getLogger("mopar.worker")
# A slice whose runs take less than this (median of its first runs) runs in the event loop's
# thread: handing it to a thread and back costs about 0.1 ms, more than the loop loses.
SHORT_RUN_MS = 0.5
SHORT_RUN_SAMPLES = 5


@dataclass(frozen=True)
class WorkerSettings:
    manifest: Path
    slice_id: str
    transport: str = "redis://127.0.0.1:6379/0"
    namespace: str = "default"
    host: str = "0.0.0.0"
    port: int = 8080
    threads: int | None = None  # intra-op threads; None: the slice's, as planned (the manifest's)
    concurrency: int = 1
    codec_name: str = "auto"  # auto: the planner's setting per tensor (manifest); else one setting for all
    compress_threshold: int = codec.DEFAULT_THRESHOLD_BYTES
    ttl_seconds: float = 300.0
    artifacts: str | None = None  # Redis URL of the artifact store, when the file is not beside the manifest
    cache_dir: Path = Path("/tmp/mopar-cache")


class SliceWorker:
    """One slice: its session, its transport, and the run logic (no HTTP in here)."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.manifest = manifests.load(settings.manifest)
        entries = {e.id: e for e in self.manifest.slices}
        if settings.slice_id not in entries:
            raise ManifestError(f"slice {settings.slice_id!r} is not in the manifest; it has: {', '.join(entries)}")
        self.entry = entries[settings.slice_id]
        self.threads = settings.threads or self.entry.threads
        self.series = metrics.SliceSeries(self.manifest.name, self.entry.id)
        # Each output's codec (auto: the planner's choice in the manifest), parsed once: a bad
        # setting fails at start, not at the first request.
        self.output_codecs = {
            spec.name: self._codec_setting(spec.name, settings.codec_name) for spec in self.entry.outputs
        }
        self.executor = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="onnxruntime")
        self.slots = asyncio.Semaphore(settings.concurrency)
        self.session: Any = None
        self.transport: Transport | None = None
        self.in_flight = 0
        self.runs = 0
        # (read, compute, write, total) ms of recent runs, and bytes moved: what `mopar bench` reads
        self.recent: deque[tuple[float, float, float, float]] = deque(maxlen=1024)
        self.moved = {"read_raw": 0, "read_wire": 0, "write_raw": 0, "write_wire": 0}
        self.store_reachable = probes.ThrottledCheck(self._ping_store)
        self.idle_rss_bytes = 0
        self.short_runs = False  # decided on the first runs' compute times

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        path = await asyncio.get_running_loop().run_in_executor(self.executor, self._slice_file)
        self.transport = open_transport(self.settings.transport, self.settings.namespace, self.manifest.name)
        # What the process holds before its slice: the interpreter, onnxruntime, the HTTP server
        # and the store's client. Every slice pays it for every millisecond it runs.
        self.idle_rss_bytes = rss_bytes()
        started = time.perf_counter()
        self.session = await asyncio.get_running_loop().run_in_executor(
            self.executor, open_serving_session, path, self.threads, self.entry.prepack
        )
        log.info("slice %s loaded from %s in %.2f s", self.entry.id, path, time.perf_counter() - started)

    async def close(self) -> None:
        if self.transport is not None:
            await self.transport.close()
        self.executor.shutdown(wait=True)

    def _slice_file(self) -> Path:
        local = self.manifest.confined(self.entry.file)
        if local.exists():
            self.manifest.verify_files([self.entry])  # sha256, and the tensors the file declares
            return local
        if not self.settings.artifacts:
            raise ManifestError(f"{local} is missing and no artifact store was given (--artifacts)")
        from slice_runtime.store.artifacts import ArtifactStore

        store = ArtifactStore(self.settings.artifacts, self.settings.namespace)
        target = self.settings.cache_dir / f"{self.entry.sha256}.onnx"
        if not target.exists():
            store.fetch_to(self.entry.sha256, target)
        if self.entry.data_file and self.entry.data_sha256:
            data = self.settings.cache_dir / self.entry.data_file
            if not data.exists():
                store.fetch_to(self.entry.data_sha256, data)
        self.manifest.check_graph(self.entry, target)
        return target

    # -- health ------------------------------------------------------------------
    async def _ping_store(self) -> bool:
        try:
            assert self.transport is not None
            await self.transport.ping()
            ok = True
        except TransportError:
            ok = False
        self.series.store_up.set(1 if ok else 0)
        return ok

    async def ready(self) -> bool:
        ready = self.session is not None and await self.store_reachable()
        self.series.ready.set(1 if ready else 0)
        return ready

    # -- the work ----------------------------------------------------------------
    async def run(self, call: calls.Call) -> calls.Reply:
        """Run the slice for one request: inputs from the call (inline) or the store, outputs back
        in the reply where their frames fit the call's inline limit, else into the store."""
        assert self.transport is not None and self.session is not None
        series = self.series
        request_id = call.request_id
        self.in_flight += 1
        series.in_flight.inc()
        started = time.perf_counter()
        try:
            async with self.slots:
                names = [s.name for s in self.entry.inputs]
                stored = [name for name in names if name not in call.inline]
                fetched = dict(zip(stored, await self.transport.get(request_id, stored))) if stored else {}
                frames = [call.inline[name] if name in call.inline else fetched[name] for name in names]
                feeds = {name: codec.decode(frame) for name, frame in zip(names, frames)}
                read_done = time.perf_counter()
                wanted = [s.name for s in self.entry.outputs]
                if self.short_runs:  # a thread hop would cost more than blocking the loop for the run
                    arrays = self.session.run(wanted, feeds)
                else:
                    arrays = await asyncio.get_running_loop().run_in_executor(
                        self.executor, self.session.run, wanted, feeds
                    )
                compute_done = time.perf_counter()
                encoded, report = self._encode(dict(zip(wanted, arrays)))
                inline = {name: frame for name, frame in encoded.items() if len(frame) <= call.inline_limit}
                to_store = {name: frame for name, frame in encoded.items() if name not in inline}
                if to_store:
                    await self.transport.put(request_id, to_store, self.settings.ttl_seconds)
                for name, frame in encoded.items():
                    report[name]["inline"] = len(frame) if name in inline else None
                write_done = time.perf_counter()
        except Exception as error:
            if isinstance(error, MissingTensors):
                outcome = "input_missing"
            else:
                outcome = "store_error" if isinstance(error, TransportError) else "error"
            series.requests[outcome].inc()
            raise
        finally:
            self.in_flight -= 1
            series.in_flight.dec()
        series.requests["ok"].inc()
        series.inference.observe(compute_done - read_done)
        series.transport["read"].observe(read_done - started)
        series.transport["write"].observe(write_done - compute_done)
        raw_in = sum(codec.frame_info(f)[0] for f in frames)
        wire_in = sum(len(f) for f in frames)
        series.bytes["read", "raw"].inc(raw_in)
        series.bytes["read", "wire"].inc(wire_in)
        self.moved["read_raw"] += raw_in
        self.moved["read_wire"] += wire_in
        self.moved["write_raw"] += sum(r["raw_bytes"] for r in report.values())
        self.moved["write_wire"] += sum(r["wire_bytes"] for r in report.values())
        timings = (
            (read_done - started) * 1000.0,
            (compute_done - read_done) * 1000.0,
            (write_done - compute_done) * 1000.0,
            (write_done - started) * 1000.0,
        )
        self.runs += 1
        self.recent.append(timings)
        if self.runs == SHORT_RUN_SAMPLES:
            compute = statistics.median(t[1] for t in self.recent)
            self.short_runs = compute < SHORT_RUN_MS and self.settings.concurrency == 1
        summary = {
            "request_id": request_id,
            "slice": self.entry.id,
            "outputs": report,
            "timings_ms": dict(zip(("read", "compute", "write", "total"), (round(t, 3) for t in timings))),
        }
        return calls.Reply(summary, inline)

    def _codec_setting(self, tensor: str, codec_name: str) -> tuple[str, codec.CodecSetting]:
        name = self.entry.codecs.get(tensor, "none") if codec_name == "auto" else codec_name
        return name, codec.CodecSetting.parse(name)

    def _encode(self, arrays: dict[str, np.ndarray]) -> tuple[dict[str, bytes], dict[str, Any]]:
        encoded, report = {}, {}
        for name, array in arrays.items():
            setting_name, setting = self.output_codecs[name]
            frame = codec.encode(array, setting, self.settings.compress_threshold)
            encoded[name] = frame
            raw, wire = codec.frame_info(frame)
            report[name] = {"raw_bytes": raw, "wire_bytes": wire, "codec": setting_name}
            self.series.bytes["write", "raw"].inc(raw)
            self.series.bytes["write", "wire"].inc(wire)
        return encoded, report

    def stats(self) -> dict[str, Any]:
        """Runs, peak RSS, median read/compute/write/total ms of recent runs, bytes moved."""
        columns: list[Sequence[float]] = list(zip(*self.recent)) or [[], [], [], []]
        medians = {
            f"{name}_ms": round(statistics.median(values), 3) if values else None
            for name, values in zip(("read", "compute", "write", "total"), columns)
        }
        return {
            "slice": self.entry.id,
            "model": self.manifest.name,
            "runs": self.runs,
            # read back from the session: what onnxruntime runs with, not what was asked
            "threads": self.session.get_session_options().intra_op_num_threads if self.session else self.threads,
            "in_flight": self.in_flight,
            "peak_rss_bytes": peak_rss_bytes(),
            "idle_rss_bytes": self.idle_rss_bytes,
            **medians,
            **{f"{k}_bytes": v for k, v in self.moved.items()},
        }

    def reset_stats(self) -> None:
        self.recent.clear()
        self.moved = dict.fromkeys(self.moved, 0)
