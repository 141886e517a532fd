"""Open-loop load on one target: Poisson arrivals on an absolute schedule, latency from the
scheduled send time.

Why not Locust: paced Locust users arrive in bursts and add their own loop delay
(loadtests/README.md, "The open-loop anomaly"). Here one asyncio loop (uvloop) sends request i at
t0 + offsets[i], the offsets being a Poisson process (exponential gaps), whatever the answers do;
a request's latency runs from its *scheduled* time, so a server (or a client) that falls behind
shows as latency instead of as fewer requests (no coordinated omission). Requests go through the
gateway's own HTTP/1.1 client (services/gateway/backends/http.py HTTPPool) with the bench's
payloads (loadtests/payloads.py), every answer checked like the Locust runs do.

Bodies: the payload's, in the bench's encoding (loadtests/payloads.py: by default the binary tensor
extension above payloads.BINARY_ABOVE bytes of JSON, JSON below, as production clients do).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np
import uvloop

from loadtests import payloads
from services.gateway.backends.http import HTTPPool

MAX_CONNECTIONS = 256  # beyond: requests wait for a connection (the wait counts as latency)


def arrival_offsets(rate: float, duration: float, kind: str = "poisson",
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """Send times in [0, duration) for `rate` requests/s: Poisson (exponential gaps) or constant."""
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    if kind == "constant":
        return np.arange(0.0, duration, 1.0 / rate)
    if kind != "poisson":
        raise ValueError(f"unknown arrivals {kind!r}: poisson | constant")
    rng = rng or np.random.default_rng()
    n = int(rate * duration * 1.2 + 10 * np.sqrt(rate * duration) + 10)  # enough, almost surely
    t = np.cumsum(rng.exponential(1.0 / rate, n))
    while t[-1] < duration:  # (never in practice) extend
        t = np.concatenate([t, t[-1] + np.cumsum(rng.exponential(1.0 / rate, n))])
    return t[t < duration]


@dataclass(frozen=True)
class Body:
    data: bytes
    header_len: int | None  # Inference-Header-Content-Length for a binary body


def encode_bodies(payload: payloads.Payload, manifest=None, store=None) -> list[Body]:
    """The payload's bodies, already in the bench's encoding (payloads.build_payload chose it;
    manifest and store are no longer needed)."""
    lens = payload.header_lens or (None,) * len(payload.bodies)
    return [Body(b, n) for b, n in zip(payload.bodies, lens)]


def summarize(records: list[tuple[float, float, str | None]], window_from: float,
              window_s: float) -> dict:
    """records (scheduled offset s, latency s from that offset, problem or None) of the requests
    scheduled in [window_from, window_from + window_s) -> the run's figures, shaped like the Locust
    runs' window summary; percentiles cover every request, failed ones included (a timeout at
    its timeout). rps is answers per second: the window's requests over the time from
    the window's start to the last answer (at least the window), so a server that falls behind
    shows a lower rate than the offered one."""
    lat = np.asarray([r[1] for r in records], dtype=np.float64) * 1000.0
    last = max((r[0] + r[1] - window_from for r in records), default=0.0)
    span = max(window_s, last)
    pct = {}
    if lat.size:
        pct = {f"p{q}": float(np.percentile(lat, q)) for q in (50, 90, 95, 99)}
        pct.update(mean=float(lat.mean()), min=float(lat.min()), max=float(lat.max()))
    reasons = Counter(r[2] for r in records if r[2])
    return {"requests": len(records), "failures": sum(reasons.values()),
            "failure_reasons": dict(reasons), "rps": len(records) / span if span > 0 else 0.0,
            "latency_ms": pct}


class OpenLoop:
    """Poisson traffic to one target at `base_url` (gateway or runtime), one asyncio loop."""

    def __init__(self, payload: payloads.Payload, bodies: list[Body], base_url: str,
                 headers: dict[str, str], timeout_s: float = 10.0) -> None:
        u = urlsplit(base_url)
        self.pool = HTTPPool(u.hostname or "127.0.0.1", u.port or 80,
                             max_connections=MAX_CONNECTIONS, connect_timeout=5.0)
        self.payload, self.bodies = payload, bodies
        self.headers = {"Content-Type": "application/json", **headers}
        self.path = payload.target.path
        self.timeout_s = timeout_s
        self.clock = time.monotonic  # the event loop's clock too: sleeps and latencies agree

    async def one(self, i: int, due: float, off: float, out: list, served_by: Counter) -> None:
        body = self.bodies[i % len(self.bodies)]
        headers = self.headers if body.header_len is None else {
            **self.headers, "Inference-Header-Content-Length": str(body.header_len)}
        try:
            async with asyncio.timeout(self.timeout_s):
                status, got, data = await self.pool.request("POST", self.path, body.data, headers)
            who = got.get("x-served-by")
            problem = payloads.check_response(self.payload, i % len(self.bodies), status, data,
                                              who, payloads.header_len(got))
            served_by[who or "-"] += 1
        except TimeoutError:
            problem = f"no answer within {self.timeout_s:g} s"
        except OSError as e:  # ConnectionRefusedError, ConnectTimeout, Disconnected
            problem = f"connection error: {type(e).__name__}"
        out.append((off, self.clock() - due, problem))

    async def run(self, offsets: np.ndarray, count_from: float = 0.0) -> tuple[list, Counter, dict]:
        """Send request i at offsets[i] seconds from now; (records of the requests scheduled at or
        after count_from, X-Served-By counts of those, sender timing)."""
        records: list[tuple] = []
        ignored: list[tuple] = []
        served_by: Counter = Counter()
        pending: set[asyncio.Task] = set()
        lags = []
        t0 = self.clock()
        for i, off in enumerate(offsets):
            due = t0 + off
            # uvloop's timers have millisecond resolution and may wake early: sleep again for the
            # rest, so that no request leaves before its time (its latency would be too short).
            while (delay := due - self.clock()) > 0:
                await asyncio.sleep(delay)
            lags.append(self.clock() - due)
            counted = off >= count_from
            task = asyncio.create_task(self.one(i, due, float(off), records if counted else ignored,
                                                served_by if counted else Counter()))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)
        lag = np.asarray(lags) * 1000.0 if lags else np.zeros(1)
        return records, served_by, {"send_lag_p50_ms": round(float(np.percentile(lag, 50)), 3),
                                    "send_lag_p99_ms": round(float(np.percentile(lag, 99)), 3)}


def run_open(payload: payloads.Payload, bodies: list[Body], base_url: str, rate: float,
             warmup_s: float, window_s: float, *, headers: dict[str, str] | None = None,
             timeout_s: float = 10.0, seed: int | None = None, arrivals: str = "poisson") -> dict:
    """One open-loop run: `warmup_s` of traffic at `rate` (Poisson arrivals, or evenly spaced:
    `arrivals="constant"`; not counted), then `window_s` counted; the window summary
    (Locust-compatible fields) plus the offered rate and how late the sender was.
    window_start/end are wall-clock times (for the CPU sampler)."""
    offsets = arrival_offsets(rate, warmup_s + window_s, arrivals, np.random.default_rng(seed))
    loop = OpenLoop(payload, bodies, base_url, headers or {}, timeout_s)

    async def go() -> tuple[list, Counter, dict]:
        try:
            return await loop.run(offsets, count_from=warmup_s)
        finally:
            await loop.pool.close()

    started = time.time()
    records, served_by, timing = uvloop.run(go())
    summary = summarize(records, warmup_s, window_s)
    return {"window_start": started + warmup_s, "window_end": started + warmup_s + window_s,
            "window_s": window_s, "users": 0, "arrivals": arrivals, "offered_rate": rate,
            **summary, "served_by": dict(served_by), **timing}
