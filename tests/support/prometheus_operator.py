"""What the Prometheus Operator makes of a PodMonitor or ServiceMonitor: one scrape job per
endpoint, with the relabelling it generates (prometheus-operator v0.93.0,
pkg/prometheus/promcfg.go: generatePodMonitorConfig, generateServiceMonitorConfig,
initRelabelings, generateRunningFilter; sharding, scrape classes and limits left out: one
shard, none set). Kubernetes service discovery (role pod, role endpoints, the default) is
stood in for by static targets carrying the `__meta_kubernetes_*` labels discovery would give
them, so real local processes play the pods."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

RELEASE = "v0.93.0"


def sanitize(name: str) -> str:
    """sanitizeLabelName: every character outside [a-zA-Z0-9_] becomes '_'."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


@dataclass(frozen=True)
class Target:
    """A discovered pod port (role pod) or endpoint (role endpoints), served at `address`."""

    address: str
    namespace: str
    meta: Mapping[str, str] = field(default_factory=dict)


def _labels(prefix: str, labels: Mapping[str, str]) -> dict[str, str]:
    result = {}
    for key, value in labels.items():
        result[f"__meta_kubernetes_{prefix}_label_{sanitize(key)}"] = value
        result[f"__meta_kubernetes_{prefix}_labelpresent_{sanitize(key)}"] = "true"
    return result


def pod_target(address: str, namespace: str, pod: str, labels: Mapping[str, str], container: str,
               port_name: str, port: int) -> Target:  # fmt: skip
    """What role pod discovers for one container port of a running pod."""
    return Target(address, namespace, {
        "__meta_kubernetes_namespace": namespace, "__meta_kubernetes_pod_name": pod,
        "__meta_kubernetes_pod_container_name": container, "__meta_kubernetes_pod_container_port_name": port_name,
        "__meta_kubernetes_pod_container_port_number": str(port), "__meta_kubernetes_pod_phase": "Running",
        **_labels("pod", labels),
    })  # fmt: skip


def endpoint_target(address: str, service: Mapping[str, Any], port_name: str, pod: str, container: str) -> Target:
    """What role endpoints discovers for one port of a Service's endpoint backed by a pod."""
    namespace = service["metadata"]["namespace"]
    return Target(address, namespace, {
        "__meta_kubernetes_namespace": namespace, "__meta_kubernetes_service_name": service["metadata"]["name"],
        "__meta_kubernetes_endpoint_port_name": port_name, "__meta_kubernetes_endpoint_address_target_kind": "Pod",
        "__meta_kubernetes_endpoint_address_target_name": pod, "__meta_kubernetes_pod_name": pod,
        "__meta_kubernetes_pod_container_name": container, "__meta_kubernetes_pod_phase": "Running",
        **_labels("service", service["metadata"].get("labels", {})),
    })  # fmt: skip


def _selector_rules(selector: Mapping[str, Any], prefix: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for key in sorted(selector.get("matchLabels", {})):
        rules.append({"action": "keep", "regex": f"({selector['matchLabels'][key]});true",
                      "source_labels": [f"__meta_kubernetes_{prefix}_label_{sanitize(key)}",
                                        f"__meta_kubernetes_{prefix}_labelpresent_{sanitize(key)}"]})  # fmt: skip
    for expression in selector.get("matchExpressions", []):
        key, operator = sanitize(expression["key"]), expression["operator"]
        both = [f"__meta_kubernetes_{prefix}_label_{key}", f"__meta_kubernetes_{prefix}_labelpresent_{key}"]
        present = [f"__meta_kubernetes_{prefix}_labelpresent_{key}"]
        values = "|".join(expression.get("values", []))
        rules.append({
            "In": {"action": "keep", "source_labels": both, "regex": f"({values});true"},
            "NotIn": {"action": "drop", "source_labels": both, "regex": f"({values});true"},
            "Exists": {"action": "keep", "source_labels": present, "regex": "true"},
            "DoesNotExist": {"action": "drop", "source_labels": present, "regex": "true"},
        }[operator])  # fmt: skip
    return rules


def _in_namespaces(monitor: Mapping[str, Any], targets: Sequence[Target]) -> list[Target]:
    """Discovery looks only in the namespaces the monitor's namespaceSelector names."""
    selector = monitor["spec"].get("namespaceSelector") or {}
    if selector.get("any"):
        return list(targets)
    names = selector.get("matchNames") or [monitor["metadata"]["namespace"]]
    return [t for t in targets if t.namespace in names]


def _static(targets: Sequence[Target]) -> list[dict[str, Any]]:
    return [{"targets": [t.address], "labels": dict(t.meta)} for t in targets]


_RUNNING = {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"}
_JOB_NAME = {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"}


def pod_monitor_jobs(monitor: Mapping[str, Any], targets: Sequence[Target], interval: str) -> list[dict[str, Any]]:
    """generatePodMonitorConfig, per podMetricsEndpoint (scraped every `interval`)."""
    meta, spec = monitor["metadata"], monitor["spec"]
    jobs = []
    for i, endpoint in enumerate(spec["podMetricsEndpoints"]):
        relabel = [_JOB_NAME, _RUNNING, *_selector_rules(spec["selector"], "pod")]
        relabel.append({"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                        "regex": endpoint["port"]})  # fmt: skip
        relabel += [
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"target_label": "job", "replacement": f"{meta['namespace']}/{meta['name']}"},
            {"target_label": "endpoint", "replacement": endpoint["port"]},
        ]
        jobs.append({"job_name": f"podMonitor/{meta['namespace']}/{meta['name']}/{i}", "scrape_interval": interval,
                     "metrics_path": endpoint.get("path", "/metrics"),
                     "static_configs": _static(_in_namespaces(monitor, targets)),
                     "relabel_configs": relabel})  # fmt: skip
    return jobs


def service_monitor_jobs(monitor: Mapping[str, Any], targets: Sequence[Target], interval: str) -> list[dict[str, Any]]:
    """generateServiceMonitorConfig, per endpoint, for the default role (endpoints)."""
    meta, spec = monitor["metadata"], monitor["spec"]
    kind_and_name = ["__meta_kubernetes_endpoint_address_target_kind", "__meta_kubernetes_endpoint_address_target_name"]
    jobs = []
    for i, endpoint in enumerate(spec["endpoints"]):
        relabel = [_JOB_NAME, *_selector_rules(spec["selector"], "service")]
        relabel.append({"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"],
                        "regex": endpoint["port"]})  # fmt: skip
        relabel += [
            {"source_labels": kind_and_name, "separator": ";", "regex": "Node;(.*)", "replacement": "${1}",
             "target_label": "node"},
            {"source_labels": kind_and_name, "separator": ";", "regex": "Pod;(.*)", "replacement": "${1}",
             "target_label": "pod"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
            _RUNNING,
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job", "replacement": "${1}"},
            {"target_label": "endpoint", "replacement": endpoint["port"]},
        ]  # fmt: skip
        jobs.append({"job_name": f"serviceMonitor/{meta['namespace']}/{meta['name']}/{i}",
                     "scrape_interval": interval, "metrics_path": endpoint.get("path", "/metrics"),
                     "static_configs": _static(_in_namespaces(monitor, targets)),
                     "relabel_configs": relabel})  # fmt: skip
    return jobs
