"""Breaker, router and validation on their own (no servers)."""

from __future__ import annotations

import pytest

from contract.manifest import load_store
from services.gateway.errors import NotFound
from services.gateway.health import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, HealthMonitor
from services.gateway.routing import Router
from services.gateway.settings import GatewaySettings


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
    with pytest.raises(NotFound, match=r"tiny-dead has no artifact that passed .*export failed "
                                       r"\(tflite: no route converts Erf\)"):
        r.resolve("tiny-dead")
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


class _Silent:
    """A backend whose liveness probe never answers (a stopped process)."""

    probe_timeout = 0.75

    async def live(self) -> bool:
        return False


def test_missed_probes_open_the_circuit_unless_the_backend_just_answered():
    import asyncio

    async def run(answered: bool) -> str:
        h = HealthMonitor({"rt": _Silent()}, failures=3, reset_s=60, interval=0.5,
                          probe_failures=2)
        for _ in range(2):
            if answered:
                h.answered("rt")  # real traffic came back between the probes: busy, not hung
            await h.probe("rt")
        return h.breakers["rt"].state

    assert asyncio.run(run(answered=False)) == OPEN  # two misses in a row: out at once
    assert asyncio.run(run(answered=True)) == CLOSED


def test_fast_routes_are_the_documented_routes():
    """One route table: the middleware's fast inference routes are the app's own (those
    /openapi.json documents), with the same path parameters."""
    import pytest

    from services.common.fastroutes import FastRoutes
    from services.gateway import api_v1, api_v2
    from services.gateway.app import FAST_ENDPOINTS, create_app

    routes = create_app().fast_routes

    def match(method: str, path: str, query: bytes = b""):
        found = routes.match({"method": method, "path": path, "query_string": query})
        return found and (found[0].__name__, {k: v for k, v in found[1].items() if v is not None})

    assert match("POST", "/v2/models/m@tflite/infer") == ("infer", {"model": "m@tflite"})
    assert match("POST", "/v2/models/m/versions/3/infer") == ("infer", {"model": "m", "version": "3"})
    assert match("POST", "/v2/models/m/infer", b"version=4") == ("infer", {"model": "m", "version": "4"})
    assert match("POST", "/v1/models/m:predict") == ("predict", {"model": "m"})
    assert match("POST", "/v1/models/m/versions/2:predict") == ("predict", {"model": "m", "version": "2"})
    assert match("GET", "/v2/models/m/infer") is None and match("POST", "/v2/models/m/ready") is None
    documented = {r.path for router in (api_v2.router, api_v1.router) for r in router.routes
                  if r.endpoint in FAST_ENDPOINTS}  # fmt: skip
    assert {p.pattern for _, p, _ in routes.table} == {
        r.path_regex.pattern for router in (api_v2.router, api_v1.router) for r in router.routes
        if r.path in documented}  # fmt: skip
    with pytest.raises(ValueError, match="no route declared for"):
        FastRoutes(api_v1.router.routes, FAST_ENDPOINTS)  # api_v2.infer is not among them

@pytest.mark.parametrize("env, words", [
    ({"GATEWAY_SHADOW": "1%"}, ["gateway_shadow", "is not JSON", "empty for off"]),
    ({"GATEWAY_SHADOW": '{"m": {"fraction": 3}}'}, ["gateway_shadow['m']", "0..1"]),
    ({"GATEWAY_MAX_CONNECTIONS": "many"}, ["gateway_max_connections", "valid integer"]),
])
def test_bad_settings_stop_the_gateway_with_one_line_each(env, words):

    """A bad setting is named on stderr with what to do, exit code 2, no pydantic traceback."""
    import subprocess
    import sys

    from tests.conftest import REPO, python_env

    proc = subprocess.run([sys.executable, "-m", "services.gateway", "--port", "1"], cwd=REPO,
                          env=python_env(**env), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("gateway settings")
    for word in words:
        assert word in proc.stderr


def test_empty_shadow_setting_is_off(monkeypatch):
    """GATEWAY_SHADOW= (as stack.env writes an unset value) means no shadow traffic, not an error."""
    from services.gateway.settings import GatewaySettings

    monkeypatch.setenv("GATEWAY_SHADOW", "")
    assert GatewaySettings().gateway_shadow == {}
    monkeypatch.setenv("GATEWAY_SHADOW", '{"*": {"fraction": 0.25}}')
    assert GatewaySettings().gateway_shadow == {"*": {"fraction": 0.25}}
