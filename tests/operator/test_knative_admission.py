"""Every Knative Service the operator renders, for every example and spec variant, as Knative
Serving admits it: its CRD's schema and its webhook's default field masks and validation
(the rule table and its sources: tests/support/knative_admission.py)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from mopar.operator.serving import build_serving
from mopar.operator.settings import OperatorSettings
from mopar.operator.spec import KNATIVE, parse
from mopar.operator.units import SliceUnit
from tests.support import ROOT
from tests.support.knative_admission import RELEASE, admission_errors

UNITS = [SliceUnit("s0", 180), SliceUnit("s1.0", 290, "s1"), SliceUnit("s1.1", 290, "s1"), SliceUnit("s2", 2048)]
SETTINGS = OperatorSettings()
# Examples that may run on Knative (the rest name serving: deployment).
EXAMPLES = [p for p in sorted((ROOT / "examples").glob("*.yaml"))
            if yaml.safe_load(p.read_text())["spec"].get("serving", "auto") != "deployment"]  # fmt: skip
BASE = {"model": {"storageUri": "zoo://resnet50"}}
VARIANTS = {
    "defaults": {},
    "scale-to-zero": {"autoscaling": {"scaleToZero": True, "maxScale": 50, "scaleDownDelay": "10m"}},
    "rps": {"autoscaling": {"metric": "rps", "target": 20, "minScale": 2}, "containerConcurrency": 4},
    "cpu": {"autoscaling": {"metric": "cpu", "target": 60, "maxScale": 2**31 - 1}},
    "memory": {"autoscaling": {"metric": "memory", "target": 80}},
    "timeouts": {"timeoutSeconds": 600, "containerConcurrency": 1000},
    "own-redis": {"transport": {"redisUrl": "redis://redis.models:6379/2"}},
    "secret-redis": {"transport": {"redisSecretRef": {"name": "redis", "key": "dsn"}}},
    "pull-secrets": {"imagePullSecrets": [{"name": "registry"}], "serviceAccountName": "models",
                     "runtime": {"image": "registry.example.com/mopar:1.2", "imagePullPolicy": "Always"}},
    "gateway-sized": {"runtime": {"gateway": {"containerConcurrency": 500, "resources": {
        "requests": {"cpu": "1", "memory": "512Mi"}}, "autoscaling": {"metric": "memory", "target": 70}}}},
    "features": {"nodeSelector": {"pool": "cpu"}, "tolerations": [{"key": "spot", "operator": "Exists"}],
                 "affinity": {"podAntiAffinity": {}},
                 "knativeFeatures": ["kubernetes.podspec-securitycontext", "kubernetes.podspec-nodeselector",
                                     "kubernetes.podspec-tolerations", "kubernetes.podspec-affinity"]},
    "grpc-batching": {"runtime": {"gateway": {"grpc": True}}, "maxBatchSize": 8,
                      "dynamicBatching": {"maxQueueDelayMicroseconds": 2000}},
}  # fmt: skip


def _services(spec: dict[str, Any], name: str = "resnet") -> list[dict[str, Any]]:
    owner = {"name": name, "namespace": "models", "uid": "0f1e2d3c-aaaa-bbbb-cccc-1234567890ab"}
    return build_serving(owner, parse(spec, name), UNITS, KNATIVE, SETTINGS)


@pytest.mark.parametrize("variant", VARIANTS)
def test_knative_admits_every_service_of_every_variant(variant: str) -> None:
    spec = {**BASE, **VARIANTS[variant]}
    features = spec.get("knativeFeatures", ())
    for service in _services(spec):
        assert admission_errors(service, features) == [], service["metadata"]["name"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_knative_admits_every_example(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    spec = {**document["spec"], "serving": "knative"}
    for service in _services(spec, document["metadata"]["name"]):
        assert admission_errors(service) == [], service["metadata"]["name"]


def _mutated(change: Any) -> dict[str, Any]:
    service = copy.deepcopy(_services(BASE)[0])
    change(service["spec"]["template"])
    return service


def _pod(template: dict[str, Any]) -> dict[str, Any]:
    return template["spec"]


def _container(template: dict[str, Any]) -> dict[str, Any]:
    return template["spec"]["containers"][0]


REFUSED = {
    "pod securityContext": (lambda t: _pod(t).update(securityContext={"runAsNonRoot": True}), "securityContext"),
    "nodeSelector": (lambda t: _pod(t).update(nodeSelector={"a": "b"}), "nodeSelector"),
    "tolerations": (lambda t: _pod(t).update(tolerations=[{"operator": "Exists"}]), "tolerations"),
    "automount token": (lambda t: _pod(t).update(automountServiceAccountToken=True), "automountServiceAccountToken"),
    "port named http": (lambda t: _container(t)["ports"][0].update(name="http"), "'h2c', 'http1'"),
    "reserved port": (lambda t: _container(t)["ports"][0].update(containerPort=8012), "reserved port"),
    "two ports": (lambda t: _container(t)["ports"].append({"containerPort": 9000}), "single port"),
    "reserved env": (lambda t: _container(t)["env"].append({"name": "K_SERVICE", "value": "x"}), "reserved"),
    "reserved path": (lambda t: _container(t)["volumeMounts"][1].update(mountPath="/dev"), "reserved path"),
    "writable configMap": (lambda t: _container(t)["volumeMounts"][0].pop("readOnly"), "readOnly"),
    "unmounted volume": (lambda t: _pod(t)["volumes"].append({"name": "x", "emptyDir": {}}), "not mounted"),
    "hostPath": (lambda t: _pod(t)["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
    "lifecycle": (lambda t: _container(t).update(lifecycle={"preStop": {"exec": {"command": ["x"]}}}), "lifecycle"),
    "added capability": (lambda t: _container(t)["securityContext"]["capabilities"].update(add=["NET_ADMIN"]), "add"),
    "probe on another port": (lambda t: _container(t)["livenessProbe"]["httpGet"].update(port="metrics"), "match"),
    "timeout over 600": (lambda t: _pod(t).update(timeoutSeconds=900), "timeoutSeconds"),
    "concurrency over 1000": (lambda t: _pod(t).update(containerConcurrency=1001), "containerConcurrency"),
    "initial scale 0": (lambda t: t["metadata"]["annotations"].update({"autoscaling.knative.dev/initial-scale": "0"}),
                        "initial-scale"),
    "cpu on the KPA": (lambda t: t["metadata"]["annotations"].update({"autoscaling.knative.dev/metric": "cpu"}),
                       "metric"),
    "max-scale past int32": (lambda t: t["metadata"]["annotations"].update(
        {"autoscaling.knative.dev/max-scale": "100000000000000000000"}), "int32"),
    "unknown container field": (lambda t: _container(t).update(tty=True), "tty"),
    "a field the CRD prunes": (lambda t: _container(t)["startupProbe"].update(grace=1), "'grace' was unexpected"),
}  # fmt: skip


@pytest.mark.parametrize("case", REFUSED)
def test_the_rule_table_refuses_what_knative_refuses(case: str) -> None:
    change, reason = REFUSED[case]
    assert admission_errors(_services(BASE)[0]) == []
    refused = admission_errors(_mutated(change))
    assert any(reason in error for error in refused), refused


def test_flags_the_cluster_enables_admit_their_fields() -> None:
    service = _mutated(lambda t: _pod(t).update(securityContext={"runAsNonRoot": True}, nodeSelector={"a": "b"}))
    assert admission_errors(service)
    assert admission_errors(service, ["kubernetes.podspec-securitycontext", "kubernetes.podspec-nodeselector"]) == []
    assert RELEASE == "knative-v1.23.0"  # the rules are that release's; re-read them when moving on
