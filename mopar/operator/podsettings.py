"""The pod settings a PartitionedModel passes to every pod the operator creates (pure):
service account, image pull secrets, node selector, tolerations and affinity, with KServe's
field names; and the Knative features the cluster enables for them.

Knative's webhook drops pod fields behind feature flags that are off by default
(knative/serving v1.23.0 `pkg/apis/serving/fieldmask.go` PodSpecMask, defaults in
`pkg/apis/config/features.go`): nodeSelector, tolerations, affinity and a pod-level
securityContext are refused unless `config-features` enables them. A spec lists the flags
its cluster enables in `knativeFeatures`; asking for a gated field without its flag is a
spec error on the Knative path, not a Service the webhook refuses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mopar.errors import SpecError
from mopar.operator import fields

SECURITY_CONTEXT = "kubernetes.podspec-securitycontext"
NODE_SELECTOR = "kubernetes.podspec-nodeselector"
TOLERATIONS = "kubernetes.podspec-tolerations"
AFFINITY = "kubernetes.podspec-affinity"
KNATIVE_FEATURES = (SECURITY_CONTEXT, NODE_SELECTOR, TOLERATIONS, AFFINITY)
# Pod field -> the config-features flag Knative gates it behind.
GATED = {"nodeSelector": NODE_SELECTOR, "tolerations": TOLERATIONS, "affinity": AFFINITY}
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}


@dataclass(frozen=True)
class PodSettings:
    service_account: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    affinity: Mapping[str, Any] = field(default_factory=dict)
    knative_features: tuple[str, ...] = ()

    def fields(self) -> dict[str, Any]:
        """The pod spec fields these settings set (only those given)."""
        result: dict[str, Any] = {}
        if self.service_account:
            result["serviceAccountName"] = self.service_account
        if self.image_pull_secrets:
            result["imagePullSecrets"] = [{"name": n} for n in self.image_pull_secrets]
        if self.node_selector:
            result["nodeSelector"] = dict(self.node_selector)
        if self.tolerations:
            result["tolerations"] = [dict(t) for t in self.tolerations]
        if self.affinity:
            result["affinity"] = dict(self.affinity)
        return result

    def check_knative(self) -> None:
        """SpecError when a field Knative gates is set and the spec does not say its flag is on."""
        for name in self.fields():
            flag = GATED.get(name)
            if flag and flag not in self.knative_features:
                raise SpecError(
                    f"spec.{name}: Knative refuses it unless its config-features enables {flag}; "
                    f"enable it there and list it in spec.knativeFeatures, or serve with serving: deployment"
                )

    def to_json(self) -> dict[str, Any]:
        return {
            "service_account": self.service_account,
            "image_pull_secrets": list(self.image_pull_secrets),
            "node_selector": dict(self.node_selector),
            "tolerations": [dict(t) for t in self.tolerations],
            "affinity": dict(self.affinity),
            "knative_features": list(self.knative_features),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PodSettings:
        return cls(
            service_account=data.get("service_account"),
            image_pull_secrets=tuple(data.get("image_pull_secrets", ())),
            node_selector=dict(data.get("node_selector", {})),
            tolerations=tuple(dict(t) for t in data.get("tolerations", ())),
            affinity=dict(data.get("affinity", {})),
            knative_features=tuple(data.get("knative_features", ())),
        )


def parse_pod_settings(spec: Mapping[str, Any]) -> PodSettings:
    secrets = []
    for i, entry in enumerate(fields.items(spec, "imagePullSecrets", "spec.imagePullSecrets")):
        where = f"spec.imagePullSecrets[{i}]"
        if not isinstance(entry, Mapping):
            raise SpecError(f"{where}: an object with the Secret's name, e.g. {{name: registry}}")
        fields.known(entry, where, {"name"})
        name = fields.subdomain(entry, "name", f"{where}.name")
        if name is None:
            raise SpecError(f"{where}.name: required")
        secrets.append(name)
    features = []
    for i, flag in enumerate(fields.items(spec, "knativeFeatures", "spec.knativeFeatures")):
        if flag not in KNATIVE_FEATURES:
            raise SpecError(f"spec.knativeFeatures[{i}]: one of {', '.join(KNATIVE_FEATURES)}, got {flag!r}")
        features.append(str(flag))
    return PodSettings(
        service_account=fields.subdomain(spec, "serviceAccountName", "spec.serviceAccountName"),
        image_pull_secrets=tuple(secrets),
        node_selector=fields.string_map(spec, "nodeSelector", "spec.nodeSelector"),
        tolerations=_tolerations(fields.items(spec, "tolerations", "spec.tolerations")),
        affinity=dict(fields.mapping(spec, "affinity", "spec.affinity")),
        knative_features=tuple(features),
    )


def _tolerations(entries: Sequence[Any]) -> tuple[Mapping[str, Any], ...]:
    result = []
    for i, entry in enumerate(entries):
        where = f"spec.tolerations[{i}]"
        if not isinstance(entry, Mapping):
            raise SpecError(f"{where}: an object (key, operator, value, effect, tolerationSeconds)")
        fields.known(entry, where, _TOLERATION_KEYS)
        fields.choice(entry, "operator", f"{where}.operator", ("Exists", "Equal"), None)
        fields.choice(entry, "effect", f"{where}.effect", ("NoSchedule", "PreferNoSchedule", "NoExecute"), None)
        fields.integer(entry, "tolerationSeconds", f"{where}.tolerationSeconds", None, -(2**63), 2**63 - 1)
        for key in ("key", "value"):
            if key in entry and not isinstance(entry[key], str):
                raise SpecError(f"{where}.{key}: a string, got {entry[key]!r}")
        result.append(dict(entry))
    return tuple(result)
