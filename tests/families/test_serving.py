"""The families users bring, served by the real stack (every runtime + the gateway over the family
store) and queried as their clients would: tritonclient (binary and JSON tensors) and TF Serving
REST (named instances, columnar inputs), at the reference length and a shorter one; answers are
compared with the source model's outputs (the certified reference). Bad requests per input get a
400 that names the input, on every runtime."""

from __future__ import annotations

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton

from contract.codec import InferRequest, decode_tfserving_outputs
from contract.manifest import load_store
from contract.runtimes import FORMAT_OF_RUNTIME, RUNTIMES
from exporters.inputs import crop
from tests.families.zoo import FAMILIES

# (Run alone, the family store is built in this module's first setup: see test_export.py.)
pytestmark = [pytest.mark.families, pytest.mark.real_stack, pytest.mark.timeout(2400)]
BATCH = 4


def _pairs(store):
    manifests = load_store(store)
    return [(manifests[f.name], rt) for f in FAMILIES if f.name in manifests for rt in RUNTIMES
            if manifests[f.name].passed(FORMAT_OF_RUNTIME[rt])]  # fmt: skip


def _close(got: dict, want: dict, m, rt: str, what: str) -> None:
    art = m.artifacts[FORMAT_OF_RUNTIME[rt]]
    for s in m.signature.outputs:
        tol = art.parity.tolerance * max(1.0, art.parity.outputs[s.name].scale) * 2
        a, b = np.asarray(got[s.name]), np.asarray(want[s.name])
        assert a.shape == b.shape, (m.name, rt, what, s.name, a.shape, b.shape)
        np.testing.assert_allclose(a, b, atol=tol, rtol=0, err_msg=f"{m.name}@{rt} {what} {s.name}")


def test_every_family_on_every_runtime_with_tritonclient(family_stack):
    store = family_stack["store"]
    client = triton.InferenceServerClient(family_stack["gateway_url"].removeprefix("http://"), network_timeout=120)
    pairs = _pairs(store)
    assert len(pairs) >= 3 * len(FAMILIES), "most (family, runtime) pairs must be servable"
    for m, rt in pairs:
        x, y, _ = m.load_reference(store)
        x = {k: v[:BATCH] for k, v in x.items()}
        for binary in (True, False):
            inputs = []
            for spec in m.signature.inputs:
                inp = triton.InferInput(spec.name, list(x[spec.name].shape), spec.datatype)
                inp.set_data_from_numpy(x[spec.name], binary_data=binary)
                inputs.append(inp)
            outs = [triton.InferRequestedOutput(s.name, binary_data=binary) for s in m.signature.outputs]
            result = client.infer(f"{m.name}@{rt}", inputs, outputs=outs)
            _close({s.name: result.as_numpy(s.name) for s in m.signature.outputs},
                   {k: v[:BATCH] for k, v in y.items()}, m, rt, f"tritonclient binary={binary}")  # fmt: skip


def test_tfserving_rest_named_instances_and_a_shorter_sequence(family_stack):
    store = family_stack["store"]
    with httpx.Client(base_url=family_stack["gateway_url"], timeout=120) as c:
        for m, rt in _pairs(store):
            x, y, _ = m.load_reference(store)
            x = {k: v[:BATCH] for k, v in x.items()}
            rows = [{k: v[i].tolist() for k, v in x.items()} for i in range(BATCH)]
            r = c.post(f"/v1/models/{m.name}@{rt}:predict", content=orjson.dumps({"instances": rows}))
            assert r.status_code == 200, (m.name, rt, r.text[:300])
            preds = r.json()["predictions"]
            got = {s.name: np.asarray([p[s.name] for p in preds] if isinstance(preds[0], dict) else preds, np.float64)
                   for s in m.signature.outputs}  # fmt: skip
            _close(got, {k: v[:BATCH] for k, v in y.items()}, m, rt, "TF Serving instances")
            short = crop(x, m.signature.inputs, 7)
            if short is None:
                continue
            # The same shorter request on every runtime must agree (each was certified at length 7).
            r = c.post(f"/v1/models/{m.name}@{rt}:predict", content=InferRequest.from_arrays(short).to_tfserving())
            assert r.status_code == 200, (m.name, rt, "length 7", r.text[:300])
            got = decode_tfserving_outputs(r.content, m.signature, BATCH)
            ref = c.post(f"/v1/models/{m.name}@onnxruntime:predict", content=InferRequest.from_arrays(short).to_tfserving())
            _close(got, decode_tfserving_outputs(ref.content, m.signature, BATCH), m, rt, "length 7 vs onnxruntime")


def _bad(m, x: dict, change: str) -> dict:
    """A request body with one input spoiled (the last input: the "second" of a two-input model)."""
    arrays = {k: v[:2] for k, v in x.items()}
    spec = m.signature.inputs[-1]
    if change == "dtype":
        arrays[spec.name] = arrays[spec.name].astype(np.float64 if spec.datatype != "FP64" else np.float32)
    elif change == "missing":
        del arrays[spec.name]
    elif change == "out_of_range":
        ids = next(s for s in m.signature.inputs if s.role == "token_ids")
        arrays[ids.name] = arrays[ids.name].copy()
        arrays[ids.name][0, 0] = int(ids.value_range[1])  # one past the vocabulary
    return InferRequest.from_arrays(arrays).to_oip()[0]


@pytest.mark.parametrize("change,message", [("dtype", "datatype"), ("missing", "missing input"),
                                            ("out_of_range", "outside the model's valid range")])  # fmt: skip
def test_bad_inputs_are_a_400_naming_the_input_on_every_runtime(family_stack, change, message):
    store = family_stack["store"]
    with httpx.Client(base_url=family_stack["gateway_url"], timeout=60) as c:
        for m, rt in _pairs(store):
            if len(m.signature.inputs) < 2 or (change == "out_of_range" and not any(s.role == "token_ids" for s in m.signature.inputs)):
                continue
            x, _, _ = m.load_reference(store)
            r = c.post(f"/v2/models/{m.name}@{rt}/infer", content=_bad(m, x, change))
            assert r.status_code == 400, (m.name, rt, change, r.status_code, r.text[:300])
            error = r.json()["error"]
            assert message in error, (m.name, rt, error)
            named = m.signature.inputs[-1].name if change != "out_of_range" else next(
                s.name for s in m.signature.inputs if s.role == "token_ids")
            assert named in error, (m.name, rt, error)
