"""Tensors in Redis: one pooled `redis.asyncio` client per transport, keys from `keys`, each
with a TTL; and the connection helpers the artifact store shares (server names without
credentials, one-line error messages, bounded retry).
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from urllib.parse import unquote, urlsplit

import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError, InvalidResponse, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from slice_runtime.errors import MissingTensors, TransportError
from slice_runtime.store.base import Transport
from slice_runtime.store.keys import activation_key, check_request_id, model_prefix

# Redis caps the arguments of one command far above this; chunking keeps one DEL from
# blocking the server for long when a request left many tensors behind.
DELETE_CHUNK = 1000
SCAN_BATCH = 1000
# Bounded retry: a connection that flapped is retried twice, 50 ms then 100 ms later, but
# a server that is down fails the call in well under a second (connection refused) or
# about 3 connect timeouts (unanswered SYNs).
RETRIES = 2
BACKOFF_BASE_SECONDS = 0.025
BACKOFF_CAP_SECONDS = 0.25


def redis_server_name(url: str) -> str:
    """`host:port` (or the socket path) of a Redis URL, without credentials, for messages."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return unquote(parts.path) or "a unix socket"
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    host = parts.hostname or "localhost"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _os_reason(error: BaseException) -> str | None:
    # redis-py's own text ("Error 111 connecting to h:p. Connect call failed (...)") repeats
    # the address; the OS error underneath says what happened in two words. A TLS failure is
    # an OSError too, whose errno would only say "Operation not permitted": name it instead.
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate verification failed ({cause.verify_message})"
        if isinstance(cause, ssl.SSLError):
            return f"TLS failed ({cause.reason or cause})"
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno)
        cause = cause.__cause__ or cause.__context__
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split()).rstrip(".")


def describe_redis_error(error: BaseException, server: str, action: str, secret: str | None = None) -> str:
    """A one-line message for `error` raised while `action` on the Redis at `server`."""
    if isinstance(error, AuthenticationError):
        reason = _one_line(str(error))
        # Without a password redis-py's HELLO is refused with a paragraph about HELLO AUTH.
        if reason.startswith(("HELLO must be called", "Authentication required")):
            reason = "the server requires a password and the URL gives none"
        message = f"Redis at {server} rejected the credentials while {action}: {reason}"
    elif isinstance(error, (RedisTimeoutError, asyncio.TimeoutError, TimeoutError)):
        message = f"Redis at {server} timed out while {action}"
    elif isinstance(error, (RedisConnectionError, OSError)):
        reason = _os_reason(error) or _one_line(str(error)) or type(error).__name__
        message = f"cannot reach Redis at {server} while {action}: {reason}"
    elif isinstance(error, InvalidResponse):
        message = f"unexpected reply from {server} while {action} (is it a Redis server?): {_one_line(str(error))}"
    elif isinstance(error, ResponseError):
        message = f"Redis at {server} refused {action}: {_one_line(str(error))}"
    else:
        message = f"Redis at {server} failed while {action}: {_one_line(str(error)) or type(error).__name__}"
    # redis-py never puts the password in its messages; this is the belt to those braces
    # (skipped for very short passwords, whose letters would mangle the message).
    if secret and len(secret) >= 4:
        message = message.replace(secret, "***")
    return message


def url_password(url: str) -> str | None:
    """The password a Redis URL carries (to keep it out of messages), if any."""
    parts = urlsplit(url)
    password = parts.password
    if password is None and parts.query:
        match = re.search(r"(?:^|&)password=([^&]*)", parts.query)
        password = match.group(1) if match else None
    return unquote(password) if password else None


def glob_escape(text: str) -> str:
    """`text` as a literal inside a SCAN MATCH glob: a model called "a*" must not match model "ab"."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


def reply_bytes(value: bytes | str) -> bytes:
    """A reply's value as the bytes it is.

    Our clients never set `decode_responses`, so Redis answers bytes; redis-py's annotations
    also allow str (for clients that do), which this narrows away.
    """
    if isinstance(value, str):
        raise TypeError("a Redis client returned str: decode_responses must stay off")
    return value


class RedisTransport(Transport):
    """Tensors as Redis strings with a TTL, through one pooled `redis.asyncio` client."""

    scheme = "redis"

    def __init__(
        self,
        url: str,
        namespace: str,
        model: str,
        *,
        connect_timeout: float = 1.0,
        op_timeout: float = 5.0,
        max_connections: int = 64,
    ) -> None:
        super().__init__(namespace, model)
        self.server = redis_server_name(url)
        self._secret = url_password(url)
        self.op_timeout = op_timeout
        # A blocking pool makes a burst beyond max_connections wait for a free connection
        # (up to op_timeout) instead of failing with "Too many connections".
        self._pool = aredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=op_timeout,
            socket_connect_timeout=connect_timeout,
            socket_timeout=op_timeout,
            retry=Retry(ExponentialBackoff(cap=BACKOFF_CAP_SECONDS, base=BACKOFF_BASE_SECONDS), RETRIES),
        )
        self._client = aredis.Redis(connection_pool=self._pool)
        self._prefix = model_prefix(namespace, model)

    def _error(self, error: BaseException, action: str) -> TransportError:
        return TransportError(describe_redis_error(error, self.server, action, self._secret))

    def _key(self, request_id: str, tensor: str) -> str:
        return activation_key(self.namespace, self.model, check_request_id(request_id), tensor)

    async def put(self, request_id: str, frames: Mapping[str, bytes], ttl_seconds: float) -> None:
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
        if not frames:
            return
        milliseconds = max(1, round(ttl_seconds * 1000))
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for tensor, frame in frames.items():
                    pipe.set(self._key(request_id, tensor), frame, px=milliseconds)
                await pipe.execute()
        except (TimeoutError, RedisError, OSError) as error:
            raise self._error(error, f"storing {len(frames)} tensor(s) of request {request_id}") from error

    async def get(self, request_id: str, tensors: Sequence[str]) -> list[bytes]:
        if not tensors:
            return []
        keys = [self._key(request_id, tensor) for tensor in tensors]
        try:
            values = await self._client.mget(keys)
        except (TimeoutError, RedisError, OSError) as error:
            raise self._error(error, f"reading {len(keys)} tensor(s) of request {request_id}") from error
        missing = [tensor for tensor, value in zip(tensors, values) if value is None]
        if missing:
            raise MissingTensors(
                f"request {request_id} of model {self.model}: tensor(s) {', '.join(missing)} missing from Redis at "
                f"{self.server} (never written, expired or deleted)",
                missing,
            )
        return [reply_bytes(value) for value in values if value is not None]

    async def delete(self, request_id: str, tensors: Sequence[str]) -> int:
        keys = [self._key(request_id, tensor) for tensor in tensors]
        return await self._delete_keys(keys, f"deleting tensors of request {request_id}")

    async def _delete_keys(self, keys: Sequence[str | bytes], action: str) -> int:
        deleted = 0
        try:
            for start in range(0, len(keys), DELETE_CHUNK):
                deleted += await self._client.delete(*keys[start : start + DELETE_CHUNK])
        except (TimeoutError, RedisError, OSError) as error:
            raise self._error(error, action) from error
        return deleted

    def _pattern(self, request_id: str | None) -> str:
        prefix = self._prefix if request_id is None else f"{self._prefix}{check_request_id(request_id)}:"
        return glob_escape(prefix) + "*"

    async def _scan(self, request_id: str | None) -> AsyncIterator[bytes]:
        async for key in self._client.scan_iter(match=self._pattern(request_id), count=SCAN_BATCH):
            yield key

    async def count(self, request_id: str | None = None) -> int:
        try:
            return sum([1 async for _ in self._scan(request_id)])
        except (TimeoutError, RedisError, OSError) as error:
            raise self._error(error, f"counting the keys of model {self.model}") from error

    async def purge(self) -> int:
        action = f"purging the keys of model {self.model}"
        try:
            # SCAN keeps returning keys that existed when it started, so deleting behind it is safe.
            keys = [key async for key in self._scan(None)]
        except (TimeoutError, RedisError, OSError) as error:
            raise self._error(error, action) from error
        return await self._delete_keys(keys, action)

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except (TimeoutError, RedisError, OSError) as error:
            raise self._error(error, "sending PING") from error

    async def close(self) -> None:
        await self._client.aclose()
        await self._pool.disconnect()

    def __repr__(self) -> str:
        return f"RedisTransport({self.server}, namespace={self.namespace!r}, model={self.model!r})"
