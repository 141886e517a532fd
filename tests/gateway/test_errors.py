"""Error codes: 400/404/413/401 from validation and auth; 503/504/502 and failover from backends."""

from __future__ import annotations

import math

import httpx
import orjson
import pytest


def tensor(shape=(1, 4), datatype="FP32", name="x", n=None):
    count = n if n is not None else math.prod(shape)
    return {"name": name, "shape": list(shape), "datatype": datatype, "data": [0.5] * count}


def infer(client, model, body, **kw):
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post(f"/v2/models/{model}/infer", content=content, **kw)


@pytest.mark.parametrize(
    "body, message",
    [
        ({"inputs": [tensor(shape=(1, 5))]}, "input 'x' has shape [1, 5], the model takes [-1, 4]"),
        ({"inputs": [tensor(datatype="INT64")]}, "input 'x' has datatype INT64, the model takes FP32"),
        ({"inputs": [tensor(name="image")]}, "unknown input 'image'"),
        ({"inputs": [tensor(shape=(2, 4), n=5)]}, "needs 8 elements, data has 5"),
        ({"inputs": [tensor()], "outputs": [{"name": "z"}]}, "unknown output 'z'"),
        ({"inputs": [tensor(shape=(0, 4))]}, "empty batch"),
        (b'{"inputs": [', "not valid JSON"),
        ({"inputs": []}, "non-empty list"),
        # The hardening issue's 1 KB request that raised RecursionError (a 500 and 146 KiB of
        # traceback): nested data is walked no deeper than the tensor's rank.
        (b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":' + b"[" * 494 + b"0.5"
         + b"]" * 494 + b"}]}", "nested deeper than the tensor's rank 2"),
        ({"inputs": [tensor()], "id": 5}, "'id' must be a string"),
        ({"inputs": [tensor()], "parameters": 5}, "'parameters' must be an object"),
    ],
)
def test_400_names_the_problem(gateway, body, message) -> None:
    with gateway.client() as c:
        r = infer(c, "tiny-mlp", body)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


def test_400_bad_binary_header(gateway) -> None:
    with gateway.client() as c:
        r = infer(c, "tiny-mlp", b"{}", headers={"Inference-Header-Content-Length": "99"})
    assert r.status_code == 400 and "Inference-Header-Content-Length" in r.json()["error"]
    with gateway.client() as c:
        r = infer(c, "tiny-mlp", b"{}", headers={"Inference-Header-Content-Length": "x"})
    assert r.status_code == 400 and "non-negative integer" in r.json()["error"]


def test_backend_4xx_passes_through(gateway) -> None:
    body = {"inputs": [{**tensor(), "data": ["a", "b", "c", "d"]}]}
    with gateway.client() as c:
        r = infer(c, "tiny-mlp@onnxruntime", body)
    assert r.status_code == 400
    assert "backend onnxruntime rejected the request" in r.json()["error"]
    assert r.headers["x-served-by"] == "onnxruntime"


@pytest.mark.parametrize(
    "model, message",
    [("nope", "unknown model 'nope'"), ("tiny-mlp@triton", "unknown runtime 'triton'"),
     ("tiny-img@tflite", "failed parity")],
)
def test_404(gateway, model, message) -> None:
    with gateway.client() as c:
        for r in (infer(c, model, {"inputs": [tensor()]}), c.get(f"/v2/models/{model}"),
                  c.post(f"/v1/models/{model}:predict", json={"instances": [[0, 0, 0, 0]]})):
            assert r.status_code == 404 and message in r.json()["error"]


def test_413_payload_over_limit(strict_gateway) -> None:
    big = {"inputs": [tensor(shape=(400, 4))]}  # ~ 6.5 kB > 4 KiB
    with strict_gateway.client() as c:
        r = infer(c, "tiny-mlp", big)
        assert r.status_code == 413 and "4096" in r.json()["error"]
        r = c.post("/v1/models/tiny-mlp:predict", json={"instances": [[0.5] * 4] * 400})
        assert r.status_code == 413
        assert infer(c, "tiny-mlp", {"inputs": [tensor(shape=(2, 4))]}).status_code == 200


def test_401_without_or_with_wrong_key(strict_gateway) -> None:
    url, body = strict_gateway.url, orjson.dumps({"inputs": [tensor()]})
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "s3cret"}):
        for method, path in (("POST", "/v2/models/tiny-mlp/infer"), ("GET", "/v2/models/tiny-mlp"),
                             ("POST", "/v2/repository/index"), ("GET", "/metrics"), ("GET", "/v2")):
            r = httpx.request(method, url + path, content=body, headers=headers)
            assert r.status_code == 401 and "API key" in r.json()["error"], (path, headers)
            assert r.headers["x-request-id"]
    assert httpx.get(url + "/v2/health/live").status_code == 200
    assert httpx.get(url + "/v2/health/ready").status_code == 200
    with strict_gateway.client() as c:
        assert infer(c, "tiny-mlp", body).status_code == 200


def test_503_refused_names_the_backend(broken_gateway) -> None:
    g, _ = broken_gateway
    with g.client(timeout=5) as c:  # less than the 10 s backend timeout: it must not wait
        r = infer(c, "tiny-mlp@onnxruntime", {"inputs": [tensor()]})
        assert r.status_code == 503 and "onnxruntime" in r.json()["error"]
        assert "unreachable" in r.json()["error"] or "circuit open" in r.json()["error"]
        assert c.post("/v1/models/tiny-mlp@onnxruntime:predict",
                      json={"instances": [[0, 0, 0, 0]]}).status_code == 503


def test_504_backend_never_answers(broken_gateway) -> None:
    g, backends = broken_gateway
    with g.client(timeout=5) as c:  # the fake sleeps 60 s: only the gateway's 0.5 s ends it
        r = infer(c, "tiny-mlp@tflite", {"inputs": [tensor()]})
    assert r.status_code == 504
    assert r.json()["error"] == "backend tflite did not answer within 0.5 s"
    assert ("POST", "/v2/models/tiny-mlp/infer") in backends["tflite"].requests


def test_502_backend_answers_500(broken_gateway) -> None:
    g, _ = broken_gateway
    with g.client() as c:
        r = infer(c, "tiny-mlp@tfserving", {"inputs": [tensor()]})
    assert r.status_code == 502
    assert "tfserving" in r.json()["error"] and "fake backend exploded" in r.json()["error"]


def test_failover_when_default_runtime_is_down(broken_gateway, store) -> None:
    g, backends = broken_gateway
    with g.client() as c:
        for _ in range(3):
            r = infer(c, "tiny-mlp", {"inputs": [tensor(shape=(2, 4))]})
            assert r.status_code == 200, r.text
            assert r.headers["x-served-by"] == "torchserve"
        r = c.post("/v1/models/tiny-img:predict", json={"instances": [[[[0.5]] * 2] * 2]})
        assert r.status_code == 200 and r.headers["x-served-by"] == "torchserve"
        meta = c.get("/v2/models/tiny-mlp").json()
        cands = meta["parameters"]["candidates"]  # the down default's circuit is open: last
        assert "tiny-mlp@onnxruntime" in cands and cands[0] != "tiny-mlp@onnxruntime"
        index = {e["name"]: e for e in c.post("/v2/repository/index").json()}
        assert index["tiny-mlp@onnxruntime"]["state"] == "UNAVAILABLE"
        assert index["tiny-mlp"]["state"] == "READY"
