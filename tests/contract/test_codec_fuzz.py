"""Property-based fuzzing of the one codec (contract/codec.py), issue 12.

- Whatever bytes or JSON arrive (nested documents, deep nesting, huge numbers, NaN/Infinity
  literals, a wrong type in any field, binary headers pointing anywhere), InferRequest.from_oip /
  from_tfserving / validate / arrays and InferResponse.from_oip raise nothing but a CodecError
  with a 4xx status and a message.
- Decoding is strict: a value of the wrong kind anywhere in `data` (null, string, boolean for a
  number, number for a boolean, float for an integer) is refused, never coerced.
- Valid tensors of every datatype and shape round-trip exactly: binary bitwise (NaN payloads
  included), JSON bitwise for finite values; non-finite floats are written as null in JSON (the
  documented encoding), so no answer ever holds a bare NaN or Infinity.

Bounded: every property has a small max_examples; the file runs in well under a minute.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from contract.codec import (
    CodecError,
    InferRequest,
    InferResponse,
    Limits,
    decode_tfserving_predict,
    encode_tfserving_predict,
)
from contract.datatypes import OIP_TO_NUMPY
from contract.manifest import Signature, TensorSpec

# Failing examples are replayed from here (an ignored directory, not the repository root).
DB = DirectoryBasedExampleDatabase(str(Path(__file__).resolve().parents[2] / ".pytest_cache" / "hypothesis"))
FUZZ = settings(max_examples=150, deadline=None, database=DB, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip

SIG = Signature(
    inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 3]),
            TensorSpec(name="ids", datatype="INT64", shape=[-1, -1], dims=["batch", "sequence"],
                       role="token_ids", value_range=(0, 10))],
    outputs=[TensorSpec(name="logits", datatype="FP32", shape=[-1, 2])],
)  # fmt: skip
SIG_ONE = Signature(inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 3])],
                    outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1, 2])])  # fmt: skip
DATATYPES = sorted(OIP_TO_NUMPY)


def refuse_constant(name: str):
    raise AssertionError(f"bare {name} in a JSON answer")


def strict_json(text: bytes | str):
    """json.loads that fails on NaN / Infinity / -Infinity (not JSON, though Python accepts them)."""
    return json.loads(text, parse_constant=refuse_constant)


def expect_codec_error_only(fn, *args, **kwargs):
    """fn(...)'s result, or None when it raised a proper CodecError; anything else fails."""
    try:
        return fn(*args, **kwargs)
    except CodecError as e:
        assert 400 <= e.status < 500, f"CodecError with status {e.status}: {e.message}"
        assert isinstance(e.message, str) and e.message.strip(), "CodecError without a message"
        return None


# --- arbitrary JSON -----------------------------------------------------------------------------

numbers = st.one_of(
    st.integers(),  # beyond 64 bits too
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True),  # json.dumps writes NaN/Infinity literals
    st.sampled_from([0, -0.0, 1e308, -1e308, 1e-320, 3.5e38, 65520, 2**63, 2**63 - 1, -(2**63), 2**64 - 1]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8),
                    st.sampled_from(["1.5", "NaN", "true", "FP32", "", "x", "ids"]))  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=5),
                               st.dictionaries(st.text(max_size=6), children, max_size=5)),
    max_leaves=25,
)


def field(valid: st.SearchStrategy) -> st.SearchStrategy:
    """A field that is usually of the right type, sometimes anything at all, sometimes absent
    (Ellipsis: dropped by dumps())."""
    return st.one_of(valid, valid, json_values, st.just(Ellipsis))


def drop_absent(v):
    if isinstance(v, dict):
        return {k: drop_absent(x) for k, x in v.items() if x is not Ellipsis}
    if isinstance(v, list):
        return [drop_absent(x) for x in v if x is not Ellipsis]
    return v


def dumps(doc) -> bytes:
    """JSON as a lax client writes it: NaN / Infinity literals and integers beyond 64 bits included."""
    return json.dumps(drop_absent(doc), allow_nan=True).encode()


def nest(leaves: list, depth: int) -> list:
    for _ in range(depth):
        leaves = [leaves]
    return leaves


@st.composite
def tensor_docs(draw, names=("x", "ids", "y")) -> dict:
    shape = draw(field(st.lists(st.integers(min_value=-2, max_value=5), max_size=4)))
    n = math.prod(shape) if isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape) else 3
    leaf = st.one_of(numbers, st.booleans(), st.none(), st.text(max_size=3)) if draw(st.booleans()) else numbers
    flat = draw(st.lists(leaf, min_size=max(0, min(n, 12) - 1), max_size=min(n, 12) + 1))
    data = draw(st.one_of(st.just(flat), st.builds(nest, st.just(flat), st.integers(0, 4)),
                          json_values))  # fmt: skip
    return {
        "name": draw(field(st.sampled_from(names))),
        "shape": shape,
        "datatype": draw(field(st.sampled_from([*DATATYPES, "BYTES", "fp32", "FLOAT"]))),
        "data": data,
        "parameters": draw(field(st.fixed_dictionaries({}, optional={
            "binary_data_size": st.one_of(st.integers(-1, 64), json_values)}))),
    }


@st.composite
def oip_bodies(draw) -> tuple[bytes, int | None]:
    doc = {
        "id": draw(field(st.text(max_size=5))),
        "parameters": draw(field(st.fixed_dictionaries({}, optional={
            "binary_data_output": st.one_of(st.booleans(), json_values)}))),
        "inputs": draw(field(st.lists(tensor_docs(), max_size=3))),
        "outputs": draw(field(st.lists(st.fixed_dictionaries(
            {"name": field(st.sampled_from(["logits", "y", "nope"]))},
            optional={"parameters": field(st.fixed_dictionaries({}, optional={
                "binary_data": st.one_of(st.booleans(), json_values)}))}), max_size=3))),
    }
    if draw(st.booleans()):
        doc = draw(st.one_of(st.just(doc), json_values))
    text = dumps(doc)
    binary = draw(st.binary(max_size=48))
    header_len = draw(st.one_of(st.none(), st.just(len(text)), st.integers(-3, len(text) + len(binary) + 3)))
    return (text + binary if header_len is not None else text), header_len


def deep(depth: int, tensor: bool) -> bytes:
    inner = b"[" * depth + b"1" + b"]" * depth
    if not tensor:
        return inner
    return b'{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":' + inner + b"}]}"


# --- properties: nothing but CodecError ---------------------------------------------------------


def _request_pipeline(body: bytes, header_len: int | None, limits: Limits) -> None:
    req = expect_codec_error_only(InferRequest.from_oip, body, header_len)
    if req is None:
        return
    for sig in (SIG, SIG_ONE):
        if expect_codec_error_only(req.validate, sig, limits) is not None:
            expect_codec_error_only(req.arrays, sig)
            expect_codec_error_only(req.binary_outputs, sig)
    expect_codec_error_only(req.arrays)  # no signature: every tensor decoded as declared


@FUZZ
@given(oip_bodies(), st.sampled_from([Limits(), Limits(max_batch=2, max_elements=20)]))
@example((deep(494, True), None), Limits())
@example((deep(100_000, True), None), Limits())
@example((b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [NaN, Infinity, -Infinity]}]}', None), Limits())
@example((b'{"id": 5, "inputs": []}', None), Limits())
@example((b'{"parameters": 5, "inputs": []}', None), Limits())
@example((b'{"outputs": 5, "inputs": []}', None), Limits())
@example((b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "parameters": {"binary_data_size": 12}}]}AAAA', 98), Limits())
def test_oip_requests_raise_nothing_but_codec_errors(body_and_len, limits):
    _request_pipeline(*body_and_len, limits)


@FUZZ
@given(st.binary(max_size=200), st.one_of(st.none(), st.integers(-2, 210)))
@example(b"\xff\xfe", None)
@example(b"[" * 2000, None)
@example(b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1e400]}]}', None)
def test_arbitrary_bytes_raise_nothing_but_codec_errors(body, header_len):
    _request_pipeline(body, header_len, Limits())
    resp = expect_codec_error_only(InferResponse.from_oip, body, header_len)
    if resp is not None:
        expect_codec_error_only(resp.arrays)


@st.composite
def tfserving_bodies(draw) -> bytes:
    value = st.one_of(json_values, st.lists(st.lists(numbers, min_size=3, max_size=3), min_size=1, max_size=3))
    doc: dict = {}
    form = draw(st.sampled_from(["instances", "inputs", "both", "neither"]))
    if form in ("instances", "both"):
        doc["instances"] = draw(st.one_of(
            value, st.lists(st.fixed_dictionaries({}, optional={"x": value, "ids": value, "z": value}), max_size=3)))
    if form in ("inputs", "both"):
        doc["inputs"] = draw(st.one_of(value, st.fixed_dictionaries({}, optional={"x": value, "ids": value, "z": value})))
    if draw(st.booleans()):
        doc["signature_name"] = draw(field(st.sampled_from(["", "serving_default", "classify"])))
    if draw(st.integers(0, 9)) == 0:
        doc = draw(json_values)
    return dumps(doc)


@FUZZ
@given(tfserving_bodies(), st.sampled_from([SIG, SIG_ONE]))
@example(b'{"instances": [[1, 2, NaN]]}', SIG_ONE)
@example(b'{"instances": [[1, 2, null]]}', SIG_ONE)
@example(b'{"signature_name": "classify", "instances": [[1, 2, 3]]}', SIG_ONE)
@example(b'{"signature_name": 5, "instances": [[1, 2, 3]]}', SIG_ONE)
@example(b'{"inputs": ' + deep(494, False) + b"}", SIG_ONE)
def test_tfserving_requests_raise_nothing_but_codec_errors(body, sig):
    got = expect_codec_error_only(InferRequest.from_tfserving, body, sig)
    if got is None:
        return
    req, _row = got
    if expect_codec_error_only(req.validate, sig) is not None:
        expect_codec_error_only(req.arrays, sig)
        expect_codec_error_only(req.to_tfserving, sig)


@FUZZ
@given(st.builds(lambda outs, extra: {**extra, "outputs": outs},
                 field(st.lists(tensor_docs(names=("logits", "y")), max_size=3)),
                 st.fixed_dictionaries({}, optional={"model_name": json_values, "model_version": json_values,
                                                     "id": json_values, "parameters": json_values})))  # fmt: skip
def test_oip_responses_raise_nothing_but_codec_errors(doc):
    resp = expect_codec_error_only(InferResponse.from_oip, dumps(doc))
    if resp is not None:
        expect_codec_error_only(resp.arrays)


# --- strict decoding ----------------------------------------------------------------------------


def _decode(datatype: str, data: list, shape: list[int] | None = None):
    body = dumps({"inputs": [{"name": "t", "shape": shape or [len(data)], "datatype": datatype, "data": data}]})
    return InferRequest.from_oip(body).arrays()["t"]


WRONG_KIND = {  # per datatype kind: JSON values that must never be accepted as its data
    "f": st.one_of(st.none(), st.text(max_size=4), st.booleans(), st.sampled_from(["1.5", "NaN", "inf"])),
    "iu": st.one_of(st.none(), st.text(max_size=4), st.booleans(), st.floats(allow_nan=False, allow_infinity=False)),
    "b": st.one_of(st.none(), st.text(max_size=4), st.integers(), st.floats(allow_nan=False, allow_infinity=False)),
}


def _kind(datatype: str) -> str:
    k = OIP_TO_NUMPY[datatype].kind
    return "iu" if k in "iu" else k


def _good_leaf(datatype: str) -> st.SearchStrategy:
    dtype = OIP_TO_NUMPY[datatype]
    if dtype.kind == "b":
        return st.booleans()
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return st.integers(int(info.min), int(info.max))
    return st.floats(-1e4, 1e4)


@st.composite
def one_bad_value(draw, every_kind: bool) -> tuple[str, list, int]:
    """(datatype, data, position of the bad value): good values of the datatype with one value of a
    wrong kind. every_kind=False leaves out booleans mixed into numeric data (test below)."""
    datatype = draw(st.sampled_from(DATATYPES))
    good = draw(st.lists(_good_leaf(datatype), min_size=0, max_size=6))
    wrong = WRONG_KIND[_kind(datatype)]
    if not every_kind and _kind(datatype) != "b":
        wrong = wrong.filter(lambda v: type(v) is not bool)
    bad = draw(wrong)
    at = draw(st.integers(0, len(good)))
    return datatype, [*good[:at], bad, *good[at:]], at


@FUZZ
@given(one_bad_value(every_kind=False))
@example(("FP32", [0.5, None, 0.25], 1))
@example(("FP32", [0.5, "0.25", 1.0], 1))
@example(("INT64", [1, 2.5, 3], 1))
@example(("BOOL", [True, 1, False], 1))
def test_a_value_of_the_wrong_kind_is_refused(case):
    datatype, data, _ = case
    with pytest.raises(CodecError) as e:
        _decode(datatype, data)
    assert e.value.status == 400 and datatype in e.value.message
    dtypes = {"x": OIP_TO_NUMPY[datatype]}
    with pytest.raises(CodecError):
        decode_tfserving_predict({"instances": [data]}, dtypes)


@FUZZ
@given(st.sampled_from([d for d in DATATYPES if _kind(d) != "b"]).flatmap(
    lambda dt: st.tuples(st.just(dt), st.lists(_good_leaf(dt), min_size=1, max_size=5), st.booleans())))
@example(("FP32", [0.5, 1.0], True))
@example(("INT64", [1], False))
def test_a_boolean_among_numbers_is_refused(case):
    datatype, good, flag = case
    data = [*good, flag]
    with pytest.raises(CodecError):
        _decode(datatype, data)
    with pytest.raises(CodecError):
        decode_tfserving_predict({"instances": [data]}, {"x": OIP_TO_NUMPY[datatype]})


@FUZZ
@given(st.sampled_from([d for d in DATATYPES if _kind(d) == "iu"]).flatmap(
    lambda dt: st.tuples(st.just(dt), st.one_of(
        st.integers(max_value=int(np.iinfo(OIP_TO_NUMPY[dt]).min) - 1),
        st.integers(min_value=int(np.iinfo(OIP_TO_NUMPY[dt]).max) + 1)))))  # fmt: skip
def test_an_integer_out_of_range_is_refused_never_wrapped(case):
    datatype, value = case
    with pytest.raises(CodecError):
        _decode(datatype, [0, value])


# --- exact round trips ----------------------------------------------------------------------------


@st.composite
def arrays(draw, finite: bool, min_dim: int = 0, datatypes: list[str] = DATATYPES) -> np.ndarray:
    datatype = draw(st.sampled_from(datatypes))
    dtype = OIP_TO_NUMPY[datatype]
    shape = draw(st.lists(st.integers(min_dim, 4), min_size=1 if min_dim else 0, max_size=4))
    n = math.prod(shape)
    if dtype.kind == "f":
        # any bit pattern of the float type: NaN payloads, infinities, subnormals, -0.0
        bits = np.dtype(f"u{dtype.itemsize}")
        raw = draw(st.lists(st.integers(0, 2 ** (8 * dtype.itemsize) - 1), min_size=n, max_size=n))
        a = np.array(raw, dtype=bits).view(dtype).reshape(shape)
        if finite:
            a = np.where(np.isfinite(a), a, dtype.type(0.5))
        return a.astype(dtype)
    # UINT64 values >= 2**63 among smaller ones do not survive JSON: test_json_round_trips_uint64_above_2_63
    leaf = st.integers(0, 2**63 - 1) if datatype == "UINT64" and finite else _good_leaf(datatype)
    return np.array(draw(st.lists(leaf, min_size=n, max_size=n)), dtype=dtype).reshape(shape)


def bitwise_equal(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "f":
        return np.array_equal(a.view(f"u{a.dtype.itemsize}"), b.view(f"u{b.dtype.itemsize}"))
    return np.array_equal(a, b)


@FUZZ
@given(arrays(finite=False))
def test_binary_round_trips_bitwise(a):
    body, hl = InferRequest.from_arrays({"t": a}).to_oip(binary=True)
    assert bitwise_equal(InferRequest.from_oip(body, hl).arrays()["t"], a)
    body, hl = InferResponse.from_arrays("m", {"t": a}, "1").to_oip({"t"})
    assert bitwise_equal(InferResponse.from_oip(body, hl).arrays()["t"], a)


@FUZZ
@given(arrays(finite=True, min_dim=1))
def test_json_round_trips_finite_values_bitwise(a):
    body, hl = InferRequest.from_arrays({"t": a}).to_oip(binary=False)
    assert hl is None
    strict_json(body)
    assert bitwise_equal(InferRequest.from_oip(body).arrays()["t"], a)
    body, _ = InferResponse.from_arrays("m", {"t": a}, "1").to_oip()
    assert bitwise_equal(InferResponse.from_oip(body).arrays()["t"], a)


@pytest.mark.parametrize("datatype", DATATYPES)
@pytest.mark.parametrize("shape", [[0], [1, 0]])
def test_json_round_trips_zero_size_tensors(datatype, shape):
    a = np.zeros(shape, OIP_TO_NUMPY[datatype])
    body, _ = InferRequest.from_arrays({"t": a}).to_oip()
    assert bitwise_equal(InferRequest.from_oip(body).arrays()["t"], a)
    body, _ = InferResponse.from_arrays("m", {"t": a}, "1").to_oip()
    assert bitwise_equal(InferResponse.from_oip(body).arrays()["t"], a)


def test_json_round_trips_uint64_above_2_63():
    a = np.array([1, 2**63, 2**64 - 1], np.uint64)
    body, _ = InferRequest.from_arrays({"t": a}).to_oip()
    assert bitwise_equal(InferRequest.from_oip(body).arrays()["t"], a)


@FUZZ
@given(arrays(finite=True, min_dim=1), st.booleans())
def test_tfserving_form_round_trips_finite_values_bitwise(a, row_format):
    body = orjson.dumps(encode_tfserving_predict({"t": a}, row_format), option=orjson.OPT_SERIALIZE_NUMPY)
    doc = strict_json(body)
    back, row = decode_tfserving_predict({"instances" if row_format else "inputs": doc["predictions" if row_format else "outputs"]},
                                         {"t": a.dtype})  # fmt: skip
    assert row == row_format and bitwise_equal(back["t"], a)


@FUZZ
@given(st.lists(arrays(finite=False, min_dim=1, datatypes=["FP16", "FP32", "FP64"]), min_size=1, max_size=3),
       st.booleans())  # fmt: skip
def test_answers_never_hold_bare_nan_or_infinity(outs, row_format):
    batch = outs[0].shape[0]
    outs = [o for o in outs if o.shape[0] == batch]
    resp = InferResponse.from_arrays("m", {f"o{i}": o for i, o in enumerate(outs)}, "1", "id")
    body, hl = resp.to_oip()
    doc = strict_json(body)
    for o, t in zip(outs, doc["outputs"]):
        flat = o.reshape(-1)
        assert [v is None for v in t["data"]] == [not math.isfinite(v) for v in flat.tolist()]
    strict_json(resp.to_tfserving(row_format))
    # The JSON answer, decoded as a request again, is refused (null is not a number): clients who
    # need non-finite values exactly use the binary extension, as documented.
    if not all(np.isfinite(o).all() for o in outs):
        with pytest.raises(CodecError):
            InferResponse.from_oip(body).arrays()
