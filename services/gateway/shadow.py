"""Shadow traffic: the parity certificate checked on live traffic.

Per model (GATEWAY_SHADOW, JSON: {"<model>" or "*": {"fraction": 0.1, "runtime": "tflite"}}), a
sampled fraction of the requests a backend answered successfully is sent again, in the
background, to another runtime that serves the same model (its artifact passed parity: the
router's candidates; `runtime` picks one, else the first other in policy order). Both answers are
decoded and compared: the largest absolute difference over every output, and per row of each
float output with more than one column (class scores, logits) whether the arg-max differs (top-1
disagreement). Counters and a histogram per (model, primary, shadow) go to /metrics; /v2/shadow
lists the totals.

The caller's answer never waits for any of it and never depends on it: the shadow request starts
after the primary answered, a shadow failure (refused, timeout, error status, outputs that do not
match) is only counted, and at most GATEWAY_SHADOW_MAX_IN_FLIGHT shadow requests run at once (the
rest are counted as skipped, not queued: shadowing must not pile up work on a busy gateway).
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.gateway.backends.base import Answer, Backend, Call
from services.gateway.metrics import Metrics
from services.gateway.routing import Router, Target

log = logging.getLogger("services.gateway")


@dataclass
class Pair:
    """Totals of one (model, primary runtime, shadow runtime)."""

    model: str
    primary: str
    shadow: str
    compared: int = 0
    failed: int = 0
    skipped: int = 0
    rows: int = 0
    top1_disagreements: int = 0
    max_abs_error: float = 0.0  # the largest seen
    last_error: str = ""

    def as_dict(self) -> dict[str, Any]:
        rate = self.top1_disagreements / self.rows if self.rows else None
        return {**vars(self), "top1_disagreement_rate": rate}


def compare(primary: dict[str, np.ndarray], shadow: dict[str, np.ndarray]) -> tuple[float, int, int]:
    """(max abs difference, rows compared for top-1, rows whose arg-max differs) over the outputs
    both answers have. Positions where exactly one side is NaN count as an infinite difference."""
    common = primary.keys() & shadow.keys()
    if not common:
        raise ValueError(f"no output in common ({sorted(primary)} vs {sorted(shadow)})")
    worst, rows, differ = 0.0, 0, 0
    for name in sorted(common):
        a, b = primary[name], shadow[name]
        if a.shape != b.shape:
            raise ValueError(f"output {name!r} has shape {list(a.shape)} on the primary, "
                             f"{list(b.shape)} on the shadow")  # fmt: skip
        if a.size == 0 or a.dtype.kind not in "biuf" or b.dtype.kind not in "biuf":
            continue
        x, y = a.astype(np.float64), b.astype(np.float64)
        diff = np.abs(x - y)
        nan_x, nan_y = np.isnan(x), np.isnan(y)
        diff[nan_x & nan_y] = 0.0
        diff[nan_x ^ nan_y] = np.inf
        worst = max(worst, float(diff.max()))
        if a.dtype.kind == "f" and a.ndim >= 2 and a.shape[-1] > 1:
            top_a = np.argmax(x.reshape(-1, a.shape[-1]), axis=1)
            top_b = np.argmax(y.reshape(-1, a.shape[-1]), axis=1)
            rows += top_a.size
            differ += int(np.count_nonzero(top_a != top_b))
    return worst, rows, differ


class Shadow:
    def __init__(self, plan: dict[str, dict[str, Any]], max_in_flight: int, router: Router,
                 backends: dict[str, Backend], metrics: Metrics) -> None:  # fmt: skip
        self.plan = plan
        self.max_in_flight = max(0, max_in_flight)
        self.router = router
        self.backends = backends
        self.metrics = metrics
        self.pairs: dict[tuple[str, str, str], Pair] = {}
        self._tasks: set[asyncio.Task] = set()
        self._random = random.Random()

    def _target(self, primary: Target) -> Target | None:
        rule = self.plan.get(primary.model.name) or self.plan.get("*")
        if not rule or self._random.random() >= float(rule.get("fraction", 0.0)):
            return None
        wanted = rule.get("runtime")
        for t in self.router.candidates(primary.model):
            if t.runtime != primary.runtime and (not wanted or t.runtime == wanted):
                return t
        return None

    def _pair(self, primary: Target, shadow: Target) -> Pair:
        key = (primary.model.name, primary.runtime, shadow.runtime)
        pair = self.pairs.get(key)
        if pair is None:
            pair = self.pairs[key] = Pair(*key)
        return pair

    def submit(self, primary: Target, call: Call, answer: Answer) -> None:
        """After a successful answer: maybe shadow it (returns at once)."""
        if not self.plan or (answer.body is None and answer.response is None):
            return  # off, or a TF Serving body passed through as is (nothing to decode)
        target = self._target(primary)
        if target is None:
            return
        pair = self._pair(primary, target)
        if len(self._tasks) >= self.max_in_flight:
            pair.skipped += 1
            self.metrics.observe_shadow(pair, "skipped")
            return
        task = asyncio.get_running_loop().create_task(self._run(pair, target, call, answer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, pair: Pair, target: Target, call: Call, answer: Answer) -> None:
        try:
            theirs = await self.backends[target.runtime].infer(call)
            worst, rows, differ = compare(answer.decoded().arrays(), theirs.decoded().arrays())
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - counted, never the caller's problem
            pair.failed += 1
            pair.last_error = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
            self.metrics.observe_shadow(pair, "failed")
            return
        pair.compared += 1
        pair.rows += rows
        pair.top1_disagreements += differ
        pair.max_abs_error = max(pair.max_abs_error, worst)
        self.metrics.observe_shadow(pair, "compared", worst, rows, differ)

    def report(self) -> list[dict[str, Any]]:
        return [p.as_dict() for p in self.pairs.values()]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
