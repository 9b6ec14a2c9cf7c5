"""Command-line options of the data plane's commands, kept apart from their modules so that
building the `mopar` parser imports neither onnxruntime nor aiohttp. Each option defaults to
its MOPAR_* environment variable (what a Kubernetes pod is given)."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable

from slice_runtime import calls
from slice_runtime.config import env_float, env_int, env_str


def number(
    kind: type[int] | type[float] = float,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
) -> Callable[[str], float]:
    """An argparse `type` for a finite number in range: `--slo-ms nan` or `--dominance -1` is a
    usage error (one line, exit 2), not a plan made of nonsense."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            wanted = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if above is not None and not value > above:
            raise argparse.ArgumentTypeError(f"must be above {above:g}, got {text}")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}, got {text}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:g}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


PORT = number(int, 0, 65535)
COUNT = number(int, 1)
SECONDS = number(float, above=0)


def add_http_arguments(parser: argparse.ArgumentParser) -> None:
    """The gateway's read timeouts, connection limit and grace period (`gateway.lifecycle`)."""
    parser.add_argument(
        "--header-timeout",
        type=SECONDS,
        default=env_float("MOPAR_HEADER_TIMEOUT", 15.0, 0.001),
        help="seconds a connection may take to send a request's headers, or stay idle (default 15)",
    )
    parser.add_argument(
        "--body-timeout",
        type=SECONDS,
        default=env_float("MOPAR_BODY_TIMEOUT", 60.0, 0.001),
        help="seconds a request may take to send its body (default 60)",
    )
    parser.add_argument(
        "--max-connections",
        type=COUNT,
        default=env_int("MOPAR_MAX_CONNECTIONS", 1024, 1),
        help="connections beyond this many are answered 503 and closed; gRPC calls in flight beyond"
        " this many get RESOURCE_EXHAUSTED (default 1024)",
    )
    parser.add_argument(
        "--grace",
        type=number(float, 0),
        default=env_float("MOPAR_GRACE_SECONDS", 30.0, 0.0),
        help="on SIGTERM, seconds the requests in flight may take to finish (default 30)",
    )


def add_batching_arguments(parser: argparse.ArgumentParser) -> None:
    """Dynamic batching at the gateway (`gateway.batching`), off unless asked for."""
    parser.add_argument(
        "--dynamic-batching",
        action="store_true",
        default=env_str("MOPAR_DYNAMIC_BATCHING", "") in ("1", "true"),
        help="merge concurrent requests into batches of up to the model's max batch ($MOPAR_DYNAMIC_BATCHING)",
    )
    parser.add_argument(
        "--max-queue-delay-us",
        type=number(int, 0, 10_000_000),
        default=env_int("MOPAR_MAX_QUEUE_DELAY_US", 0, 0),
        metavar="US",
        help="microseconds a request may wait for others to join its batch (default 0: none; "
        "Triton's max_queue_delay_microseconds)",
    )
    parser.add_argument(
        "--batches-in-flight",
        type=COUNT,
        default=env_int("MOPAR_BATCHES_IN_FLIGHT", 0, 0) or None,
        metavar="N",
        help="batches running at once; requests beyond wait for the next (default: two per stage of the pipeline)",
    )


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """`mopar worker` options; each defaults to its MOPAR_* environment variable."""
    parser.add_argument("--manifest", default=env_str("MOPAR_MANIFEST"), help="manifest.json or its directory")
    parser.add_argument("--slice", default=env_str("MOPAR_SLICE"), help="slice id to serve (e.g. s1 or s2.0)")
    parser.add_argument(
        "--transport",
        default=env_str("MOPAR_TRANSPORT", "redis://127.0.0.1:6379/0"),
        help="redis://, rediss:// (TLS) or shm (default: $MOPAR_TRANSPORT)",
    )
    parser.add_argument("--namespace", default=env_str("MOPAR_NAMESPACE", "default"), help="key namespace")
    parser.add_argument("--host", default=env_str("MOPAR_HOST", "0.0.0.0"))
    parser.add_argument("--port", type=PORT, default=env_int("MOPAR_PORT", 8080, 0))
    parser.add_argument(
        "--threads",
        type=COUNT,
        default=env_int("MOPAR_THREADS", 0, 1) or None,
        help="onnxruntime intra-op threads (default: the slice's, as planned, in the manifest)",
    )
    parser.add_argument(
        "--concurrency", type=COUNT, default=env_int("MOPAR_CONCURRENCY", 1, 1), help="runs at once (default 1)"
    )
    parser.add_argument(
        "--codec",
        default=env_str("MOPAR_CODEC", "auto"),
        help="auto (the plan's choice per tensor), none, zstdN, zstdN+shuffle",
    )
    parser.add_argument(
        "--compress-threshold",
        type=number(int, 0),
        default=env_int("MOPAR_COMPRESS_THRESHOLD", 4096, 0),
        help="tensors smaller than this many bytes are sent raw",
    )
    parser.add_argument(
        "--ttl",
        type=number(float, 1),
        default=env_float("MOPAR_ACTIVATION_TTL", 300.0, 1.0),
        help="seconds an activation lives in the store if nobody deletes it",
    )
    parser.add_argument(
        "--artifacts",
        default=env_str("MOPAR_ARTIFACTS"),
        help="Redis URL of the artifact store holding slice files by sha256",
    )
    parser.add_argument("--cache-dir", default=env_str("MOPAR_CACHE_DIR", "/tmp/mopar-cache"))
    parser.add_argument(
        "--grace",
        type=number(float, 0),
        default=env_float("MOPAR_GRACE_SECONDS", 30.0, 0.0),
        help="on SIGTERM, seconds the runs in flight may take to finish (default 30)",
    )
    parser.add_argument(
        "--supervisor-pid",
        type=number(int, 1),
        default=env_int("MOPAR_SUPERVISOR_PID", 0, 0) or None,
        help="pid of the `mopar serve` that started this worker: the worker stops when it dies (set by mopar serve)",
    )


def add_gateway_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", default=env_str("MOPAR_MANIFEST"), help="manifest.json or its directory")
    parser.add_argument(
        "--slice-url",
        action="append",
        default=[],
        metavar="ID=URL",
        help="where slice ID is served (repeatable); default: $MOPAR_SLICE_URLS (ID=URL,...)",
    )
    parser.add_argument("--transport", default=env_str("MOPAR_TRANSPORT", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--namespace", default=env_str("MOPAR_NAMESPACE", "default"))
    parser.add_argument("--name", default=env_str("MOPAR_MODEL_NAME"), help="model name (default: the manifest's)")
    parser.add_argument("--host", default=env_str("MOPAR_HOST", "0.0.0.0"))
    parser.add_argument("--port", type=PORT, default=env_int("MOPAR_PORT", 8080, 0))
    parser.add_argument(
        "--grpc-port",
        type=PORT,
        default=env_int("MOPAR_GRPC_PORT", 0, 0) or None,
        help="also serve the V2 gRPC service on this port (default: none; $MOPAR_GRPC_PORT)",
    )
    parser.add_argument(
        "--request-timeout", type=number(float, 0.1), default=env_float("MOPAR_REQUEST_TIMEOUT", 60.0, 0.1)
    )
    parser.add_argument("--call-timeout", type=number(float, 0.1), default=env_float("MOPAR_CALL_TIMEOUT", 30.0, 0.1))
    parser.add_argument(
        "--retries",
        type=number(int, 0),
        default=env_int("MOPAR_RETRIES", 4, 0),
        help="retries of a failed slice call (default 4, with backoff)",
    )
    parser.add_argument("--max-body-mb", type=number(float, 0.001), default=env_float("MOPAR_MAX_BODY_MB", 64.0, 0.001))
    parser.add_argument("--ttl", type=number(float, 1), default=env_float("MOPAR_ACTIVATION_TTL", 300.0, 1.0))
    parser.add_argument(
        "--access-log",
        action="store_true",
        default=env_str("MOPAR_ACCESS_LOG", "") in ("1", "true"),
        help="log every request (default off; $MOPAR_ACCESS_LOG)",
    )
    parser.add_argument(
        "--inline-kb",
        type=number(int, 0),
        default=env_int("MOPAR_INLINE_KB", calls.DEFAULT_INLINE_LIMIT // 1024, 0),
        help="tensors up to this many KiB travel inside the slice calls, larger ones through the store",
    )
    add_store_arguments(parser)
    add_http_arguments(parser)
    add_batching_arguments(parser)


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """The gateway's Redis connection pool (`store.redis`)."""
    parser.add_argument(
        "--store-timeout",
        type=SECONDS,
        default=env_float("MOPAR_STORE_TIMEOUT", 5.0, 0.001),
        help="seconds one store operation may take, waiting for a connection and retries included (default 5)",
    )
    parser.add_argument(
        "--store-connections",
        type=COUNT,
        default=env_int("MOPAR_STORE_CONNECTIONS", 256, 1),
        help="connections to Redis at most; a request waits for a free one within --store-timeout (default 256)",
    )


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR", help="directory written by `mopar slice`")
    parser.add_argument(
        "--transport",
        default=env_str("MOPAR_TRANSPORT", "shm"),
        help="shm (default: shared memory) or a redis:// URL (default: $MOPAR_TRANSPORT, which keeps a password "
        "off the command line)",
    )
    parser.add_argument("--port", type=PORT, default=8080, help="gateway port (default 8080)")
    parser.add_argument("--grpc-port", type=PORT, help="also serve the V2 gRPC service on this port (default: none)")
    parser.add_argument("--host", default="127.0.0.1", help="gateway address (default 127.0.0.1)")
    parser.add_argument(
        "--threads",
        type=COUNT,
        help="onnxruntime intra-op threads of every worker (default: each slice's, as planned, in the manifest)",
    )
    cores = os.cpu_count() or 1
    parser.add_argument(
        "--cores",
        type=COUNT,
        default=cores,
        help=f"CPUs this run may use: no worker runs more threads (default {cores}: this machine's)",
    )
    parser.add_argument("--name", help="model name (default: the manifest's)")
    parser.add_argument(
        "--inline-kb",
        type=number(int, 0),
        default=calls.DEFAULT_INLINE_LIMIT // 1024,
        help="tensors up to this many KiB travel inside the slice calls (default %(default)s)",
    )
    add_store_arguments(parser)
    add_http_arguments(parser)
    add_batching_arguments(parser)
