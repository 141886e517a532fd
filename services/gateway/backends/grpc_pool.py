"""One pooled grpc.aio channel per backend server, raising the transport errors HTTPPool raises.

A channel multiplexes every call over one HTTP/2 connection (reconnected by gRPC itself), so the
"pool" is the channel. It is created lazily: a grpc.aio channel belongs to the running event loop.
Failures are mapped onto what the gateway distinguishes for HTTP (backends/http.py), so
Backend._transport turns both into the same 502/503/504:
  - no connection (refused; no HTTP/2 handshake within the connect timeout) -> ConnectionRefused
    / ConnectTimeout: nothing reached the server;
  - the connection broke under a call (server killed) -> Disconnected;
  - the call's deadline passed -> TimeoutError;
  - a status the server sent -> RPCStatus, for the backend to map as it maps HTTP statuses.
"""

from __future__ import annotations

from typing import Any, Mapping

import grpc

from services.gateway.backends.http import ConnectTimeout, Disconnected

# gRPC core's words for "no subchannel could connect" (stable since grpc 1.4x; tested).
CONNECT_FAILED = "failed to connect to all addresses"
MAX_RECONNECT_BACKOFF_MS = 2000  # default 120 s: a restarted backend would wait that long


class RPCStatus(Exception):
    """A status the server answered with: its code name (NOT_FOUND, ...) and message."""

    def __init__(self, code: str, message: str, metadata: Mapping[str, str]) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.metadata = code, message, metadata


class GRPCPool:
    def __init__(self, target: str, connect_timeout: float, max_message_bytes: int) -> None:
        self.url = target  # host:port, as error messages name the server
        self.connect_timeout = connect_timeout
        connect_ms = max(1, int(connect_timeout * 1000))
        self.options = [
            # gRPC uses the minimum reconnect backoff as its connect timeout (default 20 s).
            ("grpc.min_reconnect_backoff_ms", connect_ms),
            ("grpc.initial_reconnect_backoff_ms", connect_ms),
            ("grpc.max_reconnect_backoff_ms", max(connect_ms, MAX_RECONNECT_BACKOFF_MS)),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        self._channel: grpc.aio.Channel | None = None
        self._methods: dict[str, grpc.aio.UnaryUnaryMultiCallable] = {}

    def _method(self, path: str, response_type: Any) -> grpc.aio.UnaryUnaryMultiCallable:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.url, options=self.options)
            self._methods = {}
        method = self._methods.get(path)
        if method is None:
            method = self._methods[path] = self._channel.unary_unary(
                path, request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=response_type.FromString)  # fmt: skip
        return method

    async def call(self, path: str, request: Any, response_type: Any, timeout: float,
                   metadata: Mapping[str, str] | None = None) -> tuple[Any, dict[str, str]]:  # fmt: skip
        """(response, the server's metadata, initial and trailing). The deadline travels with the
        call (grpc-timeout), so the server can drop work whose caller has given up."""
        call = self._method(path, response_type)(
            request, timeout=timeout, metadata=tuple((metadata or {}).items()))
        try:
            response = await call
        except grpc.aio.AioRpcError as e:
            raise self._error(e) from None
        return response, await _metadata(call)

    def _error(self, e: grpc.aio.AioRpcError) -> Exception:
        code, details = e.code(), e.details() or ""
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return TimeoutError(details)
        if code == grpc.StatusCode.UNAVAILABLE and details.startswith(CONNECT_FAILED):
            if "timed out" in details:
                return ConnectTimeout(f"no connection within {self.connect_timeout} s")
            return ConnectionRefusedError(details.removeprefix(CONNECT_FAILED).lstrip("; "))
        # UNAVAILABLE is also what a server answers (TF Serving: a model that failed to load);
        # the channel's state tells them apart: a lost connection leaves it READY no more.
        if code == grpc.StatusCode.UNAVAILABLE and self._channel is not None and \
                self._channel.get_state() != grpc.ChannelConnectivity.READY:
            return Disconnected(f"connection lost before the answer: {details}")
        md = {k: v for k, v in (e.trailing_metadata() or ()) if isinstance(v, str)}
        return RPCStatus(code.name, details, md)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


async def _metadata(call: grpc.aio.UnaryUnaryCall) -> dict[str, str]:
    md = [*(await call.initial_metadata() or ()), *(await call.trailing_metadata() or ())]
    return {k: v for k, v in md if isinstance(v, str)}
