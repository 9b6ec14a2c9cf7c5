"""A real `redis-server` process on a free local port, which tests may stop and start again."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import free_port


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


def _answers_ping(port: int) -> bool:
    # Any reply to PING means the server is up, "-NOAUTH" from a password-protected one too.
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False
