"""Rendered objects against the Kubernetes schemas (kubernetes-validate, strict), Knative
Services against what Knative admits (`knative_admission`), and PartitionedModels against the
CRD's own openAPIV3Schema."""

from __future__ import annotations

import copy
import re
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from tests.support import ROOT

KUBERNETES_VERSION = "1.31.0"  # a current release the cluster is expected to run
CRD = ROOT / "crds" / "partitionedmodel.yaml"


def validate_object(obj: dict[str, Any], knative_features: tuple[str, ...] = ()) -> None:
    """Strict schema validation; a Knative Service is checked against Knative's CRD and webhook
    rules, and its revision template as a Pod (Knative's own fields set aside: kubernetes-validate
    has no Knative schemas)."""
    if obj["apiVersion"] == "serving.knative.dev/v1":
        from tests.support.knative_admission import admission_errors

        refused = admission_errors(strip_server_fields(obj), knative_features)
        assert not refused, f"Knative refuses {obj['metadata']['name']}: {refused}"
        template = copy.deepcopy(obj["spec"]["template"])
        for knative_field in ("containerConcurrency", "timeoutSeconds"):
            template["spec"].pop(knative_field, None)
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": obj["metadata"]["name"], **template["metadata"]},
               "spec": template["spec"]}  # fmt: skip
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
        return
    kubernetes_validate.validate(strip_server_fields(obj), KUBERNETES_VERSION, strict=True)


def strip_server_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """What a client sends: without what a server (or the emulated one) adds."""
    clean = copy.deepcopy(obj)
    clean.pop("status", None)
    for key in ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"):
        clean.get("metadata", {}).pop(key, None)
    return clean


def crd_json_schema() -> dict[str, Any]:
    """The CRD's openAPIV3Schema as JSON Schema (draft 2020-12)."""
    crd = yaml.safe_load(CRD.read_text())
    schema = structural_json_schema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    # Every object has these; a CRD's schema leaves them implicit.
    schema["properties"].update(
        {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
    )
    return schema


def structural_json_schema(node: Any) -> Any:
    """A CRD's structural schema as JSON Schema: unknown fields fail (the API server would prune
    them, silently) unless the schema preserves them."""
    if isinstance(node, list):
        return [structural_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    result = {k: structural_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if result.get("exclusiveMinimum") is True:  # OpenAPI 3.0's boolean form
        result["exclusiveMinimum"] = result.pop("minimum")
    if (
        result.get("type") == "object"
        and "properties" in result
        and "additionalProperties" not in result
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        result["additionalProperties"] = False  # a structural schema prunes unknown fields; here they fail
    return result


def validate_partitioned_model(document: dict[str, Any]) -> None:
    jsonschema.validate(document, crd_json_schema(), cls=jsonschema.Draft202012Validator)


def printer_columns(obj: dict[str, Any]) -> dict[str, str]:
    """The CRD's additionalPrinterColumns as `kubectl get` evaluates them on `obj`, for the
    JSONPath forms the CRD uses (kubectl's JSONPath: `.a.b`, and a filter `list[?(@.k=="v")]`)."""
    crd = yaml.safe_load(CRD.read_text())
    columns = {}
    for column in crd["spec"]["versions"][0]["additionalPrinterColumns"]:
        values: list[Any] = [obj]
        for step in re.findall(r'\w+(?:\[\?\(@\.\w+=="[^"]*"\)\])?', column["jsonPath"]):
            match = re.fullmatch(r'(\w+)\[\?\(@\.(\w+)=="([^"]*)"\)\]', step)
            key = match.group(1) if match else step
            values = [v[key] for v in values if isinstance(v, dict) and key in v]
            if match:
                values = [i for v in values for i in v if i.get(match.group(2)) == match.group(3)]
        columns[column["name"]] = " ".join(str(v) for v in values)
    return columns
