"""`mopar serve DIR`: a partitioned model on one machine, as a cluster would run it.

One worker process per slice (each with its own onnxruntime thread budget: the slice's
threads as planned, in the manifest, at most `cores`, the CPUs this run may use) and the
gateway in this process. Given `hosts`, a worker runs on another host instead (a network namespace, to
measure across real links). A supervisor restarts a worker that dies, on the same port,
so the gateway's retries reach the new one.

SIGTERM or Ctrl-C (or `stop()`) drains: the gateway answers new requests 503 with
Retry-After and lets those in flight finish, for at most the grace period; then the
workers stop (finishing their runs) and the model's tensors are cleared from the store.
Workers run in their own process group, so a terminal's Ctrl-C reaches only this
supervisor, and die with it when it is killed (`worker.parent`): they then clear the
store themselves. The store's URL, which may hold a password, reaches them through
their environment, never their command line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from slice_runtime import allocator, calls, loops
from slice_runtime import manifest as manifests
from slice_runtime.errors import ManifestError, SettingError
from slice_runtime.gateway import lifecycle
from slice_runtime.gateway.batching import BatchingPolicy, policy_from
from slice_runtime.gateway.client import HttpSlices
from slice_runtime.gateway.core import DataPlane, RetryPolicy
from slice_runtime.gateway.http import DRAIN, build_app
from slice_runtime.store import open_transport
from slice_runtime.worker.parent import STOP_WORD

log = logging.getLogger("mopar.serve")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Host:
    """Where a worker runs: the address it listens on and the command prefix that starts a
    process there (e.g. `ip netns exec NS` for a network namespace; none: this machine)."""

    address: str = "127.0.0.1"
    prefix: tuple[str, ...] = ()


@dataclass
class WorkerProcess:
    slice_id: str
    port: int
    log_path: Path
    threads: int = 1
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    host: Host = Host()

    @property
    def url(self) -> str:
        return f"http://{self.host.address}:{self.port}"


@dataclass
class LocalServer:
    directory: Path
    transport: str = "shm"
    port: int = 8080
    host: str = "127.0.0.1"
    threads: int | None = None  # every worker's intra-op threads; None: each slice's, as planned
    cores: int | None = None  # CPUs of this run: no worker gets more threads (None: no bound)
    namespace: str = "local"
    name: str | None = None
    log_dir: Path | None = None
    worker_args: list[str] = field(default_factory=list)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    request_timeout: float = 60.0
    inline_limit: int = calls.DEFAULT_INLINE_LIMIT
    max_body_bytes: int = 64 * 2**20
    limits: lifecycle.Limits = field(default_factory=lifecycle.Limits)
    store_timeout: float = 5.0
    store_connections: int = 256
    grpc_port: int | None = None  # also serve the V2 gRPC service there
    batching: BatchingPolicy | None = None  # dynamic batching (None: off)
    hosts: Mapping[str, Host] = field(default_factory=dict)  # per slice id; the others run here

    def __post_init__(self) -> None:
        self.manifest = manifests.load(self.directory)
        self.manifest.verify_files()
        self.log_dir = Path(self.log_dir or tempfile.mkdtemp(prefix="mopar-serve-"))
        self.workers = {
            e.id: WorkerProcess(
                e.id,
                free_port(),
                self.log_dir / f"worker-{e.id}.log",
                threads=self.threads_of(e),
                host=self.hosts.get(e.id, Host()),
            )
            for e in self.manifest.slices
        }
        self._runner: web.AppRunner | None = None
        self._rpc: Any = None  # the gRPC server (grpc.aio.Server), when one is asked for
        self._app = web.Application()
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self.plane: DataPlane | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def threads_of(self, entry: manifests.SliceEntry) -> int:
        """Intra-op threads of `entry`'s worker: the pinned count or the slice's, within the cores."""
        threads = self.threads or entry.threads
        return min(threads, self.cores) if self.cores else threads

    # -- workers -----------------------------------------------------------------
    def _spawn(self, worker: WorkerProcess) -> None:
        command = [
            *worker.host.prefix, sys.executable, "-m", "slice_runtime.worker",
            "--manifest", str(self.directory), "--slice", worker.slice_id, "--namespace", self.namespace,
            "--host", worker.host.address, "--port", str(worker.port), "--threads", str(worker.threads),
            "--grace", str(self.limits.grace), *self.worker_args,
        ]  # fmt: skip
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(worker.threads),
            "MOPAR_TRANSPORT": self.transport,  # not argv: `ps` shows every user a command line
            "MOPAR_SUPERVISOR_PID": str(os.getpid()),
        }
        with worker.log_path.open("ab") as out:
            # stdin: the pipe whose closing stops the worker (`worker.parent`); its own process
            # group: a terminal's Ctrl-C reaches this supervisor only, which drains first.
            worker.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.PIPE, env=env, process_group=0
            )

    async def _wait_ready(self, worker: WorkerProcess, deadline: float) -> None:
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert worker.process is not None
                if worker.process.poll() is not None:
                    tail = worker.log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
                    raise ManifestError(f"worker for slice {worker.slice_id} exited: {tail[0]}")
                try:
                    async with session.get(f"{worker.url}/health/ready", timeout=aiohttp.ClientTimeout(total=1)) as r:
                        if r.status == 200:
                            return
                except (TimeoutError, aiohttp.ClientError):
                    pass
                await asyncio.sleep(0.1)
        raise ManifestError(f"worker for slice {worker.slice_id} was not ready in time (log: {worker.log_path})")

    async def _supervise(self) -> None:
        """Restart workers that die (on the same port, so the gateway finds them again)."""
        while not self._stopping:
            for worker in self.workers.values():
                if worker.process is not None and worker.process.poll() is not None and not self._stopping:
                    worker.restarts += 1
                    log.warning("worker %s exited (%s); restarting", worker.slice_id, worker.process.returncode)
                    self._spawn(worker)
            await asyncio.sleep(0.1)

    async def _reap(self, worker: WorkerProcess, deadline: float) -> None:
        if worker.process is None:
            return
        try:
            timeout = max(0.5, deadline - time.monotonic())
            await asyncio.get_running_loop().run_in_executor(None, worker.process.wait, timeout)
        except subprocess.TimeoutExpired:
            log.warning("worker %s did not stop in time; killing it", worker.slice_id)
            worker.process.kill()
            await asyncio.get_running_loop().run_in_executor(None, worker.process.wait)

    # -- lifecycle ---------------------------------------------------------------
    def check_ports(self) -> None:
        """SettingError, one line, if a port to serve on is taken: checked before any worker starts."""
        lifecycle.check_port(self.host, self.port)
        if self.grpc_port is not None:
            lifecycle.check_port(self.host, self.grpc_port)

    async def start(self, timeout: float = 180.0) -> None:
        self.check_ports()
        allocator.keep_large_buffers()  # the gateway runs in this process
        try:
            store = open_transport(
                self.transport,
                self.namespace,
                self.manifest.name,
                op_timeout=self.store_timeout,
                max_connections=self.store_connections,
            )
        except ValueError as error:
            raise SettingError(str(error)) from None
        await store.ping()
        await store.purge()  # leftovers of an earlier run
        for worker in self.workers.values():
            self._spawn(worker)
        deadline = time.monotonic() + timeout
        try:
            await asyncio.gather(*(self._wait_ready(w, deadline) for w in self.workers.values()))
        except BaseException:
            await store.close()
            await self.stop()
            raise
        try:
            self.plane = DataPlane(
                self.manifest,
                store,
                HttpSlices({sid: w.url for sid, w in self.workers.items()}),
                name=self.name,
                retry=self.retry,
                request_timeout=self.request_timeout,
                inline_limit=self.inline_limit,
                batching=self.batching,
            )
        except SettingError:  # a model dynamic batching cannot merge
            await store.close()
            await self.stop(grace=0)
            raise
        self._app = build_app(self.plane, self.max_body_bytes, self.limits)
        try:
            self._runner = await lifecycle.start(self._app, self.host, self.port, self.limits)
        except BaseException:
            await self.stop(grace=0)
            raise
        if self.grpc_port is not None:
            from slice_runtime.gateway import grpcserver  # grpc is loaded only when asked for

            try:
                self._rpc = await grpcserver.start(
                    self.plane,
                    self._app[DRAIN],
                    self.host,
                    self.grpc_port,
                    self.max_body_bytes,
                    self.limits.max_connections,
                )
            except BaseException:
                await self.stop(grace=0)
                raise
        self._supervisor = asyncio.ensure_future(self._supervise())

    async def stop(self, grace: float | None = None) -> None:
        """Drain the gateway (at most `grace` s, default the limits' grace), stop the workers
        (they finish their runs), clear the store; all within grace + 2 s."""
        grace = self.limits.grace if grace is None else grace
        deadline = time.monotonic() + grace + 1.5
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
        if self._runner is not None:
            await lifecycle.stop(self._runner, self._app[DRAIN], grace)
        if self._rpc is not None:
            await self._rpc.stop(1.0)
        for worker in self.workers.values():
            stdin = worker.process.stdin if worker.process is not None else None
            if stdin is None or stdin.closed:
                continue
            # A word before the pipe closes: this is an orderly stop, not the supervisor's death.
            # A worker gone already (a signal to the process group reached it first) breaks the
            # pipe, and close() fails again on the word still buffered: nothing is lost.
            with contextlib.suppress(OSError):
                stdin.write(STOP_WORD)
                stdin.flush()
            with contextlib.suppress(OSError):
                stdin.close()  # the worker finishes its runs and exits
        await asyncio.gather(*(self._reap(w, deadline) for w in self.workers.values()))
        if self.plane is not None:
            try:
                await self.plane.transport.purge()
            finally:
                await self.plane.slices.close()
                await self.plane.transport.close()


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = LocalServer(
        Path(args.directory),
        transport=args.transport,
        port=args.port,
        host=args.host,
        threads=args.threads,
        cores=args.cores,
        name=args.name,
        inline_limit=args.inline_kb * 1024,
        limits=lifecycle.limits_from(args),
        store_timeout=args.store_timeout,
        store_connections=args.store_connections,
        grpc_port=args.grpc_port,
        batching=policy_from(args),
    )

    async def serve() -> None:
        log_dir = server.log_dir
        assert log_dir is not None
        try:
            server.check_ports()  # before the first line: a taken port is the only one
            print(
                f"starting {len(server.workers)} slice worker(s) of {server.manifest.name} (logs: {log_dir})",
                file=sys.stderr,
                flush=True,
            )
            await server.start()
        except BaseException:
            # What workers wrote stays, for the error to point at; an empty directory goes.
            with contextlib.suppress(OSError):
                log_dir.rmdir()
            raise
        try:
            await serve_until_signal()
        finally:
            shutil.rmtree(log_dir, ignore_errors=True)

    async def serve_until_signal() -> None:
        assert server.plane is not None
        for worker in server.workers.values():
            assert worker.process is not None
            print(
                f"slice {worker.slice_id} at {worker.url} (pid {worker.process.pid}, {worker.threads} thread(s))",
                file=sys.stderr,
                flush=True,
            )
        if server.grpc_port is not None:
            print(f"gRPC at {server.host}:{server.grpc_port}", file=sys.stderr, flush=True)
        print(
            f"serving {server.plane.name} at {server.url}/v2/models/{server.plane.name}/infer; Ctrl-C stops",
            file=sys.stderr,
            flush=True,
        )
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
        grace = server.limits.grace
        print(f"stopping: finishing the requests in flight (at most {grace:g} s)", file=sys.stderr, flush=True)
        await server.stop()

    loops.install()
    asyncio.run(serve())
    return 0
