"""Hosts in network namespaces for the tests: Redis on its own host, the gateway on another,
slices on three more, every link rate-limited (`mopar.bench.topology`).

Built once per test module that asks for it and always torn down. The machine must let us
build it (root, iproute2, a kernel with veth, bridge and tbf): when it refuses, the test
fails and says why; it is never skipped.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mopar.bench.topology import Network, Topology, TopologyError

HOSTS = ("redis", "gw", "w0", "w1", "w2")
WORKERS = ("w0", "w1", "w2")
RATE = "200mbit"
_serial = itertools.count()


@dataclass
class Hosts:
    network: Network
    redis_url: str

    @property
    def topology(self) -> Topology:
        return self.network.topology

    def worker_hosts(self) -> list[str]:
        """`--worker-host` options placing workers on w0, w1, w2."""
        return [arg for host in WORKERS for arg in ("--worker-host", self.topology.worker_host(host))]


def build_hosts(directory: Path, rate: str = RATE) -> Iterator[Hosts]:
    if os.geteuid() != 0:
        pytest.fail("the topology of hosts needs root (network namespaces, veth links, tc); run the tests as root")
    # Unique per session and per module: several suites may build topologies on one machine.
    topology = Topology(f"mopar-t{os.getpid()}-{next(_serial)}", HOSTS, rate)
    network = Network(topology)
    try:
        network.up()
        url = network.start_redis("redis", directory)
    except TopologyError as error:
        network.down()
        pytest.fail(f"this machine refused the topology of hosts: {error}")
    try:
        yield Hosts(network, url)
    finally:
        network.down()


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    """Redis on `redis`, the gateway's host `gw`, slice hosts `w0`..`w2`, links at 200 Mbit/s."""
    yield from build_hosts(tmp_path_factory.mktemp("hosts"))
