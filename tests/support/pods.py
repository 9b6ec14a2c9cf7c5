"""A container the operator built, run as a local process: its command (`mopar ARGS`), its
environment with Secret references resolved from the Secrets given, and the few settings a
pod gets from its platform (port, mounted manifest, slice addresses) overridden for this
machine. So a test runs the prepare Job, the workers and the gateway exactly as the built
objects describe them."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.support import ROOT


def environment(container: Mapping[str, Any], secrets: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """The container's variables; `secretKeyRef`s read from `secrets` ({name: Secret object})."""
    env = {}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
            continue
        ref = entry["valueFrom"]["secretKeyRef"]
        env[entry["name"]] = base64.b64decode(secrets[ref["name"]]["data"][ref["key"]]).decode()
    return env


class PodProcess:
    def __init__(
        self,
        container: Mapping[str, Any],
        secrets: Mapping[str, Mapping[str, Any]],
        overrides: Mapping[str, str],
        log: Path,
    ) -> None:
        self.container = container
        self.env = {**environment(container, secrets), **overrides}
        self.port = int(self.env.get("MOPAR_PORT", "0"))
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "mopar", *container["args"]], cwd=ROOT,
                                            env={"PATH": "/usr/bin:/bin", **self.env},
                                            stdout=out, stderr=subprocess.STDOUT)  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait(self, timeout: float = 300) -> int:
        """Until the process exits (a Job's container); its exit status."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"{self.container['name']} did not finish: {self.tail()}") from None

    def wait_ready(self, timeout: float = 180) -> None:
        """Until the container's readiness probe would pass."""
        path = self.container["readinessProbe"]["httpGet"]["path"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.container['name']} exited {self.process.returncode}: {self.tail()}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.container['name']} never got ready: {self.tail()}")

    def tail(self) -> str:
        return " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-5:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
