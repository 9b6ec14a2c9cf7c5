"""Shared fixtures: zoo models written once per session, a real redis-server for the transports
and the artifact store, the emulated Kubernetes API with the operator running against it, and
hosts in network namespaces joined by rate-limited links (helpers live in `tests/support`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import onnx
import pytest
import redis

from mopar.model import zoo
from tests.support.cluster import cluster  # noqa: F401  (the operator fixture, for tests marked kmock)
from tests.support.redis_server import RedisServer
from tests.support.topology import hosts  # noqa: F401  (hosts in network namespaces)


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
