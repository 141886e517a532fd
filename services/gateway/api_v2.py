"""Open Inference Protocol v2 REST (+ binary tensor extension, + Triton's repository index)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from contract.codec import InferRequest, header_length
from services.gateway import operations as ops
from services.gateway.errors import BadRequest, GatewayError
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
    return json_response(ops.SERVER_METADATA)


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


@router.get("/v2/models/{model}", summary="Model metadata (signature, parity, backend view)")
@router.get("/v2/models/{model}" + VERSIONED, summary="Model metadata of one version")
async def model_metadata(request: Request, model: str, version: str | None = None) -> Response:
    gw, ctx = gateway(request), context(request)
    ctx.endpoint = "metadata"
    doc, t = ops.describe(gw, ctx, model, version)
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
    ok, reason = await ops.readiness(gw, ctx, model, version)
    if not ok:
        raise GatewayError(f"{model} is not ready: {reason}", status=400)
    return json_response({"name": model, "ready": True})


@router.post("/v2/models/{model}/infer", summary="Inference", openapi_extra=INFER_DOC)
@router.post("/v2/models/{model}" + VERSIONED + "/infer", summary="Inference on one version",
             openapi_extra=INFER_DOC)
async def infer(request: Request, model: str, version: str | None = None) -> Response:
    gw, ctx = gateway(request), context(request)
    ctx.endpoint = "infer"
    s = gw.settings
    targets = ops.infer_targets(gw, ctx, model, version)
    body = await read_body(request, s.gateway_max_payload_bytes, s.http_body_timeout_s)
    req = InferRequest.from_oip(body, header_length(header(request, b"inference-header-content-length")))
    target, answer = await ops.infer(gw, ctx, targets, req)
    binary = req.binary_outputs(target.model.signature)
    if answer.body is not None and (answer.binary_ok or not binary):
        content, hl = answer.body, answer.header_length  # the backend's answer fits: as is
    else:
        content, hl = ops.shaped(answer, req, target).to_oip(binary)
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
    return json_response(await ops.repository_index(gw, doc.get("ready", False)))


@router.get("/v2/shadow", summary="Shadow traffic: live parity per (model, primary, shadow)")
async def shadow_report(request: Request) -> Response:
    """Totals since start per (model, primary runtime, shadow runtime): compared, failed and
    skipped shadow requests, rows compared, top-1 disagreements and their rate, the largest
    absolute difference seen, the last failure. Empty unless GATEWAY_SHADOW is set."""
    gw, ctx = gateway(request), context(request)
    ctx.endpoint = "shadow"
    return json_response(gw.shadow.report())
