"""Pods shut down the way the data plane drains (pure builders): a preStop pause, then SIGTERM,
then MOPAR_GRACE_SECONDS for what is in flight, all inside terminationGracePeriodSeconds."""

from __future__ import annotations

from mopar.operator import pods
from mopar.operator.serving import build_serving
from mopar.operator.settings import OperatorSettings
from mopar.operator.spec import DEPLOYMENT, KNATIVE, parse
from mopar.operator.units import SliceUnit
from tests.support.validation import validate_object

OWNER = {"name": "resnet", "namespace": "models", "uid": "0f1e2d3c-aaaa-bbbb-cccc-1234567890ab"}
UNITS = [SliceUnit("s0", 180), SliceUnit("s1", 290)]


def _grace(container: dict) -> float:  # type: ignore[type-arg]
    return float(next(e["value"] for e in container["env"] if e["name"] == "MOPAR_GRACE_SECONDS"))


def test_deployment_pods_give_the_drain_its_grace() -> None:
    spec = parse({"model": {"storageUri": "zoo://resnet50"}}, "resnet")
    for obj in build_serving(OWNER, spec, UNITS, DEPLOYMENT, OperatorSettings()):
        if obj["kind"] != "Deployment":
            continue
        validate_object(obj)
        pod = obj["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
        assert pause > 0 and pod["terminationGracePeriodSeconds"] >= pause + _grace(container) + 2


def test_knative_pods_drain_within_the_revision_timeout() -> None:
    # Knative keeps neither lifecycle nor terminationGracePeriodSeconds (its queue-proxy drains,
    # and the pod's grace is the revision's timeoutSeconds, 300 s by default): the data plane's
    # own grace must fit inside it.
    spec = parse({"model": {"storageUri": "zoo://resnet50"}}, "resnet")
    for obj in build_serving(OWNER, spec, UNITS, KNATIVE, OperatorSettings()):
        pod = obj["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert "lifecycle" not in container and "terminationGracePeriodSeconds" not in pod
        assert _grace(container) == pods.GRACE_SECONDS < pod.get("timeoutSeconds", 300)
