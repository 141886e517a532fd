"""Adaptive batching for one model: requests queue, one task forms batches, one thread runs them
(or the event loop itself, for a model fast enough that the hand-over to a thread costs more).

A batch is dispatched as soon as one of these holds:
- it is full (settings.batch_max_size samples; a larger request runs on its own),
- its first request has waited batch_max_delay_ms,
- its first request arrived at an idle batcher (empty queue, nothing running) and no other
  request for the model is still being received: waiting would only add latency,
- the server is shutting down (the queue is drained, never dropped).
Requests that queue up while a batch runs wait for the next one (up to the delay) to fill it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from services.common.modelserver.metrics import Metrics
from services.common.modelserver.runtime import ModelRuntime, in_runs

log = logging.getLogger(__name__)



@dataclass(eq=False)
class _Pending:
    inputs: dict[str, np.ndarray]
    size: int  # samples (batch dimension)
    key: tuple  # per-sample shapes: only requests with equal keys can be concatenated
    fresh: bool  # arrived at an idle batcher (so it is the head of the queue)
    enqueued: float
    future: asyncio.Future = field(repr=False)


class Batcher:
    def __init__(
        self, model: ModelRuntime, max_size: int, max_delay_ms: float, metrics: Metrics,
        run_max: int = 0, inline_below_ms: float = 0.0,
    ) -> None:
        self.model = model
        self.run_max = run_max  # samples per predict() of a model without run() (0 = any)
        self.max_size = max(1, max_size)
        self.max_delay = max(0.0, max_delay_ms) / 1000
        # A batch expected to run in under this runs on the event loop itself: handing it to the
        # inference thread and back (a thread wake-up, then a loop wake-up) costs more CPU than a
        # small model's inference, and the loop is blocked no longer than parsing a request takes.
        self.inline_below = max(0.0, inline_below_ms) / 1000
        self._queue: deque[_Pending] = deque()
        self._queued_samples = 0
        self._receiving = 0  # requests for this model whose body is still being read
        self._running = False
        self._closing = False
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"infer-{model.name}")
        self._task: asyncio.Task | None = None
        # Running means of inference time per batch and per sample (inf: not measured yet).
        self._batch_s = self._sample_s = float("inf")
        self._batch_size = metrics.batch_size.labels(model.name)
        self._inference = metrics.inference.labels(model.name)
        self._depth = metrics.queue_depth.labels(model.name)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        """Run what is still queued, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    # --- called by request handlers (on the event loop) ---

    def receiving(self) -> None:
        self._receiving += 1

    def received(self) -> None:
        """The request is queued or rejected; called exactly once after receiving()."""
        self._receiving -= 1
        if self._receiving == 0:
            self._wakeup.set()

    def submit(self, inputs: dict[str, np.ndarray], size: int) -> asyncio.Future:
        """Queue a validated request; the future resolves to {output name: its rows}."""
        loop = asyncio.get_running_loop()
        p = _Pending(
            inputs=inputs,
            size=size,
            key=tuple(a.shape[1:] for a in inputs.values()),
            fresh=not self._queue and not self._running,
            enqueued=loop.time(),
            future=loop.create_future(),
        )
        self._queue.append(p)
        self._queued_samples += size
        self._depth.set(len(self._queue))
        self._wakeup.set()
        return p.future

    # --- the batching task ---

    def _ready(self, now: float) -> bool:
        head = self._queue[0]
        return (
            self._closing
            or self._queued_samples >= self.max_size
            or now >= head.enqueued + self.max_delay
            or (head.fresh and self._receiving == 0)
        )

    async def _next_batch(self) -> list[_Pending] | None:
        loop = asyncio.get_running_loop()
        while True:
            if self._queue:
                now = loop.time()
                if self._ready(now):
                    return self._take()
                timeout = self._queue[0].enqueued + self.max_delay - now
            elif self._closing:
                return None
            else:
                timeout = None
            self._wakeup.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    def _take(self) -> list[_Pending]:
        batch = [self._queue.popleft()]
        total = batch[0].size
        while self._queue:
            p = self._queue[0]
            if p.key != batch[0].key or total + p.size > self.max_size:
                break
            batch.append(self._queue.popleft())
            total += p.size
        self._queued_samples -= total
        self._depth.set(len(self._queue))
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while (batch := await self._next_batch()) is not None:
            batch = [p for p in batch if not p.future.done()]  # cancelled while queued
            if not batch:
                continue
            self._running = True
            try:
                if self._inline(sum(p.size for p in batch)):
                    outputs = self._run(batch)
                else:
                    outputs = await loop.run_in_executor(self._executor, self._run, batch)
            except Exception as e:  # noqa: BLE001 - delivered to every request of the batch
                log.exception("model %s: inference failed", self.model.name)
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(e)
            else:
                for p, out in zip(batch, outputs):
                    if not p.future.done():
                        p.future.set_result(out)
            finally:
                self._running = False

    def _inline(self, samples: int) -> bool:
        """Run on the loop? Only if a batch usually takes under inline_below and this one,
        scaled by its samples, should too (neither a fixed nor a per-sample cost can hide)."""
        return self._batch_s < self.inline_below and self._sample_s * samples < self.inline_below

    def _run(self, batch: list[_Pending]) -> list[dict[str, np.ndarray]]:
        """In the inference thread: concatenate, predict, split back per request."""
        if len(batch) == 1:
            inputs = batch[0].inputs
        else:
            inputs = {k: np.concatenate([p.inputs[k] for p in batch]) for k in batch[0].inputs}
        total = sum(p.size for p in batch)
        t0 = time.perf_counter()
        run = getattr(self.model, "run", None)  # ModelRuntime.run slices (fixed batch, memory)
        outputs = run(inputs) if run else in_runs(self.model.predict, inputs, self.run_max)
        took = time.perf_counter() - t0
        self._inference.observe(took)
        self._batch_s = _mean(self._batch_s, took)
        self._sample_s = _mean(self._sample_s, took / total)
        self._batch_size.observe(total)
        for name, arr in outputs.items():
            if arr.ndim == 0 or arr.shape[0] != total:
                raise RuntimeError(
                    f"output {name!r} has shape {list(arr.shape)}, expected batch {total} first"
                )
        if len(batch) == 1:
            return [outputs]
        split, start = [], 0
        for p in batch:
            split.append({k: v[start : start + p.size] for k, v in outputs.items()})
            start += p.size
        return split


def _mean(mean: float, x: float) -> float:
    """Exponential running mean over ~20 values; the first value replaces inf (unknown)."""
    return x if mean == float("inf") else 0.95 * mean + 0.05 * x
