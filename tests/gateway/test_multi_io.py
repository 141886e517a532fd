"""Two inputs (FP32 + INT64, dynamic sequence) and two outputs through the gateway on every
backend kind: OIP JSON, OIP binary (tritonclient, unmodified), TF Serving REST (row dicts and
columnar); outputs filter, id, model_version and binary per output; readiness with a model that is
not routable; failover when a backend answers that the model failed to load."""

from __future__ import annotations

import json
from typing import Iterator

import numpy as np
import orjson
import pytest
import tritonclient.http as triton

from contract.codec import InferRequest, InferResponse, header_length
from tests.gateway.conftest import GatewayProcess, backend_env
from tests.gateway.fakes import FakeBackend, compute

RUNTIMES = ("onnxruntime", "tflite", "tfserving", "torchserve")
NAMES = ["tiny-pair", *(f"tiny-pair@{rt}" for rt in RUNTIMES)]
SERVED = {"onnxruntime": "onnxruntime", "tflite": "tflite", "tfserving": "tfserving-standin",
          "torchserve": "torchserve"}


def sample(batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((batch, 4)).astype(np.float32),
            "ids": rng.integers(0, 100, size=(batch, seq), dtype=np.int64)}  # fmt: skip


def runtime_of(name: str) -> str:
    return name.partition("@")[2] or "onnxruntime"


def answer(r) -> dict[str, np.ndarray]:
    hl = r.headers.get("inference-header-content-length")
    return InferResponse.from_oip(r.content, header_length(hl)).arrays()


def assert_outputs(got: dict[str, np.ndarray], arrays: dict[str, np.ndarray], names=None) -> None:
    want = compute("tiny-pair", arrays)
    assert list(got) == list(names or want)
    for k in got:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        np.testing.assert_allclose(got[k], want[k], atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seq", [7, 16, 128])
def test_oip_json_two_inputs_two_outputs_any_sequence_length(gateway, fakes, name, seq) -> None:
    arrays = sample(3, seq, seed=seq)
    body, _ = InferRequest.from_arrays(arrays).to_oip()
    with gateway.client() as c:
        r = c.post(f"/v2/models/{name}/infer", content=body)
    assert r.status_code == 200, r.text
    assert r.headers["x-served-by"] == SERVED[runtime_of(name)]
    assert r.json()["model_version"] == "1"
    assert_outputs(answer(r), arrays)
    # the dynamic dimension reached the backend as sent
    fake = fakes[runtime_of(name)]
    _, sent = fake.last("/tiny-pair")
    if runtime_of(name) == "tfserving":
        assert np.asarray(orjson.loads(sent)["inputs"]["ids"]).shape == (3, seq)
    else:
        (ids,) = [t for t in orjson.loads(sent)["inputs"] if t["name"] == "ids"]
        assert ids["shape"] == [3, seq] and ids["datatype"] == "INT64"
    if runtime_of(name) in ("onnxruntime", "tflite"):
        assert sent == body  # the OIP backends get the received bytes


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seq", [7, 16])
def test_tritonclient_binary_inputs_and_binary_per_output(gateway, fakes, name, seq) -> None:
    arrays = sample(2, seq, seed=1)
    client = triton.InferenceServerClient(f"127.0.0.1:{gateway.port}")
    inputs = []
    for k, v in arrays.items():
        i = triton.InferInput(k, list(v.shape), "FP32" if k == "x" else "INT64")
        i.set_data_from_numpy(v, binary_data=True)
        inputs.append(i)
    outputs = [triton.InferRequestedOutput("logits", binary_data=True),
               triton.InferRequestedOutput("total", binary_data=False)]
    result = client.infer(name, inputs, outputs=outputs, request_id="tc-1")
    resp = result.get_response()
    assert resp["id"] == "tc-1" and resp["model_version"] == "1"
    by_name = {o["name"]: o for o in resp["outputs"]}
    assert "binary_data_size" in json.dumps(by_name["logits"]) and "data" in by_name["total"]
    assert_outputs({k: result.as_numpy(k) for k in ("logits", "total")}, arrays)
    if runtime_of(name) in ("onnxruntime", "tflite"):  # forwarded with the binary part as is
        headers, _ = fakes[runtime_of(name)].last("/tiny-pair/")
        assert "inference-header-content-length" in headers


@pytest.mark.parametrize("name", NAMES)
def test_outputs_filter_id_and_binary_per_output_on_every_backend(gateway, name) -> None:
    arrays = sample(2, 5, seed=2)
    with gateway.client() as c:
        # only one output, as JSON
        req = InferRequest.from_arrays(arrays, id="req-7", outputs=["total"])
        r = c.post(f"/v2/models/{name}/infer", content=req.to_oip()[0])
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["id"] == "req-7" and doc["model_version"] == "1"
        assert [o["name"] for o in doc["outputs"]] == ["total"]
        assert_outputs(answer(r), arrays, names=["total"])
        # request-level binary_data_output with a per-output exception (Triton's rule)
        head = {"id": "req-8", "parameters": {"binary_data_output": True},
                "outputs": [{"name": "logits"}, {"name": "total", "parameters": {"binary_data": False}}]}
        body, _ = InferRequest.from_arrays(arrays).to_oip()
        doc = orjson.loads(body)
        r = c.post(f"/v2/models/{name}/infer", content=orjson.dumps({**doc, **head}))
        assert r.status_code == 200, r.text
        n = int(r.headers["inference-header-content-length"])
        meta = {o["name"]: o for o in json.loads(r.content[:n])["outputs"]}
        assert meta["logits"]["parameters"]["binary_data_size"] == 2 * 3 * 4
        assert "data" in meta["total"] and "parameters" not in meta["total"]
        assert json.loads(r.content[:n])["id"] == "req-8"
        assert_outputs(answer(r), arrays)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seq", [7, 16])
def test_tfserving_rest_row_dicts_and_columnar(gateway, name, seq) -> None:
    arrays = sample(3, seq, seed=3)
    want = compute("tiny-pair", arrays)
    rows = [{k: v[i].tolist() for k, v in arrays.items()} for i in range(3)]
    with gateway.client() as c:
        r = c.post(f"/v1/models/{name}:predict", json={"instances": rows})
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert len(preds) == 3 and set(preds[0]) == {"logits", "total"}
        np.testing.assert_allclose([p["logits"] for p in preds], want["logits"], atol=1e-5)
        assert [p["total"] for p in preds] == want["total"].tolist()
        r = c.post(f"/v1/models/{name}/versions/1:predict",
                   json={"signature_name": "serving_default",
                         "inputs": {k: v.tolist() for k, v in arrays.items()}})
        assert r.status_code == 200, r.text
        out = r.json()["outputs"]
        np.testing.assert_allclose(out["logits"], want["logits"], atol=1e-5)
        assert out["total"] == want["total"].tolist()
    assert r.headers["x-served-by"] == SERVED[runtime_of(name)]


@pytest.mark.parametrize("name", ["tiny-pair@onnxruntime", "tiny-pair@tfserving",
                                  "tiny-pair@torchserve"])
def test_tfserving_rest_unknown_signature_name_is_400(gateway, name) -> None:
    with gateway.client() as c:
        r = c.post(f"/v1/models/{name}:predict",
                   json={"signature_name": "classify", "inputs": {"x": [[0] * 4], "ids": [[1]]}})
    assert r.status_code == 400 and '"classify" not found' in r.json()["error"]


def tensors(arrays: dict[str, np.ndarray], **override) -> list[dict]:
    out = []
    for t in orjson.loads(InferRequest.from_arrays(arrays).to_oip()[0])["inputs"]:
        out.append({**t, **override.get(t["name"], {})})
    return out


@pytest.mark.parametrize(
    "change, message",
    [
        ({"ids": {"datatype": "FP32"}}, "input 'ids' has datatype FP32, the model takes INT64"),
        ({"ids": {"datatype": "INT32"}}, "input 'ids' has datatype INT32"),
        ({"ids": {"shape": [2, 3, 1]}}, "input 'ids' has shape [2, 3, 1]"),
        ({"ids": {"shape": [3, 3]}}, "needs 9 elements, data has 6"),
        ({"ids": {"data": [1.5] * 6}}, "'ids': INT64 data must be integers"),
    ],
)
def test_bad_second_input_is_400_naming_it(gateway, change, message) -> None:
    body = {"inputs": tensors(sample(2, 3), **change)}
    with gateway.client() as c:
        for name in ("tiny-pair@tfserving", "tiny-pair@onnxruntime"):
            r = c.post(f"/v2/models/{name}/infer", content=orjson.dumps(body))
            if "must be integers" in message and name.endswith("onnxruntime"):
                # values are checked where they are decoded: by the OIP backend (forwarded bytes)
                assert r.status_code == 400 and "ids" in r.json()["error"]
                continue
            assert r.status_code == 400, r.text
            assert message in r.json()["error"]


def test_missing_input_is_400(gateway) -> None:
    (x, _) = tensors(sample(1, 3))
    with gateway.client() as c:
        r = c.post("/v2/models/tiny-pair/infer", content=orjson.dumps({"inputs": [x]}))
        assert r.status_code == 400 and "missing input(s) ['ids']" in r.json()["error"]
        r = c.post("/v1/models/tiny-pair:predict", json={"instances": [{"x": [0, 0, 0, 0]}]})
        assert r.status_code == 400 and "'ids'" in r.json()["error"]
        r = c.post("/v1/models/tiny-pair:predict", json={"instances": [[0, 0, 0, 0]]})
        assert r.status_code == 400 and "several inputs" in r.json()["error"]


def test_batch_disagreement_is_400(gateway) -> None:
    a, b = sample(2, 3), sample(3, 3)
    body = {"inputs": [tensors(a)[0], tensors(b)[1]]}
    with gateway.client() as c:
        r = c.post("/v2/models/tiny-pair/infer", content=orjson.dumps(body))
    assert r.status_code == 400 and "disagree on the batch size" in r.json()["error"]


def test_readiness_ignores_a_model_that_is_not_routable(gateway) -> None:
    with gateway.client() as c:
        assert c.get("/v2/health/ready").status_code == 200
        index = {e["name"]: e for e in c.post("/v2/repository/index").json()}
        dead = index["tiny-dead"]
        assert dead["state"] == "UNAVAILABLE"
        assert "no artifact that passed its parity check" in dead["reason"]
        assert "no route converts Erf" in index["tiny-dead@tflite"]["reason"]
        assert "failed parity" in index["tiny-dead@onnxruntime"]["reason"]
        assert index["tiny-pair"]["state"] == "READY"
        r = c.post("/v2/models/tiny-dead/infer", content=b"{}")
        assert r.status_code == 404 and "parity" in r.json()["error"]


@pytest.fixture(scope="module")
def unloaded(store, tmp_path_factory) -> Iterator[tuple[GatewayProcess, dict[str, FakeBackend]]]:
    """tiny-pair failed to load on onnxruntime (503 as our OIP servers say it) and has no worker
    on torchserve; everything else is healthy."""
    f = {rt: FakeBackend(p).start() for rt, p in
         (("onnxruntime", "oip"), ("tflite", "oip"), ("tfserving", "tfserving"),
          ("torchserve", "torchserve"))}  # fmt: skip
    f["onnxruntime"].unloaded = {"tiny-pair"}
    f["torchserve"].unloaded = {"tiny-pair"}
    env = backend_env(store, *(f[rt].port for rt in RUNTIMES),
                      gateway_runtimes="onnxruntime,torchserve,tflite,tfserving")
    g = GatewayProcess(env, tmp_path_factory.mktemp("gw") / "gateway.log")
    g.wait_ready()
    yield g, f
    g.stop()
    for b in f.values():
        b.stop()


def test_failover_when_the_backend_failed_to_load_the_model(unloaded) -> None:
    g, f = unloaded
    arrays = sample(2, 4)
    body, _ = InferRequest.from_arrays(arrays).to_oip()
    with g.client() as c:
        for _ in range(5):  # 503s for a model do not open the backend's circuit
            r = c.post("/v2/models/tiny-pair/infer", content=body)
            assert r.status_code == 200, r.text
            assert r.headers["x-served-by"] == "tflite"  # onnxruntime, torchserve: failed to load
            assert_outputs(answer(r), arrays)
        r = c.post("/v1/models/tiny-pair:predict",
                   json={"inputs": {k: v.tolist() for k, v in arrays.items()}})
        assert r.status_code == 200 and r.headers["x-served-by"] == "tflite"
        assert ("POST", "/v2/models/tiny-pair/infer") in f["onnxruntime"].requests
        # pinned: a clear 503 naming the backend and its reason
        r = c.post("/v2/models/tiny-pair@onnxruntime/infer", content=body)
        assert r.status_code == 503
        assert r.json()["error"] == ("backend onnxruntime cannot serve tiny-pair: model tiny-pair "
                                     "failed to load: fake load error")
        assert r.headers["x-served-by"] == "onnxruntime"
        r = c.post("/v2/models/tiny-pair@torchserve/infer", content=body)
        assert r.status_code == 503 and "backend torchserve cannot serve tiny-pair" in r.json()["error"]
        # the backend itself is fine
        r = c.post("/v2/models/tiny-mlp@onnxruntime/infer", content=InferRequest.from_arrays(
            {"x": np.zeros((1, 4), np.float32)}).to_oip()[0])
        assert r.status_code == 200
        index = {e["name"]: e for e in c.post("/v2/repository/index").json()}
        assert index["tiny-pair@onnxruntime"]["state"] == "UNAVAILABLE"
        assert "failed to load" in index["tiny-pair@onnxruntime"]["reason"]
        assert index["tiny-pair"]["state"] == "READY"
        assert c.get("/v2/models/tiny-pair/ready").status_code == 200
        assert c.get("/v2/models/tiny-pair@onnxruntime/ready").status_code == 400
        assert c.get("/v2/health/ready").status_code == 200
