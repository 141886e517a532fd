"""Open Inference Protocol v2 REST (+ binary tensor extension, + Triton's repository index)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from contract.codec import InferRequest, header_length
from services.gateway.backends.base import Call
from services.gateway.errors import BadRequest, GatewayError
from services.gateway.routing import Target
from services.gateway.transport import (
    context,
    gateway,
    header,
    json_response,
    parse_json,
    read_body,
)

router = APIRouter(tags=["Open Inference Protocol v2"])
VERSIONED = "/versions/{version}"
INDEX_BODY_LIMIT = 64 * 1024  # the index request is {"ready": true} at most

INFER_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "OIP inference request; with the binary tensor extension the JSON part is "
        "followed by raw tensor bytes and its length is sent in Inference-Header-Content-Length.",
        "content": {"application/json": {"example": {
            "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                        "data": [0.1, 0.2, 0.3, 0.4]}],
            "parameters": {"binary_data_output": False},
        }}},
    }
}


@router.get("/v2", summary="Server metadata")
async def server_metadata() -> Response:
    return json_response({"name": "servebench-gateway", "version": "0.1.0",
                          "extensions": ["binary_tensor_data", "model_repository"]})


@router.get("/v2/health/live", summary="Server live (no API key needed)")
async def live() -> Response:
    return json_response({"live": True})


@router.get("/v2/health/ready",
            summary="Server ready: every routable model has a reachable backend")
async def ready(request: Request) -> Response:
    ok, reason = gateway(request).server_ready()
    if not ok:
        return json_response({"ready": False, "error": f"not ready: {reason}"}, 400)
    return json_response({"ready": True})


def _metadata(t: Target, name: str, targets: list[Target]) -> dict[str, Any]:
    m = t.model
    spec = lambda s: {"name": s.name, "datatype": s.datatype, "shape": s.shape}  # noqa: E731
    return {
        "name": name,
        "versions": [t.version],
        "platform": t.runtime,
        "inputs": [spec(s) for s in m.signature.inputs],
        "outputs": [spec(s) for s in m.signature.outputs],
        "parameters": {
            "runtime": t.runtime,
            "target": t.name,
            "candidates": [c.name for c in targets],
            "parity": {a.format: a.parity.model_dump() for a in m.artifacts.values()},
            "parity_ok": t.artifact.parity.ok,
            "source": m.source.model_dump(exclude_none=True),
        },
    }


@router.get("/v2/models/{model}", summary="Model metadata (signature, parity, backend view)")
@router.get("/v2/models/{model}" + VERSIONED, summary="Model metadata of one version")
async def model_metadata(request: Request, model: str, version: str | None = None) -> Response:
    gw, ctx = gateway(request), context(request)
    ctx.endpoint = "metadata"
    targets = gw.router.resolve(model, version)
    t = targets[0]
    ctx.model, ctx.runtime, ctx.served_by = t.model.name, t.runtime, t.runtime
    doc = _metadata(t, model, targets)
    if gw.health.available(t.runtime):
        try:
            doc["parameters"]["backend_metadata"] = await gw.backends[t.runtime].metadata(t.model)
        except Exception as e:  # best effort: the manifest already answers
            doc["parameters"]["backend_metadata"] = {"error": str(e) or type(e).__name__}
    return json_response(doc)


@router.get("/v2/models/{model}/ready", summary="Model ready")
@router.get("/v2/models/{model}" + VERSIONED + "/ready", summary="Model version ready")
async def model_ready(request: Request, model: str, version: str | None = None) -> Response:
    gw, ctx = gateway(request), context(request)
    ctx.endpoint = "ready"
    targets = gw.router.resolve(model, version)
    ctx.model = targets[0].model.name
    t, reason = await gw.first_ready(targets)
    if t is None:
        raise GatewayError(f"{model} is not ready: {reason}", status=400)
    ctx.runtime = ctx.served_by = t.runtime
    return json_response({"name": model, "ready": True})


@router.post("/v2/models/{model}/infer", summary="Inference", openapi_extra=INFER_DOC)
@router.post("/v2/models/{model}" + VERSIONED + "/infer", summary="Inference on one version",
             openapi_extra=INFER_DOC)
async def infer(request: Request, model: str, version: str | None = None) -> Response:
    gw, ctx = gateway(request), context(request)
    ctx.endpoint = "infer"
    s = gw.settings
    targets = gw.router.resolve(model, version)
    manifest = targets[0].model
    sig = manifest.signature
    ctx.model = manifest.name
    body = await read_body(request, s.gateway_max_payload_bytes, s.http_body_timeout_s)
    # Header-level checks only (names, datatypes, shapes, counts, binary sizes): values are
    # decoded only when a backend needs another wire form.
    req = InferRequest.from_oip(body, header_length(header(request, b"inference-header-content-length")))
    batch = req.validate(sig, gw.limits(manifest))
    target, answer = await gw.infer(targets, Call(manifest, req, batch, ctx.request_id), ctx)
    binary = req.binary_outputs(sig)
    if answer.body is not None and (answer.binary_ok or not binary):
        content, hl = answer.body, answer.header_length  # the backend's answer fits: as is
    else:
        resp = answer.decoded().select(req.output_names(sig))
        resp.id, resp.model_version = req.id, target.version
        content, hl = resp.to_oip(binary)
    if hl is None:
        return Response(content, media_type="application/json")
    return Response(content, media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(hl)})


@router.post("/v2/repository/index", summary="Every model and (model, runtime) pair with its state")
async def repository_index(request: Request) -> Response:
    gw, ctx = gateway(request), context(request)
    ctx.endpoint = "index"
    body = await read_body(request, INDEX_BODY_LIMIT, gw.settings.http_body_timeout_s)
    doc = parse_json(body) if body.strip() else {}
    if not isinstance(doc, dict) or not isinstance(doc.get("ready", False), bool):
        raise BadRequest('the index request must be a JSON object like {"ready": true}')
    entries = await gw.index()
    if isinstance(doc, dict) and doc.get("ready"):
        entries = [e for e in entries if e["state"] == "READY"]
    return json_response(entries)
