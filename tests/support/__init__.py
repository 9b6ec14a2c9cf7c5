"""What the tests share besides fixtures: the repository root, the CLI as a subprocess, free
ports, and a local server on a background event loop."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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
