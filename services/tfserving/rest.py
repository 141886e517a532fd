"""TF Serving's REST API (/v1/models/...), routed with TF Serving's own path regexes.

Every response carries `X-Served-By: tfserving-standin`; status and metadata bodies also carry a
top-level "served_by" field (TF Serving clients parse JSON loosely). Errors are {"error": "..."}
with TF Serving's status mapping: INVALID_ARGUMENT 400, NOT_FOUND 404.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import tensorflow as tf
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from contract.codec import (
    CodecError,
    decode_tfserving_predict,
    encode_tfserving_predict,
    has_bool_literal,
    parse_json,
)
from services.common.http_bounds import BodyError, read_body
from services.tfserving.models import Registry, ServingError, invalid, metadata_json, proto_json
from services.tfserving.predictor import Predictor

SERVED_BY = "tfserving-standin"
# tensorflow_serving/model_servers/http_rest_api_util.cc
PREDICT_RE = re.compile(
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
    r":(classify|regress|predict)"
)
STATUS_RE = re.compile(
    r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?"
)


def json_response(body: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
        headers={"X-Served-By": SERVED_BY},
    )


def create_app(registry: Registry, predictor: Predictor, about: dict) -> Starlette:
    async def predict(name: str, version: int | None, label: str | None, raw: bytes) -> Response:
        servable = registry.get(name, version, label)
        timer = predictor.metrics.codec_timer
        label = f"{servable.name}:{servable.version}"  # as the batcher's histograms
        with timer(label, "decode"):
            inputs, row_format, signature_name = decode(servable, raw)
        servable.validate(signature_name, inputs)
        outputs = await predictor.predict(servable, signature_name, inputs)
        with timer(label, "encode"):
            return json_response(encode_tfserving_predict(outputs, row_format))

    def decode(servable, raw: bytes) -> tuple[dict, bool, str]:
        try:
            body = parse_json(raw)
        except CodecError as e:
            raise invalid(f"JSON Parse error: {e}") from None
        if not isinstance(body, dict):
            raise invalid("JSON Value: request body is not an object")
        signature_name = body.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise invalid("'signature_name' must be a string")
        # The SavedModel's own SignatureDef (what TF Serving checks against), not the manifest:
        # the stand-in serves any signature of the SavedModel. Unknown name -> TF Serving's 400.
        dtypes = servable.input_dtypes(signature_name)
        try:
            inputs, row_format = decode_tfserving_predict(body, dtypes, has_bool_literal(raw))
        except CodecError as e:
            raise invalid(e.message) from None
        return inputs, row_format, signature_name

    async def dispatch(request: Request) -> Response:
        path, method = request.url.path, request.method
        try:
            m = PREDICT_RE.fullmatch(path) if method == "POST" else None
            if m:
                name, version, label, verb = m.groups()
                if verb != "predict":
                    raise invalid(f"the TF Serving stand-in implements :predict only, not :{verb}")
                s = predictor.settings
                try:
                    raw = await read_body(request.receive, request.headers.get("content-length"),
                                          s.server_max_body_bytes, s.http_body_timeout_s)
                except BodyError as e:
                    return json_response({"error": e.message}, e.status)
                return await predict(name, _int(version), label, raw)
            m = STATUS_RE.fullmatch(path) if method == "GET" else None
            if m:
                name, version, label, metadata = m.groups()
                if not name:
                    raise invalid("Missing model name in request.")
                if metadata:
                    body = metadata_json(registry.metadata(name, _int(version), label))
                else:
                    body = proto_json(registry.status(name, _int(version), label))
                return json_response({**body, "served_by": SERVED_BY})
            raise invalid(f"Malformed request: {method} {path}")
        except ServingError as e:
            return json_response({"error": e.message}, e.http_status)
        except tf.errors.InvalidArgumentError as e:  # validation should have caught it already
            return json_response({"error": e.message}, 400)

    async def describe(request: Request) -> Response:
        return json_response(about)

    async def metrics(request: Request) -> Response:
        return Response(predictor.metrics.render(), media_type=predictor.metrics.content_type,
                        headers={"X-Served-By": SERVED_BY})  # fmt: skip

    async def not_found(request: Request) -> Response:
        return json_response({"error": f"Not found: {request.url.path}"}, 404)

    return Starlette(
        routes=[
            Route("/v1/standin", describe, methods=["GET"]),
            # TF Serving's path when --monitoring_config_file enables Prometheus.
            Route("/monitoring/prometheus/metrics", metrics, methods=["GET"]),
            Route("/v1/{rest:path}", dispatch, methods=["GET", "POST"]),
            Route("/{rest:path}", not_found, methods=["GET", "POST", "PUT", "DELETE"]),
        ]
    )


def _int(version: str | None) -> int | None:
    return int(version) if version else None
