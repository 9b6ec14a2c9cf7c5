"""The gateway's data plane, independent of any protocol adapter.

`DataPlane.infer` checks the inputs against the model's metadata, writes them to the store,
runs every slice as soon as the slices it depends on are done (sub-slices of one slice in
parallel), deletes each tensor once its last reader is done, reads and joins the outputs,
and deletes whatever the request left, failed or not. Slice calls are retried with backoff
on connection failures and 5xx answers (`RetryPolicy`), each bounded by a timeout, the
whole request by another. With a `BatchingPolicy`, concurrent requests share runs of the
slices (`batching.Batcher`); without one (the default) every request runs alone.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from slice_runtime import calls, codec, metrics, probes, v2
from slice_runtime import manifest as manifests
from slice_runtime.errors import MissingTensors, ModelNotFound, SettingError, SliceFailed, TransportError
from slice_runtime.gateway.batching import Batcher, BatchingPolicy, output_axes
from slice_runtime.store import Transport

log = logging.getLogger("mopar.gateway")


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff between attempts of one slice call, jittered: each delay is
    drawn from [delay x (1 - jitter), delay], so the calls a restart failed all at once do not
    all come back at once ("equal jitter", as redis-py's EqualJitterBackoff)."""

    attempts: int = 5
    first_delay: float = 0.1
    factor: float = 3.0
    max_delay: float = 3.0
    jitter: float = 0.5

    def delays(self) -> Iterator[float]:
        delay = self.first_delay
        for _ in range(self.attempts - 1):
            yield delay * (1.0 - self.jitter * random.random())
            delay = min(delay * self.factor, self.max_delay)


class SliceCallError(Exception):
    """A slice call that failed; `retryable` when another attempt may succeed."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Slices(Protocol):
    """How the data plane reaches its slice workers (`client.HttpSlices` over HTTP)."""

    async def run(self, slice_id: str, call: calls.Call) -> calls.Reply: ...

    async def ready(self, slice_id: str) -> bool: ...

    async def close(self) -> None: ...


class DataPlane:
    def __init__(
        self,
        manifest: manifests.Manifest,
        transport: Transport,
        slices: Slices,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        request_timeout: float = 60.0,
        ttl_seconds: float = 300.0,
        input_codec: str = "none",
        inline_limit: int = calls.DEFAULT_INLINE_LIMIT,
        batching: BatchingPolicy | None = None,
    ) -> None:
        self.manifest = manifest
        self.name = name or manifest.name
        self.transport = transport
        self.slices = slices
        self.retry = retry or RetryPolicy()
        self.request_timeout = request_timeout
        self.ttl_seconds = ttl_seconds
        self.input_codec = codec.CodecSetting.parse(input_codec)
        self.inline_limit = inline_limit  # frames up to this size travel inside the calls
        # Readers of each tensor: the slices that take it, plus the gateway for the outputs.
        self.readers: dict[str, int] = {}
        for entry in manifest.slices:
            for spec in entry.inputs:
                self.readers[spec.name] = self.readers.get(spec.name, 0) + 1
        self.output_tensors = manifest.output_tensors()
        for tensor in self.output_tensors:
            self.readers[tensor] = self.readers.get(tensor, 0) + 1
        # Everything a request can leave in the store, deleted when it ends, failed or not.
        self.all_tensors = sorted(
            {*(s.name for s in manifest.inputs), *(o.name for e in manifest.slices for o in e.outputs)}
        )
        self.ready = probes.ThrottledCheck(self._check_ready)
        self.batcher = self._batcher(batching) if batching is not None else None

    def _batcher(self, policy: BatchingPolicy) -> Batcher:
        manifest = self.manifest
        if manifest.max_batch_size is None or len(manifest.batch_inputs) != len(manifest.inputs):
            raise SettingError(
                f"dynamic batching needs a model whose every input has a variable batch; {self.name} has not"
            )
        axes = output_axes(manifest.outputs)
        return Batcher(self._run, manifest.max_batch_size, axes, policy, len(manifest.stages()), self.name)

    def metadata(self) -> dict[str, Any]:
        return v2.model_metadata(self.name, self.manifest.inputs, self.manifest.outputs)

    def check_model(self, name: str, version: str | None = None) -> None:
        """ModelNotFound unless `name` (and `version`, when one is given) is the model served here."""
        if name != self.name:
            raise ModelNotFound(f"model {name!r} is not served here; this server serves {self.name!r}")
        if version and version != v2.MODEL_VERSION:
            raise ModelNotFound(f"model {name!r} has no version {version!r}; its only version is {v2.MODEL_VERSION!r}")

    async def _check_ready(self) -> bool:
        """The store answers and every slice is ready."""
        try:
            await self.transport.ping()
            ok = all(await asyncio.gather(*(self.slices.ready(e.id) for e in self.manifest.slices)))
            metrics.STORE_UP.labels(model=self.name).set(1)
        except TransportError:
            metrics.STORE_UP.labels(model=self.name).set(0)
            ok = False
        return ok

    def check(self, inputs: Mapping[str, np.ndarray]) -> int:
        """The request's batch, once its inputs are checked against the model's (InvalidInput)."""
        v2.check_inputs(inputs, self.manifest.inputs)
        return v2.check_batch(inputs, self.manifest.batch_inputs, self.manifest.max_batch_size)

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's outputs for `inputs`, checked first (InvalidInput); batched with others' when
        dynamic batching is on."""
        batch = self.check(inputs)
        if self.batcher is not None:
            return await self.batcher.infer(dict(inputs), batch)
        return await self._run(inputs)

    async def _run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        request_id = uuid.uuid4().hex
        frames = {name: codec.encode(array, self.input_codec) for name, array in inputs.items()}
        # Frames that fit travel inside the calls (`calls`); the others go through the store.
        held = {name: frame for name, frame in frames.items() if len(frame) <= self.inline_limit}
        stored = {name: frame for name, frame in frames.items() if name not in held}
        if stored:
            await self.transport.put(request_id, stored, self.ttl_seconds)
        in_store = set(stored)  # what this request has in the store, as far as the gateway knows
        clean = False
        try:
            await asyncio.wait_for(self._run_slices(request_id, held, in_store), self.request_timeout)
            names = self.output_tensors
            missing = [name for name in names if name not in held]
            try:
                fetched = dict(zip(missing, await self.transport.get(request_id, missing))) if missing else {}
            except MissingTensors as error:  # the slices said they wrote them: ours, not the caller's
                raise SliceFailed(str(error)) from None
            arrays = [codec.decode(held[name] if name in held else fetched[name]) for name in names]
            clean = not in_store
            return self.manifest.join_outputs(dict(zip(names, arrays)))
        except TimeoutError:
            raise SliceFailed(f"request {request_id} timed out after {self.request_timeout:g} s") from None
        finally:
            # Whatever the request may have left (a failed call may have written before failing).
            if not clean:
                try:
                    await self.transport.delete(request_id, self.all_tensors)
                except TransportError as error:  # the TTL removes them later
                    log.warning("could not delete the tensors of request %s: %s", request_id, error)

    async def _run_slices(self, request_id: str, held: dict[str, bytes], in_store: set[str]) -> None:
        """Run every slice once its dependencies are done. `held`: the request's frames that
        travel inline, kept until their last reader has them (model outputs stay); `in_store`:
        the tensors the slices wrote to the store, kept until theirs has."""
        remaining = dict(self.readers)
        tasks: dict[str, asyncio.Task[None]] = {}
        deletions: list[asyncio.Task[int]] = []

        async def run(entry: manifests.SliceEntry) -> None:
            if entry.depends_on:
                await asyncio.gather(*(tasks[d] for d in entry.depends_on))
            inline = {spec.name: held[spec.name] for spec in entry.inputs if spec.name in held}
            reply = await self._call(entry.id, calls.Call(request_id, inline, self.inline_limit))
            held.update(reply.inline)
            in_store.update(spec.name for spec in entry.outputs if spec.name not in reply.inline)
            done_with = []
            for spec in entry.inputs:
                remaining[spec.name] -= 1
                if remaining[spec.name] == 0:
                    held.pop(spec.name, None)
                    if spec.name in in_store:
                        in_store.discard(spec.name)
                        done_with.append(spec.name)
            if done_with:  # free the store as soon as a tensor's last reader is done, off the critical path
                deletions.append(asyncio.ensure_future(self.transport.delete(request_id, done_with)))

        for entry in self.manifest.slices:
            tasks[entry.id] = asyncio.ensure_future(run(entry))
        try:
            await asyncio.gather(*tasks.values())
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), *deletions, return_exceptions=True)

    async def _call(self, slice_id: str, call: calls.Call) -> calls.Reply:
        delays = self.retry.delays()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.slices.run(slice_id, call)
            except SliceCallError as error:
                delay = next(delays, None) if error.retryable else None
                if delay is None:
                    raise SliceFailed(f"{error} (after {attempt} attempt{'s' if attempt > 1 else ''})") from None
                metrics.GATEWAY_RETRIES.labels(model=self.name, slice=slice_id).inc()
                log.warning("%s; retrying in %.2f s", error, delay)
                await asyncio.sleep(delay)
