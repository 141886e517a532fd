"""GATEWAY_KSERVE_NAMESPACE: each (model, runtime) pair at its own KServe predictor, under the name
the predictor knows the model by, in the protocol of the runtime's KServe entry.

The gateways here reach every predictor through one fake (protocol "any") by a URL template
without {isvc}; the fake records the paths, which carry the remote names."""

from __future__ import annotations

import asyncio
import re
from typing import Iterator

import pytest
from pydantic import ValidationError

from contract.manifest import load_store
from contract.runtimes import RUNTIMES, kserve_remote_name, predictor_url
from services.gateway.backends import OIPBackend, make_backends
from services.gateway.errors import BackendUnavailable
from services.gateway.settings import GatewaySettings
from tests.gateway.conftest import GatewayProcess, backend_env, free_port
from tests.gateway.fakes import FORMATS, MODELS, FakeBackend

BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


# --- the mapping (settings) and the backends built from it -------------------------------------


def test_predictor_url_and_remote_name_of_every_runtime() -> None:
    s = GatewaySettings(gateway_kserve_namespace="ml")
    for rt in RUNTIMES:
        url, remote = s.predictor("digits-cnn-torch", rt)
        assert url == predictor_url("digits-cnn-torch", rt, "ml")
        assert remote == kserve_remote_name("digits-cnn-torch", rt)
        assert s.protocol(rt) == RUNTIMES[rt].kserve.protocol
    assert s.predictor("digits-cnn-torch", "onnxruntime") == (
        "http://digits-cnn-torch-onnxruntime-predictor.ml.svc.cluster.local", "digits-cnn-torch")
    assert s.predictor("digits-cnn-torch", "tfserving") == (
        "http://digits-cnn-torch-tfserving-predictor.ml.svc.cluster.local",
        "digits-cnn-torch-tfserving")  # KServe's TF Serving names it after the InferenceService
    assert s.predictor("digits-cnn-torch", "torchserve")[1] == "digits-cnn-torch"
    assert s.predictor("digits-cnn-torch", "tflite")[1] == "digits-cnn-torch"
    assert s.torchserve_management_url == ""  # loopback in each predictor's pod

    t = GatewaySettings(gateway_kserve_namespace="ml",
                        gateway_kserve_url_template="http://{isvc}.{namespace}.example:8080")
    assert t.predictor("m", "tflite") == ("http://m-tflite.ml.example:8080", "m")
    t = GatewaySettings(gateway_kserve_namespace="ml",
                        gateway_kserve_url_template="http://{runtime}-{model}.internal")
    assert t.predictor("m", "tfserving") == ("http://tfserving-m.internal", "m-tfserving")

    local = GatewaySettings(gateway_kserve_namespace="")
    assert all(local.protocol(rt) == RUNTIMES[rt].protocol for rt in RUNTIMES)
    assert local.torchserve_management_url.startswith("http://")


@pytest.mark.parametrize(("template", "complaint"), [
    ("http://{isvc}:{port}", "placeholders: {isvc} {model} {runtime} {namespace}"),
    ("http://{isvc", "placeholders"),
    ("https://{isvc}.example", "must give http://host[:port]"),
    ("http://example/{isvc}", "must give http://host[:port]"),
])  # fmt: skip
def test_url_template_is_checked(template: str, complaint: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(complaint)):
        GatewaySettings(gateway_kserve_namespace="ml", gateway_kserve_url_template=template)


def test_backends_reach_each_routable_model_at_its_predictor(store) -> None:
    manifests = load_store(store)
    backends = make_backends(GatewaySettings(gateway_kserve_namespace="ml"), manifests)
    pool, remote = backends["tfserving"].route("tiny-mlp")
    assert (pool.url, remote) == (
        "http://tiny-mlp-tfserving-predictor.ml.svc.cluster.local:80", "tiny-mlp-tfserving")
    pool, remote = backends["onnxruntime"].route("tiny-pair")
    assert (pool.url, remote) == (
        "http://tiny-pair-onnxruntime-predictor.ml.svc.cluster.local:80", "tiny-pair")
    # Only pairs whose artifact passed parity have an InferenceService (and are routable).
    assert "tiny-img" not in backends["tflite"].routes and "tiny-img" in backends["onnxruntime"].routes
    with pytest.raises(BackendUnavailable, match="backend tflite has no server for tiny-img"):
        backends["tflite"].route("tiny-img")
    assert backends["onnxruntime"].pool is None
    assert len(backends["onnxruntime"].pools) == 3  # tiny-mlp, tiny-img, tiny-pair

    local = make_backends(GatewaySettings(gateway_kserve_namespace="",
                                          onnxruntime_port=1234), manifests)  # fmt: skip
    pool, remote = local["onnxruntime"].route("tiny-mlp")
    assert (pool.url, remote) == ("http://127.0.0.1:1234", "tiny-mlp")
    assert local["onnxruntime"].pools == [pool] and local["onnxruntime"].routes == {}


def test_live_while_any_predictor_answers() -> None:
    fake = FakeBackend("oip").start()
    dead = f"http://127.0.0.1:{free_port()}"

    async def live(urls: dict[str, str]) -> bool:
        backend = OIPBackend("onnxruntime", None, timeout=1, connect_timeout=1, max_connections=4,
                             probe_timeout=1, predictors={m: (u, m) for m, u in urls.items()})
        try:
            return await backend.live()
        finally:
            await backend.close()

    try:
        assert asyncio.run(live({"tiny-mlp": dead, "tiny-pair": fake.url}))
        with pytest.raises(BackendUnavailable, match=f"at {dead} is unreachable"):
            asyncio.run(live({"tiny-mlp": dead, "tiny-pair": dead}))
    finally:
        fake.stop()


# --- a gateway in KServe mode ------------------------------------------------------------------


def kserve_env(store, url: str) -> dict[str, str]:
    """The stack's own runtimes on closed ports: nothing may go there. The circuits never open
    (the errors are the predictors' own)."""
    return backend_env(store, *(free_port() for _ in range(4)), gateway_kserve_namespace="test",
                       gateway_kserve_url_template=url, gateway_breaker_failures="1000")


@pytest.fixture(scope="module")
def predictors() -> Iterator[FakeBackend]:
    fake = FakeBackend("any", served_by=None)
    fake.names = {f"{m}-tfserving": m for m in MODELS}  # KServe's TF Serving: the isvc's name
    yield fake.start()
    fake.stop()


@pytest.fixture(scope="module")
def kserve_gateway(store, predictors, tmp_path_factory) -> Iterator[GatewayProcess]:
    g = GatewayProcess(kserve_env(store, predictors.url), tmp_path_factory.mktemp("gw") / "gw.log")
    g.wait_ready()
    yield g
    g.stop()


def infer(g: GatewayProcess, fake: FakeBackend, name: str) -> tuple[dict, str, str]:
    """(the answer, X-Served-By, the path the predictor saw)."""
    with g.client() as c:
        r = c.post(f"/v2/models/{name}/infer", json=BODY)
    assert r.status_code == 200, r.text
    return r.json(), r.headers["x-served-by"], fake.bodies[-1][0]


@pytest.mark.parametrize(("runtime", "path"), [
    ("onnxruntime", "/v2/models/tiny-mlp/infer"),
    ("tflite", "/v2/models/tiny-mlp/infer"),
    ("tfserving", "/v1/models/tiny-mlp-tfserving:predict"),
    ("torchserve", "/predictions/tiny-mlp"),
])  # fmt: skip
def test_each_runtime_at_its_predictor(kserve_gateway, predictors, runtime, path) -> None:
    body, by, seen = infer(kserve_gateway, predictors, f"tiny-mlp@{runtime}")
    assert (by, seen) == (runtime, path)
    assert body["model_name"] == "tiny-mlp"  # the store name, whatever the predictor calls it
    assert body["outputs"][0]["shape"] == [1, 3]


def test_tfserving_api_is_forwarded_under_the_remote_name(kserve_gateway, predictors) -> None:
    with kserve_gateway.client() as c:
        r = c.post("/v1/models/tiny-mlp@tfserving:predict", json={"instances": [[1, 2, 3, 4]]})
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 1
    assert predictors.bodies[-1][0] == "/v1/models/tiny-mlp-tfserving:predict"


def test_bare_name_fails_over_between_predictors(kserve_gateway, predictors) -> None:
    """onnxruntime's and tflite's predictors failed to load tiny-mlp (503): TF Serving's answers."""
    predictors.unloaded = {"tiny-mlp"}  # its OIP and TorchServe names; TF Serving's differs
    try:
        body, by, _ = infer(kserve_gateway, predictors, "tiny-mlp")
    finally:
        predictors.unloaded = set()
    assert by == "tfserving" and body["model_name"] == "tiny-mlp"
    tried = [p for p, _, _ in predictors.bodies[-3:]]
    assert tried == ["/v2/models/tiny-mlp/infer"] * 2 + ["/v1/models/tiny-mlp-tfserving:predict"]


def test_readiness_through_the_predictors(kserve_gateway, predictors) -> None:
    with kserve_gateway.client() as c:
        rows = {r["name"]: r for r in c.post("/v2/repository/index").json()}
        assert c.get("/v2/models/tiny-mlp@torchserve/ready").status_code == 200
    stored = [rt for _, rt in FORMATS]  # the runtimes the fake store has artifacts for
    assert all(rows[f"tiny-pair@{rt}"]["state"] == "READY" for rt in stored), [rows[f"tiny-pair@{rt}"] for rt in stored]
    # TorchServe's management API stays in its pod: readiness is a real inference
    assert ("POST", "/predictions/tiny-pair") in predictors.requests
    assert not any(p.startswith("/models/") for _, p in predictors.requests)


def test_unreachable_predictor_is_503_naming_it(store, tmp_path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    g = GatewayProcess(kserve_env(store, url), tmp_path / "gw.log")
    try:
        with g.client() as c:
            r = c.post("/v2/models/tiny-mlp@onnxruntime/infer", json=BODY)
            assert r.status_code == 503
            error = r.json()["error"]
            assert f"backend onnxruntime at {url} is unreachable" in error, error
            r = c.post("/v2/models/tiny-mlp/infer", json=BODY)  # every candidate: the last error
            assert r.status_code == 503 and f"at {url} is unreachable" in r.json()["error"]
            assert c.get("/v2/health/ready").status_code == 400
    finally:
        g.stop()
