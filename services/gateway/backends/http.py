"""Keep-alive connection pool per backend origin: a small HTTP/1.1 client on asyncio + httptools.

Why not a library: on this machine aiohttp's client costs ~140 us of CPU per request (request
object, auto headers, stream writer, timers, payload registry), ~27% of the gateway's CPU at
saturation; httpx ~700 us. The gateway needs one thing from HTTP: send a complete body to a known
origin and read a complete answer on a kept-alive connection. This does only that, on an asyncio
Protocol with httptools' llhttp parser (the one uvicorn parses requests with).

Errors are the three the gateway distinguishes: ConnectTimeout (no connection in time),
ConnectionRefusedError (no connection), Disconnected (the server hung up or sent something that is
not HTTP before a complete answer); plus ResponseTooLarge (a body above max_body)."""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from typing import Mapping
from urllib.parse import quote

import httptools

IDLE_S = 4.0  # drop idle connections before uvicorn's 5 s keep-alive timeout closes them
MAX_BODY = 256 * 1024 * 1024  # default bound of one response body (bytes)

Response = tuple[int, dict[str, str], bytes]


class Disconnected(ConnectionError):
    """The server closed the connection before a complete response (or sent a malformed one)."""


class ConnectTimeout(OSError):
    """No TCP connection within the connect timeout."""


class ResponseTooLarge(ValueError):
    """The response body is above the pool's max_body."""


class _Stale(Disconnected):
    """Closed before the first byte of the answer: on a reused connection, the server may have
    closed it while idle (keep-alive race), so the request is worth one retry."""


class _Connection(asyncio.Protocol):
    """One TCP connection, one exchange at a time (HTTP/1.1 without pipelining)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_body: int) -> None:
        self.loop = loop
        self.max_body = max_body
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self._answer: asyncio.Future[Response] | None = None

    # --- one exchange ---------------------------------------------------------------------------

    def exchange(self, data: list[bytes], head_only: bool) -> asyncio.Future[Response]:
        """Send `data`; the future resolves with the answer or fails with Disconnected."""
        assert self.transport is not None and self._answer is None
        self._answer = answer = self.loop.create_future()
        self._head_only = head_only  # a HEAD answer has headers only, whatever they say
        self._received = False
        self._status = 0
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._delimited = False  # Content-Length or chunked; else the body runs to EOF
        self._headers_done = False
        self.keep_alive = False
        if self.closed:  # closed by the server while it waited to be handed over
            self._fail(_Stale("server closed the connection before the request"))
        else:
            self.transport.writelines(data)
        return answer

    def _finish(self, keep_alive: bool) -> None:
        answer, self._answer = self._answer, None
        self.keep_alive = keep_alive and not self.closed
        if answer is not None and not answer.done():
            answer.set_result((self._status, self._headers, b"".join(self._body)))

    def _fail(self, error: Exception) -> None:
        answer, self._answer = self._answer, None
        self.close()
        if answer is not None and not answer.done():
            answer.set_exception(error)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # --- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:  # small requests and answers: never wait for Nagle
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self._answer is None:  # bytes nobody asked for: the connection is out of step
            return self.close()
        self._received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            return self._fail(Disconnected(f"malformed response: {e}"))
        if self._answer is None:
            return
        if self._size > self.max_body:
            self._fail(ResponseTooLarge(
                f"response body above {self.max_body} bytes ({self._size} bytes read so far)"))
        elif self._head_only and self._headers_done:
            # llhttp expects the body the headers announce; a HEAD answer has none, so this
            # parser is mid-message: a fresh one for the connection's next answer.
            self.parser = httptools.HttpResponseParser(self)
            self._finish(self._keep_alive)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._answer is None:
            return
        if self._headers_done and not self._delimited and self._status >= 200:
            return self._finish(False)  # the body was delimited by the end of the connection
        why = f": {exc}" if exc else ""
        if not self._received:
            self._fail(_Stale(f"server closed the connection before answering{why}"))
        else:
            self._fail(Disconnected(f"server closed the connection mid-answer{why}"))

    # --- httptools callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._answer is None:  # a second answer to one request: out of step, drop it
            raise Disconnected("more than one response to a request")

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        if key == "content-length" or key == "transfer-encoding":
            self._delimited = True
        self._headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._status = self.parser.get_status_code()
        self._keep_alive = self.parser.should_keep_alive()
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size <= self.max_body:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._status < 200:  # 100 Continue and the like: the real answer follows
            self._headers, self._headers_done = {}, False
            return
        if self._size <= self.max_body:
            self._finish(self.parser.should_keep_alive())


class HTTPPool:
    """Keep-alive connections to one origin (http://host:port): at most max_connections open;
    idle ones are reused last-in first-out, callers beyond the limit wait first-in first-out
    (bounded by their own deadline: the caller wraps request() in asyncio.timeout)."""

    def __init__(self, host: str, port: int, max_connections: int, connect_timeout: float,
                 max_body: int = MAX_BODY) -> None:
        self.host, self.port = host, port
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.max_body = max_body
        name = f"[{host}]" if ":" in host else host  # an IPv6 address, bracketed as in URLs
        self.url = f"http://{name}:{port}"
        self._host_line = f"Host: {name if port == 80 else f'{name}:{port}'}\r\n"
        self._loop: asyncio.AbstractEventLoop | None = None

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        # Lazily, per event loop: connections and waiters belong to the loop that made them.
        self._loop = loop
        self._idle: list[_Connection] = []  # last in, first out: the warmest connection first
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._taken = 0  # connections lent out or being opened

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, lower-cased headers, body). Raises ConnectTimeout, ConnectionRefusedError,
        Disconnected (server hung up), ResponseTooLarge; the caller bounds the whole call with
        its own deadline."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        data = [self._head(method, path, body, headers), body]
        conn = await self._take()
        try:
            if conn is None:
                conn = await self._connect()
            try:
                answer = await conn.exchange(data, method == "HEAD")
            except _Stale:
                # The server closed the connection before a byte of the answer. On a reused
                # connection that is most likely the keep-alive race (it closed it while idle, as
                # our request went out), so it is sent once more on a fresh connection, as aiohttp
                # does. Safe for inference POSTs too: nothing of an answer arrived, and inference
                # is a pure function of its inputs. A fresh connection failing so is not retried.
                if not conn.reused:
                    raise
                conn = await self._connect()
                answer = await conn.exchange(data, method == "HEAD")
        except BaseException:
            # Cancelled or failed mid-exchange: the connection's state is unknown, never reuse it.
            if conn is not None:
                conn.close()
            self._give_back(None)
            raise
        if not conn.keep_alive:  # Connection: close, HTTP/1.0, a body delimited by EOF
            conn.close()
        self._give_back(conn)
        return answer

    def _head(self, method: str, path: str, body: bytes,
              headers: Mapping[str, str] | None) -> bytes:
        if not (path.isascii() and path.isprintable()) or " " in path:
            path = quote(path, safe="/?&=%:@!$'()*+,;~")
        lines = [f"{method} {path} HTTP/1.1\r\n", self._host_line,
                 f"Content-Length: {len(body)}\r\n"]
        if headers:
            lines += [f"{k}: {v}\r\n" for k, v in headers.items()]
        lines.append("\r\n")
        head = "".join(lines)
        if head.count("\n") != len(lines):  # a CR or LF inside a header would split the request
            raise ValueError(f"header or path with a line break: {head!r}")
        return head.encode()

    async def _take(self) -> _Connection | None:
        """A kept-alive connection, or None: a slot to open a new one in."""
        self._taken += 1
        now = self._loop.time()  # type: ignore[union-attr]
        while self._idle:
            conn = self._idle.pop()
            if conn.closed or conn.transport.is_closing():  # by the server, while idle
                continue
            if now - conn.idle_since < IDLE_S:
                return conn
            for old in (conn, *self._idle):  # expired; the ones below it idled longer still
                old.close()
            self._idle.clear()
        if self._taken <= self.max_connections:
            return None
        self._taken -= 1
        waiter: asyncio.Future[_Connection | None] = self._loop.create_future()  # type: ignore
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed over as we were cancelled
                self._give_back(waiter.result())
            elif waiter in self._waiters:  # (unless a hand-over already skipped it)
                self._waiters.remove(waiter)
            raise

    def _give_back(self, conn: _Connection | None) -> None:
        """Return a slot: to the first waiter (with the connection if it can be reused), else to
        the pool."""
        if conn is not None and conn.closed:
            conn = None
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                if conn is not None:
                    conn.reused = True
                waiter.set_result(conn)
                return
        self._taken -= 1
        if conn is not None:
            conn.reused = True
            conn.idle_since = self._loop.time()  # type: ignore[union-attr]
            self._idle.append(conn)

    async def _connect(self) -> _Connection:
        loop = self._loop
        assert loop is not None
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, self.max_body), self.host, self.port)
        except TimeoutError:
            raise ConnectTimeout(f"no connection within {self.connect_timeout} s") from None
        except OSError as e:
            raise ConnectionRefusedError(e.errno, e.strerror or str(e)) from None
        return conn

    async def close(self) -> None:
        if self._loop is None:
            return
        for conn in self._idle:
            conn.close()
        self._idle.clear()
