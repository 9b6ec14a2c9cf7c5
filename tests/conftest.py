"""Shared fixtures: zoo models written once per session, the `mopar` CLI as a subprocess, a real
redis-server for the transports and the artifact store."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import onnx
import pytest
import redis

from mopar.model import zoo

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`small_model(name)` -> path of the zoo model's small variant, built once per session."""
    directory = tmp_path_factory.mktemp("zoo")
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            path = directory / f"{name}.onnx"
            onnx.save_model(zoo.build_small(name), str(path))
            built[name] = path
        return built[name]

    return get


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run `mopar ARGS...` as a user would, in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "mopar", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


class RedisServer:
    """A real `redis-server` on a free local port, which tests may stop and start again."""

    def __init__(self, directory: Path, *extra_args: str) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not on PATH; `make test` installs it (apt-get install redis-server)")
        self.directory = directory
        self.extra_args = extra_args
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server (on the same port as before) and wait until it answers PING."""
        if self.running:
            return
        log = self.directory / "redis.log"
        command = ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        command += ["--bind", "127.0.0.1", "--dir", str(self.directory), "--logfile", str(log), *self.extra_args]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                pytest.fail(f"redis-server on port {self.port} exited with {self.process.returncode}:\n{tail}")
            if _answers_ping(self.port):
                return
            time.sleep(0.02)
        self.stop()
        pytest.fail(f"redis-server on port {self.port} did not answer PING within {timeout} s")

    def stop(self) -> None:
        """Terminate the server and wait until it is gone."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers_ping(port: int) -> bool:
    # Any reply to PING means the server is up, "-NOAUTH" from a password-protected one too.
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session; `.stop()` / `.start()` take it away and bring it back."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, running (restarted if a test stopped it) and with db 0 empty."""
    redis_server.start()
    with redis.Redis.from_url(redis_server.url, socket_timeout=5) as client:
        client.flushdb()
    return redis_server.url


class ServerThread:
    """A `LocalServer` running in its own event loop on a background thread, so tests (sync or
    async) talk to it over real HTTP as any client would; `call` runs a coroutine in its loop."""

    def __init__(self, server: object) -> None:
        import asyncio
        import threading

        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(server.start())  # type: ignore[attr-defined]

    def call(self, coroutine: object, timeout: float = 300.0) -> object:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)  # type: ignore[arg-type]

    def stop(self) -> None:
        try:
            self.call(self.server.stop())  # type: ignore[attr-defined]
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
