"""`mopar worker` (and `python -m slice_runtime.worker`): settings from options and MOPAR_*
variables, then the worker's HTTP server. On SIGTERM the server stops accepting and finishes
the runs in flight (within --grace). Started by `mopar serve`, it also stops when its
supervisor dies (`parent`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from aiohttp import web

from slice_runtime import allocator, calls, loops
from slice_runtime.errors import RuntimeFailure, SettingError
from slice_runtime.options import add_worker_arguments
from slice_runtime.worker.core import SliceWorker, WorkerSettings
from slice_runtime.worker.http import build_app
from slice_runtime.worker.parent import Supervisor

log = logging.getLogger("mopar.worker")


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
    loops.install()
    allocator.keep_large_buffers()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    supervisor = Supervisor(args.supervisor_pid)
    supervisor.bind()
    settings = settings_from_args(args)
    try:
        worker = SliceWorker(settings)
    except ValueError as error:
        raise SettingError(str(error)) from None
    app = build_app(worker, supervisor)
    if supervisor.pid is not None:
        asyncio.run(_supervised(app, settings, args.grace, supervisor))
        return 0
    # Graceful: on SIGTERM aiohttp stops accepting and waits for runs in flight.
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        shutdown_timeout=args.grace,
        access_log=None,  # every call is the gateway's; its metrics count them, a log line each costs time
        read_bufsize=calls.READ_BUFFER_BYTES,
        print=lambda *_: log.info("slice %s listening on %s:%d", settings.slice_id, settings.host, settings.port),
    )
    return 0


async def _supervised(app: web.Application, settings: WorkerSettings, grace: float, supervisor: Supervisor) -> None:
    """Serve until the supervisor lets go (`parent`), then finish the runs in flight."""
    signalled = asyncio.Event()

    def on_signal() -> None:
        if supervisor.gone:
            signalled.set()
        else:
            log.info("signalled; stopping when mopar serve says so, once its requests are done")

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    runner = web.AppRunner(
        app, shutdown_timeout=grace, handle_signals=False, access_log=None, read_bufsize=calls.READ_BUFFER_BYTES
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
        log.info("slice %s listening on %s:%d", settings.slice_id, settings.host, settings.port)
        released = asyncio.ensure_future(supervisor.released())
        stopped = asyncio.ensure_future(signalled.wait())
        await asyncio.wait([released, stopped], return_when=asyncio.FIRST_COMPLETED)
        released.cancel()
        stopped.cancel()
    finally:
        await runner.cleanup()


def run_module() -> None:
    """`python -m slice_runtime.worker`, as `mopar serve` starts workers (no `mopar` import)."""
    parser = argparse.ArgumentParser(prog="mopar worker", description="Serve one slice of a partitioned model.")
    add_worker_arguments(parser)
    try:
        sys.exit(main(parser.parse_args()))
    except RuntimeFailure as failure:
        print(f"mopar worker: error: {failure}", file=sys.stderr)
        sys.exit(failure.exit_code)
