"""Transports and the artifact store against real stores: a redis-server process (stopped and
restarted where a test needs it) and the machine's shared memory, never mocks."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from slice_runtime import codec
from slice_runtime.errors import ArtifactError, MissingTensors, TransportError
from slice_runtime.store import Transport, open_transport
from slice_runtime.store.artifacts import CHUNK_BYTES, ArtifactStore
from slice_runtime.store.keys import activation_key
from slice_runtime.store.redis import RedisTransport
from slice_runtime.store.shm import SharedMemoryTransport
from tests.support import ROOT, free_port
from tests.support.redis_server import RedisServer

MiB = 1024 * 1024
PASSWORD = "s3cret"


def _namespace() -> str:
    # Shared memory is machine-wide: a fresh namespace per test keeps runs from seeing each other.
    return f"t{uuid.uuid4().hex[:10]}"


def _frames(seed: int, count: int = 3) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    frames = {
        f"layer{i}/out:{i}": codec.encode(rng.standard_normal((4, 16 * (i + 1))).astype(np.float32))
        for i in range(count)
    }
    frames["big"] = codec.encode(rng.standard_normal((256, 1024)).astype(np.float32), codec.CodecSetting(1, True))
    return frames


@pytest.fixture(params=["redis", "shm"])
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[Transport]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else "shm"
    opened = open_transport(url, _namespace(), "resnet")
    yield opened
    await opened.purge()
    await opened.close()


@pytest.fixture
def password_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path, "--requirepass", PASSWORD)
    server.start()
    yield server
    server.stop()


def _one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


# --- both transports -----------------------------------------------------------------------


async def test_round_trip(transport: Transport) -> None:
    frames = _frames(0)
    await transport.ping()
    await transport.put("req-1", frames, ttl_seconds=30)
    got = await transport.get("req-1", list(frames))
    assert got == list(frames.values())
    assert np.array_equal(codec.decode(got[-1]), codec.decode(frames["big"]))
    assert await transport.count("req-1") == len(frames)
    # Reading does not consume: the next slice and a retry may both read.
    assert await transport.get("req-1", ["big"]) == [frames["big"]]
    assert await transport.get("req-1", []) == []


async def test_put_overwrites(transport: Transport) -> None:
    await transport.put("r", {"x": b"first, longer value"}, 30)
    await transport.put("r", {"x": b"second"}, 30)
    assert await transport.get("r", ["x"]) == [b"second"]
    assert await transport.count("r") == 1


async def test_missing_tensor_is_named(transport: Transport) -> None:
    await transport.put("req-2", {"present": b"\x01\x02"}, 30)
    with pytest.raises(MissingTensors) as error:
        await transport.get("req-2", ["present", "absent_one", "absent_two"])
    assert isinstance(error.value, TransportError) and error.value.tensors == ["absent_one", "absent_two"]
    message = _one_line(error)
    assert "missing" in message and "absent_one, absent_two" in message and "req-2" in message
    assert "present," not in message


async def test_delete_and_count(transport: Transport) -> None:
    await transport.put("req_a", _frames(1), 30)
    await transport.put("req_a_2", {"x": b"other request, id sharing a prefix"}, 30)
    assert await transport.count() == len(_frames(1)) + 1
    assert await transport.count("req_a") == len(_frames(1))
    assert await transport.delete("req_a", [*_frames(1), "never-written"]) == len(_frames(1))
    assert await transport.count("req_a") == 0
    assert await transport.count("req_a_2") == 1
    assert await transport.delete("req_a", list(_frames(1))) == 0
    assert await transport.delete("req_a_2", ["x"]) == 1
    assert await transport.count() == 0


async def test_purge_is_scoped_to_namespace_and_model(transport: Transport, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("redis_url") if transport.scheme == "redis" else "shm"
    other_model = open_transport(url, transport.namespace, "bert")
    other_namespace = open_transport(url, _namespace(), transport.model)
    try:
        for index in range(3):
            await transport.put(f"r{index}", {"a": b"1", "b": b"2"}, 30)
        await other_model.put("r0", {"a": b"kept"}, 30)
        await other_namespace.put("r0", {"a": b"kept too"}, 30)
        assert await transport.purge() == 6
        assert await transport.count() == 0
        assert await other_model.get("r0", ["a"]) == [b"kept"]
        assert await other_namespace.get("r0", ["a"]) == [b"kept too"]
        assert await transport.purge() == 0
    finally:
        for extra in (other_model, other_namespace):
            await extra.purge()
            await extra.close()


async def test_concurrent_cycles(transport: Transport) -> None:
    async def cycle(index: int) -> None:
        request_id = uuid.uuid4().hex
        frames = {"x": os.urandom(1000 + index), "y": index.to_bytes(4, "little") * 2000}
        await transport.put(request_id, frames, 30)
        assert await transport.get(request_id, ["y", "x"]) == [frames["y"], frames["x"]]
        assert await transport.delete(request_id, ["x", "y"]) == 2

    await asyncio.gather(*(cycle(index) for index in range(50)))
    assert await transport.count() == 0


@pytest.mark.parametrize("bad", ["", "a/b", "a:b", "a b", "../x", "x" * 129])
async def test_request_ids_are_checked(transport: Transport, bad: str) -> None:
    with pytest.raises(ValueError, match="request id"):
        await transport.put(bad, {"x": b"1"}, 30)


# --- choosing a transport ------------------------------------------------------------------


def test_open_transport_schemes(tmp_path: Path) -> None:
    assert isinstance(open_transport("shm", "ns", "m"), SharedMemoryTransport)
    assert isinstance(open_transport("shm://", "ns", "m"), SharedMemoryTransport)
    for url in ("redis://:pw@127.0.0.1:6379/0", "rediss://h:6380/1?ssl_cert_reqs=none", f"unix://{tmp_path}/r.sock"):
        assert isinstance(open_transport(url, "ns", "m"), RedisTransport)
    for bad in ("http://user:hunter2@host/", "localhost:6379", "memcached://h", ""):
        with pytest.raises(ValueError) as error:
            open_transport(bad, "ns", "m")
        message = _one_line(error)
        assert "hunter2" not in message and "redis://" in message and "shm" in message
    with pytest.raises(ValueError, match="reserved"):
        open_transport("shm", "ns", "artifact")
    with pytest.raises(ValueError, match="':'"):
        open_transport("shm", "ns", "a:b")


# --- Redis specifics -----------------------------------------------------------------------


async def test_redis_key_layout_and_ttl(redis_url: str) -> None:
    transport = open_transport(redis_url, "prod", "resnet50")
    try:
        await transport.put("0123abcd", {"conv1/out": b"frame", "fc": b"logits"}, ttl_seconds=12.5)
        client = redis.Redis.from_url(redis_url)
        keys = sorted(key.decode() for key in client.scan_iter(match="*"))
        assert keys == ["mopar:prod:resnet50:0123abcd:conv1/out", "mopar:prod:resnet50:0123abcd:fc"]
        assert activation_key("prod", "resnet50", "0123abcd", "fc") == "mopar:prod:resnet50:0123abcd:fc"
        for key in keys:
            assert 11_000 < client.pttl(key) <= 12_500
        assert client.get("mopar:prod:resnet50:0123abcd:fc") == b"logits"
        client.close()
    finally:
        await transport.close()


async def test_redis_glob_characters_in_names_stay_literal(redis_url: str) -> None:
    wild = open_transport(redis_url, "ns", "res*")
    plain = open_transport(redis_url, "ns", "resnet")
    try:
        await plain.put("r", {"x": b"1"}, 30)
        await wild.put("r", {"x": b"2"}, 30)
        assert await wild.count() == 1
        assert await wild.purge() == 1
        assert await plain.get("r", ["x"]) == [b"1"]
    finally:
        await wild.close()
        await plain.close()


async def test_redis_password(password_server: RedisServer) -> None:
    port = password_server.port
    good = open_transport(f"redis://:{PASSWORD}@127.0.0.1:{port}/0", "ns", "m")
    await good.put("r", {"x": b"1"}, 30)
    assert await good.get("r", ["x"]) == [b"1"]
    await good.close()
    for url in (f"redis://:wr0ngpass@127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/0"):
        bad = open_transport(url, "ns", "m")
        with pytest.raises(TransportError) as error:
            await bad.get("r", ["x"])
        message = _one_line(error)
        assert message.startswith(f"Redis at 127.0.0.1:{port} rejected the credentials")
        assert "wr0ngpass" not in message and PASSWORD not in message
        await bad.close()


async def test_redis_unreachable_fails_fast() -> None:
    port = free_port()
    transport = open_transport(f"redis://:{PASSWORD}@127.0.0.1:{port}/0", "ns", "m")
    for call in (transport.ping(), transport.put("r", {"x": b"1"}, 30), transport.get("r", ["x"]), transport.count()):
        started = time.monotonic()
        with pytest.raises(TransportError) as error:
            await call
        assert time.monotonic() - started < 3
        message = _one_line(error)
        assert message.startswith(f"cannot reach Redis at 127.0.0.1:{port}")
        assert "Connection refused" in message and PASSWORD not in message
    await transport.close()


async def test_redis_restart_is_survived(redis_server: RedisServer, redis_url: str) -> None:
    transport = open_transport(redis_url, "ns", "m", max_connections=4)
    try:
        await transport.put("r", {"x": b"before"}, 30)
        assert await transport.get("r", ["x"]) == [b"before"]
        redis_server.stop()
        for call in (transport.ping(), transport.get("r", ["x"]), transport.put("r", {"x": b"down"}, 30)):
            started = time.monotonic()
            with pytest.raises(TransportError, match=f"cannot reach Redis at 127.0.0.1:{redis_server.port}"):
                await call
            assert time.monotonic() - started < 3
        redis_server.start()
        # The same transport, with its pool of connections to the old process, works again.
        await transport.ping()
        await transport.put("r", {"x": b"after"}, 30)
        assert await transport.get("r", ["x"]) == [b"after"]
    finally:
        await transport.close()


async def test_redis_small_pool_queues_instead_of_failing(redis_url: str) -> None:
    transport = open_transport(redis_url, "ns", "m", max_connections=3)
    try:
        payload = os.urandom(64 * 1024)
        await asyncio.gather(*(transport.put(f"r{index}", {"x": payload}, 30) for index in range(40)))
        assert await transport.count() == 40
        assert await transport.purge() == 40
    finally:
        await transport.close()


# --- shared memory specifics ---------------------------------------------------------------

_CHILD_WRITE = """
import asyncio, sys
from slice_runtime.store import open_transport
asyncio.run(open_transport("shm", sys.argv[1], "m").put("req", {"from_child": bytes(range(256)) * 40}, 30))
"""
_CHILD_READ = """
import asyncio, hashlib, sys
from slice_runtime.store import open_transport
frame, = asyncio.run(open_transport("shm", sys.argv[1], "m").get("req", ["from_parent"]))
print(hashlib.sha256(frame).hexdigest())
"""


def _child(code: str, namespace: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code, namespace], env=env, capture_output=True, text=True, timeout=60, check=False
    )


async def test_shm_crosses_processes_and_outlives_them() -> None:
    namespace = _namespace()
    transport = SharedMemoryTransport(namespace, "m")
    try:
        written = _child(_CHILD_WRITE, namespace)
        # No resource_tracker "leaked shared_memory" warning: the segment is not tracked.
        assert written.returncode == 0 and written.stderr == "", written.stderr
        assert await transport.get("req", ["from_child"]) == [bytes(range(256)) * 40]

        frame = os.urandom(300_000)
        await transport.put("req", {"from_parent": frame}, 30)
        read = _child(_CHILD_READ, namespace)
        assert read.returncode == 0 and read.stderr == "", read.stderr
        assert read.stdout.strip() == hashlib.sha256(frame).hexdigest()
        # The reader exited; had it been tracked, its tracker would have unlinked the segment.
        assert await transport.get("req", ["from_parent"]) == [frame]
        assert await transport.count("req") == 2
        names = [name for name in os.listdir("/dev/shm") if name.startswith(transport.segment_name("req", "x")[:-12])]
        assert len(names) == 2 and all(len(name) < 200 and "/" not in name for name in names)
    finally:
        await transport.purge()


# --- artifact store ------------------------------------------------------------------------


@pytest.fixture
def store(redis_url: str) -> Iterator[ArtifactStore]:
    with ArtifactStore(redis_url, namespace="prod") as opened:
        yield opened


def test_artifact_chunks_round_trip_and_corruption(store: ArtifactStore, redis_url: str) -> None:
    data = np.random.default_rng(7).bytes(70 * MiB)
    digest = store.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    client = redis.Redis.from_url(redis_url)
    meta = client.hgetall(f"mopar:prod:artifact:{digest}")
    assert meta == {b"size": str(len(data)).encode(), b"chunks": b"2", b"sha256": digest.encode()}
    assert client.strlen(f"mopar:prod:artifact:{digest}:0") == CHUNK_BYTES == 64 * MiB
    assert client.strlen(f"mopar:prod:artifact:{digest}:1") == 6 * MiB
    assert store.get(digest) == data
    assert store.put(data) == digest  # idempotent

    client.setrange(f"mopar:prod:artifact:{digest}:1", 1000, b"bit rot")
    with pytest.raises(ArtifactError) as error:
        store.get(digest)
    assert digest[:12] in _one_line(error) and "corrupt" in str(error.value)

    client.delete(f"mopar:prod:artifact:{digest}:1")
    with pytest.raises(ArtifactError, match=f"{digest[:12]} is incomplete: chunk 1 of 2 is missing"):
        store.get(digest)
    assert store.put(data) == digest  # a damaged artifact is written again, not skipped
    assert store.get(digest) == data
    client.close()


def test_artifact_fetch_list_delete(store: ArtifactStore, redis_url: str, tmp_path: Path) -> None:
    model = tmp_path / "slice0.onnx"
    model.write_bytes(b"onnx bytes " * 1000)
    first = store.put_file(model)
    second = store.put(b"")
    assert store.list() == sorted([first, second])
    with ArtifactStore(redis_url, namespace="other") as other:
        assert other.list() == []

    target = store.fetch_to(first, tmp_path / "fetched" / "model.onnx")
    assert target.read_bytes() == model.read_bytes()
    assert [path.name for path in target.parent.iterdir()] == ["model.onnx"]  # no temp file left
    assert store.get(second) == b""

    assert store.delete(first) == 2  # meta and one chunk
    assert store.delete(first) == 0
    assert store.list() == [second]
    with pytest.raises(ArtifactError, match=f"artifact {first[:12]} is not in the store"):
        store.get(first)
    with pytest.raises(ArtifactError):
        store.fetch_to(first, tmp_path / "never.onnx")
    assert not (tmp_path / "never.onnx").exists()
    with pytest.raises(ValueError):
        store.get("not-a-sha")


def test_artifact_store_unreachable() -> None:
    port = free_port()
    store = ArtifactStore(f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    started = time.monotonic()
    with pytest.raises(TransportError) as error:
        store.put(b"data")
    assert time.monotonic() - started < 3
    message = _one_line(error)
    assert message.startswith(f"cannot reach Redis at 127.0.0.1:{port}") and PASSWORD not in message
    assert not isinstance(error.value, ArtifactError)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A redis-server speaking only TLS, with a self-signed certificate made by openssl."""
    import shutil as _shutil

    if _shutil.which("openssl") is None:
        pytest.fail("openssl is not on PATH; `make test` installs it")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file",
         str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    import socket
    import time as _time

    deadline = _time.monotonic() + 10
    while _time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        _time.sleep(0.05)
    yield port, cert
    process.terminate()
    process.wait(10)


async def test_redis_over_tls(tls_server: tuple[int, Path]) -> None:
    port, cert = tls_server
    secure = open_transport(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}", "ns", "m")
    try:
        await secure.put("r", {"x": b"over tls"}, 30)
        assert await secure.get("r", ["x"]) == [b"over tls"]
    finally:
        await secure.close()
    untrusted = open_transport(f"rediss://127.0.0.1:{port}/0", "ns", "m")  # the system CAs do not know it
    with pytest.raises(TransportError) as error:
        await untrusted.ping()
    assert "TLS certificate verification failed" in _one_line(error)
    await untrusted.close()
