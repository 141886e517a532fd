"""Runs validated predictions: serving_default requests go through the OIP servers' adaptive
Batcher (one per model version, batch_max_size / batch_max_delay_ms from settings, like TF Serving's
--enable_batching), each formed batch padded up to the next allowed batch size as TF Serving's
batching session does; other signatures and output filters run as they are, on the shared TF
thread."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from services.common.modelserver.batching import Batcher
from services.common.modelserver.metrics import Metrics
from services.settings import StackSettings
from services.tfserving.config import allowed_batch_sizes
from services.tfserving.models import DEFAULT_SIGNATURE, Registry, Servable


def pad_batch(inputs: dict[str, np.ndarray], allowed: list[int]) -> tuple[dict[str, np.ndarray], int]:
    """Inputs padded to the smallest allowed batch size that holds them, and the real batch size.
    Like TF Serving's batching session, the padding repeats the batch's first row (valid data, so
    no model sees an out-of-range token or NaN from it); a batch above the largest allowed size
    is left as it is."""
    size = next(iter(inputs.values())).shape[0]
    target = next((n for n in allowed if n >= size), size)
    if target == size:
        return inputs, size
    return {k: np.concatenate([v, np.repeat(v[:1], target - size, axis=0)]) for k, v in inputs.items()}, size


class _DefaultSignature:
    """The Batcher's model interface (name + predict) over one servable's serving_default."""

    def __init__(self, servable: Servable, allowed: list[int]):
        self.name = f"{servable.name}:{servable.version}"
        self._servable = servable
        self._allowed = allowed

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        padded, size = pad_batch(inputs, self._allowed)
        outputs = self._servable.run(DEFAULT_SIGNATURE, padded)
        return outputs if padded is inputs else {k: v[:size] for k, v in outputs.items()}


class Predictor:
    def __init__(self, registry: Registry, executor: ThreadPoolExecutor, settings: StackSettings):
        self.settings = settings
        self.executor = executor
        self.metrics = Metrics()
        allowed = allowed_batch_sizes(settings)
        self.batchers = {
            (s.name, s.version): Batcher(
                _DefaultSignature(s, allowed), settings.batch_max_size, settings.batch_max_delay_ms,
                self.metrics, run_max=settings.run_max_batch,
            )
            for versions in registry.servables.values()
            for s in versions.values()
            if DEFAULT_SIGNATURE in s.signature_defs
        }  # fmt: skip

    def start(self) -> None:
        for b in self.batchers.values():
            b.start()

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self.batchers.values()))

    async def predict(
        self, servable: Servable, signature_name: str, inputs: dict[str, np.ndarray],
        output_filter: list[str] | tuple = (),
    ) -> dict[str, np.ndarray]:  # fmt: skip
        """Inputs already validated (servable.validate) -> outputs."""
        batcher = self.batchers.get((servable.name, servable.version))
        if (
            batcher is None
            or output_filter
            or (signature_name or DEFAULT_SIGNATURE) != DEFAULT_SIGNATURE
            or any(a.ndim == 0 for a in inputs.values())
        ):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self.executor, servable.run, signature_name, inputs, output_filter
            )
        size = next(iter(inputs.values())).shape[0]
        return await batcher.submit(inputs, size)
