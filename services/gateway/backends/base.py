"""One interface for every backend protocol: infer, metadata, ready (+ live for the probe).

What travels: a Call (the one request type, contract.codec.InferRequest, with the model and its
batch size) goes in, an Answer comes out. Every conversion goes through contract/codec.py.

Transport: a keep-alive connection pool per backend (backends/http.py; TF Serving can also be
reached over gRPC, backends/grpc_pool.py, whose failures are the same). Transport failures
become GatewayErrors: nothing reached the backend -> BackendUnavailable (503, safe to fail over),
the backend answers 503 for the model (it failed to load there, or has no worker) ->
ModelUnavailable (503, safe to fail over: the backend is up, the model is not), no answer in time
-> BackendTimeout (504), 5xx or a broken response (one above the pool's max_body included) ->
BackendFailed (502), 4xx -> passed through as BackendRejected.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Mapping, NoReturn
from urllib.parse import urlsplit

import orjson

from contract.codec import CodecError, InferRequest, InferResponse
from contract.manifest import Manifest
from services.gateway.backends.http import ConnectTimeout, Disconnected, HTTPPool, ResponseTooLarge
from services.gateway.errors import (
    BackendFailed,
    BackendLost,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    ModelUnavailable,
)


@dataclass(slots=True, eq=False)
class Call:
    """One inference on its way to a backend. `req` is the same InferRequest whichever front end
    it came from; `tfs_body` is the TF Serving :predict body as received (TF Serving API only), which
    the TF Serving backend forwards unchanged."""

    model: Manifest
    req: InferRequest
    batch: int
    request_id: str = ""
    tfs_body: bytes | None = None


@dataclass(slots=True, eq=False)
class Answer:
    """A backend's answer, in the first form the front end can use:

    - body (+ header_length): an OIP answer to the request as sent, honouring its `outputs`
      filter, `id` and model_version; with binary_ok also its binary_data parameters. The OIP
      front end returns it unchanged when it fits.
    - response: an InferResponse the gateway built (TF Serving answers); the front end selects,
      stamps and encodes it for the client.
    - tfs_body: TF Serving's answer to a forwarded TF Serving body, returned unchanged.
    """

    served_by: str
    body: bytes | None = None
    header_length: int | None = None
    binary_ok: bool = True
    response: InferResponse | None = None
    tfs_body: bytes | None = None

    def decoded(self) -> InferResponse:
        """The answer as an InferResponse (decoding `body` with the codec on first use)."""
        if self.response is None:
            assert self.body is not None
            try:
                self.response = InferResponse.from_oip(self.body, self.header_length)
            except CodecError as e:
                raise BackendFailed(f"backend {self.served_by} sent an unreadable answer: {e.message}",
                                    runtime=self.served_by) from None
        return self.response


def as_received(req: InferRequest) -> tuple[bytes, int | None]:
    """The OIP body for an OIP backend: the received bytes unchanged when the client sent an OIP
    REST body (the fast path; its answer then fits the client as is). A request that came in
    another wire form (OIP gRPC, TF Serving's API) has its answer re-encoded by the gateway
    anyway, so it goes as binary tensors with binary outputs asked for: no float text either way
    (measured per request, codec only: MobileNetV2 input encode 7,639 -> 94 us, 1,000 logits
    decode 211 -> 13 us; digits 15 -> 6 us and 30 -> 15 us)."""
    if req.body is not None:
        return req.to_oip(binary=req.header_length is not None)
    return req.to_oip(binary=True, binary_outputs=True)


class Backend(ABC):
    live_path = "/"

    def __init__(
        self,
        runtime: str,
        url: str | None,
        *,
        timeout: float,
        connect_timeout: float,
        max_connections: int,
        probe_timeout: float,
        predictors: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        """url: the runtime's own server, which serves every model under its store name. Or, one
        server per model (KServe: each (model, runtime) InferenceService's predictor),
        predictors: {model: (its server's URL, the model's name there)}."""
        self.runtime = runtime
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.probe_timeout = probe_timeout  # liveness: short, it decides the circuit
        # Readiness and metadata may run an inference (TorchServe under KServe): an inference's.
        self.ready_timeout = timeout
        self.pool = self._pool(url) if url else None
        self.pools = [self.pool] if self.pool else []  # every server, for the probe and close()
        self.routes: dict[str, tuple[HTTPPool, str]] = {}
        by_url: dict[str, HTTPPool] = {}
        for model, (server, remote_name) in (predictors or {}).items():
            if server not in by_url:
                by_url[server] = self._pool(server)
                self.pools.append(by_url[server])
            self.routes[model] = (by_url[server], remote_name)

    def _pool(self, url: str) -> HTTPPool:
        u = urlsplit(url)
        return HTTPPool(u.hostname or "127.0.0.1", u.port or 80, self.max_connections,
                        self.connect_timeout)

    def route(self, model: str) -> tuple[HTTPPool, str]:
        """The pool of the server that serves `model` (store name) and the model's name there."""
        found = self.routes.get(model)
        if found is not None:
            return found
        if self.pool is None:
            raise BackendUnavailable(f"backend {self.runtime} has no server for {model}",
                                     runtime=self.runtime)  # fmt: skip
        return self.pool, model

    async def close(self) -> None:
        for pool in self.pools:
            await pool.close()

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
        assert pool is not None, "a backend with one server per model sends with route()'s pool"
        timeout = timeout or self.timeout
        async with self._transport(pool.url, timeout):
            return await pool.request(method, path, body, headers)

    @asynccontextmanager
    async def _transport(self, where: str, timeout: float) -> AsyncIterator[None]:
        """Bound a call to the server at `where` by `timeout` and map its transport failures
        (HTTPPool's and GRPCPool's alike) onto the gateway's errors."""
        rt = self.runtime
        try:
            async with asyncio.timeout(timeout):
                yield
        except ConnectTimeout:
            raise BackendUnavailable(
                f"backend {rt} at {where}: no connection within {self.connect_timeout} s",
                runtime=rt,
            ) from None
        except TimeoutError:
            raise BackendTimeout(
                f"backend {rt} did not answer within {timeout} s", runtime=rt
            ) from None
        except ResponseTooLarge as e:  # a broken answer, and another backend would send it too
            raise BackendFailed(f"backend {rt} at {where}: {e}", runtime=rt) from None
        except Disconnected as e:  # killed mid-request: no (complete) answer, retry-safe
            raise BackendLost(f"backend {rt} at {where}: {e}", runtime=rt) from None
        except OSError as e:
            raise BackendUnavailable(
                f"backend {rt} at {where} is unreachable: {e.strerror or e}", runtime=rt
            ) from None

    def served_by(self, headers: Mapping[str, str]) -> str:
        """The runtime name, or the backend's own X-Served-By when it refines it
        (the TF Serving stand-in says "tfserving-standin")."""
        v = headers.get("x-served-by")
        return v if v and v.startswith(self.runtime) else self.runtime

    def check(self, status: int, headers: Mapping[str, str], body: bytes, model: str = "") -> None:
        if status >= 400:
            self.fail(status, error_message(body), self.served_by(headers), model)

    def fail(self, status: int, msg: str, by: str, model: str = "") -> NoReturn:
        """Raise the gateway's error for a backend's error answer (HTTP status, or a gRPC status
        mapped onto one): 503 for a model, other 5xx, 4xx passed through."""
        if status == 503 and model:  # up, but not serving this model (failed to load, no worker)
            raise ModelUnavailable(f"backend {by} cannot serve {model}: {msg}", runtime=by)
        if status >= 500:
            raise BackendFailed(f"backend {by} failed with {status}: {msg}", runtime=by)
        raise BackendRejected(
            f"backend {by} rejected the request: {msg}", status=status, runtime=by
        )

    async def _get_json(self, path: str, pool: HTTPPool | None = None) -> Any:
        status, headers, body = await self._send("GET", path, timeout=self.ready_timeout, pool=pool)
        self.check(status, headers, body)
        return orjson.loads(body)

    async def live(self) -> bool:
        """The backend answers HTTP (the circuit breaker's probe). Raises on transport errors.

        With one server per model (KServe) every predictor is probed at once, each within the
        probe timeout, and the backend is live while any of them answers: the breaker is per
        runtime, and one model's InferenceService being down (crash-looping, scaled away) must
        not open the circuit for the runtime's other models; requests to that model still fail
        over as unreachable. Only when none answers does it raise (the first predictor's error)."""
        results = await asyncio.gather(
            *(self._send("GET", self.live_path, timeout=self.probe_timeout, pool=p)
              for p in self.pools),
            return_exceptions=True,
        )  # fmt: skip
        statuses = [r[0] for r in results if not isinstance(r, BaseException)]
        if not statuses:
            if not results:
                raise BackendUnavailable(f"backend {self.runtime} has no server to probe",
                                         runtime=self.runtime)  # fmt: skip
            raise results[0]
        return any(s < 500 for s in statuses)

    @abstractmethod
    async def infer(self, call: Call) -> Answer: ...

    @abstractmethod
    async def metadata(self, model: Manifest) -> Any:
        """The backend's own description of the model, as it sends it."""

    @abstractmethod
    async def ready(self, model: Manifest) -> bool: ...


def error_message(body: bytes) -> str:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:500].decode("utf-8", "replace").strip() or "(empty body)"
    if isinstance(doc, dict):
        for key in ("error", "message"):  # OIP / TF Serving, TorchServe
            if isinstance(doc.get(key), str):
                return doc[key]
    return body[:500].decode("utf-8", "replace")


def request_headers(call: Call, header_length: int | None = None) -> dict[str, str]:
    """Content-Type (and Inference-Header-Content-Length for binary tensors), X-Request-ID."""
    if header_length is None:
        h = {"Content-Type": "application/json"}
    else:
        h = {"Content-Type": "application/octet-stream",
             "Inference-Header-Content-Length": str(header_length)}
    if call.request_id:
        h["X-Request-ID"] = call.request_id
    return h


def response_header_length(headers: Mapping[str, str], runtime: str) -> int | None:
    value = headers.get("inference-header-content-length")
    if not value:
        return None
    if not value.isdigit():
        raise BackendFailed(f"backend {runtime} sent Inference-Header-Content-Length {value!r}",
                            runtime=runtime)
    return int(value)
