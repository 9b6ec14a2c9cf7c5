"""The chart's optional NetworkPolicies, rendered by the Helm engine and read by Kubernetes'
rules (tests/support/netpol.py) against the labels the operator's builders and the chart give
the real pods: Redis hears the models' pods and the operator only; slices hear their
namespace's gateways and Knative's data plane only."""

from __future__ import annotations

from typing import Any

from mopar.operator.jobs import build_prepare_job
from mopar.operator.serving import build_serving
from mopar.operator.settings import OperatorSettings
from mopar.operator.spec import DEPLOYMENT, KNATIVE, parse
from mopar.operator.units import SliceUnit
from tests.support.helm import render
from tests.support.netpol import Pod, admits
from tests.support.validation import validate_object

VALUES = {"operator": {"watchNamespaces": ["models", "team-a"]}, "networkPolicy": {"enabled": True}}
RELEASE_NS = "mopar-system"


def _model_pods(namespace: str, serving: str) -> dict[str, Pod]:
    owner = {"name": "resnet", "namespace": namespace, "uid": "u"}
    spec = parse({"model": {"storageUri": "zoo://resnet50"}}, "resnet")
    objects = [*build_serving(owner, spec, [SliceUnit("s0", 128)], serving, OperatorSettings()),
               build_prepare_job(owner, spec, OperatorSettings())]  # fmt: skip
    pods = {}
    for obj in objects:
        if obj["kind"] in ("Job", "Deployment") or obj["apiVersion"] == "serving.knative.dev/v1":
            labels = obj["spec"]["template"]["metadata"]["labels"]
            pods[labels["app.kubernetes.io/component"]] = (namespace, labels)
    return pods


def _chart_pod(objects: list[dict[str, Any]], kind: str, component: str) -> Pod:
    obj = next(o for o in objects if o["kind"] == kind and o["metadata"]["labels"].get(
        "app.kubernetes.io/component") == component)  # fmt: skip
    return obj["metadata"]["namespace"], obj["spec"]["template"]["metadata"]["labels"]


def test_network_policies_fence_redis_and_the_slices() -> None:
    objects = render(VALUES)
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    assert sorted((p["metadata"]["namespace"], p["metadata"]["name"]) for p in policies) == [
        ("models", "mopar-slices"), (RELEASE_NS, "mopar-redis"), ("team-a", "mopar-slices")]  # fmt: skip
    for policy in policies:
        validate_object(policy)
    redis, operator = _chart_pod(objects, "StatefulSet", "redis"), _chart_pod(objects, "Deployment", "operator")
    stranger: Pod = ("models", {"app": "something-else"})
    outside = _model_pods("elsewhere", KNATIVE)["slice"]  # a namespace the operator does not serve
    assert admits(policies, operator, redis) and not admits(policies, stranger, redis)
    assert not admits(policies, outside, redis)
    activator: Pod = ("knative-serving", {"app": "activator"})
    for serving in (KNATIVE, DEPLOYMENT):
        pods = _model_pods("models", serving)
        for component in ("slice", "gateway", "prepare"):
            assert admits(policies, pods[component], redis), (serving, component)
        assert admits(policies, pods["gateway"], pods["slice"])
        assert admits(policies, activator, pods["slice"])
        assert not admits(policies, stranger, pods["slice"])
        assert not admits(policies, _model_pods("team-a", serving)["gateway"], pods["slice"])  # another namespace's
        assert admits(policies, stranger, pods["gateway"])  # clients call the gateway


def test_serving_every_namespace_only_redis_is_fenced_and_off_by_default() -> None:
    policies = [o for o in render({"networkPolicy": {"enabled": True}}) if o["kind"] == "NetworkPolicy"]
    assert [p["metadata"]["name"] for p in policies] == ["mopar-redis"]
    anywhere = _model_pods("anywhere", KNATIVE)["slice"]
    redis = _chart_pod(render({}), "StatefulSet", "redis")
    assert admits(policies, anywhere, redis)
    assert not [o for o in render({}) if o["kind"] == "NetworkPolicy"]
