"""The operator, running for real (Kopf) against the Kubernetes API as KMock's emulator serves it.

The tests play the kubelet: when the operator creates the prepare Job, they run `mopar
prepare` in-process (against the emulated API and a real redis-server) and mark the Job
complete; when it creates Knative Services or Deployments, they mark them ready.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import itertools
import json
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis

os.environ["MOPAR_POLL_SECONDS"] = "0.3"  # read when the handlers are imported (the timer's interval)

import jsonpatch  # noqa: E402
import kmock  # noqa: E402
import kopf  # noqa: E402

from mopar.operator.kube import CONFIGMAPS, DEPLOYMENTS, JOBS, KSERVICES, PARTITIONED_MODELS, KubeClient  # noqa: E402
from mopar.operator.names import HASH_ANNOTATION, slice_name  # noqa: E402
from mopar.operator.prepare import prepare  # noqa: E402
from mopar.operator.spec import parse  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.validation import validate_object  # noqa: E402


class VersionedEmulator(kmock.KubernetesEmulator):
    """KMock's emulator plus two things the real API server does and Kopf relies on: a new
    resourceVersion on every write, so Kopf can tell a stale watch event from a fresh one; and
    409 Conflict (not 500) when a patch's resourceVersion precondition fails, so Kopf drops the
    stale patch and goes on with the next event instead of retrying it."""

    async def _render_error(self, exc: Exception) -> Any:
        if isinstance(exc, jsonpatch.JsonPatchTestFailed):
            exc = kmock.KubernetesError(status=409, reason="Conflict", message=str(exc))
        return await super()._render_error(exc)

    _versions = itertools.count(2)

    async def _handle(self, request: Any) -> Any:
        data = request.data
        if request.resource is not None and request.action in (kmock.action.CREATE, kmock.action.UPDATE):
            version = str(next(self._versions))
            if isinstance(data, dict):  # an object or a merge patch
                data.setdefault("metadata", {})["resourceVersion"] = version
            elif isinstance(data, list):  # a JSON patch
                data.append({"op": "add", "path": "/metadata/resourceVersion", "value": version})
        return await super()._handle(request)


pytestmark = pytest.mark.kmock(cls=VersionedEmulator)

NS = "models"
# The operator serves /metrics once per process (a restarted operator keeps the endpoint), so
# every operator of this test session uses one port.
METRICS_PORT = free_port()
MODEL = "zoo://resnet50?scale=0.25&image=64"
RESOURCES = {
    "mopar.dev/v1alpha1/partitionedmodels": ("PartitionedModel", {"status"}),
    "v1/namespaces": ("Namespace", set()),
    "v1/events": ("Event", set()),
    "v1/configmaps": ("ConfigMap", set()),
    "v1/secrets": ("Secret", set()),
    "v1/services": ("Service", set()),
    "batch/v1/jobs": ("Job", {"status"}),
    "apps/v1/deployments": ("Deployment", {"status"}),
    "autoscaling/v2/horizontalpodautoscalers": ("HorizontalPodAutoscaler", {"status"}),
}
KNATIVE = {"serving.knative.dev/v1/services": ("Service", {"status"})}


async def _eventually(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
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
        self.kube = KubeClient(str(api.url))
        self.thread: threading.Thread | None = None
        self.stop = threading.Event()
        self.metrics_port = 0  # where the operator serves /metrics (it starts that once per process)

    async def start_operator(self) -> None:
        """Kopf in a thread with its own event loop, as `mopar operator` runs it: at shutdown Kopf
        cancels every task left in its loop, and the test's own tasks must not be among them."""
        settings = kopf.OperatorSettings()
        settings.scanning.disabled = True
        settings.peering.standalone = True
        settings.watching.reconnect_backoff = 0.1
        self.stop, ready = threading.Event(), threading.Event()
        operator = kopf.operator(namespaces=[NS], settings=settings, stop_flag=self.stop, ready_flag=ready,
                                 standalone=True)  # fmt: skip
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

        job = await _eventually(unfinished, what="a prepare Job to run")
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
        if serving == "knative":
            for name, service in self.objects("serving.knative.dev/v1/services").items():
                await self.play_revision(name, service)
                status = {"conditions": [{"type": "Ready", "status": "True"}],
                          "url": f"http://{name}.{NS}.example.com"}  # fmt: skip
                await self.kube.patch(KSERVICES, NS, name, {"status": status}, "status")
        else:
            for name in self.objects("apps/v1/deployments"):
                await self.kube.patch(DEPLOYMENTS, NS, name, {"status": {"readyReplicas": 1}}, "status")


@pytest.fixture
async def cluster(kmock: kmock.KubernetesEmulator, redis_url: str, tmp_path: Path, monkeypatch,
                  request) -> AsyncIterator[Cluster]:  # fmt: skip
    resources = dict(RESOURCES)
    if getattr(request, "param", "knative") == "knative":
        resources.update(KNATIVE)
    for key, (kind, subresources) in resources.items():
        kmock.resources[key] = kmock.ResourceInfo(
            kind=kind, namespaced=key != "v1/namespaces", subresources=subresources,
            verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
        )  # fmt: skip
    monkeypatch.setenv("MOPAR_KUBE_SERVER", str(kmock.url))
    monkeypatch.setenv("MOPAR_REDIS_URL", redis_url)
    monkeypatch.setenv("MOPAR_IMAGE", "mopar:test")
    monkeypatch.setenv("MOPAR_METRICS_PORT", str(METRICS_PORT))
    cluster = Cluster(kmock, redis_url, tmp_path)
    cluster.metrics_port = METRICS_PORT
    await cluster.start_operator()
    yield cluster
    if cluster.thread is not None:
        await cluster.stop_operator()
    await cluster.kube.close()


def _condition(pm: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in pm.get("status", {}).get("conditions", []) if c["type"] == kind)


def _events(cluster: Cluster, reason: str) -> list[dict[str, Any]]:
    """Events posted (read from the request log: Kopf names Events by generateName, which the
    emulated API does not expand, so it keeps only the first one as an object and answers 409
    to the next, which Kopf's poster retries; repeated posts of one Event count once)."""
    posted = [r.data for r in list(cluster.api) if r.method.value == "POST" and str(r.url.path).endswith("/events")]
    unique = {json.dumps(e, sort_keys=True): e for e in posted if isinstance(e, dict) and e.get("reason") == reason}
    return list(unique.values())


async def _until_ready(cluster: Cluster, name: str, serving: str) -> dict[str, Any]:
    async def ready() -> dict[str, Any] | None:
        await cluster.mark_ready(serving)
        pm = await cluster.model(name)
        return pm if pm.get("status", {}).get("phase") == "Ready" else None

    return await _eventually(ready, what=f"{name} Ready")


async def test_create_prepares_deploys_on_knative_and_becomes_ready(cluster: Cluster) -> None:
    await cluster.apply_model("resnet", {"model": {"storageUri": MODEL}, "objective": "latency",
                                         "autoscaling": {"maxScale": 4}})  # fmt: skip
    await _eventually(lambda: _phase_is(cluster, "resnet", "Preparing"), what="phase Preparing")
    job = await cluster.play_prepare_job("resnet")
    pm = await _until_ready(cluster, "resnet", "knative")

    status = pm["status"]
    assert [c["type"] for c in status["conditions"]] == ["Profiled", "Planned", "Sliced", "Deployed", "Ready"]
    assert all(c["status"] == "True" for c in status["conditions"])
    assert status["serving"] == "knative" and status["observedGeneration"] == 1
    assert status["endpoint"] == f"http://resnet.{NS}.example.com/v2/models/resnet/infer"
    services = cluster.objects("serving.knative.dev/v1/services")
    assert set(services) == {"resnet", *(slice_name("resnet", s["name"]) for s in status["slices"])}
    assert status["sliceCount"] == len(status["slices"]) == len(services) - 1
    assert all(s["readyReplicas"] == 1 for s in status["slices"])

    secret = cluster.objects("v1/secrets")["resnet-redis"]  # the operator's Redis, for this model's pods
    assert base64.b64decode(secret["data"]["url"]).decode() == cluster.redis_url
    plan = cluster.objects("v1/configmaps")["resnet-plan"]
    for obj in [job, plan, *services.values()]:
        assert obj["metadata"]["ownerReferences"][0]["uid"] == pm["metadata"]["uid"]
        validate_object(obj)
    template = services[slice_name("resnet", status["slices"][0]["name"])]["spec"]["template"]
    assert template["metadata"]["annotations"]["autoscaling.knative.dev/max-scale"] == "4"
    memory = template["spec"]["containers"][0]["resources"]["limits"]["memory"]
    assert memory == f"{status['slices'][0]['memoryMiB']}Mi"  # right-sized from the plan

    assert _events(cluster, "Preparing") and _events(cluster, "Deployed") and _events(cluster, "Ready")
    # The slice files went to the artifact store, by sha256.
    stored = redis.Redis.from_url(cluster.redis_url).keys(f"mopar:{NS}:artifact:*")
    assert stored


def _phase_is(cluster: Cluster, name: str, phase: str) -> Any:
    async def check() -> bool:
        pm = await cluster.kube.get(PARTITIONED_MODELS, NS, name)
        return bool(pm and pm.get("status", {}).get("phase") == phase)

    return check()


async def test_a_bad_spec_gets_a_condition_and_an_event_and_no_retry_loop(cluster: Cluster) -> None:
    await cluster.apply_model("broken", {"model": {"storageUri": MODEL}, "objective": "slo"})
    pm = await _eventually(lambda: _failed(cluster, "broken"), what="phase Failed")
    ready = _condition(pm, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "InvalidSpec" and "sloMs" in ready["message"]
    await _eventually(lambda: _events(cluster, "InvalidSpec"), what="an InvalidSpec event")
    patches = _status_patches(cluster, "broken")
    await asyncio.sleep(2.0)  # a retry loop would patch again and again
    assert _status_patches(cluster, "broken") == patches
    assert len(_events(cluster, "InvalidSpec")) == 1
    assert not cluster.jobs("broken")


async def _failed(cluster: Cluster, name: str) -> dict[str, Any] | None:
    pm = await cluster.kube.get(PARTITIONED_MODELS, NS, name)
    return pm if pm and pm.get("status", {}).get("phase") == "Failed" else None


def _status_patches(cluster: Cluster, name: str) -> int:
    return sum(1 for method, path in cluster.requests() if method == "patch" and path.endswith(f"/{name}/status"))


@pytest.mark.parametrize("cluster", ["no-knative"], indirect=True)
async def test_without_knative_slices_run_as_deployments_with_autoscalers(cluster: Cluster) -> None:
    await cluster.apply_model("resnet", {"model": {"storageUri": MODEL}})
    await cluster.play_prepare_job("resnet")
    pm = await _until_ready(cluster, "resnet", "deployment")
    assert pm["status"]["serving"] == "deployment"
    deployments = cluster.objects("apps/v1/deployments")
    services = cluster.objects("v1/services")
    autoscalers = cluster.objects("autoscaling/v2/horizontalpodautoscalers")
    assert "resnet-gateway" in deployments and set(deployments) == set(services) == set(autoscalers)
    assert pm["status"]["endpoint"] == f"http://resnet-gateway.{NS}.svc.cluster.local/v2/models/resnet/infer"
    for obj in [*deployments.values(), *services.values(), *autoscalers.values()]:
        validate_object(obj)

    # The autoscalers own the replica counts: a later reconcile must not put them back.
    for name in deployments:
        await cluster.kube.patch(DEPLOYMENTS, NS, name, {"spec": {"replicas": 3}})  # as the HPA scales out
    await cluster.kube.patch(PARTITIONED_MODELS, NS, "resnet",
                             {"metadata": {"generation": 2}, "spec": {"autoscaling": {"maxScale": 7}}})  # fmt: skip
    await _eventually(lambda: all(a["spec"]["maxReplicas"] == 7
                                  for a in cluster.objects("autoscaling/v2/horizontalpodautoscalers").values()),
                      what="maxReplicas 7 on every autoscaler")  # fmt: skip
    assert all(d["spec"]["replicas"] == 3 for d in cluster.objects("apps/v1/deployments").values())


async def test_an_autoscaling_change_patches_the_services_and_prepares_nothing(cluster: Cluster) -> None:
    await cluster.apply_model("resnet", {"model": {"storageUri": MODEL}})
    await cluster.play_prepare_job("resnet")
    await _until_ready(cluster, "resnet", "knative")
    before = len(cluster.requests())
    await cluster.kube.patch(PARTITIONED_MODELS, NS, "resnet",
                             {"metadata": {"generation": 2}, "spec": {"autoscaling": {"maxScale": 7}}})  # fmt: skip

    def patched() -> bool:
        services = cluster.objects("serving.knative.dev/v1/services").values()
        return all(s["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/max-scale"] == "7"
                   for s in services)  # fmt: skip

    await _eventually(patched, what="max-scale 7 on every service")
    later = cluster.requests(before)
    assert len(cluster.jobs("resnet")) == 1  # no second prepare
    assert not [(m, p) for m, p in later if m in ("post", "delete") and "/services" in p]  # nothing recreated
    assert any(m == "patch" and "serving.knative.dev" in p for m, p in later)


async def test_a_model_change_re_prepares_and_rolls_the_slices(cluster: Cluster) -> None:
    await cluster.apply_model("resnet", {"model": {"storageUri": MODEL}})
    await cluster.play_prepare_job("resnet")
    await _until_ready(cluster, "resnet", "knative")
    first = set(cluster.jobs("resnet"))
    await cluster.kube.patch(PARTITIONED_MODELS, NS, "resnet", {"spec": {"objective": "latency", "maxSlices": 3}})
    await _eventually(lambda: len(cluster.jobs("resnet")) == 2, what="a second prepare Job")
    second = await cluster.play_prepare_job("resnet")
    assert second["metadata"]["name"] not in first
    pm = await _until_ready(cluster, "resnet", "knative")
    assert await _plan_for(cluster, pm)
    slices = {slice_name("resnet", s["name"]) for s in pm["status"]["slices"]}
    assert set(cluster.objects("serving.knative.dev/v1/services")) == {"resnet", *slices}  # old slices removed
    revisions = set(cluster.objects("apps/v1/deployments"))
    assert {f"{s}-00001-deployment" for s in {"resnet", *slices}} <= revisions  # Knative's own are left alone


async def _plan_for(cluster: Cluster, pm: dict[str, Any]) -> bool:
    configmap = await cluster.kube.get(CONFIGMAPS, NS, "resnet-plan")
    return bool(configmap and configmap["metadata"]["annotations"][HASH_ANNOTATION]
                == parse(pm["spec"], "resnet").prepare_hash())  # fmt: skip


async def test_delete_removes_the_models_tensors_and_files_from_redis(cluster: Cluster) -> None:
    await cluster.apply_model("resnet", {"model": {"storageUri": MODEL}})
    await cluster.play_prepare_job("resnet")
    await _until_ready(cluster, "resnet", "knative")
    store = redis.Redis.from_url(cluster.redis_url)
    store.set(f"mopar:{NS}:resnet:abc123:input", b"left by a request")  # as a gateway would
    assert store.keys(f"mopar:{NS}:*")
    await cluster.kube._request("DELETE", PARTITIONED_MODELS.path(NS, "resnet"))
    await _eventually(lambda: _gone(cluster, "resnet"), what="the model gone")
    assert store.keys(f"mopar:{NS}:*") == []


async def _gone(cluster: Cluster, name: str) -> bool:
    return await cluster.kube.get(PARTITIONED_MODELS, NS, name) is None


async def test_an_operator_restart_resumes_without_duplicating_work(cluster: Cluster) -> None:
    await cluster.apply_model("resnet", {"model": {"storageUri": MODEL}})
    await cluster.play_prepare_job("resnet")
    await _until_ready(cluster, "resnet", "knative")
    await cluster.stop_operator()
    mark = len(cluster.requests())
    await cluster.start_operator()
    await asyncio.sleep(2.0)  # let it resume and look at everything
    later = cluster.requests(mark)
    assert len(cluster.jobs("resnet")) == 1
    assert not [(m, p) for m, p in later if m in ("post", "delete") and not p.endswith("/events")]
    assert (await cluster.model("resnet"))["status"]["phase"] == "Ready"
