"""Command-line options of the data plane's commands, kept apart from their modules so that
building the `mopar` parser imports neither onnxruntime nor aiohttp. Each option defaults to
its MOPAR_* environment variable (what a Kubernetes pod is given)."""

from __future__ import annotations

import argparse

from slice_runtime import calls
from slice_runtime.config import env_float, env_int, env_str


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
    parser.add_argument("--port", type=int, default=env_int("MOPAR_PORT", 8080, 0))
    parser.add_argument(
        "--threads",
        type=int,
        default=env_int("MOPAR_THREADS", 1, 1),
        help="onnxruntime intra-op threads (default 1: one vCPU)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=env_int("MOPAR_CONCURRENCY", 1, 1), help="runs at once (default 1)"
    )
    parser.add_argument(
        "--codec",
        default=env_str("MOPAR_CODEC", "auto"),
        help="auto (the plan's choice per tensor), none, zstdN, zstdN+shuffle",
    )
    parser.add_argument(
        "--compress-threshold",
        type=int,
        default=env_int("MOPAR_COMPRESS_THRESHOLD", 4096, 0),
        help="tensors smaller than this many bytes are sent raw",
    )
    parser.add_argument(
        "--ttl",
        type=float,
        default=env_float("MOPAR_ACTIVATION_TTL", 300.0, 1.0),
        help="seconds an activation lives in the store if nobody deletes it",
    )
    parser.add_argument(
        "--artifacts",
        default=env_str("MOPAR_ARTIFACTS"),
        help="Redis URL of the artifact store holding slice files by sha256",
    )
    parser.add_argument("--cache-dir", default=env_str("MOPAR_CACHE_DIR", "/tmp/mopar-cache"))


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
    parser.add_argument("--port", type=int, default=env_int("MOPAR_PORT", 8080, 0))
    parser.add_argument("--request-timeout", type=float, default=env_float("MOPAR_REQUEST_TIMEOUT", 60.0, 0.1))
    parser.add_argument("--call-timeout", type=float, default=env_float("MOPAR_CALL_TIMEOUT", 30.0, 0.1))
    parser.add_argument(
        "--retries",
        type=int,
        default=env_int("MOPAR_RETRIES", 4, 0),
        help="retries of a failed slice call (default 4, with backoff)",
    )
    parser.add_argument("--max-body-mb", type=float, default=env_float("MOPAR_MAX_BODY_MB", 64.0, 0.001))
    parser.add_argument("--ttl", type=float, default=env_float("MOPAR_ACTIVATION_TTL", 300.0, 1.0))
    parser.add_argument(
        "--access-log",
        action="store_true",
        default=env_str("MOPAR_ACCESS_LOG", "") in ("1", "true"),
        help="log every request (default off; $MOPAR_ACCESS_LOG)",
    )
    parser.add_argument(
        "--inline-kb",
        type=int,
        default=env_int("MOPAR_INLINE_KB", calls.DEFAULT_INLINE_LIMIT // 1024, 0),
        help="tensors up to this many KiB travel inside the slice calls, larger ones through the store",
    )


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR", help="directory written by `mopar slice`")
    parser.add_argument("--transport", default="shm", help="shm (default: shared memory) or a redis:// URL")
    parser.add_argument("--port", type=int, default=8080, help="gateway port (default 8080)")
    parser.add_argument("--host", default="127.0.0.1", help="gateway address (default 127.0.0.1)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads per worker (default 1)")
    parser.add_argument("--name", help="model name (default: the manifest's)")
    parser.add_argument(
        "--inline-kb",
        type=int,
        default=calls.DEFAULT_INLINE_LIMIT // 1024,
        help="tensors up to this many KiB travel inside the slice calls (default %(default)s)",
    )
