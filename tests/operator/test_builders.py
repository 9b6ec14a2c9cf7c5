"""The object builders (pure, plain dicts): every object validates, is right-sized, carries the
spec's pod settings, scales on what the spec names, and probes for as long as readiness waits."""

from __future__ import annotations

import base64
import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml

from mopar.errors import SpecError
from mopar.operator import tenancy
from mopar.operator.credentials import build_credentials, build_redis_secret
from mopar.operator.jobs import build_prepare_job
from mopar.operator.names import COMPONENT_LABEL, slice_name, store_scope
from mopar.operator.pods import GATEWAY_READY_TIMEOUT, GRPC_PORT, STARTUP_SECONDS, WORKER_READY_TIMEOUT
from mopar.operator.serving import build_plan_configmap, build_serving, urls
from mopar.operator.settings import OperatorSettings
from mopar.operator.spec import DEPLOYMENT, KNATIVE, ModelSpec, parse
from mopar.operator.units import SliceUnit, units_from_plan
from slice_runtime.gateway import client as gateway_client
from slice_runtime.gateway import core as gateway_core
from slice_runtime.probes import SLICE_CHECK_SECONDS
from slice_runtime.store import CONNECT_TIMEOUT_SECONDS, open_transport
from tests.support import ROOT
from tests.support.validation import validate_object

OWNER = {"name": "resnet", "namespace": "models", "uid": "0f1e2d3c-aaaa-bbbb-cccc-1234567890ab"}
SETTINGS = OperatorSettings()
UNITS = [SliceUnit("s0", 180), SliceUnit("s1.0", 290, "s1"), SliceUnit("s1.1", 290, "s1")]


def _spec(**extra: object) -> ModelSpec:
    return parse({"model": {"storageUri": "zoo://resnet50"}, **extra}, "resnet")


def _pods(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o["spec"]["template"]["spec"] for o in objects if o["kind"] in ("Deployment", "Job")
            or o["apiVersion"] == "serving.knative.dev/v1"]  # fmt: skip


def _env(pod: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["containers"][0]["env"]}


@pytest.mark.parametrize("serving", [KNATIVE, DEPLOYMENT])
def test_every_built_object_validates(serving: str) -> None:
    spec = _spec(autoscaling={"scaleToZero": True, "maxScale": 5, "scaleDownDelay": "30s"} if serving == KNATIVE
                 else {"maxScale": 5, "scaleDownDelay": "30s"},
                 transport={"redisSecretRef": {"name": "redis-credentials"}})  # fmt: skip
    objects = [build_prepare_job(OWNER, spec, SETTINGS),
               build_plan_configmap(OWNER, "{}", spec.prepare_hash()),
               *build_serving(OWNER, spec, UNITS, serving, SETTINGS)]  # fmt: skip
    for obj in objects:
        validate_object(obj)
        assert obj["metadata"]["ownerReferences"][0]["uid"] == OWNER["uid"]
    kinds = sorted(o["kind"] for o in objects)
    if serving == KNATIVE:
        assert kinds == ["ConfigMap", "Job", "Service", "Service", "Service", "Service"]
    else:
        assert kinds.count("Deployment") == kinds.count("HorizontalPodAutoscaler") == 4


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_builds_valid_objects_on_its_path(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    owner = {**OWNER, "name": document["metadata"]["name"]}
    spec = parse(document["spec"], owner["name"])
    serving = DEPLOYMENT if spec.serving == DEPLOYMENT else KNATIVE
    for obj in [build_prepare_job(owner, spec, SETTINGS), *build_serving(owner, spec, UNITS, serving, SETTINGS)]:
        validate_object(obj, spec.pod.knative_features)


def test_knative_service_carries_right_size_and_autoscaling() -> None:
    spec = _spec(autoscaling={"minScale": 2, "maxScale": 9, "target": 3, "metric": "rps"}, runtime={"threads": 2},
                 containerConcurrency=3, timeoutSeconds=45)  # fmt: skip
    service = build_serving(OWNER, spec, UNITS, KNATIVE, SETTINGS)[1]
    assert service["metadata"]["name"] == "resnet-s1-0"
    template = service["spec"]["template"]
    assert template["metadata"]["annotations"] == {
        "autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev",
        "autoscaling.knative.dev/metric": "rps",
        "autoscaling.knative.dev/target": "3",
        "autoscaling.knative.dev/min-scale": "2",
        "autoscaling.knative.dev/max-scale": "9",
        "autoscaling.knative.dev/initial-scale": "2",
    }
    # Fields of the revision spec, not annotations.
    assert template["spec"]["containerConcurrency"] == 3 and template["spec"]["timeoutSeconds"] == 45
    container = template["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "290Mi"}
    assert {"name": "MOPAR_SLICE", "value": "s1.0"} in container["env"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"] and security["runAsUser"] == 10001
    assert security["allowPrivilegeEscalation"] is False


def test_a_pod_security_context_only_where_the_platform_takes_one() -> None:
    plain, opted = _spec(), _spec(knativeFeatures=["kubernetes.podspec-securitycontext"])
    assert all("securityContext" not in pod for pod in _pods(build_serving(OWNER, plain, UNITS, KNATIVE, SETTINGS)))
    assert all(pod["securityContext"]["runAsNonRoot"] for pod in _pods(build_serving(OWNER, opted, UNITS, KNATIVE,
                                                                                     SETTINGS)))  # fmt: skip
    assert all(
        pod["securityContext"]["fsGroup"] == 10001
        for pod in _pods(
            [build_prepare_job(OWNER, plain, SETTINGS), *build_serving(OWNER, plain, UNITS, DEPLOYMENT, SETTINGS)]
        )
    )


@pytest.mark.parametrize("serving", [KNATIVE, DEPLOYMENT])
def test_the_specs_pod_settings_reach_every_pod(serving: str) -> None:
    settings = {"serviceAccountName": "model-reader", "imagePullSecrets": [{"name": "registry"}],
                "nodeSelector": {"pool": "inference"}, "tolerations": [{"key": "dedicated", "operator": "Exists"}],
                "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 1, "preference": {"matchExpressions": [
                        {"key": "zone", "operator": "In", "values": ["a"]}]}}]}},
                "knativeFeatures": ["kubernetes.podspec-nodeselector", "kubernetes.podspec-tolerations",
                                    "kubernetes.podspec-affinity"]}  # fmt: skip
    spec = _spec(**settings)
    objects = [build_prepare_job(OWNER, spec, SETTINGS), *build_serving(OWNER, spec, UNITS, serving, SETTINGS)]
    pods = _pods(objects)
    assert len(pods) == len(UNITS) + 2  # every slice, the gateway and the prepare Job
    for pod in pods:
        assert pod["serviceAccountName"] == "model-reader" and pod["imagePullSecrets"] == [{"name": "registry"}]
        assert pod["nodeSelector"] == settings["nodeSelector"] and pod["tolerations"] == settings["tolerations"]
        assert pod["affinity"] == settings["affinity"] and pod["automountServiceAccountToken"] is False
    features = tuple(settings["knativeFeatures"])
    for obj in objects:
        validate_object(obj, features)


@pytest.mark.parametrize("metric, target", [("cpu", 60), ("memory", 80)])
def test_without_knative_the_autoscaler_scales_on_the_metric_the_spec_names(metric: str, target: int) -> None:
    spec = _spec(autoscaling={"metric": metric, "target": target, "minScale": 2, "maxScale": 6,
                              "scaleDownDelay": "2m"})  # fmt: skip
    autoscalers = [o for o in build_serving(OWNER, spec, UNITS, DEPLOYMENT, SETTINGS)
                   if o["kind"] == "HorizontalPodAutoscaler"]  # fmt: skip
    slices = [a for a in autoscalers if a["metadata"]["name"] != "resnet-gateway"]
    for hpa in slices:
        assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {
            "name": metric, "target": {"type": "Utilization", "averageUtilization": target}}}]  # fmt: skip
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
        assert hpa["spec"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 120}}
    gateway = next(a for a in autoscalers if a["metadata"]["name"] == "resnet-gateway")
    assert gateway["spec"]["metrics"][0]["resource"]["name"] == "cpu"  # the gateway's own default
    # By default: cpu at 70 %.
    default = next(o for o in build_serving(OWNER, _spec(), UNITS, DEPLOYMENT, SETTINGS)
                   if o["kind"] == "HorizontalPodAutoscaler")  # fmt: skip
    cpu70 = {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}
    assert default["spec"]["metrics"][0]["resource"] == cpu70


def test_on_knative_resource_metrics_use_its_hpa_class_with_a_memory_target_in_mib() -> None:
    spec = _spec(autoscaling={"metric": "memory", "target": 50})
    service = build_serving(OWNER, spec, UNITS, KNATIVE, SETTINGS)[0]  # 180 MiB
    annotations = service["spec"]["template"]["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/class"] == "hpa.autoscaling.knative.dev"
    assert annotations["autoscaling.knative.dev/target"] == "90"  # 50 % of 180 MiB
    validate_object(service)


def test_the_gateway_holds_many_requests_per_pod() -> None:
    for serving in (KNATIVE, DEPLOYMENT):
        objects = build_serving(OWNER, _spec(), UNITS, serving, SETTINGS)
        gateway = next(o for o in objects if o["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway")
        if serving == KNATIVE:
            annotations = gateway["spec"]["template"]["metadata"]["annotations"]
            assert annotations["autoscaling.knative.dev/target"] == "100"
            assert gateway["spec"]["template"]["spec"]["containerConcurrency"] == 0  # no hard limit
    sized = _spec(runtime={"gateway": {"containerConcurrency": 200, "autoscaling": {"target": 150, "maxScale": 4}}})
    gateway = build_serving(OWNER, sized, UNITS, KNATIVE, SETTINGS)[-1]["spec"]["template"]
    assert gateway["spec"]["containerConcurrency"] == 200
    assert gateway["metadata"]["annotations"]["autoscaling.knative.dev/target"] == "150"
    assert gateway["metadata"]["annotations"]["autoscaling.knative.dev/max-scale"] == "4"
    # The slices keep theirs: one request at a time.
    assert build_serving(OWNER, sized, UNITS, KNATIVE, SETTINGS)[0]["spec"]["template"]["spec"][
        "containerConcurrency"] == 1  # fmt: skip


def test_probes_wait_as_long_as_readiness_does() -> None:
    # What the data plane's readiness checks wait for: a store ping (the transport's connect
    # timeout), and on the gateway every slice at once, each bounded by SLICE_CHECK_SECONDS.
    assert inspect.signature(open_transport).parameters["connect_timeout"].default == CONNECT_TIMEOUT_SECONDS
    assert "SLICE_CHECK_SECONDS" in inspect.getsource(gateway_client.HttpSlices.ready)
    assert "self.transport.ping()" in inspect.getsource(gateway_core.DataPlane._check_ready)
    assert WORKER_READY_TIMEOUT > CONNECT_TIMEOUT_SECONDS
    assert GATEWAY_READY_TIMEOUT > CONNECT_TIMEOUT_SECONDS + SLICE_CHECK_SECONDS
    for pod in _pods(build_serving(OWNER, _spec(), UNITS, KNATIVE, SETTINGS)):
        container = pod["containers"][0]
        gateway = container["name"] == "gateway"
        ready, startup = container["readinessProbe"], container["startupProbe"]
        assert ready["timeoutSeconds"] == (GATEWAY_READY_TIMEOUT if gateway else WORKER_READY_TIMEOUT)
        assert ready["timeoutSeconds"] <= ready["periodSeconds"]
        # Loading a slice (fetch, session) happens before the server listens: the startup probe
        # covers it, and only then do liveness failures count.
        assert startup["periodSeconds"] * startup["failureThreshold"] == STARTUP_SECONDS
        assert startup["httpGet"] == container["livenessProbe"]["httpGet"]
    env = _env(_pods(build_serving(OWNER, _spec(timeoutSeconds=20), UNITS, KNATIVE, SETTINGS))[-1])
    assert (env["MOPAR_REQUEST_TIMEOUT"], env["MOPAR_CALL_TIMEOUT"]) == ("20", "20")


def test_redis_credentials_come_from_a_secret_never_in_clear() -> None:
    spec = _spec(transport={"redisSecretRef": {"name": "redis-credentials", "key": "url"}})
    for obj in build_serving(OWNER, spec, UNITS, KNATIVE, SETTINGS):
        env = {e["name"]: e for e in obj["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["MOPAR_TRANSPORT"]["valueFrom"]["secretKeyRef"] == {"name": "redis-credentials", "key": "url"}
        assert "value" not in env["MOPAR_TRANSPORT"]
    assert build_credentials(OWNER, spec, SETTINGS) == []  # the spec's own Secret: none of ours


def test_by_default_pods_connect_as_the_models_own_redis_user() -> None:
    spec = _spec()
    gateway = build_serving(OWNER, spec, UNITS, KNATIVE, SETTINGS)[-1]
    env = _env(gateway["spec"]["template"]["spec"])
    assert env["MOPAR_TRANSPORT"]["secretKeyRef"] == {"name": "resnet-redis", "key": "url"}
    assert env["MOPAR_NAMESPACE"] == store_scope(OWNER) == "models.resnet"
    settings = OperatorSettings(redis_url="redis://:admin-secret@redis.mopar:6379/0")
    (secret,) = build_credentials(OWNER, spec, settings)
    url = base64.b64decode(secret["data"]["url"]).decode()
    assert url == f"redis://mopar-models.resnet:{tenancy.password(settings.redis_url, OWNER)}@redis.mopar:6379/0"
    assert "admin-secret" not in url
    validate_object(secret)
    # Without ACLs (a Redis before 6.0) the pods share the operator's URL.
    shared = OperatorSettings(redis_url=settings.redis_url, redis_acl=False)
    assert base64.b64decode(build_credentials(OWNER, spec, shared)[0]["data"]["url"]).decode() == settings.redis_url
    legacy = build_redis_secret(OWNER, "redis://:s3cret@redis.mopar:6379/0")
    assert base64.b64decode(legacy["data"]["url"]).decode() == "redis://:s3cret@redis.mopar:6379/0"


def test_gateway_knows_every_slice_and_the_urls_are_the_gateways() -> None:
    spec = _spec()
    gateway = build_serving(OWNER, spec, UNITS, KNATIVE, SETTINGS)[-1]
    env = _env(gateway["spec"]["template"]["spec"])
    assert env["MOPAR_SLICE_URLS"].split(",") == [
        "s0=http://resnet-s0.models.svc.cluster.local",
        "s1.0=http://resnet-s1-0.models.svc.cluster.local",
        "s1.1=http://resnet-s1-1.models.svc.cluster.local",
    ]
    assert gateway["metadata"]["name"] == "resnet"
    assert urls(OWNER, spec, DEPLOYMENT, SETTINGS) == {
        "url": "http://resnet-gateway.models.svc.cluster.local",
        "address": {"url": "http://resnet-gateway.models.svc.cluster.local"},
        "endpoint": "http://resnet-gateway.models.svc.cluster.local/v2/models/resnet/infer",
    }
    assert urls(OWNER, spec, KNATIVE, SETTINGS, "https://resnet.models.example.com")["address"] == {
        "url": "http://resnet.models.svc.cluster.local"
    }


def test_long_names_stay_valid_dns_labels() -> None:
    name = slice_name("a-very-long-partitioned-model-name-for-a-transformer", "s12.3")
    assert len(name) <= 49 and name[-1].isalnum() and name == name.lower()


def test_units_from_a_plan() -> None:
    plain = {"nodes": ["a"], "inputs": ["x"], "outputs": ["y"]}
    split = {"k": 2, "operators": ["fc"], "axis": 1, "channels": 8}
    plan = {
        "slices": [{"id": "s0", "memory_mb": 200, **plain}, {"id": "s1", "memory_mb": 300, **plain, "subslices": split}]
    }
    assert units_from_plan(plan) == [
        SliceUnit("s0", 200),
        SliceUnit("s1.0", 300, "s1"),
        SliceUnit("s1.1", 300, "s1"),
    ]


def _gateways(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["metadata"]["labels"][COMPONENT_LABEL] == "gateway"}


def test_grpc_is_a_port_of_the_gateways_service_or_on_knative_a_service_of_its_own() -> None:
    spec = _spec(runtime={"gateway": {"grpc": True}})
    deployed = [
        o for o in build_serving(OWNER, spec, UNITS, DEPLOYMENT, SETTINGS) if o["metadata"]["name"] == "resnet-gateway"
    ]
    deployment = next(o for o in deployed if o["kind"] == "Deployment")
    service = next(o for o in deployed if o["kind"] == "Service")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http1": 8080, "grpc": GRPC_PORT}
    assert _env(deployment["spec"]["template"]["spec"])["MOPAR_GRPC_PORT"] == str(GRPC_PORT)
    assert {p["name"]: (p["port"], p.get("appProtocol")) for p in service["spec"]["ports"]} == {
        "http": (80, None),
        "grpc": (GRPC_PORT, "kubernetes.io/h2c"),
    }
    knative = _gateways(build_serving(OWNER, spec, UNITS, KNATIVE, SETTINGS))
    assert sorted(knative) == ["resnet", "resnet-grpc"]
    rest, rpc = (knative[name]["spec"]["template"]["spec"]["containers"][0] for name in ("resnet", "resnet-grpc"))
    assert "MOPAR_GRPC_PORT" not in {e["name"] for e in rest["env"]}  # the REST one never loads grpc
    assert rpc["ports"] == [{"name": "h2c", "containerPort": GRPC_PORT}]
    assert rpc["readinessProbe"]["httpGet"]["port"] == 8080  # the HTTP server, by number
    assert urls(OWNER, spec, KNATIVE, SETTINGS)["grpcAddress"] == "resnet-grpc.models.svc.cluster.local:80"
    inside = f"resnet-gateway.models.svc.cluster.local:{GRPC_PORT}"
    assert urls(OWNER, spec, DEPLOYMENT, SETTINGS)["grpcAddress"] == inside
    assert "grpcAddress" not in urls(OWNER, _spec(), DEPLOYMENT, SETTINGS)


def test_dynamic_batching_reaches_the_gateway_and_needs_a_batch_to_merge_into() -> None:
    spec = _spec(maxBatchSize=8, dynamicBatching={"maxQueueDelayMicroseconds": 2000})
    gateway = _gateways(build_serving(OWNER, spec, UNITS, KNATIVE, SETTINGS))["resnet"]
    env = _env(gateway["spec"]["template"]["spec"])
    assert env["MOPAR_DYNAMIC_BATCHING"] == "1" and env["MOPAR_MAX_QUEUE_DELAY_US"] == "2000"
    plain = _gateways(build_serving(OWNER, _spec(), UNITS, KNATIVE, SETTINGS))["resnet"]
    assert "MOPAR_DYNAMIC_BATCHING" not in _env(plain["spec"]["template"]["spec"])
    assert spec.prepare_hash() != _spec(maxBatchSize=4).prepare_hash()  # slices are sized for the maximum
    with pytest.raises(SpecError, match="spec.dynamicBatching: merging requests needs spec.maxBatchSize of 2"):
        _spec(dynamicBatching={})


PLANNED_UNITS = [SliceUnit("s0", 180, None, 0.25, 1), SliceUnit("s1.0", 290, "s1", 2.5, 3),
                 SliceUnit("s1.1", 290, "s1", 2.5, 3), SliceUnit("s2", 200, None, None, 2)]  # fmt: skip


@pytest.mark.parametrize("serving", [KNATIVE, DEPLOYMENT])
def test_each_slice_pod_gets_its_planned_cpu_and_threads(serving: str) -> None:
    """CPU request = limit = the slice's vCPUs; threads in the environment; a slice planned before
    CPU was (cpu None) gets one vCPU per thread; runtime.threads pins every slice."""
    expected = {"s0": ("250m", "1"), "s1.0": ("2500m", "3"), "s1.1": ("2500m", "3"), "s2": ("2", "2")}
    for spec, want in ((_spec(), expected), (_spec(runtime={"threads": 2}), dict.fromkeys(expected, ("2", "2")))):
        objects = build_serving(OWNER, spec, PLANNED_UNITS, serving, SETTINGS)
        for obj in objects:
            validate_object(obj)
        pods = {_env(p)["MOPAR_SLICE"]: p for p in _pods(objects) if "MOPAR_SLICE" in _env(p)}
        assert set(pods) == set(want)
        for slice_id, (cpu, threads) in want.items():
            container = pods[slice_id]["containers"][0]
            assert container["resources"]["requests"]["cpu"] == container["resources"]["limits"]["cpu"] == cpu
            assert (_env(pods[slice_id])["MOPAR_THREADS"], _env(pods[slice_id])["OMP_NUM_THREADS"]) == (threads,) * 2
        memory = {u.id: f"{u.memory_mb}Mi" for u in PLANNED_UNITS}
        assert all(pods[s]["containers"][0]["resources"]["limits"]["memory"] == memory[s] for s in pods)


def test_units_from_a_plan_carry_each_slices_cpu_and_threads() -> None:
    plan = {"slices": [
        {"id": "s0", "nodes": ["a"], "inputs": ["x"], "outputs": ["h"], "memory_mb": 128, "cpu": 0.5, "threads": 1},
        {"id": "s1", "nodes": ["b"], "inputs": ["h"], "outputs": ["y"], "memory_mb": 256, "cpu": 2, "threads": 2,
         "subslices": {"k": 2, "operators": ["b"], "axis": 1, "channels": 8}},
    ]}  # fmt: skip
    assert [(u.id, u.cpu, u.threads) for u in units_from_plan(plan)] == [
        ("s0", 0.5, 1),
        ("s1.0", 2.0, 2),
        ("s1.1", 2.0, 2),
    ]


def test_the_prepare_job_requests_and_profiles_with_the_most_cpus_a_slice_may_get() -> None:
    for spec, cpus in ((_spec(), "4"), (_spec(cpu={"max": 2.5}), "3"), (_spec(runtime={"threads": 2}), "2")):
        job = build_prepare_job(OWNER, spec, SETTINGS)
        validate_object(job)
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"]["requests"]["cpu"] == container["resources"]["limits"]["cpu"] == cpus
        assert _env(job["spec"]["template"]["spec"])["MOPAR_PROFILE_THREADS"] == cpus
