"""TF Serving's gRPC API for the stand-in: PredictionService.Predict / GetModelMetadata and
ModelService.GetModelStatus (grpc.aio, sharing the REST server's event loop and TF thread).
Predict names the stand-in in its trailing metadata (x-served-by: tfserving-standin), as REST
does in a header: the gateway's X-Served-By then tells it from the real server on both transports."""

from __future__ import annotations

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from services.tfserving.models import Registry, ServingError, invalid, model_spec
from services.tfserving.predictor import Predictor
from services.tfserving.rest import SERVED_BY

GRPC_CODE = {
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
    "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
}
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


def _spec(request) -> tuple[str, int | None, str | None]:
    spec = request.model_spec
    version = spec.version.value if spec.HasField("version") else None
    label = spec.version_label if spec.HasField("version_label") else None
    return spec.name, version, label


async def _abort(context: grpc.aio.ServicerContext, e: ServingError):
    await context.abort(GRPC_CODE.get(e.code, grpc.StatusCode.INTERNAL), e.message)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, registry: Registry, predictor: Predictor):
        self.registry, self.predictor = registry, predictor

    async def Predict(self, request, context):
        context.set_trailing_metadata((("x-served-by", SERVED_BY),))  # with errors too
        try:
            servable = self.registry.get(*_spec(request))
            sig_name = request.model_spec.signature_name
            timer = self.predictor.metrics.codec_timer
            label = f"{servable.name}:{servable.version}"  # as the batcher's histograms
            try:
                with timer(label, "decode"):
                    inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            except (TypeError, ValueError) as e:
                raise invalid(f"bad TensorProto: {e}") from None
            servable.validate(sig_name, inputs)
            outputs = await self.predictor.predict(
                servable, sig_name, inputs, list(request.output_filter)
            )
            with timer(label, "encode"):  # serializing the message is gRPC's, not timed
                response = predict_pb2.PredictResponse(model_spec=model_spec(servable, sig_name))
                for k, v in outputs.items():
                    response.outputs[k].CopyFrom(tf.make_tensor_proto(np.ascontiguousarray(v)))
            return response
        except ServingError as e:
            await _abort(context, e)

    async def GetModelMetadata(self, request, context):
        try:
            fields = list(request.metadata_field)
            if not fields:
                raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
            for f in fields:
                if f != "signature_def":
                    raise invalid(f"Metadata field {f} is not supported")
            return self.registry.metadata(*_spec(request))
        except ServingError as e:
            await _abort(context, e)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, registry: Registry):
        self.registry = registry

    async def GetModelStatus(self, request, context):
        try:
            return self.registry.status(*_spec(request))
        except ServingError as e:
            await _abort(context, e)


def create_server(registry: Registry, predictor: Predictor, address: str) -> grpc.aio.Server:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(registry, predictor), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(registry), server)
    server.add_insecure_port(address)
    return server
