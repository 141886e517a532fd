"""The gateway's OpenAPI document says what the gateway really answers: FastAPI documents only 200
(and its own 422, which the gateway never sends: its validation errors are 400). Every error body
is {"error": "..."}; these are the statuses each kind of operation can produce."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST

ERROR_SCHEMA = {"type": "object", "required": ["error"],
                "properties": {"error": {"type": "string"}}}
WHY = {
    400: "Invalid request: the message names the field, shape, datatype or limit (ready routes: "
         "the pair cannot serve now, e.g. its circuit is open)",
    401: "Missing or wrong API key (Authorization: Bearer <key>)",
    404: "Unknown model, runtime or version",
    408: "The request body did not arrive in time",
    413: "Request body, batch or element count over the limit",
    502: "The backend failed or broke the connection",
    503: "No backend can serve the model now (down, circuit open, model failed to load)",
    504: "The backend did not answer in time",
}
HEALTH = ("/v2/health/live", "/v2/health/ready")


def _statuses(path: str, method: str) -> list[int]:
    if path in HEALTH:
        return [503] if path.endswith("ready") else []
    out = [401]
    if "{model}" in path:
        out += [400, 404]
    if method == "post":
        out += [400, 408, 413]
    if path.endswith(("/infer", ":predict")):
        out += [502, 503, 504]
    return sorted(set(out))


def _document(schema: dict[str, Any]) -> dict[str, Any]:
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            for status in _statuses(path, method):
                responses[str(status)] = {
                    "description": WHY[status],
                    "content": {"application/json": {"schema": ERROR_SCHEMA}}}
            if path.endswith("/infer"):  # binary outputs: the binary tensor extension
                responses["200"]["content"]["application/octet-stream"] = {"schema": {
                    "type": "string", "format": "binary",
                    "description": "JSON header (its length in Inference-Header-Content-Length) "
                                   "followed by raw output tensors"}}
    metrics = schema["paths"].get("/metrics", {}).get("get")
    if metrics:
        metrics["responses"]["200"]["content"] = {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}
    schema.get("components", {}).get("schemas", {}).pop("HTTPValidationError", None)
    schema.get("components", {}).get("schemas", {}).pop("ValidationError", None)
    return schema


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

