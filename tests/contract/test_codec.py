"""The one OIP codec (contract/codec.py): every wire form round-trips every datatype, validation
names what is wrong, decoding is strict, limits answer 413, and nothing recurses on nested data."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from contract.codec import CodecError, InferRequest, InferResponse, Limits, decode_tfserving_outputs
from contract.datatypes import OIP_TO_NUMPY
from contract.manifest import ManifestError, Signature, TensorSpec, load_manifest

SIG = Signature(
    inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 3]),
            TensorSpec(name="ids", datatype="INT64", shape=[-1, -1], dims=["batch", "sequence"], role="token_ids",
                       value_range=(0, 10))],
    outputs=[TensorSpec(name="logits", datatype="FP32", shape=[-1, 2]), TensorSpec(name="score", datatype="FP32", shape=[-1, 1])],
)  # fmt: skip


def body(**tensors) -> bytes:
    return orjson.dumps({"inputs": [{"name": k, **v} for k, v in tensors.items()]})


GOOD = {"x": {"shape": [1, 3], "datatype": "FP32", "data": [0.1, 0.2, 0.3]},
        "ids": {"shape": [1, 2], "datatype": "INT64", "data": [[1, 9]]}}  # fmt: skip


@pytest.mark.parametrize("datatype", sorted(OIP_TO_NUMPY))
@pytest.mark.parametrize("binary", [False, True])
def test_every_datatype_round_trips(datatype, binary):
    dtype = OIP_TO_NUMPY[datatype]
    a = (np.arange(6) % 2).astype(dtype).reshape(2, 3) if dtype.kind == "b" else np.arange(6).astype(dtype).reshape(2, 3)
    wire, hl = InferRequest.from_arrays({"t": a}).to_oip(binary=binary)
    assert (hl is not None) == binary
    back = InferRequest.from_oip(wire, hl).arrays()["t"]
    assert back.dtype == dtype and np.array_equal(back, a)


def test_validate_and_decode_a_two_input_request():
    req = InferRequest.from_oip(body(**GOOD))
    assert req.validate(SIG) == 1
    x = req.arrays(SIG)
    assert list(x) == ["x", "ids"] and x["ids"].dtype == np.int64 and x["ids"].tolist() == [[1, 9]]


@pytest.mark.parametrize("change, message", [
    ({"ids": {"shape": [1, 2], "datatype": "FP32", "data": [1, 2]}}, "input 'ids' has datatype FP32, the model takes INT64"),
    ({"x": {"shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}}, "input 'x' has shape [1, 4]"),
    ({"ids": {"shape": [2, 2], "datatype": "INT64", "data": [1, 2, 3, 4]}}, "inputs disagree on the batch size"),
    ({"ids": {"shape": [1, 3], "datatype": "INT64", "data": [1, 2]}}, "needs 3 elements, data has 2"),
    ({"y": {"shape": [1], "datatype": "FP32", "data": [1]}}, "unknown input 'y'"),
])  # fmt: skip
def test_validation_names_the_problem(change, message):
    tensors = {**GOOD, **change}
    with pytest.raises(CodecError, match=message.replace("[", r"\[").replace("]", r"\]")) as e:
        InferRequest.from_oip(body(**tensors)).validate(SIG)
    assert e.value.status == 400


def test_missing_input_is_named():
    with pytest.raises(CodecError, match=r"missing input\(s\) \['ids'\]"):
        InferRequest.from_oip(body(x=GOOD["x"])).validate(SIG)


@pytest.mark.parametrize("data, datatype, message", [
    ([0.1, None, 0.3], "FP32", "FP32 data must be numbers"),
    ([0.1, "0.2", 0.3], "FP32", "FP32 data must be numbers"),
    ([True, False, True], "FP32", "FP32 data must be numbers"),
    ([1.5, 2, 3], "INT64", "INT64 data must be integers"),
    ([300, 1, 2], "UINT8", "out of range for UINT8"),
    ([1, 0, 1], "BOOL", "BOOL data must be true/false"),
])  # fmt: skip
def test_decoding_is_strict(data, datatype, message):
    req = InferRequest.from_oip(body(t={"shape": [1, 3], "datatype": datatype, "data": data}))
    with pytest.raises(CodecError, match=message):
        req.arrays()


def test_nesting_is_bounded_by_the_rank_without_recursion():
    deep = b'{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":' + b"[" * 5000 + b"1" + b"]" * 5000 + b"}]}"
    try:
        req = InferRequest.from_oip(deep)
    except CodecError as e:  # orjson's own depth limit may refuse it first: also a 400
        assert e.status == 400
        return
    with pytest.raises(CodecError, match="nested deeper than the tensor's rank 2"):
        req.validate(SIG)


def test_token_ids_outside_the_vocabulary_are_refused():
    for bad in (10, -1):  # ONNX Runtime would error on 10 and silently wrap -1 to the last row
        req = InferRequest.from_oip(body(x=GOOD["x"], ids={"shape": [1, 2], "datatype": "INT64", "data": [1, bad]}))
        req.validate(SIG)
        with pytest.raises(CodecError, match=f"input 'ids': value {bad} is outside the model's valid range"):
            req.arrays(SIG)


def test_limits_answer_413():
    req = InferRequest.from_oip(body(**GOOD))
    with pytest.raises(CodecError) as e:
        req.validate(SIG, Limits(max_elements=4))
    assert e.value.status == 413
    big = {"x": {"shape": [3, 3], "datatype": "FP32", "data": [0] * 9}, "ids": {"shape": [3, 1], "datatype": "INT64", "data": [1, 2, 3]}}
    with pytest.raises(CodecError, match="batch of 3 exceeds") as e:
        InferRequest.from_oip(body(**big)).validate(SIG, Limits(max_batch=2))
    assert e.value.status == 413


@pytest.mark.parametrize("default, per_output, expected", [
    (None, {}, set()), (True, {}, {"logits", "score"}), (True, {"score": False}, {"logits"}),
    (False, {"score": True}, {"score"}),
])  # fmt: skip
def test_binary_outputs_follow_tritons_rule(default, per_output, expected):
    doc = {"inputs": [{"name": k, **v} for k, v in GOOD.items()]}
    if default is not None:
        doc["parameters"] = {"binary_data_output": default}
    if per_output:
        doc["outputs"] = [{"name": "logits"}, *({"name": k, "parameters": {"binary_data": v}} for k, v in per_output.items())]
    req = InferRequest.from_oip(orjson.dumps(doc))
    assert req.binary_outputs(SIG) == expected


def test_response_json_nan_is_null_and_binary_is_exact():
    resp = InferResponse.from_arrays("m", {"logits": np.array([[np.nan, 1.0]], np.float32), "score": np.array([[np.inf]], np.float32)}, "1", "r1")
    text, hl = resp.to_oip()
    assert hl is None and b"NaN" not in text and b"Infinity" not in text
    doc = json.loads(text)  # valid JSON
    assert doc["outputs"][0]["data"] == [None, 1.0] and doc["id"] == "r1" and doc["model_version"] == "1"
    raw, hl = resp.to_oip({"logits", "score"})
    back = InferResponse.from_oip(raw, hl).arrays()
    assert np.isnan(back["logits"][0, 0]) and np.isinf(back["score"][0, 0])


def test_tfserving_named_instances_and_columnar():
    req, row = InferRequest.from_tfserving(b'{"instances": [{"x": [1, 2, 3], "ids": [1, 2]}, {"x": [4, 5, 6], "ids": [3, 4]}]}', SIG)
    assert row and req.validate(SIG) == 2 and req.arrays(SIG)["ids"].dtype == np.int64
    req, row = InferRequest.from_tfserving(b'{"inputs": {"x": [[1, 2, 3]], "ids": [[1, 2]]}}', SIG)
    assert not row and req.validate(SIG) == 1
    with pytest.raises(CodecError, match='signature name: "classify" not found'):
        InferRequest.from_tfserving(b'{"signature_name": "classify", "inputs": {"x": [[1, 2, 3]], "ids": [[1]]}}', SIG)
    out = decode_tfserving_outputs(b'{"outputs": {"logits": [[1, 2]], "score": [[0.5]]}}', SIG, 1)
    assert out["logits"].dtype == np.float32 and out["score"].shape == (1, 1)


def test_a_schema_1_manifest_says_to_reexport(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "old", "signature": {}}))
    with pytest.raises(ManifestError, match="schema 1.*Re-export the model"):
        load_manifest(tmp_path)
