"""One Redis user per model, against a real password-protected redis-server: a model's pods reach
their own keys and nothing else, they need exactly the commands its user allows (derived from
the server's own command statistics while the prepare Job, the workers and the gateway run
as the built objects describe them), and deleting the user locks its URL out."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.exceptions import AuthenticationError, NoPermissionError

from mopar.operator import redisadmin, tenancy
from mopar.operator.credentials import build_credentials
from mopar.operator.jobs import build_prepare_job
from mopar.operator.names import store_scope
from mopar.operator.serving import build_serving
from mopar.operator.settings import OperatorSettings
from mopar.operator.spec import KNATIVE, parse
from mopar.operator.units import units_from_manifest
from slice_runtime import manifest as manifests
from slice_runtime import v2
from slice_runtime.errors import TransportError
from slice_runtime.store import open_transport
from slice_runtime.store.artifacts import ArtifactStore
from slice_runtime.tensors import random_inputs
from tests.support import free_port
from tests.support.pods import PodProcess
from tests.support.redis_server import RedisServer

ADMIN_PASSWORD = "the-operators-own"
A = {"name": "tiny", "namespace": "models", "uid": "u-a"}
B = {"name": "other", "namespace": "models", "uid": "u-b"}
MODEL = "zoo://mobilenetv2?scale=0.25&image=64"
# The connection handshake (redis-py tolerates CLIENT SETINFO being refused) and our own calls.
HANDSHAKE = {"auth", "hello", "client|setinfo"}
ADMIN = {"info", "config|resetstat", "acl|setuser"}


@pytest.fixture
def admin_url(tmp_path: Path) -> Any:
    server = RedisServer(tmp_path, "--requirepass", ADMIN_PASSWORD)
    server.start()
    try:
        yield f"redis://:{ADMIN_PASSWORD}@127.0.0.1:{server.port}/1"  # db 1: the pods SELECT it
    finally:
        server.stop()


def _url(admin_url: str, owner: dict[str, str]) -> str:
    """The URL in the Secret the operator writes for the model's pods."""
    spec = parse({"model": {"storageUri": MODEL}}, owner["name"])
    (secret,) = build_credentials(owner, spec, OperatorSettings(redis_url=admin_url))
    return base64.b64decode(secret["data"]["url"]).decode()


async def test_a_models_credentials_reach_its_own_keys_only(admin_url: str, tmp_path: Path) -> None:
    for owner in (A, B):
        await redisadmin.ensure_user(admin_url, owner)
    url_a, url_b = _url(admin_url, A), _url(admin_url, B)
    assert ADMIN_PASSWORD not in url_a and url_a != url_b
    # B's pods store an activation and a slice file, as its gateway and prepare Job do.
    theirs = open_transport(url_b, store_scope(B), "other")
    await theirs.put("req1", {"input": b"b's tensor"}, 60)
    (tmp_path / "slice.onnx").write_bytes(b"b's weights")
    with ArtifactStore(url_b, store_scope(B)) as store:
        digest = store.put_file(tmp_path / "slice.onnx")
        store.set_name("manifest/other/h", digest)
    # A's own keys work.
    ours = open_transport(url_a, store_scope(A), "tiny")
    await ours.put("req1", {"input": b"a's tensor"}, 60)
    assert await ours.get("req1", ["input"]) == [b"a's tensor"]
    # B's, through A's credentials, do not: not through the data plane's own clients...
    stolen = open_transport(url_a, store_scope(B), "other")
    with pytest.raises(TransportError, match="NOPERM|no permissions"):
        await stolen.get("req1", ["input"])
    with pytest.raises(TransportError, match="NOPERM|no permissions"):
        await stolen.delete("req1", ["input"])
    with ArtifactStore(url_a, store_scope(B)) as store, pytest.raises(TransportError, match="NOPERM|no permissions"):
        store.get(digest)
    # ...nor by any other command.
    raw = redis.Redis.from_url(url_a)
    for command in (("GET", f"mopar:{store_scope(B)}:other:req1:input"), ("DEL", f"mopar:{store_scope(B)}:name:x"),
                    ("KEYS", "*"), ("SCAN", "0"), ("FLUSHDB",), ("CONFIG", "GET", "requirepass"),
                    ("ACL", "LIST"), ("EVAL", "return 1", "0"), ("SUBSCRIBE", "c")):  # fmt: skip
        with pytest.raises(NoPermissionError):
            raw.execute_command(*command)
    # B's keys are all still there.
    assert await theirs.get("req1", ["input"]) == [b"b's tensor"]
    with ArtifactStore(url_b, store_scope(B)) as store:
        assert store.get(digest) == b"b's weights" and store.resolve("manifest/other/h") == digest
    for transport in (theirs, ours, stolen):
        await transport.close()

    # Deleting the model's user locks its URL out at once.
    assert await redisadmin.remove_user(admin_url, A)
    with pytest.raises(AuthenticationError):
        redis.Redis.from_url(url_a).ping()
    assert redis.Redis.from_url(admin_url).acl_getuser(tenancy.user(A)) is None
    assert not await redisadmin.remove_user(admin_url, A)


async def test_the_pods_need_exactly_the_commands_the_user_allows(admin_url: str, tmp_path: Path) -> None:
    await redisadmin.ensure_user(admin_url, A)
    settings = OperatorSettings(redis_url=admin_url, image="mopar:test")
    spec = parse({"model": {"storageUri": MODEL}}, A["name"])
    secrets = {s["metadata"]["name"]: s for s in build_credentials(A, spec, settings)}
    admin = redis.Redis.from_url(admin_url)
    admin.config_resetstat()
    pods: list[PodProcess] = []
    try:
        # The prepare Job, as built: profiles, plans, slices and stores the files as the model.
        job = build_prepare_job(A, spec, settings)["spec"]["template"]["spec"]["containers"][0]
        job = {**job, "args": [*job["args"], "--runs", "1"]}
        overrides = {"MOPAR_CACHE_DIR": str(tmp_path / "prepare")}
        for attempt in range(2):  # a retried Job finds its files stored already (EXISTS)
            prepare = PodProcess(job, secrets, overrides, tmp_path / f"prepare{attempt}.log")
            assert await asyncio.to_thread(prepare.wait) == 0, prepare.tail()
        with ArtifactStore(admin_url, store_scope(A)) as store:
            published = store.get(store.resolve(f"manifest/tiny/{spec.prepare_hash()}") or "")
        mounted = tmp_path / "etc-mopar"  # the plan ConfigMap, mounted; no slice files beside it
        mounted.mkdir()
        (mounted / "manifest.json").write_bytes(published)
        manifest = manifests.loads(published.decode())

        # The workers and the gateway, as built: files from the artifact store, tensors through Redis
        # (all of them: tensors small enough to travel inside the slice calls would use no command).
        objects = build_serving(A, spec, units_from_manifest(manifest), KNATIVE, settings)
        containers = [o["spec"]["template"]["spec"]["containers"][0] for o in objects]
        local = {"MOPAR_MANIFEST": str(mounted / "manifest.json"), "MOPAR_CACHE_DIR": str(tmp_path / "cache"),
                 "MOPAR_INLINE_KB": "0"}  # fmt: skip
        workers = [PodProcess(c, secrets, {**local, "MOPAR_PORT": str(free_port())}, tmp_path / f"w{i}.log")
                   for i, c in enumerate(containers[:-1])]  # fmt: skip
        pods += workers
        urls = ",".join(f"{e.id}={w.url}" for e, w in zip(manifest.slices, workers))
        gateway = PodProcess(containers[-1], secrets, {**local, "MOPAR_PORT": str(free_port()),
                                                       "MOPAR_SLICE_URLS": urls}, tmp_path / "gateway.log")  # fmt: skip
        pods.append(gateway)
        for pod in pods:
            await asyncio.to_thread(pod.wait_ready)
        body, headers = v2.encode_request(random_inputs(manifest.inputs))
        request = urllib.request.Request(f"{gateway.url}/v2/models/tiny/infer", data=body, headers=headers)
        answer = await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=60).read())
        assert json.loads(answer)["outputs"]
    finally:
        for pod in pods:
            pod.stop()

    stats = admin.info("commandstats")
    used = {name.removeprefix("cmdstat_") for name, figures in stats.items() if figures["calls"]} - HANDSHAKE - ADMIN
    refused = {name: figures for name, figures in stats.items() if figures.get("rejected_calls")}
    assert used == set(tenancy.COMMANDS), f"used {sorted(used)}, allowed {sorted(tenancy.COMMANDS)}"
    assert set(refused) <= {f"cmdstat_{c}" for c in HANDSHAKE}, refused
