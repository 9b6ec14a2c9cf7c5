"""Tensors in POSIX shared memory, for slices on one machine (`mopar serve`)."""

from __future__ import annotations

import hashlib
import os
import struct
import sys
from collections.abc import Mapping, Sequence
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory

from slice_runtime.errors import MissingTensors, TransportError
from slice_runtime.store.base import Transport
from slice_runtime.store.keys import check_request_id

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


def _buffer(segment: SharedMemory) -> memoryview:
    """The segment's bytes; typeshed allows None, which SharedMemory only returns once closed."""
    buf = segment.buf
    if buf is None:
        raise TransportError(f"shared memory segment {segment.name} is already closed")
    return buf


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
            buf = _buffer(segment)
            buf[_LENGTH.size : size] = frame
            # The length goes in last, so a reader never sees a length whose bytes are not there yet.
            _LENGTH.pack_into(buf, 0, len(frame))
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
            buf = _buffer(segment)
            length = _LENGTH.unpack_from(buf, 0)[0] if segment.size >= _LENGTH.size else -1
            if not 0 <= length <= segment.size - _LENGTH.size:
                raise TransportError(
                    f"shared memory of tensor {tensor} of request {request_id} is corrupt "
                    f"(length {length}, segment of {segment.size} bytes)"
                )
            with buf[_LENGTH.size : _LENGTH.size + length] as view:
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
