"""TF Serving REST API: model status, metadata, :predict (row "instances" or columnar "inputs")."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from model_store.manifest import TensorSpec
from services.common.codecs import (
    OIP_TO_TF,
    CodecError,
    decode_tfserving_predict,
    encode_tfserving_predict,
)
from services.gateway.errors import BadRequest
from services.gateway.payload import InferRequest
from services.gateway.transport import context, gateway, json_response, parse_json, read_body
from services.gateway.validation import check_arrays

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
    body = await read_body(request, s.gateway_max_payload_bytes, s.gateway_timeout_s)
    dtypes = {spec.name: spec.numpy_dtype for spec in manifest.signature.inputs}
    try:
        arrays, row_format = decode_tfserving_predict(parse_json(body), dtypes)
    except CodecError as e:
        raise BadRequest(str(e)) from None
    batch = check_arrays(manifest, arrays)
    req = InferRequest(manifest, batch, ctx.request_id, tfs_body=body, row_format=row_format,
                       _arrays=arrays)
    _, resp = await gw.infer(targets, req, ctx)
    if resp.tfs_body is not None:
        return Response(resp.tfs_body, media_type="application/json")
    assert resp.arrays is not None
    return Response(orjson.dumps(encode_tfserving_predict(resp.arrays, row_format)),
                    media_type="application/json")


@router.get("/v1/models/{model}", summary="Model status")
@router.get("/v1/models/{model}" + VERSIONED, summary="Model version status")
async def model_status(request: Request, model: str, version: str | None = None) -> Response:
    gw, ctx = gateway(request), context(request)
    ctx.endpoint = "status"
    targets = gw.router.resolve(model, version)
    ctx.model = targets[0].model.name
    t, reason = await gw.first_ready(targets)
    if t is not None:
        ctx.runtime = ctx.served_by = t.runtime
    state, code = ("AVAILABLE", "OK") if t else ("UNKNOWN", "UNAVAILABLE")
    return json_response({"model_version_status": [{
        "version": (t or targets[0]).version,
        "state": state,
        "status": {"error_code": code, "error_message": reason},
    }]})


def _tf_tensor(spec: TensorSpec) -> dict[str, Any]:
    return {
        "dtype": OIP_TO_TF[spec.datatype],
        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in spec.shape],
                         "unknown_rank": False},
        "name": spec.name,
    }


@router.get("/v1/models/{model}/metadata", summary="Model metadata (serving_default signature)")
@router.get("/v1/models/{model}" + VERSIONED + "/metadata", summary="Model version metadata")
async def model_metadata(request: Request, model: str, version: str | None = None) -> Response:
    gw, ctx = gateway(request), context(request)
    ctx.endpoint = "metadata"
    t = gw.router.resolve(model, version)[0]
    ctx.model, ctx.runtime, ctx.served_by = t.model.name, t.runtime, t.runtime
    sig = t.model.signature
    return json_response({
        "model_spec": {"name": model, "signature_name": "", "version": t.version},
        "metadata": {"signature_def": {"signature_def": {"serving_default": {
            "inputs": {s.name: _tf_tensor(s) for s in sig.inputs},
            "outputs": {s.name: _tf_tensor(s) for s in sig.outputs},
            "method_name": "tensorflow/serving/predict",
        }}}},
    })
