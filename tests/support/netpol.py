"""Whether a NetworkPolicy lets one pod reach another, by the Kubernetes rules
(https://kubernetes.io/docs/concepts/services-networking/network-policies/): a policy isolates
the pods its podSelector picks in its own namespace; an ingress `from` peer with a podSelector
alone means pods of the policy's namespace, a namespaceSelector alone every pod of the
namespaces it picks, both together the pods it picks in those namespaces. Namespaces carry
the label kubernetes.io/metadata.name. An empty selector picks everything."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

Pod = tuple[str, Mapping[str, str]]  # (namespace, labels)


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _namespace_labels(namespace: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": namespace}


def isolates(policy: Mapping[str, Any], target: Pod) -> bool:
    namespace, labels = target
    return policy["metadata"]["namespace"] == namespace and selects(policy["spec"]["podSelector"], labels)


def admits(policies: Iterable[Mapping[str, Any]], source: Pod, target: Pod) -> bool:
    """Whether `source` may open a connection to `target` (on the port the rule names)."""
    relevant = [p for p in policies if isolates(p, target) and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])]
    if not relevant:
        return True  # not isolated for ingress
    return any("from" not in rule or any(_peer_admits(peer, policy, source) for peer in rule["from"])
               for policy in relevant for rule in policy["spec"].get("ingress", []))  # fmt: skip


def _peer_admits(peer: Mapping[str, Any], policy: Mapping[str, Any], source: Pod) -> bool:
    namespace, labels = source
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], _namespace_labels(namespace)):
            return False
    elif namespace != policy["metadata"]["namespace"]:
        return False
    return selects(peer.get("podSelector"), labels)
