"""Prometheus metrics of the data plane, declared once with fixed labels.

Names start with `mopar_`, carry base units (`_seconds`, `_bytes`) and `_total` on
counters; every series is labelled with `model` and, for workers, `slice`. The Grafana
dashboard and the alert rules query exactly these names (a test scrapes real
processes and checks).
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram

# Latency buckets from 1 ms to 30 s: slices of small models take milliseconds, whole
# large models seconds.
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

SLICE_REQUESTS = Counter(
    "mopar_slice_requests_total",
    "Slice runs by outcome (ok, input_missing, store_error, error).",
    ["model", "slice", "outcome"],
)
SLICE_INFERENCE = Histogram(
    "mopar_slice_inference_seconds", "onnxruntime time of one slice run.", ["model", "slice"], buckets=_SECONDS
)
SLICE_TRANSPORT = Histogram(
    "mopar_slice_transport_seconds",
    "Time a slice spends reading its inputs or writing its outputs (codec included).",
    ["model", "slice", "direction"],
    buckets=_SECONDS,
)
SLICE_BYTES = Counter(
    "mopar_slice_activation_bytes_total",
    "Activation bytes a slice moved, before (raw) and after (wire) compression.",
    ["model", "slice", "direction", "encoding"],
)
SLICE_IN_FLIGHT = Gauge("mopar_slice_in_flight_requests", "Slice runs in progress.", ["model", "slice"])
SLICE_READY = Gauge(
    "mopar_slice_ready", "1 when the slice has its model loaded and reaches its store.", ["model", "slice"]
)

GATEWAY_REQUESTS = Counter(
    "mopar_gateway_requests_total",
    "Inference requests by outcome (ok, client_error, cancelled: the client left, draining: refused while "
    "shutting down, unavailable, error).",
    ["model", "outcome"],
)
GATEWAY_LATENCY = Histogram(
    "mopar_gateway_request_seconds", "End-to-end latency of inference requests.", ["model"], buckets=_SECONDS
)
GATEWAY_IN_FLIGHT = Gauge("mopar_gateway_in_flight_requests", "Inference requests in progress.", ["model"])


def gateway_request_done(model: str, outcome: str, started: float) -> None:
    """A request left the gateway (REST or gRPC): counted by outcome, timed when it succeeded."""
    GATEWAY_IN_FLIGHT.labels(model=model).dec()
    GATEWAY_REQUESTS.labels(model=model, outcome=outcome).inc()
    if outcome == "ok":
        GATEWAY_LATENCY.labels(model=model).observe(time.perf_counter() - started)


GATEWAY_RETRIES = Counter(
    "mopar_gateway_slice_retries_total", "Slice calls retried after a failure.", ["model", "slice"]
)
GATEWAY_BATCH_REQUESTS = Histogram(
    "mopar_gateway_batch_requests",
    "Requests merged into one run of the slices by dynamic batching.",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
STORE_UP = Gauge("mopar_store_up", "1 when the activation store answered its last health check.", ["model"])


class SliceSeries:
    """One worker's series, looked up once: a slice call updates a dozen of them, and a label
    lookup each time costs more than the update."""

    def __init__(self, model: str, slice_id: str) -> None:
        labels = {"model": model, "slice": slice_id}
        self.requests = {
            o: SLICE_REQUESTS.labels(**labels, outcome=o) for o in ("ok", "input_missing", "store_error", "error")
        }
        self.inference = SLICE_INFERENCE.labels(**labels)
        self.transport = {d: SLICE_TRANSPORT.labels(**labels, direction=d) for d in ("read", "write")}
        self.bytes = {
            (d, e): SLICE_BYTES.labels(**labels, direction=d, encoding=e)
            for d in ("read", "write")
            for e in ("raw", "wire")
        }
        self.in_flight = SLICE_IN_FLIGHT.labels(**labels)
        self.ready = SLICE_READY.labels(**labels)
        self.store_up = STORE_UP.labels(model=model)
