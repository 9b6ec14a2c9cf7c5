"""Hosts on this machine for measuring across real links: network namespaces, each joined to
one switch by a rate-limited link of its own (`ip netns`, `ip link`, `tc ... tbf`).

    host namespace   eth0 10.77.0.1/24 ══ veth ══ p0 ┐
    host namespace   eth0 10.77.0.2/24 ══ veth ══ p1 ┼ bridge br0 in the switch namespace
    ...                                              ┘

Each link is rate-limited in both directions by a token bucket (tbf) on its sending end, as
a node's network interface is; the bridge is not, as a non-blocking switch is not. A tensor
from host a to host b so crosses a's link up and b's link down. This kernel has tbf but not
netem: links have a rate but no added delay. Only the namespaces' own addresses are used;
nothing is added to the machine's own network. Building a topology needs root.

The commands are built by pure code (`Topology`) and run by `Network`, which also starts
processes on the hosts and tears everything down, whatever happened.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mopar.errors import MoparError
from slice_runtime.local import Host

_HOST_NAME = re.compile(r"[a-z][a-z0-9]{0,11}")
_RATE = re.compile(r"(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit)")
_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}
MIN_BURST_BYTES = 16 * 1024
QUEUE_LATENCY = "50ms"  # how long a packet may wait in the bucket's queue before it is dropped


class TopologyError(MoparError):
    """The machine refused to build the topology (names the command and the kernel's answer)."""


def parse_rate(text: str) -> int:
    """Bits per second of a tc rate: '200mbit' -> 200_000_000 (units bit, kbit, mbit, gbit)."""
    match = _RATE.fullmatch(text.strip().lower())
    if not match:
        raise ValueError(f"rate {text!r} must be a number and one of bit, kbit, mbit, gbit (e.g. 200mbit)")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def parse_host(text: str) -> Host:
    """`NETNS=ADDRESS` (a host of a topology, as `mopar bench/calibrate --worker-host` take it)."""
    namespace, _, address = text.partition("=")
    if not namespace or not address:
        raise ValueError(f"worker host {text!r} must be NETNS=ADDRESS, e.g. mopar-w0=10.77.0.3")
    return Host(address, ("ip", "netns", "exec", namespace))


@dataclass(frozen=True)
class Topology:
    """Hosts on one switch, each link at `rate` (tc units; None: unlimited)."""

    name: str  # namespaces are "{name}-{host}" and "{name}-switch"
    hosts: tuple[str, ...]
    rate: str | None = None
    subnet: str = "10.77.0"  # host k (counting from 0) is {subnet}.{k + 1}/24

    def __post_init__(self) -> None:
        for host in self.hosts:
            if not _HOST_NAME.fullmatch(host) or host == "switch":
                raise ValueError(f"host name {host!r} must be 1-12 lowercase letters and digits (not 'switch')")
        if len(set(self.hosts)) != len(self.hosts) or not 0 < len(self.hosts) < 250:
            raise ValueError("a topology needs 1-249 hosts with distinct names")
        if self.rate is not None:
            parse_rate(self.rate)

    def namespace(self, host: str) -> str:
        self._index(host)
        return f"{self.name}-{host}"

    @property
    def switch(self) -> str:
        return f"{self.name}-switch"

    @property
    def namespaces(self) -> list[str]:
        return [self.switch, *(self.namespace(h) for h in self.hosts)]

    def address(self, host: str) -> str:
        return f"{self.subnet}.{self._index(host) + 1}"

    def host(self, host: str) -> Host:
        """Where a process on `host` listens and how it is started there."""
        return Host(self.address(host), tuple(self.prefix(host)))

    def prefix(self, host: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(host)]

    def worker_host(self, host: str) -> str:
        """`host` as `--worker-host` takes it."""
        return f"{self.namespace(host)}={self.address(host)}"

    def burst_bytes(self) -> int:
        """The bucket's depth, what an idle link lets through at once faster than its rate: as
        small as lets TCP reach the rate (half a millisecond's worth, at least 16 KiB; measured
        here: 190 of 200 Mbit/s, 880-950 of 1,000), since a real link has no such head start
        and a deeper bucket makes tensors of a few hundred KB cross up to twice as fast."""
        assert self.rate is not None
        return max(MIN_BURST_BYTES, parse_rate(self.rate) // 8 // 2000)

    def up_commands(self) -> list[list[str]]:
        switch = self.switch
        commands = [["ip", "netns", "add", ns] for ns in self.namespaces]
        commands += [["ip", "-n", ns, "link", "set", "lo", "up"] for ns in self.namespaces]
        commands += [
            ["ip", "-n", switch, "link", "add", "br0", "type", "bridge"],
            ["ip", "-n", switch, "link", "set", "br0", "up"],
        ]
        for index, host in enumerate(self.hosts):
            ns, port = self.namespace(host), f"p{index}"
            commands += [
                ["ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", switch],
                ["ip", "-n", switch, "link", "set", port, "master", "br0"],
                ["ip", "-n", switch, "link", "set", port, "up"],
                ["ip", "-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", "eth0"],
                ["ip", "-n", ns, "link", "set", "eth0", "up"],
            ]
            if self.rate is not None:
                for where, device in ((ns, "eth0"), (switch, port)):  # up from the host, down to it
                    commands.append(
                        ["tc", "-n", where, "qdisc", "add", "dev", device, "root", "tbf", "rate", self.rate,
                         "burst", str(self.burst_bytes()), "latency", QUEUE_LATENCY]
                    )  # fmt: skip
        return commands

    def _index(self, host: str) -> int:
        try:
            return self.hosts.index(host)
        except ValueError:
            raise ValueError(f"no host {host!r} in topology {self.name} ({', '.join(self.hosts)})") from None


class Network:
    """A topology built on this machine: `up()`, processes on its hosts, `down()` (idempotent;
    it ends the processes it started and any left inside its namespaces, then deletes them)."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Network:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
        if missing:
            raise TopologyError(f"{' and '.join(missing)} not found: install iproute2 (`make system-deps`)")
        try:
            for command in self.topology.up_commands():
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    reason = done.stderr.strip() or f"exit status {done.returncode}"
                    raise TopologyError(f"`{' '.join(command)}` failed: {reason}")
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        for process in self.processes:
            _stop(process)
        self.processes.clear()
        for ns in self.topology.namespaces:
            listed = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False)
            for pid in listed.stdout.split():  # started inside our namespace: ours
                _kill(int(pid))
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)

    def spawn(self, host: str, argv: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
        """Start `argv` on `host`; `down()` ends it."""
        process = subprocess.Popen([*self.topology.prefix(host), *argv], **popen)
        self.processes.append(process)
        return process

    def run(self, host: str, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        return subprocess.run([*self.topology.prefix(host), *argv], check=False, **kwargs)

    def wait_listening(self, host: str, port: int, timeout: float = 20.0) -> None:
        """Until something on `host` accepts connections on `port` (checked from that host)."""
        script = (
            "import socket, sys, time\n"
            "deadline = time.monotonic() + float(sys.argv[3])\n"
            "while time.monotonic() < deadline:\n"
            "    try:\n"
            "        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.5).close(); sys.exit(0)\n"
            "    except OSError: time.sleep(0.05)\n"
            "sys.exit(1)\n"
        )
        address = self.topology.address(host)
        done = self.run(host, [sys.executable, "-c", script, address, str(port), str(timeout)])
        if done.returncode != 0:
            raise TopologyError(f"nothing listens on {address}:{port} ({host}) after {timeout:g} s")

    def start_redis(self, host: str, directory: Path, port: int = 6379) -> str:
        """A redis-server on `host`, listening on the host's address only; its URL."""
        address = self.topology.address(host)
        command = ["redis-server", "--bind", address, "--port", str(port), "--save", "", "--appendonly", "no"]
        command += ["--protected-mode", "no", "--dir", str(directory), "--logfile", str(directory / "redis.log")]
        self.spawn(host, command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.wait_listening(host, port)
        return f"redis://{address}:{port}/0"

    def link_bytes(self, host: str) -> tuple[int, int]:
        """(received, sent) bytes on `host`'s link so far, as its interface counts them."""
        ns = self.topology.namespace(host)
        shown = subprocess.run(["ip", "-n", ns, "-s", "-j", "link", "show", "eth0"], capture_output=True, text=True)
        if shown.returncode != 0:
            raise TopologyError(f"cannot read the counters of {host}'s link: {shown.stderr.strip()}")
        stats = json.loads(shown.stdout)[0]["stats64"]
        return int(stats["rx"]["bytes"]), int(stats["tx"]["bytes"])


def _stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds, for a process this network started."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _kill(pid: int, grace: float = 10.0) -> None:
    """The same for a process found inside one of our namespaces (started there by ours)."""
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
