"""Dynamic batching at the gateway (off by default): concurrent requests merged into one run of the
slices, as Triton's dynamic batcher merges them into one execution of a model.

Triton's names and semantics: a batch holds at most `max_batch_size` (the model's maximum, the
sum of the requests' batches; a request never splits), and a request waits at most
`max_queue_delay_microseconds` for others to join it (0: it goes with whatever is queued). The
part Triton's model instances play here: at most `in_flight` batches run at once, by default
two per stage of the pipeline (one running in each slice and one waiting at it, so no slice
idles while a batch waits at a slower one); requests that arrive meanwhile queue and go in the
next batch, so under load batches fill even without a delay. A merged run's
outputs are split back along each output's batch dimension; a failed run fails each of its
requests with the same error.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from slice_runtime import metrics
from slice_runtime.errors import SettingError
from slice_runtime.tensors import TensorSpec

Run = Callable[[dict[str, np.ndarray]], Awaitable[dict[str, np.ndarray]]]


@dataclass(frozen=True)
class BatchingPolicy:
    max_queue_delay_microseconds: int = 0
    in_flight: int | None = None  # batches running at once (None: two per stage of the pipeline)


def policy_from(args: argparse.Namespace) -> BatchingPolicy | None:
    """The policy `options.add_batching_arguments` parsed (None: batching off)."""
    if not args.dynamic_batching:
        return None
    return BatchingPolicy(args.max_queue_delay_us, args.batches_in_flight)


@dataclass
class _Pending:
    inputs: dict[str, np.ndarray]
    batch: int
    arrived: float
    future: asyncio.Future[dict[str, np.ndarray]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def output_axes(outputs: Sequence[TensorSpec]) -> dict[str, int]:
    """Each output's batch dimension (its one variable dimension); SettingError for an output that
    has none or several, whose parts could not be told apart."""
    axes = {}
    for spec in outputs:
        variable = [axis for axis, size in enumerate(spec.shape) if size < 0]
        if len(variable) != 1:
            shape = list(spec.shape)
            raise SettingError(f"dynamic batching needs one batch dimension in each output; {spec.name!r} is {shape}")
        axes[spec.name] = variable[0]
    return axes


class Batcher:
    """Merges concurrent `infer` calls into runs of at most `max_batch_size`."""

    def __init__(
        self,
        run: Run,
        max_batch_size: int,
        output_axes: Mapping[str, int],
        policy: BatchingPolicy,
        stages: int,
        model: str,
    ) -> None:
        self._run = run
        self.max_batch_size = max_batch_size
        self.output_axes = dict(output_axes)
        self.delay = policy.max_queue_delay_microseconds / 1e6
        self.in_flight_limit = policy.in_flight or 2 * stages
        self._queue: list[_Pending] = []
        self._running = 0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0  # runs so far (what tests and `mopar bench` count)
        self._sizes = metrics.GATEWAY_BATCH_REQUESTS.labels(model=model)

    async def infer(self, inputs: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
        """The outputs of `inputs` (a request of `batch`), from a run it may share with others."""
        pending = _Pending(inputs, batch, asyncio.get_running_loop().time())
        self._queue.append(pending)
        self._schedule()
        return await pending.future

    def _schedule(self) -> None:
        """Start batches while there is room: one that is full, or whose oldest request waited its delay."""
        loop = asyncio.get_running_loop()
        while self._queue and self._running < self.in_flight_limit:
            queued = sum(p.batch for p in self._queue)
            waited = loop.time() - self._queue[0].arrived
            if queued < self.max_batch_size and waited < self.delay:
                if self._timer is None:
                    self._timer = loop.call_at(self._queue[0].arrived + self.delay, self._expire)
                return
            self._start(self._take())

    def _expire(self) -> None:
        self._timer = None
        self._schedule()

    def _take(self) -> list[_Pending]:
        """The oldest requests that fit one batch (in order: a request never waits behind a later one)."""
        taken, size = [], 0
        while self._queue and size + self._queue[0].batch <= self.max_batch_size:
            size += self._queue[0].batch
            taken.append(self._queue.pop(0))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return taken

    def _start(self, taken: list[_Pending]) -> None:
        self._running += 1
        self.batches += 1
        self._sizes.observe(len(taken))
        task = asyncio.ensure_future(self._execute(taken))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, taken: list[_Pending]) -> None:
        try:
            if len(taken) == 1:
                results = [await self._run(taken[0].inputs)]
            else:
                merged = {name: np.concatenate([p.inputs[name] for p in taken]) for name in taken[0].inputs}
                results = self._split(await self._run(merged), [p.batch for p in taken])
        except Exception as error:  # noqa: BLE001 - each request of the batch gets the error
            for pending in taken:
                if not pending.future.done():
                    pending.future.set_exception(error)
        else:
            for pending, outputs in zip(taken, results):
                if not pending.future.done():  # its caller may have left
                    pending.future.set_result(outputs)
        finally:
            self._running -= 1
            self._schedule()

    def _split(self, outputs: Mapping[str, np.ndarray], batches: Sequence[int]) -> list[dict[str, np.ndarray]]:
        bounds = np.cumsum(batches)[:-1]
        parts = {name: np.split(array, bounds, axis=self.output_axes[name]) for name, array in outputs.items()}
        return [{name: pieces[i] for name, pieces in parts.items()} for i in range(len(batches))]
