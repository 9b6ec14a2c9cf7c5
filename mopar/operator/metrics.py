"""The operator's own Prometheus metrics, declared once with fixed labels."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

RECONCILE_SECONDS = Histogram(
    "mopar_operator_reconcile_seconds",
    "Time of one reconcile of a PartitionedModel (waiting for a Job excluded).",
    ["namespace"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
RECONCILE_ERRORS = Counter(
    "mopar_operator_reconcile_errors_total",
    "Reconciles that failed: the spec (invalid), the prepare Job (prepare_failed), or anything else (error).",
    ["namespace", "reason"],
)
_serving_on: int | None = None


def serve(port: int) -> None:
    """Serve /metrics on `port`, once per process (an operator restarted in it keeps the endpoint)."""
    global _serving_on
    if _serving_on is None:
        start_http_server(port)
        _serving_on = port
