"""The gateway's outermost ASGI layer: request id, bearer-key auth, in-flight gauge, metrics,
X-Served-By, one JSON access-log line per request (accesslog.py).

It wraps the FastAPI app from outside and serves the inference routes itself: FastAPI's
routing, dependency solving and middleware stack cost about as much CPU per request as the whole
forward to the backend. Those routes stay declared in FastAPI (OpenAPI docs, same handlers).
"""

from __future__ import annotations

import hmac
import itertools
import logging
import os
import re
import time
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response

from contract.codec import CodecError
from services.gateway.context import CTX, RequestContext
from services.gateway.core import Gateway
from services.gateway.errors import GatewayError, error_response, gateway_error_response

PUBLIC_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
FastRoute = tuple[str, "re.Pattern[str]", Callable[..., Awaitable[Response]]]

log = logging.getLogger("services.gateway")

# Generated request ids: a per-process random prefix and a counter (uuid4 costs more).
_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count(1)


def _request_id(value: bytes | None) -> str:
    if value and len(value) <= 128 and value.isascii() and value.decode().isprintable():
        return value.decode()
    return f"{_ID_PREFIX}-{next(_ID_COUNTER):x}"


class GatewayMiddleware:
    def __init__(self, app: Any, gateway: Gateway, fast_routes: list[FastRoute]) -> None:
        self.app = app
        self.gateway = gateway
        self.fast_routes = fast_routes
        key = gateway.settings.gateway_api_key
        self.bearer = f"Bearer {key}".encode() if key else None
        self.access_log = gateway.access_log

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)  # lifespan
        start = time.perf_counter()
        headers = dict(scope["headers"])
        ctx = scope[CTX] = RequestContext(headers, _request_id(headers.get(b"x-request-id")))
        status = 500
        started = False

        async def send_with_headers(message: dict) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message["headers"] = [*message.get("headers", ()),
                                      (b"x-request-id", ctx.request_id.encode()),
                                      (b"x-served-by", ctx.served_by.encode())]
            await send(message)

        metrics = self.gateway.metrics
        metrics.in_flight.inc()
        try:
            if sum(1 for k, _ in scope["headers"] if k == b"authorization") > 1:
                # Proxies and servers disagree on which one counts: refuse rather than guess.
                await error_response(400, "more than one Authorization header")(
                    scope, receive, send_with_headers)
            elif not self._authorized(scope, headers):
                resp = error_response(
                    401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                    {"WWW-Authenticate": "Bearer"},
                )
                await resp(scope, receive, send_with_headers)
            elif (fast := self._fast_route(scope)) is not None:
                handler, params = fast
                scope["app"] = self.app  # what FastAPI would set: handlers find the gateway there
                request = Request(scope, receive)
                try:
                    resp = await handler(request, **params)
                except GatewayError as e:
                    resp = gateway_error_response(request, e)
                except CodecError as e:  # the request is not a valid tensor message
                    resp = error_response(e.status, e.message)
                await resp(scope, receive, send_with_headers)
            else:
                await self.app(scope, receive, send_with_headers)
        except Exception as e:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if not started:
                await error_response(500, f"internal error: {type(e).__name__}: {e}")(
                    scope, receive, send_with_headers
                )
        finally:
            metrics.in_flight.dec()
            seconds = time.perf_counter() - start
            metrics.observe(ctx.endpoint, ctx.model, ctx.runtime, status, seconds)
            if self.access_log is not None:
                self.access_log.write({
                    "ts": round(time.time(), 3), "method": scope["method"], "path": scope["path"],
                    "model": ctx.model, "runtime": ctx.runtime, "served_by": ctx.served_by,
                    "status": status, "duration_ms": round(seconds * 1000, 3),
                    "request_id": ctx.request_id,
                })

    def _authorized(self, scope: dict, headers: dict[bytes, bytes]) -> bool:
        if self.bearer is None or scope["path"] in PUBLIC_PATHS:
            return True
        return hmac.compare_digest(headers.get(b"authorization", b""), self.bearer)

    def _fast_route(self, scope: dict) -> tuple[Callable[..., Awaitable[Response]], dict] | None:
        for method, pattern, handler in self.fast_routes:
            if scope["method"] == method and (m := pattern.fullmatch(scope["path"])):
                params = m.groupdict()
                if params.get("version") is None and scope["query_string"]:
                    # ?version= as FastAPI's routes take it (the OpenAPI documents it)
                    params["version"] = parse_qs(scope["query_string"].decode("latin-1")).get(
                        "version", [None])[-1]
                return handler, params
        return None
