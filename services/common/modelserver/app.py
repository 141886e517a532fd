"""Open Inference Protocol v2 REST transport (FastAPI). The app only moves bytes: it reads the body
(bounded), and every decoding, validation and encoding goes through contract.codec (one request
type, one response type); a CodecError's status becomes the HTTP status with {"error": message}."""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from contract.codec import (
    BINARY_HEADER,
    CodecError,
    InferRequest,
    InferResponse,
    Limits,
    header_length,
)
from services.common.fastroutes import FastRoutes
from services.common.heap import freeze_startup_heap
from services.common.http_bounds import BodyError, read_body
from services.common.modelserver.batching import Batcher
from services.common.modelserver.metrics import UNKNOWN_MODEL, Metrics
from services.common.modelserver.runtime import ModelRuntime
from services.settings import StackSettings

log = logging.getLogger(__name__)

EXTENSIONS = ["binary_tensor_data", "model_repository"]


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json(obj: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), status, media_type="application/json"
    )


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


class ModelServer:
    def __init__(
        self,
        platform: str,
        server_version: str,
        models: dict[str, ModelRuntime],
        failed: dict[str, tuple[str, str]],
        settings: StackSettings,
    ) -> None:
        """failed: {model: (version, reason)} of the models that did not load or warm up."""
        self.platform = platform
        self.server_version = server_version
        self.models = models
        self.failed = failed
        self.settings = settings
        # A request above batch_max_size runs on its own; above max_batch_size it is refused.
        self.limits = Limits(max_batch=settings.max_batch_size)
        self.metrics = Metrics()
        self.batchers = {
            name: Batcher(m, settings.batch_max_size, settings.batch_max_delay_ms, self.metrics,
                          inline_below_ms=settings.batch_inline_below_ms)
            for name, m in models.items()
        }
        for m in models.values():
            self.metrics.info.labels(m.name, m.version, m.platform).set(1)

    def lookup(self, name: str, version: str | None) -> ModelRuntime:
        model = self.models.get(name)
        if model is None:
            if name in self.failed:
                raise ApiError(503, f"model {name} failed to load: {self.failed[name][1]}")
            raise ApiError(
                404, f"unknown model {name!r}; this server has {sorted(self.models)}"
            )
        if version is not None and version != model.version:
            raise ApiError(
                404, f"model {name!r} has no version {version!r}; it has [{model.version!r}]"
            )
        return model

    def metadata(self, model: ModelRuntime) -> dict[str, Any]:
        def specs(ts):
            return [{"name": t.name, "datatype": t.datatype, "shape": t.shape} for t in ts]

        return {
            "name": model.name,
            "versions": [model.version],
            "platform": model.platform,
            "inputs": specs(model.inputs),
            "outputs": specs(model.outputs),
        }

    # --- inference ---

    async def infer(self, request: Request, name: str, version: str | None) -> Response:
        t0 = time.perf_counter()
        label = UNKNOWN_MODEL
        self.metrics.in_flight.inc()
        try:
            model = self.lookup(name, version)
            label = name
            response = await self._infer(request, model)
        except ApiError as e:
            response = _error(e.status, e.message)
        finally:
            self.metrics.in_flight.dec()
        self.metrics.requests.labels(label, str(response.status_code)).inc()
        if response.status_code == 200:
            self.metrics.latency.labels(label).observe(time.perf_counter() - t0)
        return response

    async def _infer(self, request: Request, model: ModelRuntime) -> Response:
        batcher = self.batchers[model.name]
        batcher.receiving()
        try:
            s = self.settings
            try:
                body = await read_body(request.receive, request.headers.get("content-length"),
                                       s.server_max_body_bytes, s.http_body_timeout_s)
            except BodyError as e:
                raise ApiError(e.status, e.message) from None
            try:
                with self.metrics.codec_timer(model.name, "decode"):
                    req = InferRequest.from_oip(body,
                                                header_length(request.headers.get(BINARY_HEADER)))
                    size = req.validate(model.signature, self.limits)
                    inputs = req.arrays(model.signature)
                model.check(inputs)
            except CodecError as e:
                raise ApiError(e.status, e.message) from None
            future = batcher.submit(inputs, size)
        finally:
            batcher.received()
        try:
            outputs = await future
        except Exception as e:  # noqa: BLE001 - the batcher logged it
            raise ApiError(500, f"inference failed in {model.platform}: {e}") from None
        with self.metrics.codec_timer(model.name, "encode"):
            answer = InferResponse.from_arrays(model.name, outputs, model.version, req.id)
            body, length = answer.select(req.output_names(model.signature)).to_oip(
                req.binary_outputs(model.signature)
            )
        if length is None:
            return Response(body, 200, media_type="application/json")
        return Response(body, 200, headers={BINARY_HEADER: str(length)},
                        media_type="application/octet-stream")  # fmt: skip

    def repository_index(self) -> list[dict[str, str]]:
        """Triton's POST /v2/repository/index: every model of the runtime's format, loaded or not."""
        rows = [{"name": m.name, "version": m.version, "state": "READY", "reason": ""}
                for m in self.models.values()]  # fmt: skip
        rows += [{"name": n, "version": v, "state": "UNAVAILABLE", "reason": why}
                 for n, (v, why) in self.failed.items()]  # fmt: skip
        return sorted(rows, key=lambda r: r["name"])


def _internal_error(exc: Exception) -> Response:
    log.error("internal error", exc_info=exc)
    return _error(500, f"internal error: {type(exc).__name__}: {exc}")


class FastInference:
    """The outermost ASGI layer: serves the infer routes without FastAPI's per-request routing,
    middleware and dependency solving (services/common/fastroutes.py: at digits size they cost
    more CPU than decoding, inference and encoding together); everything else goes to FastAPI."""

    def __init__(self, app: FastAPI, endpoints: tuple) -> None:
        self.app = app
        self.routes = FastRoutes(app.routes, endpoints)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or (found := self.routes.match(scope)) is None:
            return await self.app(scope, receive, send)
        endpoint, params = found
        try:
            response = await endpoint(Request(scope, receive), **params)
        except Exception as e:  # noqa: BLE001 - as FastAPI's handler below: a 500 that says why
            response = _internal_error(e)
        await response(scope, receive, send)


def create_app(server: ModelServer) -> FastInference:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for b in server.batchers.values():
            b.start()
        freeze_startup_heap(server.platform)  # models are loaded: keep full GCs off them
        yield
        # uvicorn has already waited for open requests; drain whatever is still queued.
        for b in server.batchers.values():
            await b.close()
        log.info("batch queues drained")

    app = FastAPI(
        title=f"{server.platform} OIP v2 server",
        docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan,
    )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        return _internal_error(exc)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return _error(exc.status, exc.message)

    @app.get("/v2")
    async def server_metadata() -> Response:
        return _json(
            {"name": server.platform, "version": server.server_version, "extensions": EXTENSIONS}
        )

    @app.get("/v2/health/live")
    async def live() -> Response:
        return _json({"live": True})

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return _json({"ready": True})

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str | None = None) -> Response:
        return _json(server.metadata(server.lookup(name, version)))

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None) -> Response:
        model = server.lookup(name, version)
        return _json({"name": model.name, "version": model.version, "ready": True})

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(request: Request, name: str, version: str | None = None) -> Response:
        return await server.infer(request, name, version)

    @app.post("/v2/repository/index")
    async def repository_index() -> Response:
        return _json(server.repository_index())

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=server.metrics.content_type)

    return FastInference(app, (infer,))
