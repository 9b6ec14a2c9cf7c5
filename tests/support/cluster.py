"""The emulated Kubernetes API (KMock's KubernetesEmulator) with our operator running for real
against it, and the tests' hands on it: they play the kubelet (run the prepare Job in-process,
mark Jobs complete and functions ready) and Knative (make a revision's Deployment).

Tests that use the `cluster` fixture mark themselves `pytest.mark.kmock(cls=VersionedEmulator)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jsonpatch
import kmock
import kopf
import pytest

import mopar.operator  # noqa: F401  (registers the handlers)
from mopar.errors import KubeNotFound
from mopar.operator.kube import DEPLOYMENTS, JOBS, KSERVICES, PARTITIONED_MODELS, KubeClient
from mopar.operator.prepare import prepare
from mopar.operator.spec import parse
from tests.support import free_port


class VersionedEmulator(kmock.KubernetesEmulator):
    """KMock's emulator plus what the real API server does and Kopf relies on:
    - a new resourceVersion on every write, so Kopf can tell a stale watch event from a fresh one;
    - 422 (not 500) when a JSON patch does not apply, as its `test` of the resourceVersion fails
      when the object changed meanwhile. The API server answers 422 there (apiserver
      `pkg/endpoints/handlers/patch.go`, `applyJSPatch`: `NewGenericServerResponse(
      http.StatusUnprocessableEntity, …)`), and Kopf keeps the rest of its patch for the next
      event (`patching.patch_obj`). Anything else it counts as an unexpected error, throttles for
      longer each time (1, 1, 2, 3, 5 … s) and skips the touch that re-runs a waiting handler;
    - a watch that goes on from the list's resourceVersion: KMock's replays every object as
      ADDED, so Kopf sees each object's listed, older version again after patching it, and
      loses the writes between its snapshot and its joining the event bus."""

    _revision = 1  # the last resourceVersion given out

    async def _render_error(self, exc: Exception) -> Any:
        if isinstance(exc, jsonpatch.JsonPatchTestFailed):
            exc = kmock.KubernetesError(status=422, reason="Invalid", message=str(exc))
        return await super()._render_error(exc)

    async def _handle(self, request: Any) -> Any:
        data = request.data
        if request.resource is not None and request.action in (kmock.action.CREATE, kmock.action.UPDATE):
            self._revision += 1
            version = str(self._revision)
            if isinstance(data, dict):  # an object or a merge patch
                data.setdefault("metadata", {})["resourceVersion"] = version
            elif isinstance(data, list):  # a JSON patch
                data.append({"op": "add", "path": "/metadata/resourceVersion", "value": version})
        return await super()._handle(request)

    async def _serve_list(self, request: Any) -> Any:
        revision = self._revision  # read first: a write meanwhile is listed and watched, never lost
        listed = await super()._serve_list(request)
        listed["metadata"]["resourceVersion"] = str(revision)
        return listed

    async def _serve_watch(self, request: Any) -> AsyncIterator[Any]:
        """The objects changed after `resourceVersion` (all, without one), then every write.
        The bus is joined in the same locked step as the snapshot (writes publish under that
        lock), so every write is in one or the other. Objects deleted between a list and its
        watch are not reported (the emulator keeps no history)."""
        yield b""  # the headers go out: a watch is streaming even while nothing happens
        check = self._KubernetesEmulator__check  # type: ignore[attr-defined]
        since = int(request.params.get("resourceVersion") or 0)
        bus = self._buses[request.resource]
        async with self._lock:
            mark = await bus.mark()
            events = [{"type": "ADDED" if since == 0 else "MODIFIED", "object": obj.raw}
                      for (resource, namespace, name), obj in self._objects.items()
                      if check(request, resource, namespace, name, strict=False) and not obj.deleted
                      and int(obj.raw.get("metadata", {}).get("resourceVersion") or 0) > since]  # fmt: skip
        try:
            for event in events:
                yield event
            async for event in bus.stream(since=mark):
                meta = event.get("object", {}).get("metadata", {})
                if check(request, request.resource, meta.get("namespace"), meta.get("name"), strict=False):
                    yield event
        finally:
            await bus.unmark(mark)


NS = "models"
TEST_AGENT = "mopar-tests"
# The operator serves /metrics once per process (a restarted operator keeps the endpoint), so
# every operator of this test session uses one port.
METRICS_PORT = free_port()
MODEL = "zoo://resnet50?scale=0.25&image=64"
RESOURCES = {
    "mopar.dev/v1alpha1/partitionedmodels": ("PartitionedModel", {"status"}),
    "v1/namespaces": ("Namespace", set()),
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("CustomResourceDefinition", set()),
    "v1/events": ("Event", set()),
    "v1/configmaps": ("ConfigMap", set()),
    "v1/secrets": ("Secret", set()),
    "v1/services": ("Service", set()),
    "batch/v1/jobs": ("Job", {"status"}),
    "apps/v1/deployments": ("Deployment", {"status"}),
    "autoscaling/v2/horizontalpodautoscalers": ("HorizontalPodAutoscaler", {"status"}),
}
KNATIVE = {"serving.knative.dev/v1/services": ("Service", {"status"})}
CLUSTER_SCOPED = {"v1/namespaces", "apiextensions.k8s.io/v1/customresourcedefinitions"}


async def eventually(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


class Cluster:
    """The emulated API with the operator running against it, and the tests' hands on it."""

    def __init__(self, api: kmock.KubernetesEmulator, redis_url: str, work: Path) -> None:
        self.api, self.redis_url, self.work = api, redis_url, work
        self.kube = KubeClient(str(api.url), user_agent=TEST_AGENT)  # the tests' own requests, told apart
        self.thread: threading.Thread | None = None
        self.stop = threading.Event()
        self.metrics_port = 0  # where the operator serves /metrics (it starts that once per process)
        self.health_port = 0  # where it serves /healthz, as `mopar operator --health-port` does

    async def start_operator(self, clusterwide: bool = False) -> None:
        """Kopf in a thread with its own event loop, as `mopar operator` runs it: at shutdown Kopf
        cancels every task left in its loop, and the test's own tasks must not be among them.
        Cluster-wide, it scans the cluster's resources and namespaces as it does in production;
        serving listed namespaces, it has no cluster-wide permissions to scan with."""
        settings = kopf.OperatorSettings()
        settings.scanning.disabled = not clusterwide
        settings.peering.standalone = True
        settings.watching.reconnect_backoff = 0.1
        self.stop, ready = threading.Event(), threading.Event()
        self.health_port = free_port()
        operator = kopf.operator(clusterwide=clusterwide, namespaces=[] if clusterwide else [NS], settings=settings,
                                 stop_flag=self.stop, ready_flag=ready, standalone=True,
                                 liveness_endpoint=f"http://127.0.0.1:{self.health_port}/healthz")  # fmt: skip
        self.thread = threading.Thread(target=asyncio.run, args=(operator,), daemon=True)
        self.thread.start()
        assert await asyncio.to_thread(ready.wait, 30), "the operator did not start"

    async def stop_operator(self) -> None:
        self.stop.set()
        await asyncio.to_thread(self.thread.join, 30)
        assert not self.thread.is_alive(), "the operator did not stop"
        self.thread = None

    def objects(self, resource: str) -> dict[str, dict[str, Any]]:
        return {
            name: dict(obj.raw) for (res, ns, name), obj in self.api.objects.items()
            if ns == NS and f"{res.group}/{res.version}/{res.plural}".lstrip("/") == resource and not obj.deleted
        }  # fmt: skip

    async def apply_model(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": "mopar.dev/v1alpha1", "kind": "PartitionedModel",
                # The emulated API assigns neither uids nor versions; Kopf's patches test the version.
                "metadata": {"name": name, "namespace": NS, "uid": str(uuid.uuid4()), "generation": 1,
                             "resourceVersion": "1"},
                "spec": spec}  # fmt: skip
        return await self.kube.create(PARTITIONED_MODELS, NS, body)

    async def model(self, name: str) -> dict[str, Any]:
        found = await self.kube.get(PARTITIONED_MODELS, NS, name)
        assert found is not None
        return found

    async def play_prepare_job(self, name: str) -> dict[str, Any]:
        """Run the (unfinished) Job the operator created, as a kubelet would, then mark it complete."""

        def unfinished() -> dict[str, Any] | None:
            return next((j for j in self.jobs(name).values() if not j.get("status", {}).get("succeeded")), None)

        job = await eventually(unfinished, what="a prepare Job to run")
        pm = await self.model(name)
        owner = {"name": name, "namespace": NS, "uid": pm["metadata"]["uid"]}
        spec = parse(pm["spec"], name)
        await prepare(spec, owner, self.redis_url, self.work / job["metadata"]["name"], runs=2)
        await self.kube.patch(JOBS, NS, job["metadata"]["name"],
                              {"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}},
                              "status")  # fmt: skip
        return job

    async def play_revision(self, name: str, service: dict[str, Any]) -> None:
        """What Knative makes for a Service's first revision: a Deployment carrying the
        template's labels (ours among them), owned by the Revision, not by the model."""
        deployment = f"{name}-00001-deployment"
        if deployment in self.objects("apps/v1/deployments"):
            return
        labels = {**service["spec"]["template"]["metadata"]["labels"], "serving.knative.dev/revision": f"{name}-00001"}
        owner = {"apiVersion": "serving.knative.dev/v1", "kind": "Revision", "name": f"{name}-00001",
                 "uid": str(uuid.uuid4()), "controller": True}  # fmt: skip
        await self.kube.create(DEPLOYMENTS, NS, {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": deployment, "namespace": NS, "labels": labels, "ownerReferences": [owner]},
            "spec": {"selector": {"matchLabels": labels}, "template": service["spec"]["template"]},
        })  # fmt: skip

    def requests(self, since: int = 0) -> list[tuple[str, str]]:
        """(method, path) of the requests the API served, oldest first."""
        return [(r.method.value.lower(), str(r.url.path)) for r in list(self.api)[since:]]

    def jobs(self, name: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.objects("batch/v1/jobs").items() if k.startswith(f"{name}-prepare-")}

    async def mark_ready(self, serving: str) -> None:
        """Every function ready; one the operator deletes meanwhile is skipped, as a kubelet's
        status update of a deleted object is."""
        if serving == "knative":
            for name, service in self.objects("serving.knative.dev/v1/services").items():
                await self.play_revision(name, service)
                status = {"conditions": [{"type": "Ready", "status": "True"}],
                          "url": f"http://{name}.{NS}.example.com"}  # fmt: skip
                with contextlib.suppress(KubeNotFound):
                    await self.kube.patch(KSERVICES, NS, name, {"status": status}, "status")
        else:
            for name in self.objects("apps/v1/deployments"):
                with contextlib.suppress(KubeNotFound):
                    await self.kube.patch(DEPLOYMENTS, NS, name, {"status": {"readyReplicas": 1}}, "status")


@pytest.fixture
async def cluster(kmock: kmock.KubernetesEmulator, redis_url: str, tmp_path: Path, monkeypatch,
                  request) -> AsyncIterator[Cluster]:  # fmt: skip
    # `knative` (the default) or `no-knative`; `-clusterwide` runs the operator as it runs serving
    # every namespace.
    param = getattr(request, "param", "knative")
    resources = dict(RESOURCES)
    if param.startswith("knative"):
        resources.update(KNATIVE)
    for key, (kind, subresources) in resources.items():
        kmock.resources[key] = kmock.ResourceInfo(
            kind=kind, namespaced=key not in CLUSTER_SCOPED, subresources=subresources,
            verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
        )  # fmt: skip
    monkeypatch.setenv("MOPAR_POLL_SECONDS", "0.3")  # the readiness check's interval, read at start-up
    monkeypatch.setenv("MOPAR_KUBE_SERVER", str(kmock.url))
    monkeypatch.setenv("MOPAR_REDIS_URL", redis_url)
    monkeypatch.setenv("MOPAR_IMAGE", "mopar:test")
    monkeypatch.setenv("MOPAR_METRICS_PORT", str(METRICS_PORT))
    cluster = Cluster(kmock, redis_url, tmp_path)
    cluster.metrics_port = METRICS_PORT
    await cluster.start_operator(clusterwide=param.endswith("-clusterwide"))
    yield cluster
    if cluster.thread is not None:
        await cluster.stop_operator()
    await cluster.kube.close()
