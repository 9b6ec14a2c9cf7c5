"""`mopar worker`: serves one slice over a small HTTP control API.

    POST /run {"request_id": R}  ->  reads the slice's inputs of request R from the store,
                                     runs onnxruntime, writes its outputs under R, answers
                                     {"request_id", "outputs": {name: {raw_bytes, wire_bytes,
                                     codec}}, "timings_ms": {read, compute, write, total}}
    GET /health/live, /health/ready (model loaded and store reachable), /metrics, /stats

Control travels over HTTP, so Knative scales slices on request concurrency; tensors
travel through the store. The slice file comes from the manifest's directory or, by its
sha256, from the artifact store (verified). onnxruntime runs in a thread so the event
loop keeps answering health checks; at most `concurrency` runs share the thread budget.
On SIGTERM the server stops accepting and finishes the runs in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from . import codec, metrics, probes
from . import manifest as manifests
from .errors import ManifestError, RuntimeFailure, SettingError, TransportError
from .footprint import peak_rss_bytes
from .sessions import open_serving_session
from .transports import MissingTensors, Transport, open_transport

log = logging.getLogger("mopar.worker")


@dataclass(frozen=True)
class WorkerSettings:
    manifest: Path
    slice_id: str
    transport: str = "redis://127.0.0.1:6379/0"
    namespace: str = "default"
    host: str = "0.0.0.0"
    port: int = 8080
    threads: int = 1
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
        self.labels = {"model": self.manifest.name, "slice": self.entry.id}
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

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        path = await asyncio.get_running_loop().run_in_executor(self.executor, self._slice_file)
        started = time.perf_counter()
        self.session = await asyncio.get_running_loop().run_in_executor(
            self.executor, open_serving_session, path, self.settings.threads
        )
        self.transport = open_transport(self.settings.transport, self.settings.namespace, self.manifest.name)
        log.info("slice %s loaded from %s in %.2f s", self.entry.id, path, time.perf_counter() - started)

    async def close(self) -> None:
        if self.transport is not None:
            await self.transport.close()
        self.executor.shutdown(wait=True)

    def _slice_file(self) -> Path:
        local = self.manifest.path_of(self.entry)
        if local.exists():
            if manifests.sha256_file(local) != self.entry.sha256:
                raise ManifestError(f"{local}: sha256 does not match the manifest")
            return local
        if not self.settings.artifacts:
            raise ManifestError(f"{local} is missing and no artifact store was given (--artifacts)")
        from .artifacts import ArtifactStore

        store = ArtifactStore(self.settings.artifacts, self.settings.namespace)
        target = self.settings.cache_dir / f"{self.entry.sha256}.onnx"
        if not target.exists():
            store.fetch_to(self.entry.sha256, target)
        if self.entry.data_file and self.entry.data_sha256:
            data = self.settings.cache_dir / self.entry.data_file
            if not data.exists():
                store.fetch_to(self.entry.data_sha256, data)
        return target

    # -- health ------------------------------------------------------------------
    async def _ping_store(self) -> bool:
        try:
            assert self.transport is not None
            await self.transport.ping()
            ok = True
        except TransportError:
            ok = False
        metrics.STORE_UP.labels(model=self.manifest.name).set(1 if ok else 0)
        return ok

    async def ready(self) -> bool:
        ready = self.session is not None and await self.store_reachable()
        metrics.SLICE_READY.labels(**self.labels).set(1 if ready else 0)
        return ready

    # -- the work ----------------------------------------------------------------
    async def run(self, request_id: str) -> dict[str, Any]:
        assert self.transport is not None and self.session is not None
        labels = self.labels
        self.in_flight += 1
        metrics.SLICE_IN_FLIGHT.labels(**labels).inc()
        started = time.perf_counter()
        try:
            async with self.slots:
                names = [s.name for s in self.entry.inputs]
                frames = await self.transport.get(request_id, names)
                feeds = {name: codec.decode(frame) for name, frame in zip(names, frames)}
                read_done = time.perf_counter()
                wanted = [s.name for s in self.entry.outputs]
                arrays = await asyncio.get_running_loop().run_in_executor(
                    self.executor, self.session.run, wanted, feeds
                )
                compute_done = time.perf_counter()
                encoded, report = self._encode(dict(zip(wanted, arrays)))
                await self.transport.put(request_id, encoded, self.settings.ttl_seconds)
                write_done = time.perf_counter()
        except Exception as error:
            if isinstance(error, MissingTensors):
                outcome = "input_missing"
            else:
                outcome = "store_error" if isinstance(error, TransportError) else "error"
            metrics.SLICE_REQUESTS.labels(**labels, outcome=outcome).inc()
            raise
        finally:
            self.in_flight -= 1
            metrics.SLICE_IN_FLIGHT.labels(**labels).dec()
        metrics.SLICE_REQUESTS.labels(**labels, outcome="ok").inc()
        metrics.SLICE_INFERENCE.labels(**labels).observe(compute_done - read_done)
        metrics.SLICE_TRANSPORT.labels(**labels, direction="read").observe(read_done - started)
        metrics.SLICE_TRANSPORT.labels(**labels, direction="write").observe(write_done - compute_done)
        raw_in = sum(codec.frame_info(f)[0] for f in frames)
        wire_in = sum(len(f) for f in frames)
        metrics.SLICE_BYTES.labels(**labels, direction="read", encoding="raw").inc(raw_in)
        metrics.SLICE_BYTES.labels(**labels, direction="read", encoding="wire").inc(wire_in)
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
        return {
            "request_id": request_id,
            "slice": self.entry.id,
            "outputs": report,
            "timings_ms": dict(zip(("read", "compute", "write", "total"), (round(t, 3) for t in timings))),
        }

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
            metrics.SLICE_BYTES.labels(**self.labels, direction="write", encoding="raw").inc(raw)
            metrics.SLICE_BYTES.labels(**self.labels, direction="write", encoding="wire").inc(wire)
        return encoded, report

    def stats(self) -> dict[str, Any]:
        """Runs, peak RSS, median read/compute/write/total ms of recent runs, bytes moved."""
        columns = list(zip(*self.recent)) or [[], [], [], []]
        medians = {
            f"{name}_ms": round(statistics.median(values), 3) if values else None
            for name, values in zip(("read", "compute", "write", "total"), columns)
        }
        return {
            "slice": self.entry.id,
            "model": self.manifest.name,
            "runs": self.runs,
            "in_flight": self.in_flight,
            "peak_rss_bytes": peak_rss_bytes(),
            **medians,
            **{f"{k}_bytes": v for k, v in self.moved.items()},
        }

    def reset_stats(self) -> None:
        self.recent.clear()
        self.moved = dict.fromkeys(self.moved, 0)


def build_app(worker: SliceWorker) -> web.Application:
    routes = web.RouteTableDef()

    @routes.post("/run")
    async def run(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            request_id = str(body["request_id"])
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": 'expected {"request_id": ...}'}, status=400)
        try:
            return web.json_response(await worker.run(request_id))
        except TransportError as error:
            # Inputs absent: the caller's ordering problem (409); store down: ours, retryable (503).
            status = 409 if isinstance(error, MissingTensors) else 503
            return web.json_response({"error": str(error)}, status=status)
        except Exception as error:  # noqa: BLE001 - onnxruntime failures become a 500 with their message
            log.exception("slice %s failed on request %s", worker.entry.id, request_id)
            return web.json_response({"error": f"{type(error).__name__}: {error}"}, status=500)

    @routes.get("/stats")
    async def stats(request: web.Request) -> web.Response:
        return web.json_response(worker.stats())

    @routes.post("/stats/reset")
    async def reset_stats(request: web.Request) -> web.Response:
        worker.reset_stats()  # the benchmark measures after its warm-up
        return web.json_response(worker.stats())

    app = web.Application()
    app.add_routes(routes)
    app.add_routes(probes.routes("", worker.ready))

    async def lifecycle(app: web.Application):  # type: ignore[no-untyped-def]
        await worker.start()
        yield
        await worker.close()

    app.cleanup_ctx.append(lifecycle)
    return app


def settings_from_args(args: argparse.Namespace) -> WorkerSettings:
    if not args.manifest or not args.slice:
        raise SettingError("mopar worker needs --manifest and --slice (or MOPAR_MANIFEST and MOPAR_SLICE)")
    return WorkerSettings(
        manifest=Path(args.manifest),
        slice_id=args.slice,
        transport=args.transport,
        namespace=args.namespace,
        host=args.host,
        port=args.port,
        threads=args.threads,
        concurrency=args.concurrency,
        codec_name=args.codec,
        compress_threshold=args.compress_threshold,
        ttl_seconds=args.ttl,
        artifacts=args.artifacts,
        cache_dir=Path(args.cache_dir),
    )


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = settings_from_args(args)
    try:
        worker = SliceWorker(settings)
    except ValueError as error:
        raise SettingError(str(error)) from None
    # Graceful: on SIGTERM aiohttp stops accepting and waits for runs in flight.
    web.run_app(
        build_app(worker),
        host=settings.host,
        port=settings.port,
        shutdown_timeout=60.0,
        print=lambda *_: log.info("slice %s listening on %s:%d", settings.slice_id, settings.host, settings.port),
    )
    return 0


if __name__ == "__main__":  # `python -m slice_runtime.worker`, as `mopar serve` starts workers
    import sys

    from .options import add_worker_arguments

    parser = argparse.ArgumentParser(prog="mopar worker", description="Serve one slice of a partitioned model.")
    add_worker_arguments(parser)
    try:
        sys.exit(main(parser.parse_args()))
    except RuntimeFailure as failure:
        sys.exit(f"mopar worker: error: {failure}")
