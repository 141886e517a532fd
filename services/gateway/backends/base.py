"""One interface for every backend protocol: infer, metadata, ready (+ live for the probe).

Transport: a keep-alive connection pool per backend (backends/http.py). Transport failures
become GatewayErrors: nothing reached the backend -> BackendUnavailable (503, safe to fail over),
no answer in time -> BackendTimeout (504), 5xx or a broken response -> BackendFailed (502),
4xx -> passed through as BackendRejected.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Any, Mapping
from urllib.parse import urlsplit

import orjson

from model_store.manifest import Manifest
from services.gateway.backends.http import ConnectTimeout, Disconnected, HTTPPool
from services.gateway.errors import (
    BackendFailed,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
)
from services.gateway.payload import InferRequest, InferResponse


class Backend(ABC):
    live_path = "/"

    def __init__(
        self,
        runtime: str,
        url: str,
        *,
        timeout: float,
        connect_timeout: float,
        max_connections: int,
        probe_timeout: float,
    ) -> None:
        self.runtime = runtime
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.probe_timeout = probe_timeout
        self.pool = self._pool(self.url)

    def _pool(self, url: str) -> HTTPPool:
        u = urlsplit(url)
        return HTTPPool(u.hostname or "127.0.0.1", u.port or 80, self.max_connections,
                        self.connect_timeout)

    async def close(self) -> None:
        await self.pool.close()

    async def _send(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        pool: HTTPPool | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        pool = pool or self.pool
        rt, timeout = self.runtime, timeout or self.timeout
        where = f"{pool.host}:{pool.port}"
        try:
            async with asyncio.timeout(timeout):
                return await pool.request(method, path, body, headers)
        except ConnectTimeout:
            raise BackendUnavailable(
                f"backend {rt} at {where}: no connection within {self.connect_timeout} s",
                runtime=rt,
            ) from None
        except TimeoutError:
            raise BackendTimeout(
                f"backend {rt} did not answer within {timeout} s", runtime=rt
            ) from None
        except Disconnected as e:
            raise BackendFailed(f"backend {rt} at {where}: {e}", runtime=rt) from None
        except OSError as e:
            raise BackendUnavailable(
                f"backend {rt} at {where} is unreachable: {e.strerror or e}", runtime=rt
            ) from None

    def served_by(self, headers: Mapping[str, str]) -> str:
        """The runtime name, or the backend's own X-Served-By when it refines it
        (the TF Serving stand-in says "tfserving-standin")."""
        v = headers.get("x-served-by")
        return v if v and v.startswith(self.runtime) else self.runtime

    def check(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        if status < 400:
            return
        msg = _error_message(body)
        by = self.served_by(headers)
        if status >= 500:
            raise BackendFailed(f"backend {by} failed with {status}: {msg}", runtime=by)
        raise BackendRejected(
            f"backend {by} rejected the request: {msg}", status=status, runtime=by
        )

    async def _get_json(self, path: str, pool: HTTPPool | None = None) -> Any:
        status, headers, body = await self._send("GET", path, timeout=self.probe_timeout, pool=pool)
        self.check(status, headers, body)
        return orjson.loads(body)

    async def live(self) -> bool:
        """The backend answers HTTP (the circuit breaker's probe). Raises on transport errors."""
        status, _, _ = await self._send("GET", self.live_path, timeout=self.probe_timeout)
        return status < 500

    @abstractmethod
    async def infer(self, req: InferRequest) -> InferResponse: ...

    @abstractmethod
    async def metadata(self, model: Manifest) -> Any:
        """The backend's own description of the model, as it sends it."""

    @abstractmethod
    async def ready(self, model: Manifest) -> bool: ...


def _error_message(body: bytes) -> str:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:500].decode("utf-8", "replace").strip() or "(empty body)"
    if isinstance(doc, dict):
        for key in ("error", "message"):  # OIP / TF Serving, TorchServe
            if isinstance(doc.get(key), str):
                return doc[key]
    return body[:500].decode("utf-8", "replace")


def request_headers(req: InferRequest, content_type: str = "application/json") -> dict[str, str]:
    h = {"Content-Type": content_type}
    if req.request_id:
        h["X-Request-ID"] = req.request_id
    return h
