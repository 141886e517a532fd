"""Small HTTP helpers shared by the OIP and TF Serving front ends."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from services.common.http_bounds import BodyError
from services.common.http_bounds import read_body as bounded_read
from services.gateway.context import CTX, RequestContext
from services.gateway.core import Gateway
from services.gateway.errors import BadRequest, GatewayError


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def context(request: Request) -> RequestContext:
    return request.scope[CTX]


def json_response(doc: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json")


def header(request: Request, name: bytes) -> str | None:
    value = context(request).headers.get(name)
    return None if value is None else value.decode("latin-1")


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The raw body (no Content-Type required: tritonclient sends none), read straight from the
    ASGI channel within the stack's bounds (services/common/http_bounds.py)."""
    try:
        return await bounded_read(request.receive, header(request, b"content-length"), limit,
                                  timeout)
    except BodyError as e:
        raise GatewayError(e.message, e.status) from None


def parse_json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"malformed JSON: {e}") from None
