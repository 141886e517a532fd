"""The ExecuTorch OIP v2 server (python -m services.executorch) over the real store's `.pte`
programs of the CNN (XNNPACK) and the int64-token transformer (portable kernels, two inputs),
direct and through the gateway as `<model>@executorch` and by failover; and the CNN's int8 variant, served
as `<model>:int8` beside the float program and reached as `<model>@executorch:int8`. The adapter
itself is tested in-process by tests/services/test_executorch.py."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import orjson
import pytest

from tests.conftest import free_port, wait_for
from tests.gateway.conftest import GatewayProcess
from tests.services.test_modelserver import (Server, metric, post_infer, reference_arrays, response_arrays,
                                             run_server)

pytestmark = pytest.mark.real_store
CNN, TRANSFORMER = "digits-cnn-torch", "digits-transformer-torch"
INT8 = "executorch:int8"


@pytest.fixture(scope="module")
def et_server(real_store: Path, tmp_path_factory) -> Iterator[Server]:
    with run_server("executorch", real_store, tmp_path_factory.mktemp("et-logs"),
                    "--models", f"{CNN},{TRANSFORMER}") as srv:  # fmt: skip
        yield srv


def test_metadata_names_every_input_with_its_datatype(et_server: Server) -> None:
    meta = httpx.get(f"{et_server.url}/v2/models/{TRANSFORMER}").json()
    assert meta["platform"] == "executorch"
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
        ("input_ids", "INT64", [-1, -1]), ("attention_mask", "INT64", [-1, -1])]
    assert httpx.get(f"{et_server.url}/v2/health/ready").status_code == 200


def test_start_up_log_names_the_delegate_and_threadpool(et_server: Server) -> None:
    out = et_server.output()
    assert f"loaded model {CNN} version 1 (executorch 1.5.1, XNNPACK delegate, threadpool=1)" in out
    assert f"loaded model {TRANSFORMER} version 1 (executorch 1.5.1, none (portable kernels) delegate" in out


@pytest.mark.parametrize("model", [CNN, TRANSFORMER])
@pytest.mark.parametrize("batch", [1, 32, 100])  # 100: above the programs' batch bound of 64
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_matches_the_reference(et_server: Server, real_store: Path, model: str, batch: int,
                                     binary: bool) -> None:
    x, y = reference_arrays(real_store, model)
    rows = lambda arrays: {k: np.resize(v, (batch, *v.shape[1:])) for k, v in arrays.items()}  # noqa: E731
    r = post_infer(et_server.url, model, rows(x), binary)
    assert r.status_code == 200, r.text
    got = response_arrays(r)
    for name, want in rows(y).items():
        assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
        np.testing.assert_allclose(got[name], want, atol=1e-4, rtol=1e-4)


def test_shorter_sequences_are_served(et_server: Server, real_store: Path) -> None:
    x, _ = reference_arrays(real_store, TRANSFORMER)
    for seq in (1, 7):
        r = post_infer(et_server.url, TRANSFORMER, {k: v[:3, :seq] for k, v in x.items()})
        assert r.status_code == 200, r.text
        assert response_arrays(r)["logits"].shape == (3, 10)


def test_bad_inputs_are_400_naming_the_input(et_server: Server, real_store: Path) -> None:
    x, _ = reference_arrays(real_store, TRANSFORMER)
    r = post_infer(et_server.url, TRANSFORMER, {k: v[:2].astype(np.int32) for k, v in x.items()})
    assert r.status_code == 400 and "input_ids" in r.json()["error"] and "INT64" in r.json()["error"], r.text
    cnn, _ = reference_arrays(real_store, CNN)
    r = post_infer(et_server.url, CNN, {k: v[:1, :, :4] for k, v in cnn.items()})
    assert r.status_code == 400 and "input 'input'" in r.json()["error"], r.text


def test_a_sequence_above_its_bound_is_a_400(et_server: Server) -> None:
    """The program's memory is planned for sequence 64 (manifest max_shapes): 65 would run and
    answer wrong numbers, so the server refuses it."""
    ids = np.ones((1, 65), np.int64)
    r = post_infer(et_server.url, TRANSFORMER, {"input_ids": ids, "attention_mask": ids})
    assert r.status_code == 400, r.text
    assert "input 'input_ids' has sequence 65; this ExecuTorch artifact takes at most 64" in r.json()["error"]
    ids = np.ones((1, 64), np.int64)  # the bound itself is served
    assert post_infer(et_server.url, TRANSFORMER, {"input_ids": ids, "attention_mask": ids}).status_code == 200


def test_metrics_count_requests(et_server: Server, real_store: Path) -> None:
    x, _ = reference_arrays(real_store, CNN)
    before = metric(et_server, "modelserver_requests_total", model=CNN, code="200")
    assert post_infer(et_server.url, CNN, {k: v[:2] for k, v in x.items()}).status_code == 200
    assert metric(et_server, "modelserver_requests_total", model=CNN, code="200") == before + 1


def test_graceful_shutdown_exits_0(real_store: Path, tmp_path: Path) -> None:
    with run_server("executorch", real_store, tmp_path, "--models", CNN) as srv:
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(30) == 0, srv.output()


def test_through_the_gateway(et_server: Server, real_store: Path, tmp_path: Path) -> None:
    """`<model>@executorch` reaches it; a bare name fails over to it when the default runtime
    (tflite here: nothing listens on its port) cannot serve."""
    env = {"STACK_MODEL_STORE": str(real_store), "EXECUTORCH_PORT": str(et_server.port),
           "TFLITE_PORT": str(free_port()),
           "GATEWAY_RUNTIMES": "tflite,executorch", "GATEWAY_DEFAULT_RUNTIME": "tflite"}  # fmt: skip
    gw = GatewayProcess(env, tmp_path / "gateway.log")
    try:
        # Not /v2/health/ready: the store's Keras models have no runtime up here.
        wait_for(lambda: httpx.get(f"{gw.url}/v2/models/{TRANSFORMER}@executorch/ready").status_code == 200,
                 "the gateway to see the executorch backend", timeout=60)
        x, y = reference_arrays(real_store, TRANSFORMER)
        for model in (f"{TRANSFORMER}@executorch", TRANSFORMER):
            r = post_infer(gw.url, model, {k: v[:4] for k, v in x.items()})
            assert r.status_code == 200, r.text
            assert r.headers["x-served-by"].startswith("executorch")
            np.testing.assert_allclose(response_arrays(r)["logits"], y["logits"][:4], atol=1e-4)
        bad = orjson.dumps({"inputs": [{"name": "input_ids", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]})
        r = httpx.post(f"{gw.url}/v2/models/{TRANSFORMER}@executorch/infer", content=bad, timeout=30)
        assert r.status_code == 400 and "attention_mask" in r.json()["error"], r.text
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def int8_store(tmp_path_factory) -> tuple[Path, object]:
    """The CNN trained and exported to ExecuTorch only, with its executorch:int8 variant (as
    `python -m exporters examples` builds it: quantized from the torch source)."""
    from exporters.examples.build import sources
    from exporters.pipeline import export_model
    from exporters.quantize import quantize_model

    store = tmp_path_factory.mktemp("et-int8")
    (src,) = sources((CNN,))
    export_model(src, store, ("executorch",))
    manifest, rows = quantize_model(store, CNN, (INT8,), source=src)
    assert rows[0].ok, rows[0].message
    return store, manifest


def test_int8_variant_is_served_beside_the_float_program_and_through_the_gateway(int8_store, tmp_path) -> None:
    from exporters.targets import executorch as et
    from loadtests.edge import edge_artifacts

    store, manifest = int8_store
    assert [k for k, _ in edge_artifacts(manifest)] == ["executorch", INT8]  # the edge bench measures both
    x, y = reference_arrays(store, CNN)
    # what the exporter certified: the variant file run in-process by the adapter's own loader
    want = et.runner(manifest.artifact_path(store, INT8), manifest.signature)(x)["logits"]
    assert np.abs(want - y["logits"]).max() > 1e-3  # int8 numbers: not the float program's
    with run_server("executorch", store, tmp_path, "--models", CNN) as srv:
        assert f"loaded model {CNN}:int8 version 1 (executorch 1.5.1, XNNPACK delegate, threadpool=1)" in srv.output()
        for batch in (1, 32, 100):  # 100: above the bound of 64, cut into runs
            rows = lambda a: np.resize(a, (batch, *a.shape[1:]))  # noqa: E731
            r = post_infer(srv.url, f"{CNN}:int8", {k: rows(v) for k, v in x.items()}, binary=batch == 100)
            assert r.status_code == 200, r.text
            np.testing.assert_allclose(response_arrays(r)["logits"], rows(want), atol=1e-5, err_msg=str(batch))
        r = post_infer(srv.url, CNN, x)  # the float program still answers its own numbers
        np.testing.assert_allclose(response_arrays(r)["logits"], y["logits"], atol=1e-4)
        env = {"STACK_MODEL_STORE": str(store), "EXECUTORCH_PORT": str(srv.port),
               "GATEWAY_RUNTIMES": "executorch", "GATEWAY_DEFAULT_RUNTIME": "executorch"}  # fmt: skip
        gw = GatewayProcess(env, tmp_path / "gateway.log")
        try:
            wait_for(lambda: httpx.get(f"{gw.url}/v2/models/{CNN}@{INT8}/ready").status_code == 200,
                     "the gateway to route the int8 variant", timeout=60)  # fmt: skip
            for name, expected in ((f"{CNN}@{INT8}", want), (CNN, y["logits"])):  # a bare name: the float one
                r = post_infer(gw.url, name, {k: v[:4] for k, v in x.items()})
                assert r.status_code == 200 and r.headers["x-served-by"].startswith("executorch"), r.text
                np.testing.assert_allclose(response_arrays(r)["logits"], expected[:4], atol=1e-4, err_msg=name)
        finally:
            gw.stop()
