"""Issue 12's findings against the gateway: lost connections retried for bare names, a hung
backend taken out of rotation by the probe, the repository index cached and bounded, duplicate
Authorization headers refused, and the shared HTTP bounds (idle, slow, capped connections)."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests import http_checks
from tests.gateway.conftest import GatewayProcess, backend_env
from tests.gateway.fakes import FakeBackend
from tests.gateway.test_breaker import BODY, circuit, wait_for

RUNTIMES = ("onnxruntime", "tflite", "tfserving", "torchserve")


@pytest.fixture
def own_fakes() -> Iterator[dict[str, FakeBackend]]:
    """Fresh fakes a test may break (the session's `fakes` stay healthy for the others)."""
    f = {rt: FakeBackend(p).start()
         for rt, p in zip(RUNTIMES, ("oip", "oip", "tfserving", "torchserve"))}  # fmt: skip
    yield f
    for b in f.values():
        b.mode = "ok"
        b.stop()


def _gateway(store, fakes, tmp_path, **settings: str) -> GatewayProcess:
    env = backend_env(store, *(fakes[rt].port for rt in RUNTIMES), **settings)
    g = GatewayProcess(env, tmp_path / "gateway.log")
    g.wait_ready()
    return g


def test_connection_lost_before_an_answer_is_retried_for_bare_names(store, own_fakes, tmp_path):
    g = _gateway(store, own_fakes, tmp_path, gateway_probe_interval_s="600",
                 gateway_breaker_failures="1000")  # the circuits stay closed: retries only
    try:
        own_fakes["onnxruntime"].mode = "drop"  # as if killed while the request was in flight
        with g.client() as c:
            r = c.post("/v2/models/tiny-mlp/infer", json=BODY)
            assert r.status_code == 200, r.text
            assert r.headers["x-served-by"] == "tflite"  # retried on the next candidate
            assert ("POST", "/v2/models/tiny-mlp/infer") in own_fakes["onnxruntime"].requests
            r = c.post("/v2/models/tiny-mlp@onnxruntime/infer", json=BODY)  # pinned: fail fast
            assert r.status_code == 502
            assert "onnxruntime" in r.json()["error"] and "before answering" in r.json()["error"]
            own_fakes["onnxruntime"].mode = "cut"  # killed between its answer's headers and body
            r = c.post("/v2/models/tiny-mlp/infer", json=BODY)
            assert r.status_code == 200 and r.headers["x-served-by"] == "tflite", r.text
            own_fakes["onnxruntime"].mode = "drop"
            own_fakes["tflite"].mode = "drop"  # retried once, not down the whole list
            r = c.post("/v2/models/tiny-mlp/infer", json=BODY)
            assert r.status_code == 502
            assert not any(p == "/v2/models/tiny-mlp/infer" for _, p in
                           own_fakes["tfserving"].requests)
    finally:
        g.stop()


def test_torchserve_worker_lost_mid_request_is_retried_for_bare_names(store, own_fakes, tmp_path):
    g = _gateway(store, own_fakes, tmp_path, gateway_default_runtime="torchserve",
                 gateway_runtimes="torchserve,onnxruntime,tflite,tfserving")
    try:
        own_fakes["torchserve"].mode = "worker-died"
        with g.client() as c:
            r = c.post("/v2/models/tiny-mlp/infer", json=BODY)
            assert r.status_code == 200 and r.headers["x-served-by"] == "onnxruntime", r.text
            r = c.post("/v2/models/tiny-mlp@torchserve/infer", json=BODY)
            assert r.status_code == 502 and "Worker died" in r.json()["error"]
    finally:
        g.stop()


def test_hung_backend_leaves_rotation_through_the_probe(store, own_fakes, tmp_path):
    """Alive but answering nothing (SIGSTOP): the liveness probe opens its circuit without a
    request having to time out, and bare names go to the next runtime."""
    g = _gateway(store, own_fakes, tmp_path, gateway_breaker_reset_s="600")
    try:
        own_fakes["onnxruntime"].mode = "freeze"
        wait_for(lambda: circuit(g, "onnxruntime") == 1)
        with g.client(timeout=5) as c:
            r = c.post("/v2/models/tiny-mlp/infer", json=BODY)
            assert r.status_code == 200 and r.headers["x-served-by"] == "tflite"
            assert not any(p.endswith("/infer") for _, p in own_fakes["onnxruntime"].requests)
        own_fakes["onnxruntime"].mode = "ok"  # it resumes: the probe closes the circuit
        wait_for(lambda: circuit(g, "onnxruntime") == 0)
    finally:
        g.stop()


def test_repository_index_is_cached_and_bounded(store, own_fakes, tmp_path):
    g = _gateway(store, own_fakes, tmp_path, gateway_probe_interval_s="60")
    try:
        with g.client() as c:
            ready_calls = lambda: sum(p.endswith("/ready") for _, p in  # noqa: E731
                                      own_fakes["onnxruntime"].requests)
            first = c.post("/v2/repository/index").json()
            before = ready_calls()
            for _ in range(20):
                assert c.post("/v2/repository/index").json() == first
            assert ready_calls() == before  # one fan-out per probe interval, not per call
            r = c.post("/v2/repository/index", content=b"{" + b" " * 100_000 + b"}")
            assert r.status_code == 413 and "limit" in r.json()["error"]
            r = c.post("/v2/repository/index", json={"ready": "yes"})
            assert r.status_code == 400 and "ready" in r.json()["error"]
            ready = c.post("/v2/repository/index", json={"ready": True}).json()
            assert ready and all(e["state"] == "READY" for e in ready)
    finally:
        g.stop()


def test_two_authorization_headers_are_refused(strict_gateway):
    import httpx

    headers = [("Authorization", "Bearer wrong"), ("Authorization", "Bearer s3cret")]
    r = httpx.post(f"{strict_gateway.url}/v2/models/tiny-mlp/infer", json=BODY, headers=headers)
    assert r.status_code == 400 and "more than one Authorization" in r.json()["error"]


def test_connections_are_bounded(store, fakes, tmp_path):
    env = backend_env(store, *(fakes[rt].port for rt in RUNTIMES), **http_checks.BOUNDS_ENV)
    g = GatewayProcess(env, tmp_path / "gateway.log")
    try:
        http_checks.check_all(g.url, g.port, "/v2/models/tiny-mlp/infer")
    finally:
        g.stop()


def test_version_query_is_honoured_on_every_route(gateway):
    """The OpenAPI documents ?version on the unversioned routes: infer (served by the middleware's
    fast path) honours it as metadata does."""
    with gateway.client() as c:
        assert c.post("/v2/models/tiny-mlp/infer?version=99", json=BODY).status_code == 404
        assert c.get("/v2/models/tiny-mlp?version=99").status_code == 404
        assert c.post("/v2/models/tiny-mlp/infer?version=1", json=BODY).status_code == 200
        doc = c.get("/openapi.json").json()
    infer = doc["paths"]["/v2/models/{model}/infer"]["post"]
    assert {"400", "401", "404", "413", "502", "503", "504"} <= set(infer["responses"])
    assert "422" not in infer["responses"]
    assert "application/octet-stream" in infer["responses"]["200"]["content"]


def test_batch_limit_is_the_stacks(store, fakes, tmp_path):
    env = backend_env(store, *(fakes[rt].port for rt in RUNTIMES), max_batch_size="2")
    g = GatewayProcess(env, tmp_path / "gateway.log")
    try:
        with g.client() as c:
            big = {"inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP32", "data": [1] * 12}]}
            r = c.post("/v2/models/tiny-mlp/infer", json=big)
            assert r.status_code == 413 and "limit of 2 samples" in r.json()["error"]
            r = c.post("/v1/models/tiny-mlp:predict", json={"instances": [[1, 2, 3, 4]] * 3})
            assert r.status_code == 413
    finally:
        g.stop()
