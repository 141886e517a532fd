"""The gateway's OIP gRPC front end (inference.GRPCInferenceService) with the unmodified
tritonclient.grpc client (and, where a request must be malformed or its trailing metadata read,
the generated stub tritonclient ships), against the fake backends: the same answers, errors,
limits, auth, metrics and access log as REST."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Any, Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from contract.codec import InferRequest
from tests.conftest import REPO, free_port, wait_for
from tests.gateway.test_multi_io import NAMES, SERVED, answer, assert_outputs, runtime_of, sample

RPC = "/inference.GRPCInferenceService/"
KEY = "s3cret"  # strict_gateway's API key
AUTH = (("authorization", f"Bearer {KEY}"),)


@pytest.fixture(scope="module")
def stub(gateway) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(gateway.grpc_url) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def client(gateway) -> tgrpc.InferenceServerClient:
    return tgrpc.InferenceServerClient(gateway.grpc_url)


def raw_request(model: str, arrays: dict[str, np.ndarray], **fields: Any) -> pb.ModelInferRequest:
    """A ModelInferRequest with every input as raw_input_contents (tritonclient's form)."""
    req = InferRequest.from_arrays(arrays)
    msg = pb.ModelInferRequest(model_name=model, **fields)
    for t in req.inputs:
        msg.inputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        msg.raw_input_contents.append(np.ascontiguousarray(t.array).tobytes())
    return msg


def triton_inputs(arrays: dict[str, np.ndarray]) -> list[tgrpc.InferInput]:
    inputs = []
    for t in InferRequest.from_arrays(arrays).inputs:
        i = tgrpc.InferInput(t.name, t.shape, t.datatype)
        i.set_data_from_numpy(t.array)
        inputs.append(i)
    return inputs


def outputs_of(result: tgrpc.InferResult, names: list[str]) -> dict[str, np.ndarray]:
    return {n: result.as_numpy(n) for n in names}


def rpc_error(call, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        call(*args, **kwargs)
    return e.value


# --- health, metadata, index -------------------------------------------------------------------
def test_health_metadata_and_index_answer_as_rest(gateway, client, stub) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata().name == "servebench-gateway"
    assert client.is_model_ready("tiny-pair") and client.is_model_ready("tiny-pair@tfserving")
    meta = client.get_model_metadata("tiny-pair@tfserving", as_json=True)
    assert meta["platform"] == "tfserving" and meta["versions"] == ["1"]
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
        ("x", "FP32", ["-1", "4"]), ("ids", "INT64", ["-1", "-1"])]  # int64 as JSON strings
    with gateway.client() as c:
        rest = c.post("/v2/repository/index").json()
        rest_ready = c.post("/v2/repository/index", json={"ready": True}).json()
    index = client.get_model_repository_index(as_json=True)["models"]
    fields = lambda e: (e["name"], e.get("version", ""), e.get("state"), e.get("reason", ""))  # noqa: E731
    assert [fields(e) for e in index] == [fields(e) for e in rest]
    ready = stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=True)).models
    assert [m.name for m in ready] == [e["name"] for e in rest_ready]
    assert {m.state for m in ready} == {"READY"} and len(ready) < len(index)


def test_unknown_model_is_not_found_with_the_rest_message(gateway, client) -> None:
    with gateway.client() as c:
        rest = c.get("/v2/models/nope").json()["error"]
    for call in (client.get_model_metadata, client.is_model_ready):
        with pytest.raises(InferenceServerException) as e:
            call("nope")
        assert e.value.status() == "StatusCode.NOT_FOUND" and e.value.message() == rest
    with pytest.raises(InferenceServerException) as e:  # failed parity: not routable
        client.infer("tiny-img@tflite", triton_inputs({"x": np.zeros((1, 2, 2, 1), np.float32)}))
    assert e.value.status() == "StatusCode.NOT_FOUND" and "failed parity" in e.value.message()


def test_other_rpcs_are_unimplemented_with_a_message(stub) -> None:
    e = rpc_error(stub.ModelStatistics, pb.ModelStatisticsRequest(name="tiny-mlp"))
    assert e.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "ModelStatistics is not implemented by this gateway" in e.details()
    assert "ModelInfer" in e.details()


# --- inference ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_infer_raw_equals_rest_on_every_runtime(gateway, client, stub, name) -> None:
    """Two inputs (FP32 + INT64 token ids), two outputs, bare and pinned names: value for value
    what REST answers, the runtime that served it in trailing metadata."""
    arrays = sample(3, 7, seed=5)
    result = client.infer(name, triton_inputs(arrays))
    got = outputs_of(result, ["logits", "total"])
    assert_outputs(got, arrays)
    body, _ = InferRequest.from_arrays(arrays).to_oip()
    with gateway.client() as c:
        rest = answer(c.post(f"/v2/models/{name}/infer", content=body))
    for k in rest:
        np.testing.assert_array_equal(got[k], rest[k])
    _, call = stub.ModelInfer.with_call(raw_request(name, arrays),
                                        metadata=(("x-request-id", "grpc-req-1"),))
    trailing = dict(call.trailing_metadata())
    assert trailing["x-request-id"] == "grpc-req-1"
    assert trailing["x-served-by"] == SERVED[runtime_of(name)]


def test_grpc_requests_reach_oip_backends_as_binary_tensors(fakes, stub) -> None:
    """No float text on the way: a gRPC request goes to our OIP servers with binary inputs and
    binary outputs asked for (its answer is re-encoded for the client anyway)."""
    arrays = sample(2, 3, seed=9)
    result = tgrpc.InferResult(stub.ModelInfer(raw_request("tiny-pair@tflite", arrays)))
    assert_outputs(outputs_of(result, ["logits", "total"]), arrays)
    headers, body = fakes["tflite"].last("/infer")
    head_len = int(headers["inference-header-content-length"])
    head = json.loads(body[:head_len])
    assert head["parameters"]["binary_data_output"] is True
    assert all("data" not in t and t["parameters"]["binary_data_size"] > 0 for t in head["inputs"])


def test_infer_typed_contents(stub) -> None:
    arrays = sample(2, 5, seed=2)
    msg = pb.ModelInferRequest(model_name="tiny-pair@torchserve")
    msg.inputs.add(name="x", datatype="FP32", shape=[2, 4]).contents.fp32_contents.extend(
        arrays["x"].ravel().tolist())
    msg.inputs.add(name="ids", datatype="INT64", shape=[2, 5]).contents.int64_contents.extend(
        arrays["ids"].ravel().tolist())
    assert_outputs(outputs_of(tgrpc.InferResult(stub.ModelInfer(msg)), ["logits", "total"]), arrays)


def test_outputs_filter_id_parameters_and_version(client) -> None:
    arrays = sample(2, 4, seed=3)
    result = client.infer("tiny-pair@onnxruntime", triton_inputs(arrays), request_id="r-42",
                          outputs=[tgrpc.InferRequestedOutput("total")])
    resp = result.get_response()
    assert resp.id == "r-42" and resp.model_version == "1"
    assert [o.name for o in resp.outputs] == ["total"]
    assert_outputs(outputs_of(result, ["total"]), arrays, ["total"])
    versioned = client.infer("tiny-pair@tflite", triton_inputs(arrays), model_version="1")
    assert versioned.get_response().model_version == "1"
    with pytest.raises(InferenceServerException) as e:
        client.infer("tiny-pair@tflite", triton_inputs(arrays), model_version="9")
    assert e.value.status() == "StatusCode.NOT_FOUND" and "no version '9'" in e.value.message()


def _typed_and_raw(msg: pb.ModelInferRequest) -> pb.ModelInferRequest:
    msg.inputs[0].contents.fp32_contents.extend([0.0] * 4)
    return msg


def _typed_wrong_field() -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="tiny-mlp")
    msg.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.int64_contents.extend([1] * 4)
    return msg


def _typed_short() -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="tiny-mlp")
    msg.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([1.0] * 3)
    return msg


def _raw_size() -> pb.ModelInferRequest:
    msg = raw_request("tiny-mlp", X)
    msg.raw_input_contents[0] = b"\0" * 12
    return msg


def _raw_count() -> pb.ModelInferRequest:
    msg = raw_request("tiny-pair", PAIR)
    del msg.raw_input_contents[1]
    return msg


def _bytes_input() -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="tiny-mlp")
    msg.inputs.add(name="x", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"hi")
    return msg


X = {"x": np.ones((1, 4), np.float32)}
PAIR = sample(1, 3)
INVALID = {
    "shape": (lambda: raw_request("tiny-mlp", {"x": np.ones((1, 5), np.float32)}),
              "input 'x' has shape [1, 5], the model takes [-1, 4]"),
    "datatype": (lambda: raw_request("tiny-mlp", {"x": np.ones((1, 4), np.float64)}),
                 "input 'x' has datatype FP64, the model takes FP32"),
    "raw size": (_raw_size, "tensor 'x': shape [1, 4] of FP32 needs 16 bytes, its "
                            "raw_input_contents entry has 12"),
    "raw count": (_raw_count, "input 'ids' has no raw_input_contents entry"),
    "raw and typed": (lambda: _typed_and_raw(raw_request("tiny-mlp", X)),
                      "input 'x' is sent both as raw_input_contents and as typed contents"),
    "typed field": (_typed_wrong_field,
                    "input 'x': FP32 values go in contents.fp32_contents, the request sets "
                    "contents.int64_contents"),
    "typed count": (_typed_short, "input 'x': shape [1, 4] needs 4 elements, data has 3"),
    "BYTES": (_bytes_input, "tensor 'x': string tensors (BYTES) are not served"),
    "token range": (lambda: raw_request("tiny-pair@tfserving", {**PAIR, "ids": PAIR["ids"] + 100}),
                    "input 'ids': value"),
}


@pytest.mark.parametrize("case", INVALID)
def test_invalid_requests_name_the_input(stub, case) -> None:
    build, message = INVALID[case]
    e = rpc_error(stub.ModelInfer, build())
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.details()
    assert message in e.details()


def test_batch_above_max_batch_size_is_resource_exhausted(client) -> None:
    with pytest.raises(InferenceServerException) as e:
        client.infer("tiny-mlp", triton_inputs({"x": np.zeros((257, 4), np.float32)}))
    assert e.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert e.value.message() == "batch of 257 exceeds this model's limit of 256 samples"


# --- bounds and auth (strict_gateway: API key, 4 KiB messages) ---------------------------------
def test_message_above_the_payload_limit_is_refused(strict_gateway) -> None:
    with grpc.insecure_channel(strict_gateway.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        big = raw_request("tiny-mlp", {"x": np.zeros((300, 4), np.float32)})  # 4.8 KB
        e = rpc_error(stub.ModelInfer, big, metadata=AUTH)
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stub.ModelInfer(raw_request("tiny-mlp", X), metadata=AUTH).outputs


def test_api_key_on_every_rpc_but_health(strict_gateway) -> None:
    with grpc.insecure_channel(strict_gateway.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(pb.ServerLiveRequest()).live  # open, as REST's health routes
        assert stub.ServerReady(pb.ServerReadyRequest()).ready
        calls = [(stub.ModelInfer, raw_request("tiny-mlp", X)),
                 (stub.ModelMetadata, pb.ModelMetadataRequest(name="tiny-mlp")),
                 (stub.ModelReady, pb.ModelReadyRequest(name="tiny-mlp")),
                 (stub.ServerMetadata, pb.ServerMetadataRequest()),
                 (stub.RepositoryIndex, pb.RepositoryIndexRequest())]
        for call, request in calls:
            for metadata in ((), (("authorization", "Bearer wrong"),)):
                e = rpc_error(call, request, metadata=metadata)
                assert e.code() == grpc.StatusCode.UNAUTHENTICATED
                assert e.details() == ("missing or wrong API key: send 'Authorization: Bearer "
                                       "<key>'")
            assert call(request, metadata=AUTH) is not None
            e = rpc_error(call, request, metadata=AUTH * 2)
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert e.details() == "more than one Authorization header"
    client = tgrpc.InferenceServerClient(strict_gateway.grpc_url)
    assert client.get_model_metadata("tiny-mlp", headers=dict(AUTH)).name == "tiny-mlp"


# --- backends down -----------------------------------------------------------------------------
def test_backend_down_is_unavailable_and_timeout_is_deadline_exceeded(broken_gateway) -> None:
    g, _ = broken_gateway
    client = tgrpc.InferenceServerClient(g.grpc_url)
    inputs = triton_inputs(X)
    for name, status in [("tiny-mlp@onnxruntime", "UNAVAILABLE"),  # refused
                         ("tiny-mlp@tfserving", "UNAVAILABLE"),  # answers 500: 502
                         ("tiny-mlp@tflite", "DEADLINE_EXCEEDED")]:  # never answers (0.5 s)
        with pytest.raises(InferenceServerException) as e:
            client.infer(name, inputs)
        assert e.value.status() == f"StatusCode.{status}", (name, e.value.message())
        assert e.value.message().startswith(f"backend {name.partition('@')[2]}")
    assert client.infer("tiny-mlp", inputs).as_numpy("y").shape == (1, 3)  # failed over


# --- operations: metrics, access log -----------------------------------------------------------
def test_metrics_in_flight_and_access_log(gateway, stub) -> None:
    _, call = stub.ModelInfer.with_call(raw_request("tiny-mlp@tflite", X),
                                        metadata=(("x-request-id", "grpc-log-1"),))
    rpc_error(stub.ModelInfer, raw_request("nope", X))
    with gateway.client() as c:
        metrics = c.get("/metrics").text
    counted = [line.split(" ")[0] for line in metrics.splitlines()
               if line.startswith("gateway_requests_total{") and "grpc_infer" in line]
    assert ('gateway_requests_total{code="200",endpoint="grpc_infer",model="tiny-mlp",'
            'runtime="tflite"}') in counted
    assert 'gateway_requests_total{code="404",endpoint="grpc_infer",model="-",runtime="-"}' in counted
    assert "gateway_requests_in_flight" in metrics

    def line() -> dict | None:
        for text in gateway.log.read_text().splitlines():
            if '"grpc-log-1"' in text:
                return json.loads(text)
        return None

    record = wait_for(line, "the access-log line of the RPC", timeout=5)
    assert record["method"] == "gRPC" and record["path"] == RPC + "ModelInfer"
    assert record["status"] == 200 and record["served_by"] == "tflite"
    assert set(record) == {"ts", "method", "path", "model", "runtime", "served_by", "status",
                           "duration_ms", "request_id"}


@pytest.mark.parametrize("busy_flag,other_flag,setting", [
    ("--grpc-port", "--tfs-grpc-port", "GATEWAY_GRPC_PORT"),
    ("--tfs-grpc-port", "--grpc-port", "GATEWAY_TFS_GRPC_PORT"),
])  # fmt: skip
def test_a_busy_grpc_port_stops_the_gateway_saying_so(store, busy_flag, other_flag, setting) -> None:
    """gRPC does not share a busy port (no SO_REUSEPORT): the gateway exits, naming the port
    (OIP's or TF Serving's) and its setting."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(REPO), "STACK_MODEL_STORE": str(store)}
        r = subprocess.run([sys.executable, "-m", "services.gateway", "--host", "127.0.0.1",
                            "--port", str(free_port()), busy_flag, str(port),
                            other_flag, str(free_port())],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert f"cannot listen for gRPC on 127.0.0.1:{port}" in r.stderr
    assert f"set {setting} (0: none)" in r.stderr
