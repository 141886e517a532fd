"""create_app(): the FastAPI application of the gateway."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from services.common.fastroutes import FastRoutes
from services.common.heap import freeze_startup_heap
from services.gateway import api_v1, api_v2, errors, openapi
from services.gateway.core import Gateway
from services.gateway.grpc_api import GrpcServer
from services.gateway.middleware import GatewayMiddleware
from services.gateway.settings import GatewaySettings

DESCRIPTION = """One endpoint for every model on every runtime.

Address a model as `<model>` (routed by policy) or `<model>@<runtime>` with runtime one of
torchserve, tfserving, onnxruntime, tflite, aotinductor, executorch. Every response names the runtime
that served it in `X-Served-By`. With an API key configured, send `Authorization: Bearer <key>`
(health routes are open)."""


# Inference routes the middleware serves itself, without FastAPI's per-request routing and
# dependency solving (they cost about as much CPU as the whole forward to the backend). Their
# paths come from the routers' own table (the one /openapi.json documents): one route table.
FAST_ENDPOINTS = (api_v2.infer, api_v1.predict)


def create_app(settings: GatewaySettings | None = None,
               grpc_host: str | None = None) -> GatewayMiddleware:  # fmt: skip
    """The ASGI app to serve: the FastAPI app (`.app`) inside the gateway's own outer layer.
    Its lifespan also runs the gRPC front ends on GATEWAY_GRPC_PORT (OIP) and
    GATEWAY_TFS_GRPC_PORT (TF Serving) (0: none), bound to
    `grpc_host` (the REST server's host; default STACK_BIND_HOST), on the same event loop."""
    gw = Gateway(settings or GatewaySettings())
    s = gw.settings

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gw.start()
        freeze_startup_heap("gateway")
        grpc_server = None
        try:
            if s.gateway_grpc_port or s.gateway_tfs_grpc_port:
                grpc_server = GrpcServer(gw, grpc_host or s.stack_bind_host, s.gateway_grpc_port,
                                         s.gateway_tfs_grpc_port)
                await grpc_server.start()
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop()
            await gw.close()

    app = FastAPI(title="servebench gateway", version="0.1.0", description=DESCRIPTION,
                  lifespan=lifespan)
    app.state.gateway = gw
    errors.install(app)
    app.include_router(api_v2.router)
    app.include_router(api_v1.router)

    @app.get("/metrics", tags=["Operations"], summary="Prometheus metrics")
    async def metrics(_: Request) -> Response:
        h = gw.health
        circuits = {rt: b.state for rt, b in h.breakers.items()}
        return Response(gw.metrics.render(h.up, circuits), media_type=CONTENT_TYPE_LATEST)

    openapi.install(app)

    routes = [*api_v2.router.routes, *api_v1.router.routes]  # included without a prefix
    return GatewayMiddleware(app, gw, FastRoutes(routes, FAST_ENDPOINTS))
