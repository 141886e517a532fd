"""Every example model on every runtime through the gateway, against the real backends.

Needs the `real_stack` fixture (tests/conftest.py): {"gateway_url", "store", "runtimes", and
optionally "api_key", "max_payload_bytes"}. Outputs must match the manifest's reference outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton

from model_store.manifest import FORMAT_OF_RUNTIME, Manifest, load_store
from services.gateway.settings import GatewaySettings

pytestmark = pytest.mark.real_stack
BATCHES = (1, 32)
TOLERANCE = 1e-4


def _cases(stack: dict[str, Any]) -> list[tuple[Manifest, str]]:
    store = load_store(Path(stack["store"]))
    assert store, f"no models in {stack['store']}"
    return [(m, rt) for m in store.values() for rt in stack["runtimes"]]


def _client(stack: dict[str, Any]) -> httpx.Client:
    key = stack.get("api_key")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=stack["gateway_url"], headers=headers, timeout=120)


def _limit(stack: dict[str, Any]) -> int:
    return stack.get("max_payload_bytes") or GatewaySettings().gateway_max_payload_bytes


def _check(out: np.ndarray, ref: np.ndarray, m: Manifest, rt: str) -> None:
    tol = max(TOLERANCE, m.artifacts[FORMAT_OF_RUNTIME[rt]].parity.tolerance)
    assert out.shape == ref.shape, (m.name, rt, out.shape, ref.shape)
    np.testing.assert_allclose(out, ref, atol=tol, rtol=0, err_msg=f"{m.name}@{rt}")


def test_bare_names_route_by_policy(real_stack) -> None:
    store = load_store(Path(real_stack["store"]))
    with _client(real_stack) as c:
        for m in store.values():
            x, y, _ = m.load_reference(Path(real_stack["store"]))
            (spec,) = m.signature.inputs
            body = {"inputs": [{"name": spec.name, "shape": [1, *x.shape[1:]],
                                "datatype": spec.datatype, "data": x[:1].ravel()}]}
            r = c.post(f"/v2/models/{m.name}/infer",
                       content=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY))
            assert r.status_code == 200, (m.name, r.text[:300])
            rt = r.headers["x-served-by"].removesuffix("-standin")
            assert rt in real_stack["runtimes"]
            (out,) = r.json()["outputs"]
            _check(np.asarray(out["data"], np.float32).reshape(out["shape"]), y[:1], m, rt)


def test_every_model_on_every_runtime_both_apis(real_stack) -> None:
    with _client(real_stack) as c:
        index = {e["name"]: e for e in c.post("/v2/repository/index").json()}
        for m, rt in _cases(real_stack):
            name = f"{m.name}@{rt}"
            if not m.passed(FORMAT_OF_RUNTIME[rt]):
                assert index[name]["state"] == "UNAVAILABLE"
                assert c.post(f"/v2/models/{name}/infer", content=b"{}").status_code == 404
                continue
            assert index[name]["state"] == "READY", index[name]
            x_all, y_all, _ = m.load_reference(Path(real_stack["store"]))
            (spec,), (out_spec,) = m.signature.inputs, m.signature.outputs
            for batch in BATCHES:
                x, y = x_all[:batch], y_all[:batch]
                oip = orjson.dumps({"inputs": [{"name": spec.name, "shape": list(x.shape),
                                                "datatype": spec.datatype, "data": x.ravel()}]},
                                   option=orjson.OPT_SERIALIZE_NUMPY)
                tfs = orjson.dumps({"instances": x}, option=orjson.OPT_SERIALIZE_NUMPY)
                limit = _limit(real_stack)
                r1 = c.post(f"/v2/models/{name}/infer", content=oip)
                if len(oip) > limit:
                    assert r1.status_code == 413, (name, batch)
                else:
                    assert r1.status_code == 200, (name, batch, r1.text[:300])
                    assert r1.headers["x-served-by"].startswith(rt)
                    (out,) = r1.json()["outputs"]
                    assert out["name"] == out_spec.name and out["datatype"] == out_spec.datatype
                    _check(np.asarray(out["data"], np.float32).reshape(out["shape"]), y, m, rt)
                r2 = c.post(f"/v1/models/{name}:predict", content=tfs)
                if len(tfs) > limit:
                    assert r2.status_code == 413, (name, batch)
                else:
                    assert r2.status_code == 200, (name, batch, r2.text[:300])
                    _check(np.asarray(r2.json()["predictions"], np.float32), y, m, rt)


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient(real_stack, binary: bool) -> None:
    url = real_stack["gateway_url"].removeprefix("http://")
    key = real_stack.get("api_key")
    headers = {"Authorization": f"Bearer {key}"} if key else None
    client = triton.InferenceServerClient(url)
    assert client.is_server_ready()
    index = {e["name"] for e in client.get_model_repository_index(headers=headers)}
    for m, rt in _cases(real_stack):
        name = f"{m.name}@{rt}"
        assert name in index
        if not m.passed(FORMAT_OF_RUNTIME[rt]):
            continue
        meta = client.get_model_metadata(name, headers=headers)
        assert meta["platform"] == rt and meta["parameters"]["parity_ok"] is True
        x, y, _ = m.load_reference(Path(real_stack["store"]))
        (spec,), (out_spec,) = m.signature.inputs, m.signature.outputs
        for batch in BATCHES:
            # JSON float32 reprs run to ~20 characters
            size = x[:batch].nbytes if binary else x[:batch].size * 24
            if size > _limit(real_stack):
                continue  # the 413 is covered above
            inp = triton.InferInput(spec.name, list(x[:batch].shape), spec.datatype)
            inp.set_data_from_numpy(x[:batch], binary_data=binary)
            outputs = [triton.InferRequestedOutput(out_spec.name, binary_data=binary)]
            result = client.infer(name, [inp], outputs=outputs, headers=headers)
            _check(result.as_numpy(out_spec.name), y[:batch], m, rt)
