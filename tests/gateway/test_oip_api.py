"""The OIP v2 API against fake backends: JSON and binary tensors, tritonclient, metadata, index."""

from __future__ import annotations

import json
import time

import numpy as np
import orjson
import pytest
import tritonclient.http as triton

from contract.manifest import load_store

PAIRS = ["tiny-mlp", "tiny-mlp@onnxruntime", "tiny-mlp@tflite", "tiny-mlp@tfserving",
         "tiny-mlp@torchserve", "tiny-img", "tiny-img@tfserving", "tiny-img@torchserve"]
SERVED = {"onnxruntime": "onnxruntime", "tflite": "tflite", "tfserving": "tfserving-standin",
          "torchserve": "torchserve"}


def reference(store, name: str, batch: int) -> tuple[np.ndarray, np.ndarray]:
    x, y, _ = load_store(store)[name.partition("@")[0]].load_reference(store)
    return x["x"][:batch], y["y"][:batch]


def served_by(name: str) -> str:
    return SERVED[name.partition("@")[2] or "onnxruntime"]


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_infer(gateway, store, name, binary) -> None:
    client = triton.InferenceServerClient(f"127.0.0.1:{gateway.port}")
    x, y = reference(store, name, 5)
    inp = triton.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outputs = None if binary else [triton.InferRequestedOutput("y", binary_data=False)]
    result = client.infer(name, [inp], outputs=outputs)
    out = result.as_numpy("y")
    assert out.dtype == np.float32 and out.shape == y.shape
    np.testing.assert_allclose(out, y, atol=1e-5)
    # binary in -> binary out by default; JSON when asked
    assert ("binary_data_size" in json.dumps(result.get_response())) == binary


def test_tritonclient_server_and_metadata(gateway) -> None:
    client = triton.InferenceServerClient(f"127.0.0.1:{gateway.port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny-mlp@tfserving")
    meta = client.get_model_metadata("tiny-mlp@tflite")
    assert meta["platform"] == "tflite" and meta["inputs"][0]["shape"] == [-1, 4]
    assert meta["parameters"]["parity"]["tflite"]["ok"] is True
    img = client.get_model_metadata("tiny-img")
    assert img["parameters"]["parity"]["tflite"]["ok"] is False
    assert "tiny-img@tflite" not in img["parameters"]["candidates"]
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]


def test_repository_index(gateway) -> None:
    client = triton.InferenceServerClient(f"127.0.0.1:{gateway.port}")
    index = {e["name"]: e for e in client.get_model_repository_index()}
    for rt in SERVED:
        assert index[f"tiny-mlp@{rt}"]["state"] == "READY"
    assert index["tiny-mlp"]["state"] == "READY" and index["tiny-mlp"]["version"] == "1"
    assert index["tiny-img@tflite"]["state"] == "UNAVAILABLE"
    assert "parity" in index["tiny-img@tflite"]["reason"]
    with gateway.client() as c:
        ready_only = c.post("/v2/repository/index", content=b'{"ready": true}').json()
    assert "tiny-img@tflite" not in {e["name"] for e in ready_only}


@pytest.mark.parametrize("name", PAIRS)
def test_json_infer_names_the_runtime(gateway, store, name) -> None:
    x, y = reference(store, name, 3)
    body = {"id": "r1", "inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                    "data": x.ravel().tolist()}]}
    with gateway.client() as c:
        r = c.post(f"/v2/models/{name}/infer", content=orjson.dumps(body),
                   headers={"X-Request-ID": "abc-123"})
    assert r.status_code == 200, r.text
    assert r.headers["x-served-by"] == served_by(name)
    assert r.headers["x-request-id"] == "abc-123"
    (out,) = r.json()["outputs"]
    assert out["datatype"] == "FP32" and out["shape"] == list(y.shape)
    got = np.array(out["data"], np.float32).reshape(out["shape"])
    np.testing.assert_allclose(got, y, atol=1e-5)


def test_binary_request_json_response_and_versions(gateway, store) -> None:
    x, y = reference(store, "tiny-mlp", 2)
    raw = x.tobytes()
    head = orjson.dumps({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "outputs": [{"name": "y", "parameters": {"binary_data": False}}]})
    with gateway.client() as c:
        for name in ("tiny-mlp@tfserving", "tiny-mlp@torchserve", "tiny-mlp@onnxruntime"):
            r = c.post(f"/v2/models/{name}/versions/1/infer", content=head + raw,
                       headers={"Inference-Header-Content-Length": str(len(head))})
            assert r.status_code == 200, r.text
            assert "inference-header-content-length" not in r.headers
            (out,) = r.json()["outputs"]
            got = np.array(out["data"], np.float32).reshape(2, 3)
            np.testing.assert_allclose(got, y, atol=1e-5)
        assert c.post("/v2/models/tiny-mlp/versions/7/infer", content=head + raw).status_code == 404


def test_json_request_binary_response(gateway, store) -> None:
    x, y = reference(store, "tiny-img", 4)
    body = orjson.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                     "data": x.tolist()}],  # nested data is fine too
                         "parameters": {"binary_data_output": True}})
    with gateway.client() as c:
        for name in ("tiny-img@tfserving", "tiny-img@torchserve", "tiny-img"):
            r = c.post(f"/v2/models/{name}/infer", content=body)
            assert r.status_code == 200, r.text
            n = int(r.headers["inference-header-content-length"])
            head = json.loads(r.content[:n])
            assert head["outputs"][0]["parameters"]["binary_data_size"] == y.nbytes
            got = np.frombuffer(r.content[n:], np.float32).reshape(y.shape)
            np.testing.assert_allclose(got, y, atol=1e-5)


def test_docs_metrics_and_access_log(gateway) -> None:
    with gateway.client() as c:
        assert c.get("/docs").status_code == 200
        spec = c.get("/openapi.json").json()
        assert {"/v2/models/{model}/infer", "/v1/models/{model}:predict"} <= set(spec["paths"])
        c.post("/v2/models/nope/infer", content=b"{}")
        text = c.get("/metrics").text
    labels = 'code="200",endpoint="infer",model="tiny-mlp",runtime="tfserving"'
    assert f"gateway_requests_total{{{labels}}}" in text
    assert 'gateway_errors_total{code="404",model="-",runtime="-"}' in text
    assert 'gateway_backend_up{runtime="torchserve"} 1.0' in text
    assert "gateway_request_duration_seconds_bucket" in text
    assert "gateway_requests_in_flight" in text
    infer = None
    for _ in range(50):  # the access log is written in batches, every 0.2 s
        lines = [json.loads(x) for x in gateway.log.read_text().splitlines() if x.startswith("{")]
        infer = next((e for e in lines if e["path"] == "/v2/models/tiny-mlp@tfserving/infer"), None)
        if infer:
            break
        time.sleep(0.1)
    assert infer is not None, "no access-log line"
    keys = {"method", "path", "model", "runtime", "status", "duration_ms", "request_id"}
    assert keys <= set(infer)
    assert infer["runtime"] == "tfserving" and infer["status"] == 200
