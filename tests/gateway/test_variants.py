"""Quantized variants served by the real ONNX Runtime and TFLite servers and reached through the
gateway as `<model>@<runtime>:<variant>`; a bare name keeps routing to the float artifacts."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc

from contract.manifest import Manifest, load_manifest
from exporters.quantize import Thresholds, quantize_model
from exporters.targets import target
from tests.conftest import free_port
from tests.gateway.conftest import GatewayProcess, backend_env
from tests.services.test_modelserver import run_server

MODEL = "digits-mlp-torch"
GOOD = ("tflite:int8-static", "onnx:int8-static", "onnx:int8-dynamic")


@pytest.fixture(scope="module")
def stack(real_store, tmp_path_factory) -> Iterator[tuple[GatewayProcess, Manifest, dict[str, str], Path]]:
    """A store with digits-mlp-torch and its variants (tflite:fp16's calibration-free certificate
    made to fail by an unreachable max abs error), the two servers and a gateway over them."""
    store = tmp_path_factory.mktemp("vstore")
    shutil.copytree(real_store / MODEL, store / MODEL)
    quantize_model(store, MODEL, GOOD)
    quantize_model(store, MODEL, ("tflite:fp16",), Thresholds(None, None, 1e-9))
    logs = tmp_path_factory.mktemp("logs")
    with run_server("onnxruntime", store, logs) as ort, run_server("tflite", store, logs) as tfl:
        env = backend_env(store, ort.port, tfl.port, free_port(), free_port(),
                          gateway_runtimes="onnxruntime,tflite")  # fmt: skip
        g = GatewayProcess(env, logs / "gateway.log")
        try:
            g.wait_ready()
            yield g, load_manifest(store / MODEL), {"onnxruntime": ort.url, "tflite": tfl.url}, store
        finally:
            g.stop()


def _infer(c: httpx.Client, name: str, x: np.ndarray) -> httpx.Response:
    body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    return c.post(f"/v2/models/{name}/infer", json=body)


def _logits(r: httpx.Response) -> np.ndarray:
    out = r.json()["outputs"][0]
    return np.asarray(out["data"], np.float32).reshape(out["shape"])


def test_each_variant_is_reached_by_its_name_and_answers_as_certified(stack) -> None:
    g, m, servers, _ = stack
    x, ref = _reference(stack)
    want = ref[m.signature.outputs[0].name]
    with g.client() as c:
        for key in GOOD:
            fmt, variant = key.split(":")
            runtime = "tflite" if fmt == "tflite" else "onnxruntime"
            r = _infer(c, f"{MODEL}@{runtime}:{variant}", x)
            assert r.status_code == 200, r.text
            assert r.headers["x-served-by"] == runtime
            got = _logits(r)
            cert = m.artifacts[key].parity
            # the quantized artifact's numbers: within its certificate, and not the float ones
            # the quantized artifact's numbers (as its runtime gives them on this batch), not the
            # float ones; dynamic quantization depends on the batch, so the batch is the same
            path = Path(stack[3]) / MODEL / m.artifacts[key].path
            np.testing.assert_allclose(got, target(fmt).runner(path, m.signature)({"input": x})["logits"], atol=1e-5)
            assert np.abs(got - want).max() > 1e-3, key
            assert cert.ok and cert.quantized is not None
            # the server itself knows it as <model>:<variant>
            direct = httpx.post(f"{servers[runtime]}/v2/models/{MODEL}:{variant}/infer",
                                content=r.request.content, timeout=30)  # fmt: skip
            assert direct.status_code == 200 and direct.json()["model_name"] == f"{MODEL}:{variant}"
            np.testing.assert_array_equal(_logits(direct), got)
        # TF Serving REST: the ':' of the variant and the one of ':predict' do not collide
        r = c.post(f"/v1/models/{MODEL}@tflite:int8-static:predict", json={"instances": x[:2].tolist()})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(np.asarray(r.json()["predictions"]), _logits(_infer(c, f"{MODEL}@tflite:int8-static", x[:2])), atol=1e-6)
    # TF Serving gRPC: tensorflow-serving-api's own stubs, the variant in model_spec.name
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from tests.gateway.test_tfs_grpc import outputs, request

    with grpc.insecure_channel(g.tfs_grpc_url) as ch:
        resp = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(
            request(f"{MODEL}@tflite:int8-static", {"input": x[:2]}), timeout=30)
    with g.client() as c:
        want_two = _logits(_infer(c, f"{MODEL}@tflite:int8-static", x[:2]))
    np.testing.assert_allclose(outputs(resp)["logits"], want_two, atol=1e-6)
    # OIP gRPC: tritonclient unmodified
    client = triton_grpc.InferenceServerClient(g.grpc_url)
    inp = triton_grpc.InferInput("input", list(x[:3].shape), "FP32")
    inp.set_data_from_numpy(x[:3])
    res = client.infer(f"{MODEL}@onnxruntime:int8-static", [inp])
    assert res.as_numpy(m.signature.outputs[0].name).shape == (3, 10)
    client.close()


def _reference(stack) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The first 8 rows of the reference batch and the float source's outputs on them."""
    _, m, _, store = stack
    x, ref, _ = m.load_reference(store)
    return x["input"][:8], {k: v[:8] for k, v in ref.items()}


def test_a_bare_name_routes_only_to_float_artifacts(stack) -> None:
    g, m, _, _ = stack
    x, ref = _reference(stack)
    with g.client() as c:
        r = _infer(c, MODEL, x)
        assert r.status_code == 200 and r.headers["x-served-by"] == "onnxruntime"
        np.testing.assert_allclose(_logits(r), ref[m.signature.outputs[0].name], atol=1e-4)
        meta = c.get(f"/v2/models/{MODEL}").json()["parameters"]
        assert meta["candidates"] == [f"{MODEL}@onnxruntime", f"{MODEL}@tflite"]
        # every artifact's certificate, the float one and each variant's apart
        assert meta["parity"]["tflite"]["tolerance"] == 1e-4 and meta["parity"]["tflite"]["quantized"] is None
        assert meta["parity"]["tflite:int8-static"]["quantized"]["min_top1_agreement"] == 0.98
        variant_meta = c.get(f"/v2/models/{MODEL}@tflite:int8-static").json()
        assert variant_meta["parameters"]["target"] == f"{MODEL}@tflite:int8-static"
        assert variant_meta["parameters"]["parity_ok"] is True and variant_meta["platform"] == "tflite"
        index = {e["name"]: e for e in c.post("/v2/repository/index").json()}
    for key in GOOD:
        fmt, variant = key.split(":")
        name = f"{MODEL}@{'tflite' if fmt == 'tflite' else 'onnxruntime'}:{variant}"
        assert index[name]["state"] == "READY", index[name]
    assert f"{MODEL}@tflite:fp16" not in index  # its certificate failed: not routable


def test_unknown_or_failed_variants_are_404_naming_the_options(stack) -> None:
    g = stack[0]
    x, _ = _reference(stack)
    with g.client() as c:
        r = _infer(c, f"{MODEL}@tflite:int4", x)
        assert r.status_code == 404
        err = r.json()["error"]
        assert "unknown variant 'int4'" in err and f"{MODEL}@tflite:int8-static" in err
        assert "onnx" not in err.split("variants of")[1]  # only that runtime's variants
        r = _infer(c, f"{MODEL}@tflite:fp16", x)
        assert r.status_code == 404
        assert "certificate failed" in r.json()["error"] and "exceeds the maximum 1e-09" in r.json()["error"]
