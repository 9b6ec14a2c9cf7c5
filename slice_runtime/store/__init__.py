"""Where tensors and slice files live between slices: Redis (`redis`), shared memory when
every slice runs on one machine (`shm`), and the artifact store of slice files (`artifacts`).

`open_transport(url, ...)` picks a transport from the store's URL and imports only that one
(a worker on shared memory never loads the Redis client).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from slice_runtime.store.base import Transport

ACCEPTED_URLS = "redis://[:password@]host:port/db, rediss://... (TLS), unix:///path/to/redis.sock or shm"
# How long a transport waits to connect (a readiness check's ping waits this long at most).
CONNECT_TIMEOUT_SECONDS = 1.0


def open_transport(
    url: str,
    namespace: str,
    model: str,
    *,
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    op_timeout: float = 5.0,
    max_connections: int = 256,
) -> Transport:
    """The transport `url` names: a Redis URL (redis://, rediss://, unix://) or `shm` for shared memory.

    Nothing is contacted here; call `ping()` to find out whether the store is reachable.
    """
    if url in ("shm", "shm://"):
        from slice_runtime.store.shm import SharedMemoryTransport

        return SharedMemoryTransport(namespace, model)
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme in ("redis", "rediss", "unix"):
        from slice_runtime.store.redis import RedisTransport

        return RedisTransport(
            url,
            namespace,
            model,
            connect_timeout=connect_timeout,
            op_timeout=op_timeout,
            max_connections=max_connections,
        )
    # Only the scheme is echoed: the rest of a URL may hold a password.
    shown = f"scheme {scheme!r}" if scheme else "a URL without a scheme"
    raise ValueError(f"unsupported store URL ({shown}); use {ACCEPTED_URLS}")


__all__ = ["ACCEPTED_URLS", "CONNECT_TIMEOUT_SECONDS", "Transport", "open_transport"]
