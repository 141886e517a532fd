"""TF Serving's gRPC API on the gateway: tensorflow.serving.PredictionService (Predict,
GetModelMetadata) and tensorflow.serving.ModelService (GetModelStatus), for unmodified
tensorflow-serving-api clients, on GATEWAY_TFS_GRPC_PORT.

No tensorflow here: the messages come from the committed descriptor set (protos/), the services
are generic handlers. Every RPC takes the REST route's data path (api_v1.py, operations.py):
`<model>` (routed with failover) or `<model>@<runtime>`, model_spec.version as the REST
/versions/{v}, the codec's validation and limits, gw.infer; around it grpc_api.RpcServicer's
auth, request id, metrics and access log; errors as the REST route's, with errors.GRPC_STATUS.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import grpc
from google.protobuf import json_format

from contract.codec import CodecError, InferRequest, check_tf_signature_name
from services.gateway import operations as ops
from services.gateway.context import RequestContext
from services.gateway.core import Gateway
from services.gateway.errors import BadRequest
from services.gateway.grpc_api import RpcServicer, rpc
from services.gateway.protos import load

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
DEFAULT_SIGNATURE = "serving_default"
M = load()
ModelSpec = M["tensorflow.serving.ModelSpec"]


def _name_version(request: Any) -> tuple[str, str | None]:
    """model_spec -> (name, version) as the REST routes take them; a version label is refused
    with TF Serving's words (the gateway has none)."""
    spec = request.model_spec
    if spec.HasField("version_label"):
        raise BadRequest(f"Unrecognized servable version label: {spec.version_label}")
    return spec.name, str(spec.version.value) if spec.HasField("version") else None


def _spec(name: str, version: str, signature_name: str) -> Any:
    spec = ModelSpec(name=name, signature_name=signature_name)
    spec.version.value = int(version)
    return spec


class PredictionService(RpcServicer):
    SERVICE = PREDICTION_SERVICE

    @rpc("tfs_grpc_predict")
    async def Predict(self, request: Any, ctx: RequestContext) -> Any:
        name, version = _name_version(request)
        targets = ops.infer_targets(self.gw, ctx, name, version)
        check_tf_signature_name(request.model_spec.signature_name)
        req = InferRequest.from_tensorproto(request.inputs, request.output_filter)
        target, answer = await ops.infer(self.gw, ctx, targets, req)
        reply = M["tensorflow.serving.PredictResponse"](
            model_spec=_spec(name, target.version, DEFAULT_SIGNATURE))
        ops.shaped(answer, req, target).to_tensorproto(reply.outputs)
        return reply

    @rpc("tfs_grpc_metadata")
    async def GetModelMetadata(self, request: Any, ctx: RequestContext) -> Any:
        fields = list(request.metadata_field)
        if not fields:
            raise BadRequest("GetModelMetadataRequest must specify at least one metadata_field")
        for f in fields:
            if f != "signature_def":
                raise BadRequest(f"Metadata field {f} is not supported")
        name, version = _name_version(request)
        t = ops.describe_target(self.gw, ctx, name, version)
        sig_map = json_format.ParseDict(ops.signature_def_map(t.model.signature),
                                        M["tensorflow.serving.SignatureDefMap"]())
        reply = M["tensorflow.serving.GetModelMetadataResponse"](model_spec=_spec(name, t.version, ""))
        reply.metadata["signature_def"].Pack(sig_map)
        return reply


class ModelService(RpcServicer):
    SERVICE = MODEL_SERVICE

    @rpc("tfs_grpc_status")
    async def GetModelStatus(self, request: Any, ctx: RequestContext) -> Any:
        name, version = _name_version(request)
        doc = await ops.tf_model_status(self.gw, ctx, name, version)
        return json_format.ParseDict(doc, M["tensorflow.serving.GetModelStatusResponse"]())


def _handlers(service: RpcServicer, methods: dict[str, tuple[str, str]]) -> grpc.GenericRpcHandler:
    """Unary-unary handlers of `service`'s methods: {method: (request type, response type)}."""
    out: dict[str, grpc.RpcMethodHandler] = {}
    for method, (req, resp) in methods.items():
        call: Callable[..., Awaitable[Any]] = getattr(service, method)
        out[method] = grpc.unary_unary_rpc_method_handler(
            call, request_deserializer=M[req].FromString,
            response_serializer=M[resp].SerializeToString)  # fmt: skip
    return grpc.method_handlers_generic_handler(service.SERVICE, out)


def handlers(gw: Gateway) -> list[grpc.GenericRpcHandler]:
    """PredictionService (Predict, GetModelMetadata) and ModelService (GetModelStatus). Their
    other RPCs (Classify, Regress, MultiInference, HandleReloadConfigRequest) are not registered:
    gRPC answers UNIMPLEMENTED."""
    ts = "tensorflow.serving."
    return [
        _handlers(PredictionService(gw), {
            "Predict": (ts + "PredictRequest", ts + "PredictResponse"),
            "GetModelMetadata": (ts + "GetModelMetadataRequest", ts + "GetModelMetadataResponse"),
        }),
        _handlers(ModelService(gw), {
            "GetModelStatus": (ts + "GetModelStatusRequest", ts + "GetModelStatusResponse"),
        }),
    ]
