"""Tensors in Redis: one pooled `redis.asyncio` client per transport, keys from `keys`, each
with a TTL; and the connection helpers the artifact store shares (server names without
credentials, one-line error messages, bounded retry).

Each operation has one deadline, `op_timeout`, that covers waiting for a pooled connection,
connecting and retrying: a Redis that is down or hangs fails every request within it. A
burst that finds every connection busy waits for one within the same deadline and, if none
frees up, is told so in its own words (the pool, not Redis, ran out).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from urllib.parse import unquote, urlsplit

import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff
from redis.exceptions import AuthenticationError, InvalidResponse, OutOfMemoryError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from slice_runtime.errors import MissingTensors, TransportError
from slice_runtime.store.base import Transport
from slice_runtime.store.keys import activation_key, check_request_id, model_prefix

# Redis caps the arguments of one command far above this; chunking keeps one DEL from
# blocking the server for long when a request left many tensors behind.
DELETE_CHUNK = 1000
SCAN_BATCH = 1000
# Bounded retry: a connection that flapped is retried twice, about 50 ms then 100 ms later
# (jittered, so a burst of clients does not come back in step), but a server that is down
# fails the call in well under a second (connection refused) or within the operation's
# deadline (unanswered SYNs, a server that hangs).
RETRIES = 2
BACKOFF_BASE_SECONDS = 0.025
BACKOFF_CAP_SECONDS = 0.25
MAX_CONNECTIONS = 256
_MESSAGE_CHARS = 300
# redis-py prefixes a pipeline's errors with the command, arguments included: a tensor's bytes.
_PIPELINE_NOTE = re.compile(r"^Command # \d+ \(.*\) of pipeline caused error: ", re.DOTALL)


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
    text = " ".join(_PIPELINE_NOTE.sub("", text).split()).rstrip(".")
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 3] + "..."


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
    elif isinstance(error, OutOfMemoryError):
        message = f"Redis at {server} is full (maxmemory) and refused {action}: {_one_line(str(error))}"
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
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        super().__init__(namespace, model)
        self.server = redis_server_name(url)
        self._secret = url_password(url)
        self.op_timeout = op_timeout
        self.max_connections = max_connections
        self._operations = 0  # in progress, waiting for a connection included
        # A blocking pool makes a burst beyond max_connections wait for a free connection
        # (within op_timeout) instead of failing with "Too many connections".
        self._pool = aredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=op_timeout,
            socket_connect_timeout=min(connect_timeout, op_timeout),
            socket_timeout=op_timeout,
            retry=Retry(EqualJitterBackoff(cap=BACKOFF_CAP_SECONDS, base=BACKOFF_BASE_SECONDS), RETRIES),
        )
        self._client = aredis.Redis(connection_pool=self._pool)
        self._prefix = model_prefix(namespace, model)

    def _error(self, error: BaseException, action: str) -> TransportError:
        return TransportError(describe_redis_error(error, self.server, action, self._secret))

    @contextlib.contextmanager
    def _failures(self, action: str, queued: bool) -> Iterator[None]:
        """Redis' exceptions as one TransportError each, the pool's own apart from Redis'."""
        try:
            yield
        except (TimeoutError, RedisError, OSError) as error:
            exhausted = isinstance(error, RedisConnectionError) and str(error) == "No connection available."
            if exhausted or (queued and isinstance(error, TimeoutError)):
                raise TransportError(
                    f"no free connection to Redis at {self.server} within {self.op_timeout:g} s while {action}: "
                    f"all {self.max_connections} connections of this process are busy (Redis itself may be "
                    "fine; raise --store-connections / MOPAR_STORE_CONNECTIONS)"
                ) from error
            if isinstance(error, TimeoutError) and not isinstance(error, RedisTimeoutError):
                raise TransportError(
                    f"Redis at {self.server} did not answer within {self.op_timeout:g} s while {action}"
                ) from error
            raise self._error(error, action) from error

    @contextlib.asynccontextmanager
    async def _operation(self, action: str) -> AsyncIterator[None]:
        """One deadline for the whole operation: the wait for a connection, connecting, retries."""
        queued = self._operations >= self.max_connections
        self._operations += 1
        try:
            with self._failures(action, queued):
                async with asyncio.timeout(self.op_timeout):
                    yield
        finally:
            self._operations -= 1

    def _key(self, request_id: str, tensor: str) -> str:
        return activation_key(self.namespace, self.model, check_request_id(request_id), tensor)

    async def put(self, request_id: str, frames: Mapping[str, bytes], ttl_seconds: float) -> None:
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
        if not frames:
            return
        milliseconds = max(1, round(ttl_seconds * 1000))
        keys = {tensor: self._key(request_id, tensor) for tensor in frames}
        async with self._operation(f"storing {len(frames)} tensor(s) of request {request_id}"):
            async with self._client.pipeline(transaction=False) as pipe:
                for tensor, frame in frames.items():
                    pipe.set(keys[tensor], frame, px=milliseconds)
                # raise_on_error=False: the replies come back as they are, without redis-py's
                # note that quotes each failed command, tensor bytes and all.
                replies = await pipe.execute(raise_on_error=False)
            failed = next((reply for reply in replies if isinstance(reply, Exception)), None)
            if failed is not None:
                raise failed

    async def get(self, request_id: str, tensors: Sequence[str]) -> list[bytes]:
        if not tensors:
            return []
        keys = [self._key(request_id, tensor) for tensor in tensors]
        async with self._operation(f"reading {len(keys)} tensor(s) of request {request_id}"):
            values = await self._client.mget(keys)
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
        for start in range(0, len(keys), DELETE_CHUNK):
            async with self._operation(action):
                deleted += await self._client.delete(*keys[start : start + DELETE_CHUNK])
        return deleted

    def _pattern(self, request_id: str | None) -> str:
        prefix = self._prefix if request_id is None else f"{self._prefix}{check_request_id(request_id)}:"
        return glob_escape(prefix) + "*"

    async def _scan(self, request_id: str | None) -> AsyncIterator[bytes]:
        async for key in self._client.scan_iter(match=self._pattern(request_id), count=SCAN_BATCH):
            yield key

    async def count(self, request_id: str | None = None) -> int:
        with self._failures(f"counting the keys of model {self.model}", False):
            return sum([1 async for _ in self._scan(request_id)])

    async def purge(self) -> int:
        action = f"purging the keys of model {self.model}"
        with self._failures(action, False):
            # SCAN keeps returning keys that existed when it started, so deleting behind it is safe.
            keys = [key async for key in self._scan(None)]
        return await self._delete_keys(keys, action)

    async def ping(self) -> None:
        async with self._operation("sending PING"):
            await self._client.ping()

    async def close(self) -> None:
        await self._client.aclose()
        await self._pool.disconnect()

    def __repr__(self) -> str:
        return f"RedisTransport({self.server}, namespace={self.namespace!r}, model={self.model!r})"
