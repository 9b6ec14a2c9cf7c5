"""The PartitionedModel spec and the CRD: defaults, bounds, and what each serving path accepts
(pure, plain dicts)."""

from __future__ import annotations

import math
from pathlib import Path

import jsonschema
import pytest
import yaml

from mopar.operator.spec import DEPLOYMENT, KNATIVE, ModelSpec, SpecError, parse
from tests.support import ROOT
from tests.support.validation import crd_json_schema, validate_partitioned_model

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
CRD = yaml.safe_load((ROOT / "crds" / "partitionedmodel.yaml").read_text())["spec"]["versions"][0]
SPEC_SCHEMA = CRD["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
MODEL = {"storageUri": "zoo://lstm"}


def test_defaults_match_the_crd() -> None:
    """The operator applies the CRD's defaults itself (emulated servers do not): they must agree."""
    parsed = parse({"model": MODEL}, "m")
    assert parsed.objective == SPEC_SCHEMA["objective"]["default"]
    assert parsed.max_slices == SPEC_SCHEMA["maxSlices"]["default"]
    assert parsed.split == SPEC_SCHEMA["split"]["default"]
    assert parsed.max_split == SPEC_SCHEMA["maxSplit"]["default"]
    assert parsed.pricing == SPEC_SCHEMA["pricing"]["default"]
    assert parsed.serving == SPEC_SCHEMA["serving"]["default"]
    assert parsed.timeout_seconds == SPEC_SCHEMA["timeoutSeconds"]["default"]
    autoscaling = SPEC_SCHEMA["autoscaling"]["properties"]
    assert parsed.autoscaling.max_scale == autoscaling["maxScale"]["default"]
    # Defaults that depend on other fields are the parser's alone: a server defaulting minScale
    # to 1 would contradict scaleToZero; metric and target depend on the serving path.
    for name in ("minScale", "metric", "target"):
        assert "default" not in autoscaling[name], name
    assert parsed.autoscaling.floor == 1
    assert parse({"model": MODEL, "autoscaling": {"scaleToZero": True}}, "m").autoscaling.floor == 0
    transport = SPEC_SCHEMA["transport"]["properties"]
    assert parsed.transport.codec == transport["codec"]["default"]
    assert parsed.transport.activation_ttl_seconds == transport["activationTtlSeconds"]["default"]
    assert parsed.transport.compression_threshold_bytes == transport["compressionThresholdBytes"]["default"]
    runtime = SPEC_SCHEMA["runtime"]["properties"]
    assert parsed.runtime.threads is None and "default" not in runtime["threads"]  # unset: the plan decides
    cpu = SPEC_SCHEMA["cpu"]["properties"]
    assert (parsed.min_cpu, parsed.max_cpu) == (cpu["min"]["default"], cpu["max"]["default"]) == (0.25, 4)
    gateway = runtime["gateway"]["properties"]
    assert parsed.runtime.gateway.container_concurrency == gateway["containerConcurrency"]["default"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_against_the_crd_and_parse(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    validate_partitioned_model(document)
    parse(document["spec"], document["metadata"]["name"])


BAD = [
    ({"model": {"storageUri": "ftp://x/m.onnx"}}, "spec.model.storageUri"),
    ({"model": {}}, "spec.model.storageUri"),
    ({"model": MODEL, "objective": "slo"}, "spec.sloMs"),
    ({"model": MODEL, "maxSlices": 0}, "spec.maxSlices"),
    ({"model": MODEL, "memory": {"minMiB": 900, "maxMiB": 300}}, "spec.memory"),
    ({"model": MODEL, "cpu": {"min": 2, "max": 1}}, "spec.cpu: min 2 is above max 1"),
    ({"model": MODEL, "cpu": {"min": 8}}, "spec.cpu: min 8 is above max 4"),
    ({"model": MODEL, "cpu": {"min": 0}}, "spec.cpu.min"),
    ({"model": MODEL, "cpu": {"max": 65}}, "spec.cpu.max"),
    ({"model": MODEL, "cpu": {"max": "2"}}, "spec.cpu.max"),
    ({"model": MODEL, "cpu": {"maximum": 2}}, "unknown field 'maximum'"),
    ({"model": MODEL, "pricing": "lambda-cpu"}, "spec.pricing"),
    ({"model": MODEL, "autoscaling": {"minScale": 5, "maxScale": 2}}, "spec.autoscaling"),
    ({"model": MODEL, "autoscaling": {"scaleToZero": True, "minScale": 1}}, "spec.autoscaling"),
    ({"model": MODEL, "transport": {"redisUrl": "redis://:pw@redis:6379/0"}}, "no credentials"),
    ({"model": MODEL, "autoscaling": {"maxscale": 3}}, "unknown field 'maxscale'"),
    ({"model": {"storageUri": "zoo://lstm", "inputShapes": {"x": [1, 0]}}}, "spec.model.inputShapes.x"),
    # Numbers the API server or Knative would refuse: int32 replica counts, finite positive numbers.
    ({"model": MODEL, "autoscaling": {"maxScale": 10**20}}, "spec.autoscaling.maxScale"),
    ({"model": MODEL, "autoscaling": {"maxScale": 2**31}}, "spec.autoscaling.maxScale"),
    ({"model": MODEL, "autoscaling": {"maxScale": 1e20}}, "spec.autoscaling.maxScale"),
    ({"model": MODEL, "objective": "slo", "sloMs": math.nan}, "spec.sloMs"),
    ({"model": MODEL, "objective": "slo", "sloMs": math.inf}, "spec.sloMs"),
    ({"model": MODEL, "objective": "slo", "sloMs": -5}, "spec.sloMs"),
    ({"model": MODEL, "timeoutSeconds": 601}, "spec.timeoutSeconds"),
    ({"model": MODEL, "containerConcurrency": 1001}, "spec.containerConcurrency"),
    ({"model": MODEL, "autoscaling": {"scaleDownDelay": "2h"}}, "spec.autoscaling.scaleDownDelay"),
    ({"model": MODEL, "autoscaling": {"metric": "cpu", "target": 150}}, "spec.autoscaling.target"),
    ({"model": MODEL, "autoscaling": {"metric": "cpu", "scaleToZero": True}}, "spec.autoscaling"),
    ({"model": MODEL, "autoscaling": {"metric": "rps"}, "serving": "knative"}, "spec.autoscaling.target"),
    # What a serving path cannot honour, when the spec names the path.
    ({"model": MODEL, "autoscaling": {"metric": "concurrency"}, "serving": "deployment"}, "spec.autoscaling.metric"),
    ({"model": MODEL, "runtime": {"gateway": {"autoscaling": {"metric": "rps", "target": 5}}},
      "serving": "deployment"}, "spec.runtime.gateway.autoscaling.metric"),
    ({"model": MODEL, "nodeSelector": {"gpu": "yes"}, "serving": "knative"}, "kubernetes.podspec-nodeselector"),
    ({"model": MODEL, "tolerations": [{"key": "k", "operator": "Exists"}], "serving": "knative"},
     "kubernetes.podspec-tolerations"),
    ({"model": MODEL, "affinity": {"nodeAffinity": {}}, "serving": "knative"}, "kubernetes.podspec-affinity"),
    ({"model": MODEL, "knativeFeatures": ["kubernetes.podspec-hostnetwork"]}, "spec.knativeFeatures"),
    ({"model": MODEL, "imagePullSecrets": ["registry"]}, "spec.imagePullSecrets"),
    ({"model": MODEL, "serviceAccountName": "Not_Valid"}, "spec.serviceAccountName"),
    ({"model": MODEL, "tolerations": [{"operator": "Sometimes"}]}, "spec.tolerations"),
]  # fmt: skip


@pytest.mark.parametrize("spec, field", BAD, ids=[f for _, f in BAD])
def test_bad_specs_name_the_field(spec: dict, field: str) -> None:
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        parse(spec, "m")


@pytest.mark.parametrize(
    "spec",
    [{"autoscaling": {"maxScale": 10**20}}, {"autoscaling": {"maxScale": 2**31}}, {"timeoutSeconds": 601},
     {"containerConcurrency": 1001}, {"objective": "slo", "sloMs": 0}, {"autoscaling": {"minScale": -1}},
     {"imagePullSecrets": ["registry"]}, {"autoscaling": {"metric": "qps"}},
     {"knativeFeatures": ["kubernetes.podspec-hostnetwork"]}, {"cpu": {"min": 0}}, {"cpu": {"max": 64.5}},
     {"pricing": "gke"}],
)  # fmt: skip
def test_the_crd_schema_refuses_what_the_parser_refuses(spec: dict) -> None:
    with pytest.raises(SpecError):
        parse({"model": MODEL, **spec}, "m")
    document = {"apiVersion": "mopar.dev/v1alpha1", "kind": "PartitionedModel", "metadata": {"name": "m"},
                "spec": {"model": MODEL, **spec}}  # fmt: skip
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, crd_json_schema(), cls=jsonschema.Draft202012Validator)


def test_every_spec_field_the_parser_reads_is_in_the_crd() -> None:
    from mopar.operator.spec import SPEC_FIELDS

    assert set(SPEC_SCHEMA) == SPEC_FIELDS


def test_metric_and_target_resolve_per_serving_path() -> None:
    spec = parse({"model": MODEL}, "m")
    assert (spec.slice_autoscaling(KNATIVE).metric, spec.slice_autoscaling(KNATIVE).target) == ("concurrency", 1)
    assert (spec.slice_autoscaling(DEPLOYMENT).metric, spec.slice_autoscaling(DEPLOYMENT).target) == ("cpu", 70)
    assert (spec.gateway_autoscaling(KNATIVE).metric, spec.gateway_autoscaling(KNATIVE).target) == ("concurrency", 100)
    assert spec.slice_concurrency(KNATIVE) == 1 and spec.runtime.gateway.container_concurrency == 0
    explicit = parse({"model": MODEL, "autoscaling": {"target": 4}, "containerConcurrency": 8}, "m")
    assert explicit.slice_concurrency(KNATIVE) == 8
    assert parse({"model": MODEL, "autoscaling": {"target": 4}}, "m").slice_concurrency(KNATIVE) == 4
    # With `auto` the path is known only after discovery: the reconcile checks then.
    auto = parse({"model": MODEL, "nodeSelector": {"gpu": "yes"}}, "m")
    auto.check_serving(DEPLOYMENT)
    with pytest.raises(SpecError, match="kubernetes.podspec-nodeselector"):
        auto.check_serving(KNATIVE)
    allowed = parse({"model": MODEL, "nodeSelector": {"gpu": "yes"},
                     "knativeFeatures": ["kubernetes.podspec-nodeselector"]}, "m")  # fmt: skip
    allowed.check_serving(KNATIVE)


def test_prepare_hash_ignores_autoscaling_and_follows_the_model() -> None:
    base = {"model": MODEL}
    a = parse(base, "m")
    assert a.prepare_hash() == parse({**base, "autoscaling": {"maxScale": 3}}, "m").prepare_hash()
    assert a.prepare_hash() == parse({**base, "timeoutSeconds": 30, "nodeSelector": {"a": "b"}}, "m").prepare_hash()
    assert a.prepare_hash() != parse({**base, "objective": "latency"}, "m").prepare_hash()
    assert a.prepare_hash() != parse({"model": {"storageUri": "zoo://vgg16"}}, "m").prepare_hash()


def test_the_spec_travels_to_the_prepare_job_whole() -> None:
    full = parse({"model": MODEL, "autoscaling": {"metric": "cpu", "target": 60, "scaleDownDelay": "5m"},
                  "runtime": {"gateway": {"containerConcurrency": 50, "autoscaling": {"maxScale": 3}}},
                  "tolerations": [{"key": "gpu", "operator": "Exists"}], "imagePullSecrets": [{"name": "reg"}],
                  "serviceAccountName": "models", "affinity": {"nodeAffinity": {}}, "timeoutSeconds": 30},
                 "m")  # fmt: skip
    assert ModelSpec.from_json(full.to_json()) == full
    assert ModelSpec.from_json(parse({"model": MODEL}, "m").to_json()) == parse({"model": MODEL}, "m")


def test_the_crd_says_what_kubectl_and_kserve_users_look_for() -> None:
    columns = [c["name"] for c in CRD["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Ready", "Phase", "Slices", "URL", "Age"]
    status = CRD["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map" and conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["required"]) == {"type", "status", "lastTransitionTime", "reason", "message"}
    assert "observedGeneration" in conditions["items"]["properties"]
    assert {"url", "address", "endpoint"} <= set(status)
    # The README's `kubectl get pm` shows these columns.
    readme = (ROOT / "README.md").read_text()
    header = readme.split("$ kubectl get pm\n", 1)[1].splitlines()[0].split()
    assert header == ["NAME", *(c.upper() for c in columns)]


def test_cpu_bounds_and_pricing_names() -> None:
    """spec.cpu bounds the vCPUs the plan gives each slice; runtime.threads pins them instead; the
    old name of the lambda table still works."""
    spec = parse({"model": MODEL, "cpu": {"min": 0.5, "max": 2.5}}, "m")
    assert (spec.cpu_bounds, spec.profile_threads) == ((0.5, 2.5), 3)
    pinned = parse({"model": MODEL, "cpu": {"max": 8}, "runtime": {"threads": 2}}, "m")
    assert (pinned.cpu_bounds, pinned.profile_threads) == ((2.0, 2.0), 2)
    assert parse({"model": MODEL}, "m").pricing == "kubernetes"
    for name in ("lambda", "knative", "lambda-flat", "kubernetes"):
        assert parse({"model": MODEL, "pricing": name}, "m").pricing == name
    assert parse({"model": MODEL, "pricing": "lambda-cpu-scaled"}, "m").pricing == "lambda"
    assert spec.prepare_hash() != parse({"model": MODEL}, "m").prepare_hash()  # other bounds, another plan
    assert ModelSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize("cpu", [{"min": 0.25, "max": 4}, {"min": 1}, {"max": 64}, {}])
def test_the_crd_schema_accepts_cpu_bounds(cpu: dict) -> None:
    document = {"apiVersion": "mopar.dev/v1alpha1", "kind": "PartitionedModel", "metadata": {"name": "m"},
                "spec": {"model": MODEL, "cpu": cpu}}  # fmt: skip
    jsonschema.validate(document, crd_json_schema(), cls=jsonschema.Draft202012Validator)
    parse(document["spec"], "m")
