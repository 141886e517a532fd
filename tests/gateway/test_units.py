"""Breaker, router and validation on their own (no servers)."""

from __future__ import annotations

import pytest

from model_store.manifest import load_store
from services.gateway.errors import BadRequest, NotFound
from services.gateway.health import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from services.gateway.routing import Router
from services.gateway.settings import GatewaySettings
from services.gateway.validation import check_oip_request


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_breaker_opens_after_consecutive_failures_and_half_opens() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=3, reset_s=5, clock=clock)
    b.failure(), b.failure()
    b.success()  # resets the count
    b.failure(), b.failure()
    assert b.state == CLOSED and b.allow()
    b.failure()
    assert b.state == OPEN and not b.allow()
    clock.t = 5
    assert b.state == HALF_OPEN
    assert b.allow()  # the one trial
    assert not b.allow()  # no second trial in the same period
    b.failure()
    assert b.state == OPEN
    clock.t = 10
    assert b.allow()
    b.success()
    assert b.state == CLOSED and b.allow()


def _router(store, policy="failover", available=lambda rt: True) -> Router:
    runtimes = ["onnxruntime", "tflite", "tfserving", "torchserve"]
    return Router(load_store(store), runtimes, policy, "onnxruntime", available)


def test_naming_scheme(store) -> None:
    r = _router(store)
    assert [t.name for t in r.resolve("tiny-mlp@tfserving")] == ["tiny-mlp@tfserving"]
    all_four = ["onnxruntime", "tflite", "tfserving", "torchserve"]
    assert [t.runtime for t in r.resolve("tiny-mlp")] == all_four
    assert [t.runtime for t in r.resolve("tiny-img")] == ["onnxruntime", "tfserving", "torchserve"]
    with pytest.raises(NotFound, match="unknown model 'nope'"):
        r.resolve("nope")
    with pytest.raises(NotFound, match="unknown runtime 'triton'"):
        r.resolve("tiny-mlp@triton")
    with pytest.raises(NotFound, match="failed parity"):
        r.resolve("tiny-img@tflite")
    with pytest.raises(NotFound, match="no version '2'"):
        r.resolve("tiny-mlp", "2")
    assert r.resolve("tiny-mlp", "1")


def test_policies(store) -> None:
    assert [t.runtime for t in _router(store, "default").resolve("tiny-mlp")] == ["onnxruntime"]
    down = _router(store, available=lambda rt: rt != "onnxruntime")
    assert [t.runtime for t in down.resolve("tiny-mlp")][:2] == ["tflite", "tfserving"]
    assert down.resolve("tiny-mlp")[-1].runtime == "onnxruntime"  # still tried, last


def test_settings_validate_policy_and_runtimes() -> None:
    with pytest.raises(ValueError, match="gateway_policy"):
        GatewaySettings(gateway_policy="random")
    with pytest.raises(ValueError, match="gateway_default_runtime"):
        GatewaySettings(gateway_runtimes="tflite", gateway_default_runtime="onnxruntime")
    s = GatewaySettings(gateway_backend_timeouts={"torchserve": 30}, torchserve_inference_port=1234)
    assert s.backend_timeout("torchserve") == 30
    assert s.backend_timeout("tflite") == s.gateway_timeout_s
    assert s.runtime_url("torchserve") == "http://127.0.0.1:1234"


@pytest.mark.parametrize(
    "tensor, message",
    [
        ({"name": "z", "shape": [1, 4], "datatype": "FP32", "data": [0] * 4}, "unknown input 'z'"),
        ({"name": "x", "shape": [1, 5], "datatype": "FP32", "data": [0] * 5},
         r"shape \[1, 5\] does not match"),
        ({"name": "x", "shape": [1, 4, 1], "datatype": "FP32", "data": [0] * 4}, "does not match"),
        ({"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [0] * 4}, "datatype 'FP64'"),
        ({"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [0] * 7},
         "needs 8 elements, data has 7"),
        ({"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [[0] * 4, [0] * 3]},
         "data has 7"),
        ({"name": "x", "shape": [0, 4], "datatype": "FP32", "data": []}, "batch dimension"),
        ({"name": "x", "shape": [1, 4], "datatype": "FP32"}, "neither 'data' nor binary_data_size"),
        ({"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 12}},
         "needs 16 bytes"),
    ],
)
def test_validation_names_the_problem(store, tensor, message) -> None:
    model = load_store(store)["tiny-mlp"]
    with pytest.raises(BadRequest, match=message):
        check_oip_request(model, {"inputs": [tensor]}, 0)


def test_validation_accepts_nested_and_binary(store) -> None:
    model = load_store(store)["tiny-mlp"]
    nested = {"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [[0] * 4, [1] * 4]}
    assert check_oip_request(model, {"inputs": [nested]}, 0) == 2
    binary = {"name": "x", "shape": [3, 4], "datatype": "FP32",
              "parameters": {"binary_data_size": 48}}
    assert check_oip_request(model, {"inputs": [binary]}, 48) == 3
    with pytest.raises(BadRequest, match="unknown output 'z'"):
        check_oip_request(model, {"inputs": [nested], "outputs": [{"name": "z"}]}, 0)
