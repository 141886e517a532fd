"""Circuit breaker per backend, and the background probe that feeds it.

Closed: requests flow. After `failures` consecutive connection failures (refused, connect
timeout) it opens: requests to that backend fail at once with 503 (or fail over). Once
`reset_s` has passed, one trial request is let through (half-open); its success closes the
circuit, its failure re-opens it for another `reset_s`. Request timeouts count as failures too
(outlier detection: a backend that accepts but never answers). The probe reaches every backend
every `interval` seconds (a cheap liveness request with a short timeout) and feeds the same
breaker: `probe_failures` missed probes in a row open it at once, so a hung backend (SIGSTOP,
deadlock) stops receiving bare-name traffic within about interval + probe_failures x timeout,
and a recovered backend is closed again even without traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Callable

from services.gateway.backends import Backend
from services.gateway.errors import GatewayError

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class CircuitBreaker:
    def __init__(self, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic):
        self.threshold = max(1, failures)
        self.reset_s = reset_s
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return CLOSED
        return HALF_OPEN if self.clock() - self.opened_at >= self.reset_s else OPEN

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        if self.clock() - self.opened_at >= self.reset_s:
            self.opened_at = self.clock()  # one trial per reset period
            return True
        return False

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None

    def trip(self) -> None:
        """Open now (the probe saw the backend stop answering)."""
        self.failures = max(self.failures, self.threshold)
        self.opened_at = self.clock()

    def failure(self) -> None:
        self.failures += 1
        if self.opened_at is not None or self.failures >= self.threshold:
            self.opened_at = self.clock()


class HealthMonitor:
    def __init__(
        self, backends: dict[str, Backend], *, failures: int, reset_s: float, interval: float,
        probe_failures: int = 2,
    ) -> None:
        self.backends = backends
        self.interval = interval
        self.probe_failures = max(1, probe_failures)
        self.misses = {rt: 0 for rt in backends}  # consecutive failed probes
        # A backend that answered a request this recently is busy, not hung: a probe it misses
        # then does not count (a burst of large bodies can hold its event loop past the probe's
        # timeout; a stopped process answers nothing at all).
        self.answered_window = interval + max((b.probe_timeout for b in backends.values()),
                                              default=1.0)
        self.last_answer: dict[str, float] = {}
        self.breakers = {rt: CircuitBreaker(failures, reset_s) for rt in backends}
        self.up: dict[str, bool | None] = {rt: None for rt in backends}  # None: not probed yet
        self.reason: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None

    def answered(self, runtime: str) -> None:
        self.last_answer[runtime] = time.monotonic()

    def available(self, runtime: str) -> bool:
        return self.breakers[runtime].state != OPEN

    def why_down(self, runtime: str) -> str:
        if self.up[runtime] is None:
            return "not probed yet"
        if self.up[runtime] is False:
            return self.reason[runtime]
        return "up" if self.available(runtime) else "circuit open"

    async def probe(self, runtime: str) -> bool:
        try:
            ok = await self.backends[runtime].live()
            reason = "" if ok else "backend answers with a server error"
        except GatewayError as e:
            ok, reason = False, e.message
        self.up[runtime] = ok
        self.reason[runtime] = reason
        breaker = self.breakers[runtime]
        if ok:
            self.misses[runtime] = 0
            breaker.success()
        elif time.monotonic() - self.last_answer.get(runtime, -1e9) < self.answered_window:
            pass  # busy: it answered real traffic just now
        else:
            self.misses[runtime] += 1
            if self.misses[runtime] >= self.probe_failures:
                breaker.trip()
            else:
                breaker.failure()
        return ok

    async def probe_all(self) -> None:
        await asyncio.gather(*(self.probe(rt) for rt in self.backends))

    async def _run(self) -> None:
        while True:
            await self.probe_all()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-health-probe")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
