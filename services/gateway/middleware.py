"""The gateway's outermost ASGI layer: request id, bearer-key auth, in-flight gauge, metrics,
X-Served-By, one JSON access-log line per request (accesslog.py).

It wraps the FastAPI app from outside and serves the inference routes itself: FastAPI's
routing, dependency solving and middleware stack cost about as much CPU per request as the whole
forward to the backend. Those routes stay declared in FastAPI (OpenAPI docs, same handlers).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from contract.codec import CodecError
from services.common.fastroutes import FastRoutes
from services.gateway.auth import expected_bearer, refusal
from services.gateway.context import CTX, RequestContext, request_id
from services.gateway.core import Gateway
from services.gateway.errors import (
    GatewayError,
    error_response,
    gateway_error_response,
    internal_message,
)

PUBLIC_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})

log = logging.getLogger("services.gateway")


class GatewayMiddleware:
    def __init__(self, app: Any, gateway: Gateway, fast_routes: FastRoutes) -> None:
        self.app = app
        self.gateway = gateway
        self.fast_routes = fast_routes
        self.bearer = expected_bearer(gateway.settings.gateway_api_key)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)  # lifespan
        start = time.perf_counter()
        headers = dict(scope["headers"])
        ctx = scope[CTX] = RequestContext(headers, request_id(headers.get(b"x-request-id")))
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
            keys = [v for k, v in scope["headers"] if k == b"authorization"]
            if refused := refusal(keys, self.bearer, scope["path"] in PUBLIC_PATHS):
                code, message = refused
                extra = {"WWW-Authenticate": "Bearer"} if code == 401 else None
                await error_response(code, message, extra)(scope, receive, send_with_headers)
            elif (fast := self.fast_routes.match(scope)) is not None:
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
                await error_response(500, internal_message(e))(scope, receive, send_with_headers)
        finally:
            metrics.in_flight.dec()
            self.gateway.record(scope["method"], scope["path"], ctx, status,
                                time.perf_counter() - start)
