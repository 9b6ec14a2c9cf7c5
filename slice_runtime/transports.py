"""How activation tensors travel between the slices of one model: through Redis, or
through shared memory when every slice runs on one machine.

A slice writes its output frames (`codec.encode` bytes) under the request's id, the next
slice reads them, and the gateway deletes them when the request is done. Both transports
keep the same small interface so workers and the gateway never know which one they use;
`open_transport(url, ...)` picks one from the store's URL.

Keys are scoped to a namespace and a model, so several deployments can share one Redis
and `purge` at start-up clears only this model's leftovers. The Redis layout, documented
for operators, is `mopar:{namespace}:{model}:{request_id}:{tensor}` (see `activation_key`).

Every failure of the store surfaces as `TransportError` with a one-line message that
names the server (never its password) and what failed, so it can go straight into a log
line or an HTTP error body.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import os
import re
import ssl
import struct
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory
from urllib.parse import unquote, urlsplit

import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError, InvalidResponse, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import TransportError

ACCEPTED_URLS = "redis://[:password@]host:port/db, rediss://... (TLS), unix:///path/to/redis.sock or shm"
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
# `artifact` is the artifact store's part of the key space (`artifacts.py`), so no model
# may take that name: a model's purge would delete the store.
RESERVED_MODEL_NAMES = frozenset({"artifact"})
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class MissingTensors(TransportError):
    """Tensors a request needs are not in the store (never written, expired or deleted).

    An ordering or expiry problem rather than a store that is down; `tensors` names them,
    and the message says "missing" for callers that only look at the text.
    """

    def __init__(self, message: str, tensors: Sequence[str]) -> None:
        super().__init__(message)
        self.tensors = list(tensors)


def activation_key(namespace: str, model: str, request_id: str, tensor: str) -> str:
    """The Redis key of one tensor of one request: `mopar:{namespace}:{model}:{request_id}:{tensor}`."""
    return f"mopar:{namespace}:{model}:{request_id}:{tensor}"


def check_request_id(request_id: str) -> str:
    """`request_id` if it is 1-128 characters of letters, digits, '-' and '_' (the gateway's hex uuids are)."""
    if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
        raise ValueError(f"request id {request_id!r} must be 1-128 letters, digits, '-' or '_'")
    return request_id


def _check_scope(namespace: str, model: str) -> None:
    # A ':' in either would let one model's key prefix match another model's keys.
    for what, value in (("namespace", namespace), ("model", model)):
        if not value or ":" in value:
            raise ValueError(f"{what} {value!r} must be non-empty and contain no ':'")
    if model in RESERVED_MODEL_NAMES:
        raise ValueError(f"model name {model!r} is reserved for the artifact store")


class Transport(abc.ABC):
    """Moves encoded tensors (bytes) of one model's requests between slices."""

    scheme: str

    def __init__(self, namespace: str, model: str) -> None:
        _check_scope(namespace, model)
        self.namespace = namespace
        self.model = model

    @abc.abstractmethod
    async def put(self, request_id: str, frames: Mapping[str, bytes], ttl_seconds: float) -> None:
        """Store every frame of `frames` (tensor name -> bytes) in one round trip, expiring after `ttl_seconds`."""

    @abc.abstractmethod
    async def get(self, request_id: str, tensors: Sequence[str]) -> list[bytes]:
        """The frames of `tensors`, in order, in one round trip; TransportError naming any that is absent."""

    @abc.abstractmethod
    async def delete(self, request_id: str, tensors: Sequence[str]) -> int:
        """Remove the frames of `tensors`; returns how many existed."""

    @abc.abstractmethod
    async def count(self, request_id: str | None = None) -> int:
        """How many frames of this model (of one request when given) are stored: what would leak."""

    @abc.abstractmethod
    async def purge(self) -> int:
        """Delete every frame of this namespace and model (start-up and shutdown cleanup); returns how many."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Return if the store is usable, raise TransportError if not."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; the transport is not used afterwards."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(namespace={self.namespace!r}, model={self.model!r})"


def open_transport(
    url: str,
    namespace: str,
    model: str,
    *,
    connect_timeout: float = 1.0,
    op_timeout: float = 5.0,
    max_connections: int = 64,
) -> Transport:
    """The transport `url` names: a Redis URL (redis://, rediss://, unix://) or `shm` for shared memory.

    Nothing is contacted here; call `ping()` to find out whether the store is reachable.
    """
    if url in ("shm", "shm://"):
        return SharedMemoryTransport(namespace, model)
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme in ("redis", "rediss", "unix"):
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


# --- Redis -------------------------------------------------------------------------------


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
        self._prefix = f"mopar:{namespace}:{model}:"

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
            values: list[bytes | None] = await self._client.mget(keys)
        except (TimeoutError, RedisError, OSError) as error:
            raise self._error(error, f"reading {len(keys)} tensor(s) of request {request_id}") from error
        missing = [tensor for tensor, value in zip(tensors, values) if value is None]
        if missing:
            raise MissingTensors(
                f"request {request_id} of model {self.model}: tensor(s) {', '.join(missing)} missing from Redis at "
                f"{self.server} (never written, expired or deleted)",
                missing,
            )
        return [value for value in values if value is not None]

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


# --- shared memory -----------------------------------------------------------------------

SHM_ROOT = "/dev/shm"
_LENGTH = struct.Struct("<Q")
_TRACK_PARAMETER = sys.version_info >= (3, 13)


def _scope_hash(namespace: str, model: str) -> str:
    return hashlib.sha1(f"{namespace}:{model}".encode()).hexdigest()[:10]


def _tensor_hash(tensor: str) -> str:
    return hashlib.sha1(tensor.encode()).hexdigest()[:12]


def _open_untracked(name: str, create: bool = False, size: int = 0) -> SharedMemory:
    # multiprocessing's resource tracker would unlink a tracked segment when the process
    # that made or opened it exits, under the next slice's feet; these segments' lifetime
    # is the request's, managed by the gateway's delete and by purge.
    if _TRACK_PARAMETER:
        return SharedMemory(name, create=create, size=size, track=False)  # type: ignore[call-arg]
    segment = SharedMemory(name, create=create, size=size)
    resource_tracker.unregister(segment._name, "shared_memory")  # type: ignore[attr-defined]
    return segment


def _unlink(name: str) -> bool:
    """Remove segment `name`; False if it did not exist."""
    try:
        if _TRACK_PARAMETER:
            segment = SharedMemory(name, track=False)  # type: ignore[call-arg]
        else:
            # Opening registers the segment with the tracker and unlink() unregisters it:
            # balanced, so the tracker never complains about a name it does not know.
            segment = SharedMemory(name)
    except FileNotFoundError:
        return False
    except OSError as error:
        raise TransportError(f"cannot open shared memory segment {name}: {error.strerror or error}") from error
    try:
        segment.unlink()
    except FileNotFoundError:  # another process removed it between our open and unlink
        if not _TRACK_PARAMETER:
            resource_tracker.unregister(segment._name, "shared_memory")  # type: ignore[attr-defined]
        return False
    except OSError as error:
        raise TransportError(f"cannot remove shared memory segment {name}: {error.strerror or error}") from error
    finally:
        segment.close()
    return True


class SharedMemoryTransport(Transport):
    """Tensors as POSIX shared-memory segments, for slices on one machine (Linux: lists /dev/shm).

    One segment per tensor, named `mopar_<sha1(namespace:model)[:10]>_<request_id>_<sha1(tensor)[:12]>`;
    it holds an 8-byte little-endian length, then the frame (some systems page-round segments).
    Segments are readable by the same user only (mode 0600), and shared memory has no
    expiry: the TTL is not enforced. The gateway deletes a request's tensors when it is
    done, and `purge` at start-up clears what a crash left behind.
    """

    scheme = "shm"

    def __init__(self, namespace: str, model: str) -> None:
        super().__init__(namespace, model)
        self.root = SHM_ROOT  # where Linux keeps POSIX shared memory, listed by count and purge
        self._prefix = f"mopar_{_scope_hash(namespace, model)}_"

    def segment_name(self, request_id: str, tensor: str) -> str:
        """The shared-memory name of one tensor of one request (without the leading '/')."""
        return f"{self._prefix}{check_request_id(request_id)}_{_tensor_hash(tensor)}"

    async def put(self, request_id: str, frames: Mapping[str, bytes], ttl_seconds: float) -> None:
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
        needed = sum(_LENGTH.size + len(frame) for frame in frames.values())
        self._check_space(needed, request_id)
        for tensor, frame in frames.items():
            self._write(self.segment_name(request_id, tensor), frame, request_id, tensor)

    def _check_space(self, needed: int, request_id: str) -> None:
        # Writing past a full tmpfs kills the writer with SIGBUS; refuse before that instead.
        try:
            stats = os.statvfs(self.root)
        except OSError as error:
            raise TransportError(f"shared memory at {self.root} is not usable: {error.strerror}") from error
        free = stats.f_bavail * stats.f_frsize
        if needed > free:
            raise TransportError(
                f"shared memory at {self.root} is full: request {request_id} needs {needed} bytes, {free} free"
            )

    def _write(self, name: str, frame: bytes, request_id: str, tensor: str) -> None:
        size = _LENGTH.size + len(frame)
        try:
            try:
                segment = _open_untracked(name, create=True, size=size)
            except FileExistsError:  # a retried slice writes the same tensor again
                _unlink(name)
                segment = _open_untracked(name, create=True, size=size)
        except OSError as error:
            raise TransportError(
                f"cannot create shared memory for tensor {tensor} of request {request_id}: {error.strerror or error}"
            ) from error
        try:
            segment.buf[_LENGTH.size : size] = frame
            # The length goes in last, so a reader never sees a length whose bytes are not there yet.
            _LENGTH.pack_into(segment.buf, 0, len(frame))
        finally:
            segment.close()

    async def get(self, request_id: str, tensors: Sequence[str]) -> list[bytes]:
        frames: list[bytes] = []
        missing: list[str] = []
        for tensor in tensors:
            frame = self._read(self.segment_name(request_id, tensor), request_id, tensor)
            if frame is None:
                missing.append(tensor)
            else:
                frames.append(frame)
        if missing:
            raise MissingTensors(
                f"request {request_id} of model {self.model}: tensor(s) {', '.join(missing)} missing from shared "
                "memory (never written, or deleted)",
                missing,
            )
        return frames

    def _read(self, name: str, request_id: str, tensor: str) -> bytes | None:
        try:
            segment = _open_untracked(name)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise TransportError(
                f"cannot open shared memory of tensor {tensor} of request {request_id}: {error.strerror or error}"
            ) from error
        try:
            length = _LENGTH.unpack_from(segment.buf, 0)[0] if segment.size >= _LENGTH.size else -1
            if not 0 <= length <= segment.size - _LENGTH.size:
                raise TransportError(
                    f"shared memory of tensor {tensor} of request {request_id} is corrupt "
                    f"(length {length}, segment of {segment.size} bytes)"
                )
            with segment.buf[_LENGTH.size : _LENGTH.size + length] as view:
                return bytes(view)
        finally:
            segment.close()

    async def delete(self, request_id: str, tensors: Sequence[str]) -> int:
        return sum(_unlink(self.segment_name(request_id, tensor)) for tensor in tensors)

    def _names(self, request_id: str | None) -> list[str]:
        try:
            names = [name for name in os.listdir(self.root) if name.startswith(self._prefix)]
        except OSError as error:
            raise TransportError(f"cannot list shared memory at {self.root}: {error.strerror}") from error
        if request_id is None:
            return names
        check_request_id(request_id)
        # Request ids may contain '_', so match the whole middle part, not a prefix:
        # request "a" must not count the segments of request "a_b".
        tail = 1 + 12  # "_" + tensor hash
        return [name for name in names if name[len(self._prefix) : -tail] == request_id]

    async def count(self, request_id: str | None = None) -> int:
        return len(self._names(request_id))

    async def purge(self) -> int:
        return sum(_unlink(name) for name in self._names(None))

    async def ping(self) -> None:
        if not os.path.isdir(self.root) or not os.access(self.root, os.W_OK | os.X_OK):
            raise TransportError(f"shared memory at {self.root} does not exist or is not writable")

    async def close(self) -> None:
        return None
