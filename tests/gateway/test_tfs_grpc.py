"""The gateway's TF Serving gRPC front end (tensorflow.serving.PredictionService, ModelService)
with the unmodified tensorflow-serving-api stubs, against the fake backends: the answers, errors,
limits and auth of the REST routes."""

from __future__ import annotations

from typing import Any, Iterator

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tests.gateway.test_multi_io import NAMES, SERVED, assert_outputs, runtime_of, sample

KEY = "s3cret"  # strict_gateway's API key
AUTH = (("authorization", f"Bearer {KEY}"),)
DT_FLOAT, DT_INT64 = 1, 9


@pytest.fixture(scope="module")
def channel(gateway) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(gateway.tfs_grpc_url) as ch:
        yield ch


@pytest.fixture(scope="module")
def predict(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def models(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def tensor(t: Any, a: np.ndarray, typed: bool = False) -> None:
    """Fill a TensorProto: tensor_content, or the typed field (float_val / int64_val)."""
    t.dtype = {np.float32: DT_FLOAT, np.int64: DT_INT64}[a.dtype.type]
    for d in a.shape:
        t.tensor_shape.dim.add().size = d
    if typed:
        getattr(t, "float_val" if a.dtype == np.float32 else "int64_val").extend(a.ravel().tolist())
    else:
        t.tensor_content = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()


def request(name: str, arrays: dict[str, np.ndarray], typed: bool = False,
            **spec: Any) -> predict_pb2.PredictRequest:  # fmt: skip
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    for k, v in spec.items():
        if k == "version":
            req.model_spec.version.value = v
        else:
            setattr(req.model_spec, k, v)
    for k, a in arrays.items():
        tensor(req.inputs[k], a, typed)
    return req


def outputs(resp: predict_pb2.PredictResponse) -> dict[str, np.ndarray]:
    dt = {DT_FLOAT: "<f4", DT_INT64: "<i8"}
    return {k: np.frombuffer(t.tensor_content, dt[t.dtype]).reshape([d.size for d in t.tensor_shape.dim])
            for k, t in resp.outputs.items()}  # fmt: skip


def rpc_error(call, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        call(*args, **kwargs)
    return e.value


@pytest.mark.parametrize("typed", [False, True], ids=["tensor_content", "typed"])
@pytest.mark.parametrize("name", NAMES)
def test_predict_bare_and_pinned_names(predict, name, typed) -> None:
    arrays = sample(3, 5, seed=2)
    resp, call = predict.Predict.with_call(request(name, arrays, typed),
                                           metadata=(("x-request-id", "tfs-1"),))
    assert resp.model_spec.name == name and resp.model_spec.version.value == 1
    assert resp.model_spec.signature_name == "serving_default"
    got = outputs(resp)
    assert_outputs({k: got[k] for k in sorted(got)}, arrays, sorted(got))
    trailing = dict(call.trailing_metadata())
    assert trailing["x-request-id"] == "tfs-1"
    assert trailing["x-served-by"] == SERVED[runtime_of(name)]


def test_output_filter_version_and_broadcast(predict) -> None:
    arrays = sample(2, 3)
    req = request("tiny-pair", arrays, version=1)
    req.output_filter.append("total")
    got = outputs(predict.Predict(req))
    assert list(got) == ["total"]
    req.inputs["x"].Clear()
    req.inputs["x"].dtype = DT_FLOAT
    for d in (2, 4):
        req.inputs["x"].tensor_shape.dim.add().size = d
    req.inputs["x"].float_val.append(0.5)  # one value: broadcast, as TensorFlow does
    assert outputs(predict.Predict(req))["total"].shape[0] == 2


@pytest.mark.parametrize("case,code,words", [
    ("signature", "INVALID_ARGUMENT", ['Serving signature name: "other" not found']),
    ("dtype", "INVALID_ARGUMENT", ["input 'x' has datatype FP64, the model takes FP32"]),
    ("shape", "INVALID_ARGUMENT", ["input 'x' has shape [2, 3], the model takes [-1, 4]"]),
    ("count", "INVALID_ARGUMENT", ["input 'x'", "float_val has 3"]),
    ("model", "NOT_FOUND", ["unknown model 'nope'"]),
    ("version", "NOT_FOUND", ["version"]),
    ("label", "INVALID_ARGUMENT", ["Unrecognized servable version label: stable"]),
    ("batch", "RESOURCE_EXHAUSTED", ["batch of 257 exceeds this model's limit of 256 samples"]),
])  # fmt: skip
def test_predict_errors(predict, case, code, words) -> None:
    arrays = sample(2, 3)
    req = request("tiny-pair", arrays)
    if case == "signature":
        req.model_spec.signature_name = "other"
    elif case == "dtype":
        req.inputs["x"].Clear()
        req.inputs["x"].dtype = 2
        for d in (2, 4):
            req.inputs["x"].tensor_shape.dim.add().size = d
        req.inputs["x"].double_val.extend([0.0] * 8)
    elif case == "shape":
        req = request("tiny-pair", {**arrays, "x": np.zeros((2, 3), np.float32)})
    elif case == "count":
        req.inputs["x"].ClearField("tensor_content")
        req.inputs["x"].float_val.extend([1.0, 2.0, 3.0])
    elif case == "model":
        req.model_spec.name = "nope"
    elif case == "version":
        req.model_spec.version.value = 7
    elif case == "label":
        req.model_spec.version_label = "stable"
    elif case == "batch":
        req = request("tiny-mlp", {"x": np.zeros((257, 4), np.float32)})
    e = rpc_error(predict.Predict, req)
    assert e.code().name == code, e.details()
    assert all(w in e.details() for w in words), e.details()


def test_get_model_metadata_is_the_manifest_signature(gateway, predict) -> None:
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "tiny-pair@tfserving"
    resp = predict.GetModelMetadata(req)
    assert resp.model_spec.name == "tiny-pair@tfserving" and resp.model_spec.version.value == 1
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    assert resp.metadata["signature_def"].Unpack(sig_map)
    sig = sig_map.signature_def["serving_default"]
    assert sig.method_name == "tensorflow/serving/predict"
    got = {k: (v.dtype, [d.size for d in v.tensor_shape.dim]) for k, v in sig.inputs.items()}
    assert got == {"x": (DT_FLOAT, [-1, 4]), "ids": (DT_INT64, [-1, -1])}
    with gateway.client() as c:  # what the REST v1 metadata route says
        rest = c.get("/v1/models/tiny-pair@tfserving/metadata").json()
    rest_sig = rest["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert set(sig.outputs) == set(rest_sig["outputs"])
    for field, message in [([], "GetModelMetadataRequest must specify at least one metadata_field"),
                           (["other"], "Metadata field other is not supported")]:  # fmt: skip
        bad = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=field)
        bad.model_spec.name = "tiny-pair"
        e = rpc_error(predict.GetModelMetadata, bad)
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and e.details() == message


def test_get_model_status(gateway, models) -> None:
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "tiny-pair"
    (st,) = models.GetModelStatus(req).model_version_status
    assert st.version == 1 and st.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert st.status.error_code == 0
    req.model_spec.name = "nope"
    e = rpc_error(models.GetModelStatus, req)
    assert e.code() == grpc.StatusCode.NOT_FOUND and "unknown model 'nope'" in e.details()


def test_api_key_on_every_rpc(strict_gateway) -> None:
    with grpc.insecure_channel(strict_gateway.tfs_grpc_url) as ch:
        predict = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        models = model_service_pb2_grpc.ModelServiceStub(ch)
        meta = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        status = get_model_status_pb2.GetModelStatusRequest()
        for r in (meta, status):
            r.model_spec.name = "tiny-mlp"
        calls = [(predict.Predict, request("tiny-mlp", {"x": np.zeros((1, 4), np.float32)})),
                 (predict.GetModelMetadata, meta), (models.GetModelStatus, status)]
        for call, req in calls:
            e = rpc_error(call, req, metadata=(("authorization", "Bearer wrong"),))
            assert e.code() == grpc.StatusCode.UNAUTHENTICATED
            assert call(req, metadata=AUTH) is not None
        big = request("tiny-mlp", {"x": np.zeros((300, 4), np.float32)})  # 4.8 KB > 4 KiB
        assert rpc_error(predict.Predict, big, metadata=AUTH).code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_metrics_and_access_log(gateway, predict) -> None:
    predict.Predict(request("tiny-pair", sample(1, 2)), metadata=(("x-request-id", "tfs-log"),))
    with gateway.client() as c:
        text = c.get("/metrics").text
    assert 'endpoint="tfs_grpc_predict"' in text
    assert "/tensorflow.serving.PredictionService/Predict" in gateway.log.read_text()


def test_backend_down_status_unknown_and_predict_fails_over(broken_gateway) -> None:
    """onnxruntime refuses connections: GetModelStatus says UNKNOWN with the REST route's
    reason, a pinned Predict is UNAVAILABLE, a bare one fails over (to torchserve)."""
    g, _ = broken_gateway
    with grpc.insecure_channel(g.tfs_grpc_url) as ch:
        models = model_service_pb2_grpc.ModelServiceStub(ch)
        predict = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        req = get_model_status_pb2.GetModelStatusRequest()
        req.model_spec.name = "tiny-mlp@onnxruntime"
        (st,) = models.GetModelStatus(req).model_version_status
        assert st.state == get_model_status_pb2.ModelVersionStatus.UNKNOWN
        assert st.status.error_code == 14 and st.status.error_message  # UNAVAILABLE, the reason
        x = {"x": np.ones((1, 4), np.float32)}
        e = rpc_error(predict.Predict, request("tiny-mlp@onnxruntime", x))
        assert e.code() == grpc.StatusCode.UNAVAILABLE and e.details().startswith("backend onnxruntime")
        resp, call = predict.Predict.with_call(request("tiny-mlp", x))
        assert outputs(resp)["y"].shape == (1, 3)
        assert dict(call.trailing_metadata())["x-served-by"] != "onnxruntime"
