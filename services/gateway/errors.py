"""Every failure is a GatewayError carrying its HTTP status; the body is always {"error": "..."}
(what tritonclient and TF Serving clients expect). The gRPC front end answers the same failures
with the status code GRPC_STATUS gives for their HTTP status, and the same message."""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request
from grpc import StatusCode
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from contract.codec import CodecError
from services.gateway.context import CTX


class GatewayError(Exception):
    status = 500

    def __init__(self, message: str, status: int | None = None, runtime: str | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.runtime = runtime  # the backend the error came from, if any (X-Served-By)


class BadRequest(GatewayError):
    status = 400


class NotFound(GatewayError):
    status = 404


class PayloadTooLarge(GatewayError):
    status = 413


class BackendRejected(GatewayError):
    """The backend answered 4xx: passed through with its status."""


class BackendFailed(GatewayError):
    """The backend answered 5xx or broke the connection mid-request."""

    status = 502


class BackendLost(BackendFailed):
    """The connection broke before a complete answer (the backend was killed, restarted or reset
    it; TorchServe's worker died): a bare name is retried once on the next candidate (inference
    is a pure function of its inputs, so a retry is safe; nothing partial reached the client)."""


class BackendUnavailable(GatewayError):
    """Nothing reached the backend (refused, connect timeout, circuit open): safe to fail over."""

    status = 503


class ModelUnavailable(GatewayError):
    """The backend answered 503 for the model (it failed to load there, or has no worker): the
    backend is up, this model is not; a bare name fails over to the next candidate."""

    status = 503


class BackendTimeout(GatewayError):
    status = 504


# HTTP status -> gRPC status code; anything else is INTERNAL. 413 (a batch above MAX_BATCH_SIZE
# or a model's fixed batch, too many elements) is RESOURCE_EXHAUSTED: gRPC itself answers a message
# above GATEWAY_MAX_PAYLOAD_BYTES so, and the request is well-formed, only too big (a smaller one
# succeeds), which INVALID_ARGUMENT would not say. 499: the client went away (cancelled, deadline).
GRPC_STATUS: dict[int, StatusCode] = {
    400: StatusCode.INVALID_ARGUMENT,
    401: StatusCode.UNAUTHENTICATED,
    404: StatusCode.NOT_FOUND,
    408: StatusCode.DEADLINE_EXCEEDED,
    413: StatusCode.RESOURCE_EXHAUSTED,
    499: StatusCode.CANCELLED,
    501: StatusCode.UNIMPLEMENTED,
    502: StatusCode.UNAVAILABLE,
    503: StatusCode.UNAVAILABLE,
    504: StatusCode.DEADLINE_EXCEEDED,
}


def grpc_status(http_status: int) -> StatusCode:
    return GRPC_STATUS.get(http_status, StatusCode.INTERNAL)


def internal_message(e: Exception) -> str:
    """What a client is told about an unexpected exception (it is logged with its traceback)."""
    return f"internal error: {type(e).__name__}: {e}"


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps({"error": message}),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def gateway_error_response(request: Request, e: GatewayError) -> Response:
    ctx = request.scope.get(CTX)
    if ctx is not None and e.runtime:
        ctx.served_by = e.runtime  # the middleware writes X-Served-By
    return error_response(e.status, e.message)


def codec_error_response(_: Request, e: CodecError) -> Response:
    """A request the codec refused: its status (400, or 413 for a limit) and its message."""
    return error_response(e.status, e.message)


def install(app: FastAPI) -> None:
    app.add_exception_handler(GatewayError, gateway_error_response)  # type: ignore[arg-type]
    app.add_exception_handler(CodecError, codec_error_response)  # type: ignore[arg-type]

    @app.exception_handler(HTTPException)
    async def _http(_: Request, e: HTTPException) -> Response:
        return error_response(e.status_code, str(e.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, e: Exception) -> Response:
        return error_response(500, internal_message(e))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, e: RequestValidationError) -> Response:
        msg = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        return error_response(400, msg)
