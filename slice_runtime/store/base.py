"""What every transport does: move the encoded tensors (frames) of one model's requests
between its slices, under the request's id.

A slice writes its output frames (`codec.encode` bytes) under the request's id, the next
slice reads them, and the gateway deletes them when the request is done. Every transport
keeps this small interface, so workers and the gateway never know which one they use.
Every failure of the store surfaces as `TransportError` with a one-line message that names
the server (never its password) and what failed, fit for a log line or an HTTP error body.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence

from slice_runtime.store.keys import check_scope


class Transport(abc.ABC):
    """Moves encoded tensors (bytes) of one model's requests between slices."""

    scheme: str

    def __init__(self, namespace: str, model: str) -> None:
        check_scope(namespace, model)
        self.namespace = namespace
        self.model = model

    @abc.abstractmethod
    async def put(self, request_id: str, frames: Mapping[str, bytes], ttl_seconds: float) -> None:
        """Store every frame of `frames` (tensor name -> bytes) in one round trip, expiring after `ttl_seconds`."""

    @abc.abstractmethod
    async def get(self, request_id: str, tensors: Sequence[str]) -> list[bytes]:
        """The frames of `tensors`, in order, in one round trip; MissingTensors naming any that is absent."""

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
