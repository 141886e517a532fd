"""The gateway's keep-alive connection pool (aiohttp) against raw servers with awkward habits."""

from __future__ import annotations

import asyncio

import pytest

from services.gateway.backends.http import ConnectTimeout, Disconnected, HTTPPool
from tests.gateway.conftest import free_port


async def serve(responses: list[bytes], close_after_each: bool = False):
    """A raw server answering successive requests with `responses`; returns (server, port, seen)."""
    seen: list[int] = []  # connection number of each request
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        conn = connections
        while responses:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next((line.split(b":")[1] for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length")), b"0"))
            await reader.readexactly(length)
            seen.append(conn)
            writer.write(responses.pop(0))
            await writer.drain()
            if close_after_each:
                break
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


def run(coro):
    return asyncio.run(coro)


def test_keep_alive_reuses_one_connection() -> None:
    async def main():
        ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Served-By: me\r\n\r\nok"
        server, port, seen = await serve([ok, ok, ok])
        pool = HTTPPool("127.0.0.1", port, 4, 1.0)
        for _ in range(3):
            status, headers, body = await pool.request("POST", "/x", b"{}")
            assert (status, headers["x-served-by"], body) == (200, "me", b"ok")
        assert seen == [1, 1, 1]
        await pool.close()
        server.close()

    run(main())


def test_chunked_and_close_delimited_bodies() -> None:
    async def main():
        chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        server, port, _ = await serve([chunked])
        pool = HTTPPool("127.0.0.1", port, 4, 1.0)
        assert (await pool.request("GET", "/"))[2] == b"abcde"
        server.close()
        eof = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"
        server, port, _ = await serve([eof], close_after_each=True)
        pool = HTTPPool("127.0.0.1", port, 4, 1.0)
        assert (await pool.request("GET", "/"))[2] == b"until the end"
        server.close()

    run(main())


def test_stale_keep_alive_connection_is_retried_once() -> None:
    async def main():
        ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        # the server answers once per connection, then hangs up without saying so
        server, port, seen = await serve([ok, ok], close_after_each=True)
        pool = HTTPPool("127.0.0.1", port, 4, 1.0)
        assert (await pool.request("GET", "/"))[0] == 200
        await asyncio.sleep(0.05)
        assert (await pool.request("GET", "/"))[0] == 200
        assert seen == [1, 2]
        server.close()

    run(main())


def test_refused_and_disconnected() -> None:
    async def main():
        with pytest.raises(OSError) as e:
            await HTTPPool("127.0.0.1", free_port(), 4, 1.0).request("GET", "/")
        assert not isinstance(e.value, (ConnectTimeout, Disconnected))
        server, port, _ = await serve([b"HTTP/1.1 200 OK\r\nContent-Len"], close_after_each=True)
        with pytest.raises(Disconnected):
            await HTTPPool("127.0.0.1", port, 4, 1.0).request("GET", "/")
        server.close()

    run(main())
