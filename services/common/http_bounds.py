"""Bounds every HTTP server of the stack shares (the gateway and our model servers): a deadline on
a request's headers, on its body, a body size limit, an idle keep-alive timeout and a cap on
concurrent connections.

uvicorn times out an idle keep-alive connection only after it has answered something: a client
that connects and sends nothing, or sends its headers a byte at a time, holds a connection (and a
file descriptor) for as long as it likes. BoundedHttpToolsProtocol closes such a connection when
the headers of a request are not complete `header_timeout` seconds after the connection opened or
the request began.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_408_BODY = b'{"error": "request headers not received in time"}'
REQUEST_TIMEOUT_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                       b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
                       % (len(_408_BODY), _408_BODY))  # fmt: skip


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout: float = 10.0  # set per server by uvicorn_config()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _headers_late(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:  # nothing else is being written
            self.transport.write(REQUEST_TIMEOUT_408)
        self.transport.close()


def uvicorn_config(*, header_timeout: float, keepalive_timeout: float,
                   max_connections: int) -> dict[str, Any]:  # fmt: skip
    """uvicorn.Config keyword arguments: the bounded protocol, keep-alive and connection cap
    (beyond `max_connections` concurrent connections uvicorn answers 503 at once)."""
    protocol = type("HttpToolsProtocol", (BoundedHttpToolsProtocol,),
                    {"header_timeout": header_timeout})
    return {"http": protocol, "timeout_keep_alive": keepalive_timeout,
            "limit_concurrency": max_connections, "h11_max_incomplete_event_size": 64 * 1024}


class BodyError(Exception):
    """The body broke a bound (413 too large, 408 too slow, 400 the client left)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


async def read_body(receive: Callable[[], Awaitable[dict]], declared: str | None, limit: int,
                    timeout: float) -> bytes:  # fmt: skip
    """The raw body from the ASGI channel, at most `limit` bytes (checked against Content-Length
    first, then while reading), complete within `timeout` seconds."""
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyError(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size, more = 0, True
    try:
        async with asyncio.timeout(timeout):
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise BodyError(400, "the client disconnected before sending its body")
                chunk, more = message.get("body", b""), message.get("more_body", False)
                size += len(chunk)
                if size > limit:
                    raise BodyError(413, f"request body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise BodyError(408, f"the request body did not arrive within {timeout} s") from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
