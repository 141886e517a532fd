"""The TF Serving REST API as TF Serving clients use it (plain JSON over HTTP)."""

from __future__ import annotations

import numpy as np
import pytest

from contract.manifest import load_store

NAMES = ["tiny-mlp", "tiny-mlp@onnxruntime", "tiny-mlp@tflite", "tiny-mlp@tfserving",
         "tiny-mlp@torchserve", "tiny-img@tfserving", "tiny-img@onnxruntime"]


def reference(store, name: str, batch: int):
    x, y, _ = load_store(store)[name.partition("@")[0]].load_reference(store)
    return x["x"][:batch], y["y"][:batch]


@pytest.mark.parametrize("name", NAMES)
def test_predict_row_and_columnar(gateway, store, name) -> None:
    x, y = reference(store, name, 4)
    with gateway.client() as c:
        r = c.post(f"/v1/models/{name}:predict", json={"signature_name": "serving_default",
                                                      "instances": x.tolist()})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(np.array(r.json()["predictions"], np.float32), y, atol=1e-5)
        for inputs in ({"x": x.tolist()}, x.tolist()):
            r = c.post(f"/v1/models/{name}/versions/1:predict", json={"inputs": inputs})
            assert r.status_code == 200, r.text
            np.testing.assert_allclose(np.array(r.json()["outputs"], np.float32), y, atol=1e-5)
    runtime = name.partition("@")[2] or "onnxruntime"
    assert r.headers["x-served-by"] == ("tfserving-standin" if runtime == "tfserving" else runtime)


def test_row_format_with_named_instances(gateway, store) -> None:
    x, y = reference(store, "tiny-mlp", 2)
    with gateway.client() as c:
        instances = [{"x": row} for row in x.tolist()]
        r = c.post("/v1/models/tiny-mlp@torchserve:predict", json={"instances": instances})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()["predictions"], np.float32), y, atol=1e-5)


def test_status_and_metadata(gateway) -> None:
    with gateway.client() as c:
        status = c.get("/v1/models/tiny-mlp@tfserving").json()
        assert status["model_version_status"][0]["state"] == "AVAILABLE"
        versioned = c.get("/v1/models/tiny-mlp/versions/1").json()
        assert versioned["model_version_status"][0]["version"] == "1"
        meta = c.get("/v1/models/tiny-img/metadata").json()
        sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert sig["inputs"]["x"]["dtype"] == "DT_FLOAT"
        dims = sig["inputs"]["x"]["tensor_shape"]["dim"]
        assert [d["size"] for d in dims] == ["-1", "2", "2", "1"]
        assert c.get("/v1/models/nope").status_code == 404


@pytest.mark.parametrize(
    "body, message",
    [
        ({"instances": [[1.0, 2.0]]}, "input 'x' has shape [1, 2], the model takes [-1, 4]"),
        ({"inputs": {"z": [[1.0, 2.0, 3.0, 4.0]]}}, "'inputs' has"),
        ({"instances": [[1, 2, 3, 4]], "inputs": [[1, 2, 3, 4]]}, "exactly one of"),
        ({"instances": [["a", "b", "c", "d"]]}, "values must be numbers"),
        ({"instances": [[1, 2, 3, 4]], "signature_name": "predict"}, '"predict" not found'),
    ],
)
def test_predict_errors(gateway, body, message) -> None:
    with gateway.client() as c:
        r = c.post("/v1/models/tiny-mlp@tfserving:predict", json=body)
    assert r.status_code == 400 and message in r.json()["error"]
