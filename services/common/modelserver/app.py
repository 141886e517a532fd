"""Open Inference Protocol v2 REST transport (FastAPI). Bodies are read raw and parsed with orjson
(clients such as tritonclient send no Content-Type); tensors go through services.common.codecs."""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from services.common.codecs import (
    CodecError,
    decode_tensors,
    encode_binary_tensors,
    oip_datatype,
    split_binary_body,
)
from services.common.modelserver.batching import Batcher
from services.common.modelserver.metrics import UNKNOWN_MODEL, Metrics
from services.common.modelserver.runtime import ModelRuntime
from services.settings import StackSettings

log = logging.getLogger(__name__)

EXTENSIONS = ["binary_tensor_data"]
BINARY_HEADER = "Inference-Header-Content-Length"


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
        failed: dict[str, str],
        settings: StackSettings,
    ) -> None:
        self.platform = platform
        self.server_version = server_version
        self.models = models
        self.failed = failed
        self.metrics = Metrics()
        self.batchers = {
            name: Batcher(m, settings.batch_max_size, settings.batch_max_delay_ms, self.metrics)
            for name, m in models.items()
        }
        for m in models.values():
            self.metrics.info.labels(m.name, m.version, m.platform).set(1)

    def lookup(self, name: str, version: str | None) -> ModelRuntime:
        model = self.models.get(name)
        if model is None:
            if name in self.failed:
                raise ApiError(503, f"model {name!r} failed to load: {self.failed[name]}")
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
            try:
                body = await request.body()
            except ClientDisconnect:
                raise ApiError(499, "client closed the request") from None
            try:
                req, inputs, size = self._decode(model, request.headers.get(BINARY_HEADER), body)
                selected, binary = self._requested_outputs(model, req)
            except ApiError:
                raise
            except Exception as e:  # noqa: BLE001 - a decoding case not foreseen: still bad input
                log.exception("model %s: undecodable request", model.name)
                msg = f"could not decode the request: {type(e).__name__}: {e}"
                raise ApiError(400, msg) from None
            future = batcher.submit(inputs, size)
        finally:
            batcher.received()
        try:
            outputs = await future
        except Exception as e:  # noqa: BLE001 - the batcher logged it
            raise ApiError(500, f"inference failed in {model.platform}: {e}") from None
        if selected is not None:
            outputs = {k: outputs[k] for k in selected}
        return self._encode(model, req.get("id"), outputs, binary)

    def _decode(
        self, model: ModelRuntime, header_length: str | None, body: bytes
    ) -> tuple[dict[str, Any], dict[str, np.ndarray], int]:
        """(request JSON, validated inputs in manifest order, batch size); ApiError 400 if bad."""
        try:
            length = None if header_length is None else int(header_length)
        except ValueError:
            raise ApiError(400, f"{BINARY_HEADER} {header_length!r} is not an integer") from None
        try:
            json_part, binary = split_binary_body(body, length)
            try:
                req = orjson.loads(json_part)
            except orjson.JSONDecodeError as e:
                raise ApiError(400, f"request body is not valid JSON: {e}") from None
            if not isinstance(req, dict) or "inputs" not in req:
                raise ApiError(400, "request body must be a JSON object with an 'inputs' list")
            if not isinstance(req.get("id", ""), str):
                raise ApiError(400, "request 'id' must be a string")
            tensors = decode_tensors(req["inputs"], binary)
        except CodecError as e:
            raise ApiError(400, str(e)) from None
        expected = [s.name for s in model.inputs]
        for name in tensors:
            if name not in expected:
                raise ApiError(400, f"model {model.name!r} has no input {name!r}; "
                               f"its inputs are {expected}")
        inputs: dict[str, np.ndarray] = {}
        sizes = set()
        for spec in model.inputs:
            arr = tensors.get(spec.name)
            if arr is None:
                raise ApiError(400, f"input {spec.name!r} of model {model.name!r} is missing")
            if arr.dtype != spec.numpy_dtype:
                raise ApiError(400, f"input {spec.name!r} has datatype {oip_datatype(arr.dtype)}, "
                               f"model {model.name!r} takes {spec.datatype}")
            if arr.ndim != len(spec.shape) or any(
                want >= 0 and got != want for got, want in zip(arr.shape[1:], spec.shape[1:])
            ):
                raise ApiError(400, f"input {spec.name!r} has shape {list(arr.shape)}, model "
                               f"{model.name!r} takes {spec.shape} (-1: any size)")
            if arr.shape[0] == 0:
                raise ApiError(400, f"input {spec.name!r} has an empty batch (shape "
                               f"{list(arr.shape)}); send at least one sample")
            sizes.add(arr.shape[0])
            inputs[spec.name] = arr
        if len(sizes) > 1:
            raise ApiError(400, f"inputs disagree on the batch size: {sorted(sizes)}")
        return req, inputs, sizes.pop()

    @staticmethod
    def _requested_outputs(
        model: ModelRuntime, req: dict[str, Any]
    ) -> tuple[list[str] | None, set[str]]:
        """(names of the requested outputs or None for all, names to send as binary data)."""
        names = [s.name for s in model.outputs]
        params = req.get("parameters") or {}
        if not isinstance(params, dict):
            raise ApiError(400, "request 'parameters' must be an object")
        binary = set(names) if params.get("binary_data_output") is True else set()
        requested = req.get("outputs")
        if requested is None:
            return None, binary
        if not isinstance(requested, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str)
            and isinstance(o.get("parameters") or {}, dict)
            for o in requested
        ):
            raise ApiError(400, "'outputs' must be a list of objects with a 'name'")
        selected = []
        for o in requested:
            if o["name"] not in names:
                raise ApiError(400, f"model {model.name!r} has no output {o['name']!r}; "
                               f"its outputs are {names}")
            selected.append(o["name"])
            if (o.get("parameters") or {}).get("binary_data") is True:
                binary.add(o["name"])
        return selected, binary

    @staticmethod
    def _encode(
        model: ModelRuntime, request_id: str | None, outputs: dict[str, np.ndarray],
        binary: set[str],
    ) -> Response:
        head: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
        if request_id is not None:
            head["id"] = request_id
        if binary:
            head["outputs"], blob = encode_binary_tensors(outputs, binary)
            header = orjson.dumps(head)
            return Response(
                header + blob,
                200,
                headers={BINARY_HEADER: str(len(header))},
                media_type="application/octet-stream",
            )
        head["outputs"] = [
            {
                "name": k,
                "datatype": oip_datatype(v.dtype),
                "shape": list(v.shape),
                "data": np.ascontiguousarray(v).reshape(-1),
            }
            for k, v in outputs.items()
        ]
        return _json(head)


def create_app(server: ModelServer) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for b in server.batchers.values():
            b.start()
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
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")

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

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=server.metrics.content_type)

    return app
