"""The gateway's HTTP/1.1 connection pool (backends/http.py) against raw servers with awkward
habits: every edge case is a server in the test writing exactly the bytes it means."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Awaitable, Callable

import pytest
import uvloop
from hypothesis import HealthCheck, given, settings, strategies as st

from services.gateway.backends import http
from services.gateway.backends.http import ConnectTimeout, Disconnected, HTTPPool, ResponseTooLarge
from tests.conftest import free_port


def ok(body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


class Server:
    """A raw server on 127.0.0.1. For each request, `answer(writer, conn, n)` (conn: the
    connection's number from 1, n: the request's number on it from 1) writes what it likes and
    returns whether to go on serving that connection."""

    def __init__(self, answer: Callable[[asyncio.StreamWriter, int, int], Awaitable[bool]],
                 port: int = 0) -> None:
        self.answer, self.port = answer, port
        self.accepts = self.open = self.max_open = 0
        self.requests: list[bytes] = []  # every request as received
        self.eofs: list[int] = []  # connections the client closed

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepts += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        conn, n = self.accepts, 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    self.eofs.append(conn)
                    break
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                self.requests.append(head + await reader.readexactly(length))
                n += 1
                if not await self.answer(writer, conn, n):
                    break
        except ConnectionError:
            self.eofs.append(conn)
        finally:
            self.open -= 1
            writer.close()


def always(response: bytes, delay: float = 0.0):
    async def answer(writer: asyncio.StreamWriter, conn: int, n: int) -> bool:
        await asyncio.sleep(delay)
        writer.write(response)
        return True
    return answer


LOOP = {"run": asyncio.run}


@pytest.fixture(autouse=True, params=["asyncio", "uvloop"])
def event_loop_kind(request: pytest.FixtureRequest) -> None:
    """Every case on asyncio's own loop and on uvloop (production's): transports differ."""
    LOOP["run"] = uvloop.run if request.param == "uvloop" else asyncio.run


def run(coro: Awaitable) -> object:
    return LOOP["run"](coro)  # type: ignore[operator]


def test_keep_alive_serves_sequential_requests_on_one_connection() -> None:
    async def main() -> None:
        async with Server(always(ok(b"ok", b"X-Served-By: me\r\n"))) as s:
            pool = HTTPPool("127.0.0.1", s.port, 4, 1.0)
            for _ in range(5):
                answer = await pool.request("POST", "/v2/x", b"{}", {"Content-Type": "a/b"})
                assert answer == (200, {"content-length": "2", "x-served-by": "me"}, b"ok")
            assert s.accepts == 1
            assert s.requests[0] == (b"POST /v2/x HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                                     b"Content-Length: 2\r\nContent-Type: a/b\r\n\r\n{}" % s.port)
            await pool.close()
            await asyncio.sleep(0.05)
            assert s.eofs == [1]  # close() closes the idle connection

    run(main())


CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3\r\nabc\r\n2\r\nde\r\n1;ext=1\r\nf\r\n0\r\nTrailer: x\r\n\r\n")


@pytest.mark.parametrize("method, response, status, body, reused", [
    ("GET", ok(b"x" * 70000), 200, b"x" * 70000, True),
    ("GET", CHUNKED, 200, b"abcdef", True),
    ("GET", b"HTTP/1.1 204 No Content\r\n\r\n", 204, b"", True),
    ("GET", b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n", 304, b"", True),
    ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", 200, b"", True),
    ("HEAD", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 200, b"", True),
    ("GET", b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"after"), 200, b"after", True),
    ("GET", ok(b"bye", b"Connection: close\r\n"), 200, b"bye", False),
    ("GET", b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nold", 200, b"old", False),
    ("GET", b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nka", 200,
     b"ka", True),
    ("GET", b"HTTP/1.1 503 Unavailable\r\nContent-Length: 4\r\n\r\ndown", 503, b"down", True),
])
def test_response_forms(method: str, response: bytes, status: int, body: bytes,
                        reused: bool) -> None:
    """Each answer is followed by a second request: on the same connection only if the first
    answer allows it (the server never hangs up itself, so reuse would show)."""

    async def answer(writer: asyncio.StreamWriter, conn: int, n: int) -> bool:
        writer.write(response if (conn, n) == (1, 1) else ok(b"next"))
        return True

    async def main() -> None:
        async with Server(answer) as s:
            pool = HTTPPool("127.0.0.1", s.port, 4, 1.0)
            got = await pool.request(method, "/")
            assert (got[0], got[2]) == (status, body)
            assert await pool.request("GET", "/") == (200, {"content-length": "4"}, b"next")
            assert s.accepts == (1 if reused else 2)
            await asyncio.sleep(0.02)
            assert s.eofs == ([] if reused else [1])  # not left open either

    run(main())


def test_body_delimited_by_the_end_of_the_connection() -> None:
    async def answer(writer: asyncio.StreamWriter, conn: int, n: int) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"the end")
        return False

    async def main() -> None:
        async with Server(answer) as s:
            pool = HTTPPool("127.0.0.1", s.port, 4, 1.0)
            for _ in range(2):
                assert (await pool.request("GET", "/"))[2] == b"until the end"
            assert s.accepts == 2

    run(main())


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(chunked=st.booleans(), data=st.data())
def test_fragmented_responses_reassemble_exactly(chunked: bool, data: st.DataObject) -> None:
    """The server writes each response in random fragments (cut anywhere, status line and chunk
    sizes included); the client must return exactly the body, and keep the connection."""
    bodies = data.draw(st.lists(st.binary(max_size=300), min_size=1, max_size=3))
    raws = []
    for body in bodies:
        if chunked:
            cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=4)))
            parts = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)]) if b > a]
            raws.append(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n")
        else:
            raws.append(ok(body))
    splits = [sorted(data.draw(st.lists(st.integers(1, len(raw) - 1), max_size=8))) for raw in raws]

    async def answer(writer: asyncio.StreamWriter, conn: int, n: int) -> bool:
        raw, cuts = raws[n - 1], splits[n - 1]
        for a, b in zip([0, *cuts], [*cuts, len(raw)]):
            writer.write(raw[a:b])
            await writer.drain()
            await asyncio.sleep(0.0005)  # let the client read each fragment on its own
        return True

    async def main() -> None:
        async with Server(answer) as s:
            pool = HTTPPool("127.0.0.1", s.port, 2, 1.0)
            assert [(await pool.request("POST", "/", b"q"))[2] for _ in bodies] == bodies
            assert s.accepts == 1

    run(main())


def test_stale_keep_alive_connection_is_retried_once_on_a_fresh_one() -> None:
    """The keep-alive race: the server closes the idle connection as the next request goes out
    (here: it reads the request and hangs up without a byte of answer)."""

    async def answer(writer: asyncio.StreamWriter, conn: int, n: int) -> bool:
        if n == 2:
            return False
        writer.write(ok())
        return True

    async def main() -> None:
        async with Server(answer) as s:
            pool = HTTPPool("127.0.0.1", s.port, 4, 1.0)
            assert (await pool.request("POST", "/", b"1"))[2] == b"ok"
            assert (await pool.request("POST", "/", b"2"))[2] == b"ok"  # sent twice: 1, then 2
            assert s.accepts == 2
            assert [r[-1:] for r in s.requests] == [b"1", b"2", b"2"]

    run(main())


def test_idle_connection_closed_by_the_server_is_dropped() -> None:
    async def answer(writer: asyncio.StreamWriter, conn: int, n: int) -> bool:
        writer.write(ok())
        return False  # closes while the client holds it idle

    async def main() -> None:
        async with Server(answer) as s:
            pool = HTTPPool("127.0.0.1", s.port, 4, 1.0)
            for _ in range(3):
                assert (await pool.request("GET", "/"))[2] == b"ok"
                await asyncio.sleep(0.02)
            assert len(s.requests) == s.accepts == 3  # no request was sent on a dead connection

    run(main())


def test_idle_connections_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "IDLE_S", 0.05)

    async def main() -> None:
        async with Server(always(ok())) as s:
            pool = HTTPPool("127.0.0.1", s.port, 4, 1.0)
            await pool.request("GET", "/")
            await pool.request("GET", "/")
            await asyncio.sleep(0.1)
            await pool.request("GET", "/")
            await asyncio.sleep(0.02)
            assert s.accepts == 2 and s.eofs == [1]  # the expired one was closed, not leaked

    run(main())


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0) instead of a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def test_reset_mid_response_is_disconnected_and_not_retried() -> None:
    async def answer(writer: asyncio.StreamWriter, conn: int, n: int) -> bool:
        if n == 1:
            writer.write(ok())
            return True
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        await asyncio.sleep(0.02)
        reset(writer)
        return False

    async def main() -> None:
        async with Server(answer) as s:
            pool = HTTPPool("127.0.0.1", s.port, 4, 1.0)
            await pool.request("GET", "/")
            with pytest.raises(Disconnected, match="mid-answer"):
                await pool.request("POST", "/", b"x")  # on the reused connection
            assert s.accepts == 1  # part of an answer arrived: not retried

    run(main())


def test_eof_before_any_response_on_a_fresh_connection_is_not_retried() -> None:
    async def answer(writer: asyncio.StreamWriter, conn: int, n: int) -> bool:
        writer.write_eof()  # half-close: no answer will come
        await asyncio.sleep(0.2)
        return False

    async def main() -> None:
        async with Server(answer) as s:
            pool = HTTPPool("127.0.0.1", s.port, 4, 1.0)
            with pytest.raises(Disconnected, match="before answering"):
                await pool.request("GET", "/")
            assert s.accepts == 1

    run(main())


@pytest.mark.parametrize("response", [
    b"HTPT/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ok() + b"HTTP/1.1 200 OK\r\n",  # two answers to one request
])
def test_malformed_response_is_disconnected(response: bytes) -> None:
    async def main() -> None:
        async with Server(always(response)) as s:
            pool = HTTPPool("127.0.0.1", s.port, 4, 1.0)
            if response.startswith(ok()):  # the first answer stands, its connection goes
                assert (await pool.request("GET", "/"))[2] == b"ok"
                await pool.request("GET", "/")
                assert s.accepts == 2
                return
            with pytest.raises(Disconnected, match="malformed response"):
                await pool.request("GET", "/")
            assert s.accepts == 1

    run(main())


@pytest.mark.parametrize("response", [
    ok(b"x" * 5000), CHUNKED.replace(b"3\r\nabc", b"1388\r\n" + b"x" * 5000)])
def test_response_above_max_body_fails_naming_the_bound(response: bytes) -> None:
    async def answer(writer: asyncio.StreamWriter, conn: int, n: int) -> bool:
        writer.write(response if conn == 1 else ok())
        return True

    async def main() -> None:
        async with Server(answer) as s:
            pool = HTTPPool("127.0.0.1", s.port, 1, 1.0, max_body=1000)
            with pytest.raises(ResponseTooLarge, match="above 1000 bytes"):
                await pool.request("GET", "/")
            assert (await pool.request("GET", "/"))[2] == b"ok"  # on a fresh connection
            assert s.accepts == 2

    run(main())


def test_refused() -> None:
    async def main() -> None:
        pool = HTTPPool("127.0.0.1", free_port(), 4, 1.0)
        with pytest.raises(ConnectionRefusedError):
            await pool.request("GET", "/")

    run(main())


def test_connect_timeout_releases_its_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    async def never(*args: object, **kwargs: object) -> None:
        await asyncio.sleep(10)

    async def main() -> None:
        monkeypatch.setattr(asyncio.get_running_loop(), "create_connection", never)
        pool = HTTPPool("127.0.0.1", 9, 1, 0.05)
        for _ in range(2):  # a leaked slot would make the second wait forever
            async with asyncio.timeout(1):
                with pytest.raises(ConnectTimeout, match="0.05 s"):
                    await pool.request("GET", "/")

    run(main())


def test_exhausted_pool_waits_instead_of_failing() -> None:
    async def main() -> None:
        async with Server(always(ok(), delay=0.02)) as s:
            pool = HTTPPool("127.0.0.1", s.port, 2, 1.0)
            answers = await asyncio.gather(*(pool.request("POST", "/", b"%d" % i)
                                             for i in range(10)))
            assert [a[2] for a in answers] == [b"ok"] * 10
            assert s.max_open == s.accepts == 2
            assert sorted(r[-1:] for r in s.requests) == [b"%d" % i for i in range(10)]

    run(main())


def test_cancelled_mid_request_closes_that_connection() -> None:
    async def answer(writer: asyncio.StreamWriter, conn: int, n: int) -> bool:
        await asyncio.sleep(0.3 if conn == 1 else 0)
        writer.write(ok())
        return True

    async def main() -> None:
        async with Server(answer) as s:
            pool = HTTPPool("127.0.0.1", s.port, 1, 1.0)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await pool.request("GET", "/")
            for _ in range(3):  # the pool's one slot is free again; its late answer never read
                assert (await pool.request("GET", "/"))[2] == b"ok"
            await asyncio.sleep(0.4)
            assert s.accepts == 2 and s.eofs == [1]

    run(main())


def test_cancelled_while_waiting_for_a_connection_leaves_the_pool_intact() -> None:
    async def main() -> None:
        async with Server(always(ok(), delay=0.1)) as s:
            pool = HTTPPool("127.0.0.1", s.port, 1, 1.0)
            first = asyncio.create_task(pool.request("GET", "/"))
            await asyncio.sleep(0.01)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.02):
                    await pool.request("GET", "/")  # waits for the one connection, gives up
            assert not pool._waiters  # the cancelled waiter left no trace
            assert (await first)[2] == b"ok"
            assert (await pool.request("GET", "/"))[2] == b"ok"
            assert s.accepts == 1 and len(s.requests) == 2

    run(main())


def test_unsolicited_bytes_on_an_idle_connection_retire_it() -> None:
    async def answer(writer: asyncio.StreamWriter, conn: int, n: int) -> bool:
        writer.write(ok())
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(ok(b"nobody asked"))
        return True

    async def main() -> None:
        async with Server(answer) as s:
            pool = HTTPPool("127.0.0.1", s.port, 1, 1.0)
            assert (await pool.request("GET", "/"))[2] == b"ok"
            await asyncio.sleep(0.05)
            assert (await pool.request("GET", "/"))[2] == b"ok"
            assert s.accepts == 2

    run(main())


def test_pool_outlives_an_event_loop() -> None:
    """Bound lazily to the running loop: a new loop starts afresh."""

    pool = HTTPPool("127.0.0.1", free_port(), 1, 1.0)

    async def main() -> None:
        async with Server(always(ok()), pool.port):
            assert (await pool.request("GET", "/"))[2] == b"ok"

    run(main())
    run(main())


@pytest.mark.parametrize("host, port, url, line", [
    ("127.0.0.1", 8000, "http://127.0.0.1:8000", "Host: 127.0.0.1:8000"),
    ("backend.svc", 80, "http://backend.svc:80", "Host: backend.svc"),
    ("::1", 8000, "http://[::1]:8000", "Host: [::1]:8000"),
])
def test_url_and_host_line(host: str, port: int, url: str, line: str) -> None:
    pool = HTTPPool(host, port, 1, 1.0)
    assert pool.url == url and pool._host_line == line + "\r\n"


def test_line_breaks_in_headers_are_refused() -> None:
    async def main() -> None:
        pool = HTTPPool("127.0.0.1", free_port(), 1, 1.0)
        with pytest.raises(ValueError, match="line break"):
            await pool.request("GET", "/", headers={"X-Request-ID": "a\r\nX-Evil: 1"})

    run(main())
