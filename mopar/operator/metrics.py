"""The operator's own Prometheus metrics, declared once with fixed labels.

A model is named by `model_namespace` and `partitionedmodel`, never `namespace`: Prometheus
gives every scraped series its target's `namespace` (the operator's) and renames a colliding
label of the target's own to `exported_namespace` (honor_labels false, the Prometheus
Operator's default), so a `namespace` label here would name the wrong namespace.
They live in a registry of their own, served with the process's own figures: the operator
exports what it does, not whatever else its process has imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    start_http_server,
)

REGISTRY = CollectorRegistry()
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

RECONCILE_SECONDS = Histogram(
    "mopar_operator_reconcile_seconds",
    "Time of one reconcile of a PartitionedModel (waiting for a Job excluded).",
    ["model_namespace"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "mopar_operator_reconcile_errors_total",
    "Reconciles that failed: the spec (invalid), the prepare Job (prepare_failed), or anything else (error).",
    ["model_namespace", "partitionedmodel", "reason"],
    registry=REGISTRY,
)
_serving_on: int | None = None


def reconcile_error(owner: Mapping[str, Any], reason: str) -> None:
    RECONCILE_ERRORS.labels(model_namespace=owner["namespace"], partitionedmodel=owner["name"], reason=reason).inc()


def reconciled(owner: Mapping[str, Any], seconds: float) -> None:
    RECONCILE_SECONDS.labels(model_namespace=owner["namespace"]).observe(seconds)


def serve(port: int) -> None:
    """Serve /metrics on `port`, once per process (an operator restarted in it keeps the endpoint)."""
    global _serving_on
    if _serving_on is None:
        start_http_server(port, registry=REGISTRY)
        _serving_on = port
