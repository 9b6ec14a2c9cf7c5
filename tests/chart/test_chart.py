"""The Helm chart, rendered and linted by the real Helm engine (helm-python-sdk); every object
validated against the Kubernetes schemas; the alert rules checked by promtool."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from slice_runtime.version import version
from tests.support import ROOT
from tests.support.helm import ALL_ON, CHART, render
from tests.support.validation import validate_object

MONITORING = "monitoring.coreos.com/v1"


def test_the_charts_crd_is_the_crd() -> None:
    assert (CHART / "crds" / "partitionedmodel.yaml").read_text() == (
        ROOT / "crds" / "partitionedmodel.yaml"
    ).read_text()


@pytest.mark.parametrize("values", [{}, ALL_ON], ids=["defaults", "all-on"])
def test_lint_is_clean_in_strict_mode(values: dict[str, Any]) -> None:
    report = helm.lint(str(CHART), values=values, strict=True, kube_version="v1.31.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("values", [{}, ALL_ON], ids=["defaults", "all-on"])
def test_every_rendered_object_validates(values: dict[str, Any]) -> None:
    objects = render(values)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "ServiceAccount", "StatefulSet", "Secret"} <= kinds
    for obj in objects:
        if obj["apiVersion"] == MONITORING:
            _check_monitoring(obj)
        else:
            validate_object(obj)
    operator = next(o for o in objects if o["kind"] == "Deployment")
    pod = operator["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"][0] == "operator" and container["image"].endswith(f":{version()}")
    assert pod["securityContext"]["runAsUser"] == 10001 and container["securityContext"]["readOnlyRootFilesystem"]
    assert {p["httpGet"]["path"] for p in (container["livenessProbe"], container["readinessProbe"])} == {"/healthz"}
    assert all("limits" in c["resources"] for o in objects if o["kind"] in ("Deployment", "StatefulSet")
               for c in o["spec"]["template"]["spec"]["containers"])  # fmt: skip


def test_all_on_turns_on_every_optional_part() -> None:
    objects = render(ALL_ON)
    kinds = [o["kind"] for o in objects]
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap", "Role", "RoleBinding"):
        assert kind in kinds
    assert "ClusterRole" not in kinds  # namespaced RBAC only, when the namespaces are listed
    dashboard = next(o for o in objects if o["kind"] == "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["mopar.json"])["uid"] == "mopar-overview"


def test_the_redis_password_never_appears_in_clear() -> None:
    objects = render(ALL_ON)
    for obj in objects:
        if obj["kind"] != "Secret":
            assert "not-a-real-password" not in yaml.safe_dump(obj)


def test_an_external_redis_or_none() -> None:
    objects = render({"redis": {"enabled": False}, "externalRedis": {"secretName": "my-redis"}})
    assert "StatefulSet" not in {o["kind"] for o in objects}
    env = {e["name"]: e for e in next(o for o in objects if o["kind"] == "Deployment")
           ["spec"]["template"]["spec"]["containers"][0]["env"]}  # fmt: skip
    assert env["MOPAR_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "my-redis", "key": "url"}
    with pytest.raises(helm.HelmError, match="mopar needs a Redis"):
        render({"redis": {"enabled": False}})


@pytest.mark.parametrize(
    "values", [{"operator": {"pollSeconds": 0}}, {"operator": {"watchNamespaces": ["Not_A_Namespace"]}},
               {"metrics": {"podMonitor": {"enabeld": True}}}, {"image": {"pullPolicy": "Sometimes"}}],
)  # fmt: skip
def test_the_values_schema_refuses_nonsense(values: dict[str, Any]) -> None:
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)


def test_alert_rules_pass_promtool(tmp_path: Path) -> None:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is not on PATH; `make test` installs it (Debian package prometheus)")
    rule = next(o for o in render(ALL_ON) if o["kind"] == "PrometheusRule")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rule["spec"]))
    done = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 5 rules found" in done.stdout


def _check_monitoring(obj: dict[str, Any]) -> None:
    """No schemas for the Prometheus Operator's kinds here: check what they need to work."""
    assert obj["metadata"]["name"] and obj["metadata"]["namespace"]
    if obj["kind"] == "ServiceMonitor":
        assert obj["spec"]["selector"]["matchLabels"] and obj["spec"]["endpoints"][0]["port"] == "metrics"
    elif obj["kind"] == "PodMonitor":
        assert obj["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/managed-by": "mopar-operator"}
        # Knative renames the user port on its pods; Deployment pods keep the operator's name.
        assert obj["spec"]["podMetricsEndpoints"] == [{"port": port, "path": "/metrics", "interval": "15s"}
                                                      for port in ("user-port", "http1")]  # fmt: skip
    else:
        assert [r["alert"] for g in obj["spec"]["groups"] for r in g["rules"]]
