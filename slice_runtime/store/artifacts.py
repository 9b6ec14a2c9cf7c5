"""The artifact store: slice files (ONNX models, external weights) kept in Redis by sha256.

A prepare job puts a model's slice files here once; every worker fetches the files of its
slice at start-up, so workers need no shared volume, only the Redis they already use for
activations. Content addressing makes `put` idempotent and lets a worker verify what it
received before loading it.

Layout, under `mopar:{namespace}:artifact:{sha256}`: that key is a small hash (size,
chunks, sha256) and `...:{sha256}:{i}` holds chunk i. Redis strings stop at 512 MB and a
single huge value blocks the server while it is copied, so files go in chunks of at most
64 MiB. The meta key is written last and deleted first, so a reader that finds it knows
every chunk was written.

Synchronous on purpose: the callers (a prepare job, a worker before it serves) have
nothing else to do while a file moves.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import re
import tempfile
from pathlib import Path

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from slice_runtime.errors import ArtifactError, TransportError
from slice_runtime.store.keys import artifact_prefix, check_scope
from slice_runtime.store.redis import (
    BACKOFF_BASE_SECONDS,
    BACKOFF_CAP_SECONDS,
    RETRIES,
    describe_redis_error,
    glob_escape,
    redis_server_name,
    reply_bytes,
    url_password,
)

CHUNK_BYTES = 64 * 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _check_sha(sha256: str) -> str:
    digest = sha256.lower() if isinstance(sha256, str) else ""
    if not _SHA256.fullmatch(digest):
        raise ValueError(f"{sha256!r} is not a sha256 hex digest")
    return digest


class ArtifactStore:
    """Slice files in Redis, keyed by their sha256, scoped to a namespace."""

    def __init__(
        self,
        url: str,
        namespace: str = "default",
        connect_timeout: float = 2.0,
        op_timeout: float = 60.0,
    ) -> None:
        check_scope(namespace)
        self.namespace = namespace
        self.server = redis_server_name(url)
        self._secret = url_password(url)
        self._prefix = artifact_prefix(namespace)
        # op_timeout is per command: one command moves up to a whole 64 MiB chunk.
        self._client = redis.Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=op_timeout,
            retry=Retry(ExponentialBackoff(cap=BACKOFF_CAP_SECONDS, base=BACKOFF_BASE_SECONDS), RETRIES),
        )

    def _meta_key(self, sha256: str) -> str:
        return f"{self._prefix}{sha256}"

    def _chunk_key(self, sha256: str, index: int) -> str:
        return f"{self._prefix}{sha256}:{index}"

    def _error(self, error: BaseException, action: str) -> TransportError:
        return TransportError(describe_redis_error(error, self.server, action, self._secret))

    def put(self, data: bytes) -> str:
        """Store `data`; returns its sha256.

        Idempotent: when the meta key and every chunk are already there (two small round
        trips to find out) nothing is written. Presence is checked here, content by `get`.
        """
        digest = hashlib.sha256(data).hexdigest()
        chunks = max(1, -(-len(data) // CHUNK_BYTES))
        view = memoryview(data)
        action = f"storing artifact {digest[:12]} ({len(data)} bytes)"
        try:
            if self._complete(digest, len(data), chunks):
                return digest
            for index in range(chunks):
                self._client.set(self._chunk_key(digest, index), view[index * CHUNK_BYTES : (index + 1) * CHUNK_BYTES])
            self._client.hset(self._meta_key(digest), mapping={"size": len(data), "chunks": chunks, "sha256": digest})
        except (RedisError, OSError) as error:
            raise self._error(error, action) from error
        return digest

    def _complete(self, digest: str, size: int, chunks: int) -> bool:
        meta = self._client.hgetall(self._meta_key(digest))
        if meta.get(b"size") != str(size).encode() or meta.get(b"chunks") != str(chunks).encode():
            return False
        keys = [self._chunk_key(digest, index) for index in range(chunks)]
        return int(self._client.exists(*keys)) == chunks

    def put_file(self, path: str | os.PathLike[str]) -> str:
        """Store the file at `path`; returns its sha256."""
        return self.put(Path(path).read_bytes())

    def get(self, sha256: str) -> bytes:
        """The artifact's bytes, verified against `sha256`; ArtifactError if missing, incomplete or corrupt."""
        digest = _check_sha(sha256)
        short = digest[:12]
        action = f"reading artifact {short}"
        try:
            meta = self._client.hgetall(self._meta_key(digest))
            if not meta:
                raise ArtifactError(f"artifact {short} is not in the store (namespace {self.namespace}, {self.server})")
            try:
                size, chunks = int(meta[b"size"]), int(meta[b"chunks"])
            except (KeyError, ValueError):
                raise ArtifactError(f"artifact {short} has a damaged meta key {self._meta_key(digest)}") from None
            # One GET per chunk: an MGET would make Redis buffer the whole file as one reply.
            parts: builtins.list[bytes] = []
            for index in range(chunks):
                chunk = self._client.get(self._chunk_key(digest, index))
                if chunk is None:
                    raise ArtifactError(f"artifact {short} is incomplete: chunk {index} of {chunks} is missing")
                parts.append(reply_bytes(chunk))
        except (RedisError, OSError) as error:
            raise self._error(error, action) from error
        data = b"".join(parts)
        del parts
        if len(data) != size:
            raise ArtifactError(f"artifact {short} is corrupt: {len(data)} bytes in its chunks, {size} expected")
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise ArtifactError(f"artifact {short} is corrupt: its chunks hash to {actual[:12]}")
        return data

    def fetch_to(self, sha256: str, path: str | os.PathLike[str]) -> Path:
        """Write the verified artifact to `path` atomically (temp file, then rename); returns the path."""
        target = Path(path)
        data = self.get(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        # A worker killed mid-write must not leave a truncated model where the next start looks.
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return target

    def delete(self, sha256: str) -> int:
        """Remove the artifact (meta key first, then its chunks); returns how many keys existed."""
        digest = _check_sha(sha256)
        action = f"deleting artifact {digest[:12]}"
        try:
            deleted = int(self._client.delete(self._meta_key(digest)))
            # Chunks are found by SCAN, not by the meta's count: a put that died
            # before writing its meta key leaves chunks this still cleans up.
            pattern = f"{glob_escape(self._prefix)}{digest}:*"
            chunks = list(self._client.scan_iter(match=pattern, count=1000))
            for start in range(0, len(chunks), 1000):
                deleted += int(self._client.delete(*chunks[start : start + 1000]))
        except (RedisError, OSError) as error:
            raise self._error(error, action) from error
        return deleted

    def list(self) -> builtins.list[str]:  # `list` here would name this method
        """The sha256s stored in this namespace, sorted."""
        found: set[str] = set()
        try:
            for key in self._client.scan_iter(match=f"{glob_escape(self._prefix)}*", count=1000):
                rest = key.decode()[len(self._prefix) :]
                if _SHA256.fullmatch(rest):
                    found.add(rest)
        except (RedisError, OSError) as error:
            raise self._error(error, f"listing artifacts of namespace {self.namespace}") from error
        return sorted(found)

    # -- names: small pointers to artifacts ("the manifest of model m for spec h") ------
    def _name_key(self, name: str) -> str:
        return f"mopar:{self.namespace}:name:{name}"

    def set_name(self, name: str, sha256: str) -> None:
        """Point `name` at a stored artifact (the prepare Job publishes its manifest this way)."""
        try:
            self._client.set(self._name_key(name), _check_sha(sha256))
        except (RedisError, OSError) as error:
            raise self._error(error, f"naming artifact {sha256[:12]} {name!r}") from error

    def resolve(self, name: str) -> str | None:
        try:
            value = self._client.get(self._name_key(name))
        except (RedisError, OSError) as error:
            raise self._error(error, f"looking up {name!r}") from error
        return reply_bytes(value).decode() if value else None

    def delete_names(self, prefix: str) -> builtins.list[str]:
        """Remove every name starting with `prefix`; returns the sha256s they pointed at."""
        pattern = f"{glob_escape(self._name_key(prefix))}*"
        try:
            keys = list(self._client.scan_iter(match=pattern, count=1000))
            targets = [reply_bytes(v).decode() for v in self._client.mget(keys) if v] if keys else []
            if keys:
                self._client.delete(*keys)
        except (RedisError, OSError) as error:
            raise self._error(error, f"deleting names {prefix!r}*") from error
        return targets

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ArtifactStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
