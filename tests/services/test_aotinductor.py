"""The AOTInductor OIP v2 server (services/aotinductor) over the `.pt2` packages of the CNN and the
int64-token transformer (exported once per session by the aoti_export fixture), direct and through
the gateway as `<model>@aotinductor`."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import orjson
import pytest

from tests.conftest import AOTI_EXAMPLES
from tests.gateway.conftest import GatewayProcess
from tests.services.test_modelserver import (Server, metric, post_infer, reference_arrays, response_arrays,
                                             run_server)

CNN, TRANSFORMER = AOTI_EXAMPLES


@pytest.fixture(scope="module")
def aoti_server(aoti_export, tmp_path_factory) -> Iterator[Server]:
    store = aoti_export[2]
    with run_server("aotinductor", store, tmp_path_factory.mktemp("aoti-logs")) as srv:
        yield srv


def test_metadata_names_every_input_with_its_datatype(aoti_server: Server) -> None:
    meta = httpx.get(f"{aoti_server.url}/v2/models/{TRANSFORMER}").json()
    assert meta["platform"] == "aotinductor"
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
        ("input_ids", "INT64", [-1, -1]), ("attention_mask", "INT64", [-1, -1])]
    assert httpx.get(f"{aoti_server.url}/v2/health/ready").status_code == 200


def test_start_up_log_names_the_thread_settings(aoti_server: Server) -> None:
    out = aoti_server.output()
    for model in AOTI_EXAMPLES:
        assert f"loaded model {model} version 1 (aotinductor" in out
    assert "intra_op_threads=1 inter_op_threads=1" in out


@pytest.mark.parametrize("model", AOTI_EXAMPLES)
@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_matches_the_reference(aoti_server: Server, aoti_export, model: str, batch: int, binary: bool) -> None:
    x, y = reference_arrays(aoti_export[2], model)
    r = post_infer(aoti_server.url, model, {k: v[:batch] for k, v in x.items()}, binary)
    assert r.status_code == 200, r.text
    got = response_arrays(r)
    for name, want in y.items():
        np.testing.assert_allclose(got[name], want[:batch], atol=1e-4)


def test_shorter_sequences_are_served(aoti_server: Server, aoti_export) -> None:
    x, _ = reference_arrays(aoti_export[2], TRANSFORMER)
    for seq in (1, 7):
        r = post_infer(aoti_server.url, TRANSFORMER, {k: v[:3, :seq] for k, v in x.items()})
        assert r.status_code == 200, r.text


def test_bad_inputs_are_400_naming_the_problem(aoti_server: Server, aoti_export) -> None:
    x, _ = reference_arrays(aoti_export[2], TRANSFORMER)
    wrong_type = {k: v[:2].astype(np.int32) for k, v in x.items()}
    r = post_infer(aoti_server.url, TRANSFORMER, wrong_type)
    assert r.status_code == 400 and "input_ids" in r.json()["error"] and "INT64" in r.json()["error"], r.text
    # Longer than the positions table: torch.export proved the model for sequence 1..64 only.
    ids = np.ones((1, 65), np.int64)
    r = post_infer(aoti_server.url, TRANSFORMER, {"input_ids": ids, "attention_mask": ids})
    assert r.status_code == 400, r.text
    assert "input 'input_ids' has sequence 65; this model takes sequence 1..64" in r.json()["error"]
    cnn, _ = reference_arrays(aoti_export[2], CNN)
    r = post_infer(aoti_server.url, CNN, {k: v[:1, :, :4] for k, v in cnn.items()})
    assert r.status_code == 400 and "input" in r.json()["error"], r.text


def test_metrics_count_requests_and_batches(aoti_server: Server, aoti_export) -> None:
    x, _ = reference_arrays(aoti_export[2], CNN)
    before = metric(aoti_server, "modelserver_requests_total", model=CNN, code="200")
    assert post_infer(aoti_server.url, CNN, {k: v[:2] for k, v in x.items()}).status_code == 200
    assert metric(aoti_server, "modelserver_requests_total", model=CNN, code="200") == before + 1
    assert metric(aoti_server, "modelserver_batch_size_count", model=CNN) >= 1


def test_graceful_shutdown_exits_0(aoti_export, tmp_path: Path) -> None:
    with run_server("aotinductor", aoti_export[2], tmp_path, "--models", CNN) as srv:
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(30) == 0, srv.output()


def test_through_the_gateway(aoti_server: Server, aoti_export, tmp_path: Path) -> None:
    """`<model>@aotinductor` reaches it; a bare name fails over to it when the default runtime
    (tflite here, not running and without artifacts) cannot serve."""
    store = aoti_export[2]
    env = {"STACK_MODEL_STORE": str(store), "AOTINDUCTOR_PORT": str(aoti_server.port),
           "GATEWAY_RUNTIMES": "tflite,aotinductor", "GATEWAY_DEFAULT_RUNTIME": "tflite"}  # fmt: skip
    gw = GatewayProcess(env, tmp_path / "gateway.log")
    try:
        gw.wait_ready(60)
        x, y = reference_arrays(store, TRANSFORMER)
        for model in (f"{TRANSFORMER}@aotinductor", TRANSFORMER):
            r = post_infer(gw.url, model, {k: v[:4] for k, v in x.items()})
            assert r.status_code == 200, r.text
            assert r.headers["x-served-by"].startswith("aotinductor")
            got = response_arrays(r)
            np.testing.assert_allclose(got["logits"], y["logits"][:4], atol=1e-4)
        bad = orjson.dumps({"inputs": [{"name": "input_ids", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]})
        r = httpx.post(f"{gw.url}/v2/models/{TRANSFORMER}@aotinductor/infer", content=bad, timeout=30)
        assert r.status_code == 400 and "attention_mask" in r.json()["error"], r.text
    finally:
        gw.stop()
