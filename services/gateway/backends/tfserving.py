"""TF Serving (the real tensorflow_model_server or our stand-in), over REST or gRPC.

gRPC (GATEWAY_TFSERVING_TRANSPORT=grpc): PredictionService/Predict with every input as a
TensorProto's tensor_content (little-endian bytes, InferRequest.to_tensorproto) and the answer read
back the same way (InferResponse.from_tensorproto): no float text either way, and the outputs'
datatype and shape come with them. Measured (README.md, "Backend transports"): far cheaper for
large tensors (MobileNetV2: gateway and stand-in CPU / 3.5 and / 4), dearer for tiny ones (a
digit: gRPC's fixed cost per call exceeds the JSON it saves), so requests whose inputs are below
GATEWAY_TFSERVING_GRPC_MIN_BYTES still go over REST. The call carries the backend timeout as its
deadline; a status TF Serving answers is mapped through TF Serving's own HTTP table
(TF_CODE_HTTP_STATUS), so both transports raise the same errors.

REST: the request goes out as the codec's columnar body {"inputs": {name: nested list}}
(InferRequest.to_tfserving); the answer carries neither datatype nor shape, so
decode_tfserving_outputs casts it to the signature's datatypes and checks the batch size.

Either way the gateway then selects the requested outputs and stamps id and model_version. A
request that came through the TF Serving REST API is forwarded over REST as received and its
answer returned unchanged (no decode, no re-encode: re-encoding it for gRPC and the answer back to
JSON would cost more than it saves). Health, readiness and metadata stay on REST. Under KServe the
predictors are reached over REST (KServe's TF Serving runtime exposes its REST port only).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import orjson

from contract.codec import (
    TF_CODE_HTTP_STATUS,
    CodecError,
    InferResponse,
    decode_tfserving_outputs,
)
from contract.manifest import Manifest
from services.gateway.backends.base import Answer, Backend, Call, request_headers
from services.gateway.backends.grpc_pool import GRPCPool, RPCStatus
from services.gateway.errors import BackendFailed
from services.gateway.protos import load

PREDICT = "/tensorflow.serving.PredictionService/Predict"
SIGNATURE = "serving_default"
M = load()  # TF Serving's messages from the committed descriptor set (no tensorflow)


class TFServingBackend(Backend):
    live_path = "/v1/models/__gateway_probe__"  # TF Serving has no health route: any answer is life

    def __init__(self, runtime: str, url: str | None, *, grpc_target: str | None = None,
                 grpc_min_bytes: int = 0, max_message_bytes: int = 256 * 1024 * 1024,
                 **kw: Any) -> None:  # fmt: skip
        """grpc_target (host:port): infer over gRPC there, for inputs of grpc_min_bytes or more;
        None: over REST."""
        super().__init__(runtime, url, **kw)
        self.grpc = GRPCPool(grpc_target, self.connect_timeout, max_message_bytes) \
            if grpc_target else None  # fmt: skip
        self.grpc_min_bytes = grpc_min_bytes

    async def infer(self, call: Call) -> Answer:
        if self.grpc is None or call.tfs_body is not None \
                or call.req.tensor_bytes() < self.grpc_min_bytes:
            return await self._infer_rest(call)
        return await self._infer_grpc(call, self.grpc)

    async def _infer_rest(self, call: Call) -> Answer:
        name = call.model.name
        pool, remote = self.route(name)
        forward = call.tfs_body is not None
        body = call.tfs_body if forward else call.req.to_tfserving(call.model.signature)  # values checked
        status, h, data = await self._send("POST", f"/v1/models/{remote}:predict", body,
                                           request_headers(call), pool=pool)
        self.check(status, h, data, name)
        by = self.served_by(h)
        if forward:
            return Answer(by, tfs_body=data)
        with unreadable(by):
            arrays = decode_tfserving_outputs(data, call.model.signature, call.batch)
        return Answer(by, response=InferResponse.from_arrays(name, arrays, id=call.req.id))

    async def _infer_grpc(self, call: Call, pool: GRPCPool) -> Answer:
        name, sig = call.model.name, call.model.signature
        request = M["tensorflow.serving.PredictRequest"]()
        request.model_spec.name, request.model_spec.signature_name = name, SIGNATURE
        call.req.to_tensorproto(request.inputs, sig)  # values checked as for REST
        metadata = {"x-request-id": call.request_id} if call.request_id else None
        try:
            async with self._transport(pool.url, self.timeout):
                reply, md = await pool.call(PREDICT, request, M["tensorflow.serving.PredictResponse"],
                                            self.timeout, metadata)
        except RPCStatus as e:
            self.fail(TF_CODE_HTTP_STATUS.get(e.code, 500), e.message, self.served_by(e.metadata),
                      name)
        by = self.served_by(md)
        with unreadable(by):
            response = InferResponse.from_tensorproto(name, reply.outputs, sig, call.batch,
                                                      id=call.req.id)
        return Answer(by, response=response)

    async def close(self) -> None:
        await super().close()
        if self.grpc is not None:
            await self.grpc.close()

    async def metadata(self, model: Manifest) -> Any:
        pool, name = self.route(model.name)
        return await self._get_json(f"/v1/models/{name}/metadata", pool)

    async def ready(self, model: Manifest) -> bool:
        pool, name = self.route(model.name)
        status, _, body = await self._send("GET", f"/v1/models/{name}", timeout=self.ready_timeout,
                                           pool=pool)
        if status != 200:
            return False
        versions = orjson.loads(body).get("model_version_status") or []
        return any(v.get("state") == "AVAILABLE" for v in versions)


@contextmanager
def unreadable(by: str) -> Iterator[None]:
    """A CodecError while reading the backend's answer is the backend's fault: 502."""
    try:
        yield
    except CodecError as e:
        raise BackendFailed(f"backend {by} sent an unreadable answer: {e.message}",
                            runtime=by) from None
