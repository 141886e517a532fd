"""Shadow traffic: a sampled copy of live requests goes to another parity-passed runtime in the
background; disagreement is measured and exported, and a failing shadow never touches the answer."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from services.gateway.shadow import compare
from tests.gateway.conftest import GatewayProcess, backend_env
from tests.gateway.fakes import FakeBackend, compute, reference_inputs

N = 12


@pytest.fixture(scope="module")
def shadowed(store: Path, tmp_path_factory) -> Iterator[tuple[GatewayProcess, dict]]:
    """Primary onnxruntime (exact). tiny-mlp is shadowed to a tflite that answers with its columns
    reversed, tiny-pair to a tfserving that answers 500, tiny-img not at all."""
    ok, skew, err, ts = (FakeBackend("oip"), FakeBackend("oip"), FakeBackend("tfserving"),
                         FakeBackend("torchserve"))  # fmt: skip
    skew.mode, err.mode = "skew", "error"
    for b in (ok, skew, err, ts):
        b.start()
    plan = {"tiny-mlp": {"fraction": 1.0, "runtime": "tflite"},
            "tiny-pair": {"fraction": 1.0, "runtime": "tfserving"}}  # fmt: skip
    env = backend_env(store, ok.port, skew.port, err.port, ts.port,
                      gateway_shadow=json.dumps(plan), gateway_shadow_max_in_flight="64")
    g = GatewayProcess(env, tmp_path_factory.mktemp("gw") / "gateway.log")
    g.wait_ready()
    yield g, {"tflite": skew, "tfserving": err}
    g.stop()
    for b in (ok, skew, err, ts):
        b.stop()


def _oip(arrays: dict[str, np.ndarray]) -> dict:
    dtypes = {"float32": "FP32", "int64": "INT64"}
    return {"inputs": [{"name": k, "shape": list(v.shape), "datatype": dtypes[str(v.dtype)],
                        "data": v.ravel().tolist()} for k, v in arrays.items()]}  # fmt: skip


def _report(g: GatewayProcess, want: int) -> dict[str, dict]:
    deadline = time.monotonic() + 10
    while True:
        with g.client() as c:
            pairs = {p["model"]: p for p in c.get("/v2/shadow").json()}
        done = sum(p["compared"] + p["failed"] for p in pairs.values())
        if done >= want or time.monotonic() > deadline:
            return pairs
        time.sleep(0.05)


def test_shadow_measures_disagreement_and_never_changes_the_answer(shadowed):
    g, backends = shadowed
    x = reference_inputs("tiny-mlp")
    pair = reference_inputs("tiny-pair")
    with g.client() as c:
        for i in range(N):
            rows = {k: v[i : i + 2] for k, v in x.items()}
            r = c.post("/v2/models/tiny-mlp/infer", json=_oip(rows))
            assert r.status_code == 200 and r.headers["x-served-by"] == "onnxruntime"
            np.testing.assert_allclose(r.json()["outputs"][0]["data"],
                                       compute("tiny-mlp", rows)["y"].ravel(), rtol=1e-6)  # fmt: skip
            r = c.post("/v2/models/tiny-pair/infer", json=_oip({k: v[i : i + 1] for k, v in pair.items()}))
            assert r.status_code == 200  # its shadow (tfserving) answers 500: nobody sees it
            assert c.post("/v2/models/tiny-img/infer", json=_oip(
                {k: v[:1] for k, v in reference_inputs("tiny-img").items()})).status_code == 200
    pairs = _report(g, 2 * N)
    assert set(pairs) == {"tiny-mlp", "tiny-pair"}  # tiny-img has no rule: not shadowed

    mlp = pairs["tiny-mlp"]
    y = compute("tiny-mlp", {"x": x["x"][: N + 1]})["y"]
    sent = np.concatenate([y[i : i + 2] for i in range(N)])
    expected = int(np.count_nonzero(np.argmax(sent, 1) != np.argmax(sent[:, ::-1], 1)))
    assert expected > 0  # the reversed columns move the arg-max of some rows
    assert (mlp["primary"], mlp["shadow"], mlp["compared"], mlp["failed"]) == ("onnxruntime", "tflite", N, 0)
    assert mlp["rows"] == 2 * N and mlp["top1_disagreements"] == expected
    assert mlp["top1_disagreement_rate"] == pytest.approx(expected / (2 * N))
    assert mlp["max_abs_error"] == pytest.approx(float(np.abs(sent - sent[:, ::-1]).max()), rel=1e-5)

    tp = pairs["tiny-pair"]
    assert (tp["shadow"], tp["compared"], tp["failed"]) == ("tfserving", 0, N)
    assert "500" in tp["last_error"] or "exploded" in tp["last_error"]
    assert len(backends["tfserving"].bodies) >= N  # the shadow requests did reach it

    with g.client() as c:
        metrics = c.get("/metrics").text
    labels = 'model="tiny-mlp",primary="onnxruntime",shadow="tflite"'
    assert f"gateway_shadow_top1_disagreements_total{{{labels}}} {float(expected)}" in metrics
    # (the client library prints labels in alphabetical order)
    assert ('gateway_shadow_requests_total{model="tiny-mlp",outcome="compared",'
            f'primary="onnxruntime",shadow="tflite"}} {float(N)}') in metrics
    assert ('gateway_shadow_requests_total{model="tiny-pair",outcome="failed",'
            f'primary="onnxruntime",shadow="tfserving"}} {float(N)}') in metrics


def test_compare():
    a = {"y": np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]], np.float32), "n": np.array([[1], [2]])}
    b = {"y": np.array([[1.0, 2.0, 3.5], [1.0, 2.0, 3.0]], np.float32), "n": np.array([[1], [5]])}
    assert compare(a, b) == (3.0, 2, 1)  # ints count for the error, not for top-1
    nan = {"y": np.array([[np.nan, 0.0]], np.float32)}
    assert compare(nan, {"y": np.array([[np.nan, 0.0]], np.float32)})[0] == 0.0
    assert compare(nan, {"y": np.array([[1.0, 0.0]], np.float32)})[0] == float("inf")
    with pytest.raises(ValueError, match="shape"):
        compare({"y": np.zeros((2, 3))}, {"y": np.zeros((2, 4))})
    with pytest.raises(ValueError, match="in common"):
        compare({"y": np.zeros(1)}, {"z": np.zeros(1)})


def test_shadow_settings_are_checked(monkeypatch):
    from services.gateway.settings import GatewaySettings

    monkeypatch.setenv("GATEWAY_SHADOW", '{"m": {"fraction": 2}}')
    with pytest.raises(ValueError, match="fraction"):
        GatewaySettings()
    monkeypatch.setenv("GATEWAY_SHADOW", '{"m": {"fraction": 0.5, "runtime": "nope"}}')
    with pytest.raises(ValueError, match="nope"):
        GatewaySettings()
