"""The circuit opens on a dead backend and the background probe closes it when it comes back."""

from __future__ import annotations

import re
import time

import pytest

from tests.gateway.conftest import GatewayProcess, backend_env, free_port
from tests.gateway.fakes import FakeBackend

BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def circuit(g: GatewayProcess, runtime: str) -> float:
    with g.client() as c:
        text = c.get("/metrics").text
    line = re.search(rf'gateway_backend_circuit_state{{runtime="{runtime}"}} (\S+)', text)
    return float(line.group(1))


def wait_for(predicate, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)


@pytest.fixture
def dead_onnxruntime(store, tmp_path):
    port = free_port()
    others = [FakeBackend(p).start() for p in ("oip", "tfserving", "torchserve")]
    env = backend_env(store, port, *(b.port for b in others),
                      gateway_breaker_failures="2", gateway_breaker_reset_s="600",
                      gateway_probe_interval_s="0.3")
    g = GatewayProcess(env, tmp_path / "gateway.log")
    yield g, port
    g.stop()
    for b in others:
        b.stop()


def test_breaker_opens_and_probe_closes_it(dead_onnxruntime) -> None:
    g, port = dead_onnxruntime
    with g.client() as c:
        wait_for(lambda: circuit(g, "onnxruntime") == 1)  # probe failures alone open it
        r = c.post("/v2/models/tiny-mlp@onnxruntime/infer", json=BODY)
        assert r.status_code == 503 and "circuit open" in r.json()["error"]
        # the bare name fails over without even trying the open circuit
        r = c.post("/v2/models/tiny-mlp/infer", json=BODY)
        assert r.status_code == 200 and r.headers["x-served-by"] == "tflite"
        assert c.get("/v2/models/tiny-mlp/ready").status_code == 200
        assert c.get("/v2/models/tiny-mlp@onnxruntime/ready").status_code == 400

        backend = FakeBackend("oip", port=port).start()  # the backend comes back
        try:
            wait_for(lambda: circuit(g, "onnxruntime") == 0)  # reset is 600 s: only the probe
            r = c.post("/v2/models/tiny-mlp@onnxruntime/infer", json=BODY)
            assert r.status_code == 200 and r.headers["x-served-by"] == "onnxruntime"
            r = c.post("/v2/models/tiny-mlp/infer", json=BODY)
            assert r.headers["x-served-by"] == "onnxruntime"  # default runtime again
        finally:
            backend.stop()


def test_traffic_opens_the_circuit(store, tmp_path) -> None:
    """With a slow probe, consecutive refused requests open the circuit by themselves."""
    others = [FakeBackend(p).start() for p in ("oip", "tfserving", "torchserve")]
    env = backend_env(store, free_port(), *(b.port for b in others), gateway_breaker_failures="3",
                      gateway_probe_interval_s="600", gateway_breaker_reset_s="600")
    g = GatewayProcess(env, tmp_path / "gateway.log")
    try:
        with g.client() as c:
            errors = [c.post("/v2/models/tiny-mlp@onnxruntime/infer", json=BODY).json()["error"]
                      for _ in range(4)]
        # the startup probe counted one failure; two refused requests make three
        assert "unreachable" in errors[0]
        assert "circuit open" in errors[-1]
        assert circuit(g, "onnxruntime") == 1
    finally:
        g.stop()
        for b in others:
            b.stop()
