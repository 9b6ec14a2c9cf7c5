"""`mopar serve` as a real process, as a user runs it: started, waited for, signalled, read."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.support import ROOT, free_port


class ServeProcess:
    """`mopar serve DIR ARGS...` on a free port; `workers` maps slice ids to (url, pid)."""

    def __init__(self, directory: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stderr_path = directory.parent / f"serve-{self.port}.log"
        self.stderr = self.stderr_path.open("w+b")
        command = [sys.executable, "-m", "mopar", "serve", str(directory), "--port", str(self.port), *args]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=self.stderr, cwd=ROOT, env={**os.environ, **(env or {})}
        )
        self.workers: dict[str, tuple[str, int]] = {}
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.process.poll() is not None:
                raise AssertionError(f"mopar serve exited with {self.process.returncode}: {self.log()[-2000:]}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"mopar serve was not ready within {timeout} s: {self.log()[-2000:]}")
            time.sleep(0.1)
        for slice_id, url, pid in re.findall(r"slice (\S+) at (http://\S+) \(pid (\d+)[,)]", self.log()):
            self.workers[slice_id] = (url, int(pid))

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=1) as response:
                return response.status == 200 and "serving" in self.log()
        except OSError:
            return False

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL serve, and any worker still there (a test that failed must not leave them)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        for pid in {*(pid for _, pid in self.workers.values()), *workers_of(self.directory)}:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.stderr.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


def wait_until_ready(url: str, process: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    """Poll `url`/v2/health/ready until it answers 200; AssertionError, with what `process`
    wrote to its stderr pipe, if it exits first, or when `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:  # not listening yet, or 503 while it starts
            pass
        if process.poll() is not None:
            log = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise AssertionError(f"{what} exited with {process.returncode}: {log[-2000:]}")
        assert time.monotonic() < deadline, f"{what} was not ready within {timeout} s"
        time.sleep(0.1)


def gateway_in_flight(base: str, model: str) -> float:
    """The gateway's `mopar_gateway_in_flight_requests` for `model` (REST and gRPC), from /metrics."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(rf'mopar_gateway_in_flight_requests{{model="{re.escape(model)}"}} (\S+)', text)
    return float(match.group(1)) if match else 0.0


@contextlib.contextmanager
def stopped(pids: list[int]) -> Iterator[None]:
    """The processes stopped (SIGSTOP) inside the block, so requests pile up in front of them;
    they go on (SIGCONT) after it, whatever happened."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def workers_of(directory: Path) -> list[int]:
    """Pids of the live slice workers serving `directory`, found by their command lines (whoever
    their parent is now)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"slice_runtime.worker" in argv and str(directory).encode() in argv and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set (VmHWM)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for process {pid}")
