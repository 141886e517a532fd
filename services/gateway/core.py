"""The gateway's state (store, router, backends, health, metrics) and its dispatch loop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from contract.codec import Limits
from contract.manifest import Manifest, load_store
from services.gateway.accesslog import AccessLog
from services.gateway.backends import make_backends
from services.gateway.backends.base import Answer, Call
from services.gateway.context import RequestContext
from services.gateway.errors import (
    BackendFailed,
    BackendLost,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    GatewayError,
    ModelUnavailable,
)
from services.gateway.health import HealthMonitor
from services.gateway.metrics import Metrics
from services.gateway.routing import Router, Target
from services.gateway.settings import GatewaySettings
from services.gateway.shadow import Shadow


class Gateway:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.load_errors: dict[str, str] = {}  # model directory -> why its manifest was not read
        self.store = load_store(settings.model_store, self.load_errors)
        self._limits: dict[str, Limits] = {}
        self.backends = make_backends(settings, self.store)
        self.health = HealthMonitor(
            self.backends,
            failures=settings.gateway_breaker_failures,
            reset_s=settings.gateway_breaker_reset_s,
            interval=settings.gateway_probe_interval_s,
            probe_failures=settings.gateway_probe_failures,
        )
        self.router = Router(
            self.store,
            settings.runtimes,
            settings.gateway_policy,
            settings.gateway_default_runtime,
            self.health.available,
        )
        self.metrics = Metrics()
        self.shadow = Shadow(settings.gateway_shadow, settings.gateway_shadow_max_in_flight,
                             self.router, self.backends, self.metrics)  # fmt: skip
        self._index: tuple[float, asyncio.Future[list[dict[str, Any]]]] | None = None
        self.access_log = AccessLog() if settings.gateway_access_log else None

    async def start(self) -> None:
        self.health.start()
        if self.access_log:
            self.access_log.start()

    async def close(self) -> None:
        await self.shadow.close()
        await self.health.stop()
        if self.access_log:
            await self.access_log.stop()
        for b in self.backends.values():
            await b.close()

    def record(self, method: str, path: str, ctx: RequestContext, status: int,
               seconds: float) -> None:  # fmt: skip
        """A finished request of either front end: its metrics and its access-log line (status:
        the HTTP status, or the HTTP equivalent of a gRPC answer)."""
        self.metrics.observe(ctx.endpoint, ctx.model, ctx.runtime, status, seconds)
        if self.access_log is not None:
            self.access_log.write({
                "ts": round(time.time(), 3), "method": method, "path": path,
                "model": ctx.model, "runtime": ctx.runtime, "served_by": ctx.served_by,
                "status": status, "duration_ms": round(seconds * 1000, 3),
                "request_id": ctx.request_id,
            })

    def limits(self, model: Manifest) -> Limits:
        """The codec's limits for a model: MAX_BATCH_SIZE, or its fixed batch dimension if less."""
        lim = self._limits.get(model.name)
        if lim is None:
            fixed = {s.shape[0] for s in model.signature.inputs if s.shape and s.shape[0] > 0}
            lim = self._limits[model.name] = Limits(
                max_batch=min(fixed | {self.settings.max_batch_size}))
        return lim

    async def infer(self, targets: list[Target], call: Call,
                    ctx: RequestContext) -> tuple[Target, Answer]:  # fmt: skip
        """Send to the first target that can serve it; fail over while nothing has reached a
        backend (refused, connect timeout, circuit open) or a backend answered 503 for the model
        (it failed to load there). A connection that broke before a complete answer (the backend
        was killed) is retried once on the next candidate; nothing else is retried once
        a backend has started on it. A pinned `<model>@<runtime>` has one target: it fails fast."""
        error: GatewayError | None = None
        retried = False
        for i, t in enumerate(targets):
            ctx.runtime = t.runtime
            breaker = self.health.breakers[t.runtime]
            if not breaker.allow():
                error = BackendUnavailable(
                    f"backend {t.runtime} is unavailable: circuit open after "
                    f"{breaker.threshold} consecutive connection failures",
                    runtime=t.runtime,
                )
                continue
            start = time.perf_counter()
            try:
                resp = await self.backends[t.runtime].infer(call)
            except BackendUnavailable as e:
                breaker.failure()
                error = e
                continue
            except ModelUnavailable as e:
                breaker.success()  # the backend is up; the model is not (on this backend)
                error = e
                continue
            except BackendLost as e:
                breaker.failure()
                if retried or i == len(targets) - 1:
                    raise
                retried, error = True, e
                continue
            except BackendTimeout:
                breaker.failure()  # consecutive timeouts open the circuit (outlier detection)
                raise
            except BackendRejected:
                breaker.success()  # it answered
                self.health.answered(t.runtime)
                raise
            except BackendFailed:
                breaker.success()  # it answered (5xx)
                raise
            finally:
                self.metrics.observe_backend(t.model.name, t.runtime, time.perf_counter() - start)
            breaker.success()
            self.health.answered(t.runtime)
            ctx.served_by = resp.served_by
            self.shadow.submit(t, call, resp)  # in the background, if sampled
            return t, resp
        assert error is not None
        raise error

    async def pair_ready(self, t: Target) -> tuple[bool, str]:
        if not self.health.available(t.runtime):
            return False, f"backend {t.runtime} is unavailable (circuit open)"
        try:
            if await self.backends[t.runtime].ready(t.model):
                return True, ""
            return False, f"backend {t.runtime} does not report {t.model.name} ready"
        except GatewayError as e:
            return False, e.message
        except Exception as e:  # a malformed readiness answer must not break the index
            return False, f"backend {t.runtime}: {type(e).__name__}: {e}"

    async def first_ready(self, targets: list[Target]) -> tuple[Target | None, str]:
        reason = ""
        for t in targets:
            ok, reason = await self.pair_ready(t)
            if ok:
                return t, ""
        return None, reason

    async def index(self) -> list[dict[str, Any]]:
        """Triton repository index: every bare model and every (model, runtime) pair. It asks
        every backend about every model, so it is computed at most once per probe interval and
        concurrent callers share one computation (a client polling it cannot load the backends)."""
        now = time.monotonic()
        cached = self._index
        if cached is not None and (now - cached[0] < self.settings.gateway_probe_interval_s
                                   or not cached[1].done()):
            return list(await asyncio.shield(cached[1]))
        task = asyncio.ensure_future(self._build_index())
        self._index = (now, task)
        return list(await asyncio.shield(task))

    async def _build_index(self) -> list[dict[str, Any]]:
        pairs = list(self.router.pairs())
        variants = {m.name: self.router.variant_targets(m) for m in self.store.values()}
        every = [t for _, _, t in pairs if t] + [t for ts in variants.values() for t in ts]
        checks = await asyncio.gather(*(self.pair_ready(t) for t in every))
        ready = dict(zip((t.name for t in every), checks))
        out: list[dict[str, Any]] = []
        for m in self.store.values():
            try:
                cands = self.router.resolve(m.name)
            except GatewayError as e:
                out.append(_entry(m.name, "", False, e.message))
            else:
                t = next((c for c in cands if ready[c.name][0]), None)
                reason = "" if t else ready[cands[0].name][1]
                out.append(_entry(m.name, (t or cands[0]).version, t is not None, reason))
            for _, rt, t in (p for p in pairs if p[0] is m):
                if t is None:
                    out.append(_entry(f"{m.name}@{rt}", "", False, self.router.why_not(m, rt)))
                else:
                    out.append(_entry(t.name, t.version, *ready[t.name]))
            out += [_entry(t.name, t.version, *ready[t.name]) for t in variants[m.name]]
        for name, why in sorted(self.load_errors.items()):
            out.append(_entry(name, "", False, why))
        return out

    def server_ready(self) -> tuple[bool, str]:
        """Every ROUTABLE model (one with a parity-passed artifact on a configured runtime) can be
        served by its bare name by a backend the probe reached. A model without one is listed in
        the repository index as UNAVAILABLE with its reason; it does not make the gateway
        not-ready (nothing could ever make it ready)."""
        if not self.store:
            return False, f"no models in {self.settings.model_store}"
        routable = 0
        for m in self.store.values():
            cands = self.router.candidates(m)
            if not cands:
                continue
            routable += 1
            h = self.health
            if not any(h.up[t.runtime] and h.available(t.runtime) for t in cands):
                why = "; ".join(f"{t.runtime}: {h.why_down(t.runtime)}" for t in cands)
                return False, f"{m.name} has no reachable backend ({why})"
        if not routable:
            return False, (f"no model in {self.settings.model_store} has an artifact that passed "
                           f"its parity check on a configured runtime")
        return True, ""


def _entry(name: str, version: str, ready: bool, reason: str) -> dict[str, Any]:
    return {"name": name, "version": version, "state": "READY" if ready else "UNAVAILABLE",
            "reason": reason}
