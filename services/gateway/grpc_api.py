"""OIP v2 over gRPC: `inference.GRPCInferenceService` (KServe's v2 proto, which Triton and
tritonclient.grpc speak) on the gateway's own event loop (grpc.aio), beside the REST API.

The servicer is tritonclient's generated one. Every RPC runs the same steps as its REST route
(operations.py: naming, routing with failover, the codec's validation, dispatch, output
selection); only the wire form differs: InferRequest.from_grpc / InferResponse.to_grpc. Around
each RPC, as the REST middleware does around each request: the bearer key (ServerLive and
ServerReady are open), the request id (`x-request-id` metadata in, `x-request-id` and
`x-served-by` trailing metadata out), the in-flight gauge, metrics with the HTTP-equivalent status
and one access-log line (method "gRPC", path the full RPC name). Failures answer the gRPC status
of their HTTP status (errors.GRPC_STATUS) with the REST error's message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from contract.codec import CodecError, InferRequest
from services.gateway import operations as ops
from services.gateway.auth import expected_bearer, refusal
from services.gateway.context import RequestContext, request_id
from services.gateway.core import Gateway
from services.gateway.errors import GatewayError, NotFound, grpc_status, internal_message

SERVICE = "inference.GRPCInferenceService"
PUBLIC = frozenset({"ServerLive", "ServerReady"})  # open without the API key, as on REST
CLIENT_GONE = 499  # the HTTP-equivalent status of an RPC the client cancelled (or timed out)
STOP_GRACE_S = 5.0  # RPCs in progress at shutdown get this long to finish

log = logging.getLogger("services.gateway")
Handler = Callable[[Any, Any, RequestContext], Awaitable[Any]]


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def rpc(endpoint: str) -> Callable[[Handler], Callable[..., Awaitable[Any]]]:
    """Turn `handler(self, request, ctx) -> reply` into the servicer method of the same name,
    run inside RpcServicer.serve (auth, request id, errors, metrics, access log)."""

    def wrap(handler: Handler) -> Callable[..., Awaitable[Any]]:
        method = handler.__name__

        async def serve(self: RpcServicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
            return await self.serve(method, endpoint, handler, request, context)

        serve.__name__ = serve.__qualname__ = method
        return serve

    return wrap


class RpcServicer:
    """What every gRPC service of the gateway does around an RPC (its methods are made with
    @rpc): OIP's GRPCInferenceService here, TF Serving's services in tfs_grpc.py."""

    SERVICE = ""  # the full service name, for metrics and the access log
    PUBLIC: frozenset[str] = frozenset()  # methods open without the API key

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.bearer = expected_bearer(gw.settings.gateway_api_key)

    async def serve(self, method: str, endpoint: str, handler: Handler, request: Any,
                    context: grpc.aio.ServicerContext) -> Any:  # fmt: skip
        gw, start = self.gw, time.perf_counter()
        metadata = context.invocation_metadata() or ()
        rid = next((v for k, v in metadata if k == "x-request-id"), None)
        ctx = RequestContext({}, request_id(None if rid is None else _bytes(rid)))
        ctx.endpoint = endpoint
        status, message, reply = 200, "", None
        gw.metrics.in_flight.inc()
        try:
            keys = [_bytes(v) for k, v in metadata if k == "authorization"]
            if refused := refusal(keys, self.bearer, method in self.PUBLIC):
                status, message = refused
            else:
                reply = await handler(self, request, ctx)
        except GatewayError as e:
            status, message = e.status, e.message
            if e.runtime:
                ctx.served_by = e.runtime
        except CodecError as e:  # the request is not a valid tensor message
            status, message = e.status, e.message
        except asyncio.CancelledError:  # the client cancelled, or its deadline passed
            status = CLIENT_GONE
            raise
        except Exception as e:
            log.exception("unhandled error on gRPC /%s/%s", self.SERVICE, method)
            status, message = 500, internal_message(e)
        finally:
            gw.metrics.in_flight.dec()
            gw.record("gRPC", f"/{self.SERVICE}/{method}", ctx, status, time.perf_counter() - start)
        trailing = (("x-request-id", ctx.request_id), ("x-served-by", ctx.served_by))
        if status != 200:
            await context.abort(grpc_status(status), message, trailing_metadata=trailing)
        context.set_trailing_metadata(trailing)
        return reply


class Servicer(RpcServicer, pb_grpc.GRPCInferenceServiceServicer):
    SERVICE, PUBLIC = SERVICE, PUBLIC

    @rpc("grpc_live")
    async def ServerLive(self, request: Any, ctx: RequestContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    @rpc("grpc_server_ready")
    async def ServerReady(self, request: Any, ctx: RequestContext) -> Any:
        ready, _ = self.gw.server_ready()
        return pb.ServerReadyResponse(ready=ready)

    @rpc("grpc_server_metadata")
    async def ServerMetadata(self, request: Any, ctx: RequestContext) -> Any:
        return pb.ServerMetadataResponse(**ops.SERVER_METADATA)

    @rpc("grpc_ready")
    async def ModelReady(self, request: Any, ctx: RequestContext) -> Any:
        ready, _ = await ops.readiness(self.gw, ctx, request.name, request.version or None)
        return pb.ModelReadyResponse(ready=ready)

    @rpc("grpc_metadata")
    async def ModelMetadata(self, request: Any, ctx: RequestContext) -> Any:
        doc, _ = ops.describe(self.gw, ctx, request.name, request.version or None)
        tensors = lambda specs: [pb.ModelMetadataResponse.TensorMetadata(**s) for s in specs]  # noqa: E731
        return pb.ModelMetadataResponse(name=doc["name"], versions=doc["versions"],
                                        platform=doc["platform"], inputs=tensors(doc["inputs"]),
                                        outputs=tensors(doc["outputs"]))  # fmt: skip

    @rpc("grpc_infer")
    async def ModelInfer(self, request: Any, ctx: RequestContext) -> Any:
        targets = ops.infer_targets(self.gw, ctx, request.model_name, request.model_version or None)
        req = InferRequest.from_grpc(request)
        target, answer = await ops.infer(self.gw, ctx, targets, req)
        return ops.shaped(answer, req, target).to_grpc(pb.ModelInferResponse())

    @rpc("grpc_index")
    async def RepositoryIndex(self, request: Any, ctx: RequestContext) -> Any:
        if request.repository_name:
            raise NotFound(f"unknown repository {request.repository_name!r}: the gateway has one, "
                           "leave repository_name empty")
        entries = await ops.repository_index(self.gw, request.ready)
        return pb.RepositoryIndexResponse(models=[
            pb.RepositoryIndexResponse.ModelIndex(**e) for e in entries])


SERVED = frozenset(name for name, v in vars(Servicer).items() if name[0].isupper())


def _unimplemented(method: str) -> Callable[..., Awaitable[Any]]:
    async def refuse(self: Servicer, request: Any, ctx: RequestContext) -> Any:
        raise GatewayError(f"{SERVICE}/{method} is not implemented by this gateway; it serves "
                           f"{', '.join(sorted(SERVED))}", status=501)

    refuse.__name__ = method
    return rpc("grpc_unimplemented")(refuse)


# Every other RPC of the service (shared memory, model control, statistics, streaming, ...): a
# clear UNIMPLEMENTED through the same wrapper (counted, logged), not the stub's bare one.
for _name in dir(pb_grpc.GRPCInferenceServiceServicer):
    if _name[0].isupper() and _name not in SERVED:
        setattr(Servicer, _name, _unimplemented(_name))


class GrpcServer:
    """The gRPC listener: started and stopped with the app's lifespan, on its event loop. One
    grpc.aio server: OIP's service on `port`, TF Serving's (tfs_grpc.py) on `tfs_port` (0: none).
    gRPC serves every registered service on every port of a server, so when both are on, each
    port also answers the other protocol's RPCs (same checks, same data path)."""

    def __init__(self, gw: Gateway, host: str, port: int, tfs_port: int = 0) -> None:
        s = gw.settings
        self.server = grpc.aio.server(
            options=[
                # The REST body limit, for the same reason (what one request may make us hold).
                ("grpc.max_receive_message_length", s.gateway_max_payload_bytes),
                # Answers: the largest body the servers behind the gateway handle (an answer the
                # gateway re-encodes can outgrow the request).
                ("grpc.max_send_message_length", s.server_max_body_bytes),
                # Linux default is SO_REUSEPORT: a busy port would be shared silently.
                ("grpc.so_reuseport", 0),
            ],
            # Beyond this many RPCs at once, RESOURCE_EXHAUSTED (REST: 503 beyond the same cap).
            maximum_concurrent_rpcs=s.http_max_connections,
        )
        self.port = self.tfs_port = 0
        if port:
            pb_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(gw), self.server)
            self.port = self._listen(host, port, "GATEWAY_GRPC_PORT")
        if tfs_port:
            from services.gateway import tfs_grpc  # it builds on this module

            self.server.add_generic_rpc_handlers(tfs_grpc.handlers(gw))
            self.tfs_port = self._listen(host, tfs_port, "GATEWAY_TFS_GRPC_PORT")

    def _listen(self, host: str, port: int, setting: str) -> int:
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            return self.server.add_insecure_port(address)
        except RuntimeError as e:
            raise RuntimeError(f"gateway: cannot listen for gRPC on {address} ({e}); free the "
                               f"port or set {setting} (0: none)") from None

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop(STOP_GRACE_S)
