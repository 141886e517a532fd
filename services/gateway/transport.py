"""Small HTTP helpers shared by the OIP and TF Serving front ends."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from services.gateway.context import CTX, RequestContext
from services.gateway.core import Gateway
from services.gateway.errors import BadRequest, GatewayError, PayloadTooLarge


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
    """The raw body (no Content-Type required: tritonclient sends none), at most `limit` bytes,
    read straight from the ASGI channel; a body that comes in pieces must finish in `timeout`."""
    declared = header(request, b"content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"request body of {declared} bytes exceeds the limit of {limit} bytes"
        )
    chunks: list[bytes] = []
    size, more = 0, True
    try:
        async with asyncio.timeout(timeout):
            while more:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    raise BadRequest("the client disconnected before sending its body")
                chunk, more = message.get("body", b""), message.get("more_body", False)
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise GatewayError(f"the request body did not arrive within {timeout} s", 408) from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"malformed JSON: {e}") from None
