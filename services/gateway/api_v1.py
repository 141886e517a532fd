"""TF Serving REST API: model status, metadata, :predict (row "instances" or columnar "inputs")."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from contract.codec import InferRequest
from services.gateway import operations as ops
from services.gateway.backends.base import Call
from services.gateway.transport import context, gateway, json_response, read_body

router = APIRouter(tags=["TF Serving REST"])
VERSIONED = "/versions/{version}"

PREDICT_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"example": {"instances": [[0.1, 0.2, 0.3, 0.4]]}}},
    }
}


@router.post("/v1/models/{model}:predict", summary="Predict", openapi_extra=PREDICT_DOC)
@router.post("/v1/models/{model}" + VERSIONED + ":predict", summary="Predict on one version",
             openapi_extra=PREDICT_DOC)
async def predict(request: Request, model: str, version: str | None = None) -> Response:
    gw, ctx = gateway(request), context(request)
    ctx.endpoint = "predict"
    s = gw.settings
    targets = gw.router.resolve(model, version)
    manifest = targets[0].model
    ctx.model = manifest.name
    body = await read_body(request, s.gateway_max_payload_bytes, s.http_body_timeout_s)
    # Row "instances" (values, or objects keyed by input name) or columnar "inputs"; the codec
    # refuses an unknown signature_name. The TF Serving backend gets `body` as received.
    req, row_format = InferRequest.from_tfserving(body, manifest.signature)
    batch = req.validate(manifest.signature, gw.limits(manifest))
    call = Call(manifest, req, batch, ctx.request_id, tfs_body=body)
    _, answer = await gw.infer(targets, call, ctx)
    if answer.tfs_body is not None:
        return Response(answer.tfs_body, media_type="application/json")
    return Response(answer.decoded().to_tfserving(row_format), media_type="application/json")


@router.get("/v1/models/{model}", summary="Model status")
@router.get("/v1/models/{model}" + VERSIONED, summary="Model version status")
async def model_status(request: Request, model: str, version: str | None = None) -> Response:
    ctx = context(request)
    ctx.endpoint = "status"
    return json_response(await ops.tf_model_status(gateway(request), ctx, model, version))


@router.get("/v1/models/{model}/metadata", summary="Model metadata (serving_default signature)")
@router.get("/v1/models/{model}" + VERSIONED + "/metadata", summary="Model version metadata")
async def model_metadata(request: Request, model: str, version: str | None = None) -> Response:
    ctx = context(request)
    ctx.endpoint = "metadata"
    t = ops.describe_target(gateway(request), ctx, model, version)
    return json_response({
        "model_spec": {"name": model, "signature_name": "", "version": t.version},
        "metadata": {"signature_def": ops.signature_def_map(t.model.signature)},
    })
