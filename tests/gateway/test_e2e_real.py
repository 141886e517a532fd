"""Every example model on every runtime through the gateway, against the real backends.

Needs the `real_stack` fixture (tests/conftest.py): {"gateway_url", "gateway_grpc",
"gateway_tfs_grpc", "store",
"runtimes", and optionally "api_key", "max_payload_bytes"}. Outputs must match the manifest's reference outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from contract.codec import InferRequest, InferResponse, decode_tfserving_outputs, header_length
from contract.manifest import Manifest, load_store
from contract.runtimes import FORMAT_OF_RUNTIME
from services.gateway.settings import GatewaySettings

pytestmark = pytest.mark.real_stack
BATCHES = (1, 32)
GRPC_BATCH = 2  # gRPC vs REST: the same data path, so one small batch per pair suffices
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


def _check(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], m: Manifest, rt: str) -> None:
    tol = max(TOLERANCE, m.artifacts[FORMAT_OF_RUNTIME[rt]].parity.tolerance)
    assert list(got) == list(ref), (m.name, rt, list(got))
    for name, want in ref.items():
        assert got[name].shape == want.shape, (m.name, rt, name, got[name].shape, want.shape)
        np.testing.assert_allclose(got[name].astype(np.float64), want.astype(np.float64), atol=tol,
                                   rtol=0, err_msg=f"{m.name}@{rt} {name}")


def _batch(arrays: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    return {k: v[:n] for k, v in arrays.items()}


def _oip(r: httpx.Response) -> dict[str, np.ndarray]:
    return InferResponse.from_oip(r.content, header_length(r.headers.get("inference-header-content-length"))).arrays()


def test_bare_names_route_by_policy(real_stack) -> None:
    store = load_store(Path(real_stack["store"]))
    with _client(real_stack) as c:
        for m in store.values():
            x, y, _ = m.load_reference(Path(real_stack["store"]))
            body, _ = InferRequest.from_arrays(_batch(x, 1)).to_oip()
            r = c.post(f"/v2/models/{m.name}/infer", content=body)
            assert r.status_code == 200, (m.name, r.text[:300])
            rt = r.headers["x-served-by"].removesuffix("-standin")
            assert rt in real_stack["runtimes"]
            _check(_oip(r), _batch(y, 1), m, rt)


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
            for batch in BATCHES:
                x, y = _batch(x_all, batch), _batch(y_all, batch)
                req = InferRequest.from_arrays(x)
                oip, _ = req.to_oip()
                tfs = req.to_tfserving()
                limit = _limit(real_stack)
                r1 = c.post(f"/v2/models/{name}/infer", content=oip)
                if len(oip) > limit:
                    assert r1.status_code == 413, (name, batch)
                else:
                    assert r1.status_code == 200, (name, batch, r1.text[:300])
                    assert r1.headers["x-served-by"].startswith(rt)
                    outs = {o["name"]: o for o in r1.json()["outputs"]}
                    assert all(outs[s.name]["datatype"] == s.datatype for s in m.signature.outputs)
                    _check(_oip(r1), y, m, rt)
                r2 = c.post(f"/v1/models/{name}:predict", content=tfs)
                if len(tfs) > limit:
                    assert r2.status_code == 413, (name, batch)
                else:
                    assert r2.status_code == 200, (name, batch, r2.text[:300])
                    _check(decode_tfserving_outputs(r2.content, m.signature, batch), y, m, rt)


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
        for batch in BATCHES:
            xb = _batch(x, batch)
            # JSON float32 reprs run to ~20 characters
            size = sum(v.nbytes if binary else v.size * 24 for v in xb.values())
            if size > _limit(real_stack):
                continue  # the 413 is covered above
            inputs = []
            for spec in m.signature.inputs:
                inp = triton.InferInput(spec.name, list(xb[spec.name].shape), spec.datatype)
                inp.set_data_from_numpy(xb[spec.name].astype(spec.numpy_dtype), binary_data=binary)
                inputs.append(inp)
            outputs = [triton.InferRequestedOutput(s.name, binary_data=binary) for s in m.signature.outputs]
            result = client.infer(name, inputs, outputs=outputs, headers=headers)
            _check({s.name: result.as_numpy(s.name) for s in m.signature.outputs}, _batch(y, batch), m, rt)


def test_grpc_answers_as_rest(real_stack) -> None:
    """For every example model on every runtime it has a certified artifact on, OIP gRPC
    (tritonclient.grpc, raw tensors) answers the same request with the same values as OIP REST
    (binary tensors both ways), value for value; uncertified pairs are NOT_FOUND on both."""
    key = real_stack.get("api_key")
    headers = {"authorization": f"Bearer {key}"} if key else None
    client = triton_grpc.InferenceServerClient(real_stack["gateway_grpc"])
    assert client.is_server_ready()
    with _client(real_stack) as c:
        for m, rt in _cases(real_stack):
            name = f"{m.name}@{rt}"
            x, y, _ = m.load_reference(Path(real_stack["store"]))
            x, y = _batch(x, GRPC_BATCH), _batch(y, GRPC_BATCH)
            inputs = []
            for spec in m.signature.inputs:
                inp = triton_grpc.InferInput(spec.name, list(x[spec.name].shape), spec.datatype)
                inp.set_data_from_numpy(x[spec.name].astype(spec.numpy_dtype))
                inputs.append(inp)
            if not m.passed(FORMAT_OF_RUNTIME[rt]):
                with pytest.raises(InferenceServerException) as e:
                    client.infer(name, inputs, headers=headers)
                assert e.value.status() == "StatusCode.NOT_FOUND", name
                continue
            result = client.infer(name, inputs, headers=headers)
            got = {s.name: result.as_numpy(s.name) for s in m.signature.outputs}
            _assert_same_as_rest(c, name, x, got)
            _check(got, y, m, rt)


def _assert_same_as_rest(c: httpx.Client, name: str, x: dict[str, np.ndarray],
                         got: dict[str, np.ndarray]) -> None:  # fmt: skip
    """`got` (a gRPC answer) equals OIP REST's answer to `x` (binary tensors both ways), value
    for value, datatypes included."""
    body, hl = InferRequest.from_arrays(x, binary_output=True).to_oip(binary=True)
    r = c.post(f"/v2/models/{name}/infer", content=body,
               headers={"Inference-Header-Content-Length": str(hl)})
    assert r.status_code == 200, (name, r.text[:300])
    rest = _oip(r)
    assert list(got) == list(rest), name
    for k, want in rest.items():
        assert got[k].dtype == want.dtype, (name, k)
        np.testing.assert_array_equal(got[k], want, err_msg=f"{name} {k}")


def test_tfserving_grpc_answers_as_rest(real_stack) -> None:
    """The same for TF Serving gRPC (the unmodified tensorflow-serving-api stub, inputs as
    tensor_content): every certified (model, runtime) pair answers as OIP REST does, value for
    value; uncertified pairs are NOT_FOUND."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from contract.datatypes import OIP_TO_TF_ENUM

    key = real_stack.get("api_key")
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    with grpc.insecure_channel(real_stack["gateway_tfs_grpc"]) as channel, _client(real_stack) as c:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for m, rt in _cases(real_stack):
            name = f"{m.name}@{rt}"
            x, y, _ = m.load_reference(Path(real_stack["store"]))
            x, y = _batch(x, GRPC_BATCH), _batch(y, GRPC_BATCH)
            req = predict_pb2.PredictRequest()
            req.model_spec.name = name
            for t in InferRequest.from_arrays(x).inputs:
                proto = req.inputs[t.name]
                proto.dtype = OIP_TO_TF_ENUM[t.datatype]
                for d in t.shape:
                    proto.tensor_shape.dim.add().size = d
                proto.tensor_content = t.to_binary()[1]
            if not m.passed(FORMAT_OF_RUNTIME[rt]):
                with pytest.raises(grpc.RpcError) as e:
                    stub.Predict(req, metadata=metadata)
                assert e.value.code() == grpc.StatusCode.NOT_FOUND, name
                continue
            outputs = stub.Predict(req, metadata=metadata).outputs
            got = {}
            for s in m.signature.outputs:
                t = outputs[s.name]
                assert t.dtype == OIP_TO_TF_ENUM[s.datatype], (name, s.name)
                got[s.name] = np.frombuffer(t.tensor_content, s.numpy_dtype.newbyteorder("<")).reshape(
                    [d.size for d in t.tensor_shape.dim]).astype(s.numpy_dtype)
            _assert_same_as_rest(c, name, x, got)
            _check(got, y, m, rt)
