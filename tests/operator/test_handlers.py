"""The operator, running for real (Kopf) against the Kubernetes API as KMock's emulator serves it.

The tests play the kubelet: when the operator creates the prepare Job, they run `mopar
prepare` in-process (against the emulated API and a real redis-server) and mark the Job
complete; when it creates Knative Services or Deployments, they mark them ready.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
import redis

from mopar.operator.kube import CONFIGMAPS, DEPLOYMENTS, PARTITIONED_MODELS, SECRETS
from mopar.operator.names import HASH_ANNOTATION, redis_secret_name, slice_name
from mopar.operator.pods import cpu_quantity
from mopar.operator.spec import parse
from tests.support.cluster import MODEL, NS, Cluster, VersionedEmulator, eventually
from tests.support.validation import printer_columns, validate_object, validate_partitioned_model

pytestmark = pytest.mark.kmock(cls=VersionedEmulator)


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

    return await eventually(ready, what=f"{name} Ready")


async def test_create_prepares_deploys_on_knative_and_becomes_ready(cluster: Cluster) -> None:
    await cluster.apply_model("resnet", {"model": {"storageUri": MODEL}, "objective": "latency",
                                         "autoscaling": {"maxScale": 4}})  # fmt: skip
    await eventually(lambda: _phase_is(cluster, "resnet", "Preparing"), what="phase Preparing")
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

    assert all(c["observedGeneration"] == 1 and c["lastTransitionTime"] and c["reason"] for c in status["conditions"])
    assert len({c["type"] for c in status["conditions"]}) == 5  # a list-map keyed by type
    validate_partitioned_model(pm)  # the status too: metav1.Condition's schema in the CRD
    columns = printer_columns(pm)  # `kubectl get pm`
    assert (columns["Ready"], columns["Phase"], columns["Slices"]) == ("True", "Ready", str(status["sliceCount"]))
    assert columns["URL"] == status["url"] and columns["Endpoint"] == status["endpoint"]
    assert status["url"] == f"http://resnet.{NS}.example.com"  # Knative's route
    assert status["address"]["url"] == f"http://resnet.{NS}.svc.cluster.local"

    # The operator's Redis, as this model's own user: a real connection with the pods' URL works.
    secret = cluster.objects("v1/secrets")["resnet-redis"]
    url = base64.b64decode(secret["data"]["url"]).decode()
    assert url.startswith("redis://mopar-models.resnet:") and redis.Redis.from_url(url).ping()
    plan = cluster.objects("v1/configmaps")["resnet-plan"]
    for obj in [job, plan, *services.values()]:
        assert obj["metadata"]["ownerReferences"][0]["uid"] == pm["metadata"]["uid"]
        validate_object(obj)
    template = services[slice_name("resnet", status["slices"][0]["name"])]["spec"]["template"]
    assert template["metadata"]["annotations"]["autoscaling.knative.dev/max-scale"] == "4"
    memory = template["spec"]["containers"][0]["resources"]["limits"]["memory"]
    assert memory == f"{status['slices'][0]['memoryMiB']}Mi"  # right-sized from the plan
    container = template["spec"]["containers"][0]
    assert container["resources"]["limits"]["cpu"] == cpu_quantity(status["slices"][0]["cpu"])
    threads = {e["name"]: e.get("value") for e in container["env"]}["MOPAR_THREADS"]
    assert threads == str(status["slices"][0]["threads"])

    assert _events(cluster, "Preparing") and _events(cluster, "Deployed") and _events(cluster, "Ready")
    # The slice files went to the artifact store, by sha256, under the model's own scope.
    stored = redis.Redis.from_url(cluster.redis_url).keys(f"mopar:{NS}.resnet:artifact:*")
    assert stored


def _phase_is(cluster: Cluster, name: str, phase: str) -> Any:
    async def check() -> bool:
        pm = await cluster.kube.get(PARTITIONED_MODELS, NS, name)
        return bool(pm and pm.get("status", {}).get("phase") == phase)

    return check()


async def test_a_bad_spec_gets_a_condition_and_an_event_and_no_retry_loop(cluster: Cluster) -> None:
    await cluster.apply_model("broken", {"model": {"storageUri": MODEL}, "objective": "slo"})
    pm = await eventually(lambda: _failed(cluster, "broken"), what="phase Failed")
    ready = _condition(pm, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "InvalidSpec" and "sloMs" in ready["message"]
    await eventually(lambda: _events(cluster, "InvalidSpec"), what="an InvalidSpec event")
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

    def autoscalers(component: str) -> list[dict[str, Any]]:
        return [a for a in cluster.objects("autoscaling/v2/horizontalpodautoscalers").values()
                if a["metadata"]["labels"]["app.kubernetes.io/component"] == component]  # fmt: skip

    await eventually(lambda: all(a["spec"]["maxReplicas"] == 7 for a in autoscalers("slice")),
                     what="maxReplicas 7 on every slice's autoscaler")  # fmt: skip
    assert [a["spec"]["maxReplicas"] for a in autoscalers("gateway")] == [10]  # the gateway sizes itself
    assert all(d["spec"]["replicas"] == 3 for d in cluster.objects("apps/v1/deployments").values())


DELAY = "autoscaling.knative.dev/scale-down-delay"


def _annotations(cluster: Cluster, component: str) -> list[dict[str, str]]:
    return [s["spec"]["template"]["metadata"]["annotations"]
            for s in cluster.objects("serving.knative.dev/v1/services").values()
            if s["metadata"]["labels"]["app.kubernetes.io/component"] == component]  # fmt: skip


def _writes(cluster: Cluster, since: int) -> list[tuple[str, str]]:
    """Writes to anything but the models themselves (their status) and Events."""
    return [(m, p) for m, p in cluster.requests(since) if m in ("post", "put", "patch", "delete")
            and "/partitionedmodels/" not in p and not p.endswith("/events")]  # fmt: skip


async def test_an_autoscaling_change_patches_the_slices_removes_what_it_no_longer_sets(cluster: Cluster) -> None:
    await cluster.apply_model("resnet", {"model": {"storageUri": MODEL}, "autoscaling": {"scaleDownDelay": "30s"}})
    await cluster.play_prepare_job("resnet")
    await _until_ready(cluster, "resnet", "knative")
    assert all(a[DELAY] == "30s" for a in _annotations(cluster, "slice"))
    before = len(cluster.requests())
    # The user drops scaleDownDelay (a merge patch's null) and raises maxScale.
    await cluster.kube.patch(PARTITIONED_MODELS, NS, "resnet", {"metadata": {"generation": 2},
                             "spec": {"autoscaling": {"maxScale": 7, "scaleDownDelay": None}}})  # fmt: skip

    def converged() -> bool:
        return all(a["autoscaling.knative.dev/max-scale"] == "7" and DELAY not in a
                   for a in _annotations(cluster, "slice"))  # fmt: skip

    await eventually(converged, what="max-scale 7 and no scale-down-delay on every slice")
    assert [a["autoscaling.knative.dev/max-scale"] for a in _annotations(cluster, "gateway")] == ["10"]
    later = cluster.requests(before)
    assert len(cluster.jobs("resnet")) == 1  # no second prepare
    assert not [(m, p) for m, p in later if m in ("post", "delete") and "/services" in p]  # nothing recreated
    assert any(m == "patch" and "serving.knative.dev" in p for m, p in later)

    # A reconcile that finds every object as it wants it writes none.
    mark = len(cluster.requests())
    await cluster.kube.patch(
        PARTITIONED_MODELS, NS, "resnet", {"metadata": {"generation": 3}, "spec": {"serving": "knative"}}
    )  # the same path
    await eventually(lambda: _observed(cluster, "resnet", 3), what="generation 3 reconciled")
    assert _writes(cluster, mark) == []


async def _observed(cluster: Cluster, name: str, generation: int) -> bool:
    pm = await cluster.model(name)
    return pm.get("status", {}).get("observedGeneration") == generation


async def test_a_model_change_re_prepares_and_rolls_the_slices(cluster: Cluster) -> None:
    await cluster.apply_model("resnet", {"model": {"storageUri": MODEL}})
    await cluster.play_prepare_job("resnet")
    await _until_ready(cluster, "resnet", "knative")
    first = set(cluster.jobs("resnet"))
    await cluster.kube.patch(PARTITIONED_MODELS, NS, "resnet", {"spec": {"objective": "latency", "maxSlices": 3}})
    await eventually(lambda: len(cluster.jobs("resnet")) == 2, what="a second prepare Job")
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
    store.set(f"mopar:{NS}.resnet:resnet:abc123:input", b"left by a request")  # as a gateway would
    store.set(f"mopar:{NS}.other:other:abc123:input", b"another model's")
    assert store.keys(f"mopar:{NS}.resnet:*") and store.acl_getuser("mopar-models.resnet")
    await cluster.kube._request("DELETE", PARTITIONED_MODELS.path(NS, "resnet"))
    await eventually(lambda: _gone(cluster, "resnet"), what="the model gone")
    assert store.keys(f"mopar:{NS}.resnet:*") == []
    assert store.keys(f"mopar:{NS}.*") == [f"mopar:{NS}.other:other:abc123:input".encode()]
    assert store.acl_getuser("mopar-models.resnet") is None  # its Redis user is gone too


async def test_a_redis_that_lost_the_models_user_gets_it_back(cluster: Cluster) -> None:
    """A restarted Redis forgets the ACL users made at run time while its keys may survive on
    disk; here the user alone goes, as it does then. The readiness timer makes it again, with
    the same password, so the URL in the model's Secret works again, and says so in an Event."""
    await cluster.apply_model("resnet", {"model": {"storageUri": MODEL}})
    await cluster.play_prepare_job("resnet")
    await _until_ready(cluster, "resnet", "knative")
    secret = await cluster.kube.get(SECRETS, NS, redis_secret_name("resnet"))
    pods_url = base64.b64decode(secret["data"]["url"]).decode()
    assert redis.Redis.from_url(pods_url).ping()
    store = redis.Redis.from_url(cluster.redis_url)
    assert store.acl_deluser("mopar-models.resnet") == 1
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(pods_url).ping()
    await eventually(lambda: store.acl_getuser("mopar-models.resnet") is not None, what="the user back")
    assert redis.Redis.from_url(pods_url).ping()
    (event,) = await eventually(lambda: _events(cluster, "RedisUserRestored"), what="a RedisUserRestored Event")
    assert event["type"] == "Warning" and event["involvedObject"]["name"] == "resnet"
    assert "mopar-models.resnet" in event["message"]


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
    assert len(cluster.jobs("resnet")) == 1
    assert _writes(cluster, mark) == []  # it looked at everything and changed nothing
    assert (await cluster.model("resnet"))["status"]["phase"] == "Ready"
