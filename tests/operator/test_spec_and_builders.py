"""The PartitionedModel spec, the CRD and the object builders (pure, plain dicts)."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from mopar.operator.credentials import build_redis_secret
from mopar.operator.jobs import build_prepare_job
from mopar.operator.names import slice_name
from mopar.operator.serving import build_plan_configmap, build_serving, endpoint
from mopar.operator.settings import OperatorSettings
from mopar.operator.spec import DEPLOYMENT, KNATIVE, ModelSpec, SpecError, parse
from mopar.operator.units import SliceUnit, units_from_plan
from tests.support import ROOT
from tests.support.validation import crd_json_schema, validate_object, validate_partitioned_model

OWNER = {"name": "resnet", "namespace": "models", "uid": "0f1e2d3c-aaaa-bbbb-cccc-1234567890ab"}
SETTINGS = OperatorSettings()
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_defaults_match_the_crd() -> None:
    """The operator applies the CRD's defaults itself (emulated servers do not): they must agree."""
    schema = yaml.safe_load((ROOT / "crds" / "partitionedmodel.yaml").read_text())
    spec_schema = schema["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    parsed = parse({"model": {"storageUri": "zoo://lstm"}}, "m")
    assert parsed.objective == spec_schema["objective"]["default"]
    assert parsed.max_slices == spec_schema["maxSlices"]["default"]
    assert parsed.split == spec_schema["split"]["default"]
    assert parsed.max_split == spec_schema["maxSplit"]["default"]
    assert parsed.pricing == spec_schema["pricing"]["default"]
    assert parsed.serving == spec_schema["serving"]["default"]
    autoscaling = spec_schema["autoscaling"]["properties"]
    assert parsed.autoscaling.min_scale == autoscaling["minScale"]["default"]
    assert parsed.autoscaling.max_scale == autoscaling["maxScale"]["default"]
    assert parsed.autoscaling.target == autoscaling["target"]["default"]
    assert parsed.autoscaling.metric == autoscaling["metric"]["default"]
    transport = spec_schema["transport"]["properties"]
    assert parsed.transport.codec == transport["codec"]["default"]
    assert parsed.transport.activation_ttl_seconds == transport["activationTtlSeconds"]["default"]
    assert parsed.transport.compression_threshold_bytes == transport["compressionThresholdBytes"]["default"]
    assert parsed.runtime.threads == spec_schema["runtime"]["properties"]["threads"]["default"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_against_the_crd_and_parse(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    validate_partitioned_model(document)
    parse(document["spec"], document["metadata"]["name"])


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"model": {"storageUri": "ftp://x/m.onnx"}}, "spec.model.storageUri"),
        ({"model": {}}, "spec.model.storageUri"),
        ({"model": {"storageUri": "zoo://lstm"}, "objective": "slo"}, "spec.sloMs"),
        ({"model": {"storageUri": "zoo://lstm"}, "maxSlices": 0}, "spec.maxSlices"),
        ({"model": {"storageUri": "zoo://lstm"}, "memory": {"minMiB": 900, "maxMiB": 300}}, "spec.memory"),
        ({"model": {"storageUri": "zoo://lstm"}, "autoscaling": {"minScale": 5, "maxScale": 2}}, "spec.autoscaling"),
        (
            {"model": {"storageUri": "zoo://lstm"}, "autoscaling": {"scaleToZero": True, "minScale": 1}},
            "spec.autoscaling",
        ),
        (
            {"model": {"storageUri": "zoo://lstm"}, "transport": {"redisUrl": "redis://:pw@redis:6379/0"}},
            "no credentials",
        ),
        ({"model": {"storageUri": "zoo://lstm"}, "autoscaling": {"maxscale": 3}}, "unknown field 'maxscale'"),
        ({"model": {"storageUri": "zoo://lstm", "inputShapes": {"x": [1, 0]}}}, "spec.model.inputShapes.x"),
    ],
)
def test_bad_specs_name_the_field(spec: dict, field: str) -> None:
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        parse(spec, "m")


def test_crd_schema_refuses_what_the_parser_refuses() -> None:
    bad = {"apiVersion": "mopar.dev/v1alpha1", "kind": "PartitionedModel", "metadata": {"name": "m"},
           "spec": {"model": {"storageUri": "ftp://x"}, "autoscaling": {"minScale": -1}}}  # fmt: skip
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, crd_json_schema(), cls=jsonschema.Draft202012Validator)


def test_prepare_hash_ignores_autoscaling_and_follows_the_model() -> None:
    base = {"model": {"storageUri": "zoo://lstm"}}
    a = parse(base, "m")
    assert a.prepare_hash() == parse({**base, "autoscaling": {"maxScale": 3}}, "m").prepare_hash()
    assert a.prepare_hash() != parse({**base, "objective": "latency"}, "m").prepare_hash()
    assert a.prepare_hash() != parse({"model": {"storageUri": "zoo://vgg16"}}, "m").prepare_hash()
    assert ModelSpec.from_json(a.to_json()) == a


def _spec(**extra: object) -> ModelSpec:
    return parse({"model": {"storageUri": "zoo://resnet50"}, **extra}, "resnet")


UNITS = [SliceUnit("s0", 180), SliceUnit("s1.0", 290, "s1"), SliceUnit("s1.1", 290, "s1")]


@pytest.mark.parametrize("serving", [KNATIVE, DEPLOYMENT])
def test_every_built_object_validates(serving: str) -> None:
    spec = _spec(autoscaling={"scaleToZero": True, "maxScale": 5, "scaleDownDelay": "30s"},
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


def test_knative_service_carries_right_size_and_autoscaling() -> None:
    spec = _spec(autoscaling={"minScale": 2, "maxScale": 9, "target": 3, "metric": "rps"}, runtime={"threads": 2})
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
    assert template["spec"]["containerConcurrency"] == 3  # a field of the spec, not an annotation
    container = template["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "290Mi"}
    assert {"name": "MOPAR_SLICE", "value": "s1.0"} in container["env"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["allowPrivilegeEscalation"] is False


def test_redis_credentials_come_from_a_secret_never_in_clear() -> None:
    spec = _spec(transport={"redisSecretRef": {"name": "redis-credentials", "key": "url"}})
    for obj in build_serving(OWNER, spec, UNITS, KNATIVE, SETTINGS):
        env = {e["name"]: e for e in obj["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["MOPAR_TRANSPORT"]["valueFrom"]["secretKeyRef"] == {"name": "redis-credentials", "key": "url"}
        assert "value" not in env["MOPAR_TRANSPORT"]


def test_gateway_knows_every_slice_and_the_endpoint_is_the_gateways() -> None:
    spec = _spec()
    gateway = build_serving(OWNER, spec, UNITS, KNATIVE, SETTINGS)[-1]
    env = {e["name"]: e.get("value") for e in gateway["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MOPAR_SLICE_URLS"].split(",") == [
        "s0=http://resnet-s0.models.svc.cluster.local",
        "s1.0=http://resnet-s1-0.models.svc.cluster.local",
        "s1.1=http://resnet-s1-1.models.svc.cluster.local",
    ]
    assert gateway["metadata"]["name"] == "resnet"
    assert endpoint(OWNER, spec, DEPLOYMENT, SETTINGS) == (
        "http://resnet-gateway.models.svc.cluster.local/v2/models/resnet/infer"
    )


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


def test_by_default_pods_read_the_operators_redis_from_a_per_model_secret() -> None:
    import base64

    spec = _spec()
    gateway = build_serving(OWNER, spec, UNITS, KNATIVE, SETTINGS)[-1]
    env = {e["name"]: e for e in gateway["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MOPAR_TRANSPORT"]["valueFrom"]["secretKeyRef"] == {"name": "resnet-redis", "key": "url"}
    secret = build_redis_secret(OWNER, "redis://:s3cret@redis.mopar:6379/0")
    assert base64.b64decode(secret["data"]["url"]).decode() == "redis://:s3cret@redis.mopar:6379/0"
    validate_object(secret)
