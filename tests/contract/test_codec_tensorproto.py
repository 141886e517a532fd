"""InferRequest.from_tensorproto / InferResponse.to_tensorproto on TF Serving's TensorProto (the
gateway's tensorflow-free message classes; the codec is duck-typed)."""

from __future__ import annotations

import numpy as np
import pytest

from contract.codec import CodecError, InferRequest, InferResponse
from contract.manifest import Signature, TensorSpec
from services.gateway.protos import load

M = load()
PredictRequest, PredictResponse = M["tensorflow.serving.PredictRequest"], M["tensorflow.serving.PredictResponse"]
SIG = Signature(inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 2])],
                outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1, 2])])  # fmt: skip


def proto(dtype: int, shape: list[int], **fields) -> PredictRequest:
    msg = PredictRequest()
    t = msg.inputs["x"]
    t.dtype = dtype
    for d in shape:
        t.tensor_shape.dim.add().size = d
    for k, v in fields.items():
        if k == "tensor_content":
            t.tensor_content = v
        else:
            getattr(t, k).extend(v)
    return msg


def decode(msg) -> np.ndarray:
    req = InferRequest.from_tensorproto(msg.inputs, msg.output_filter)
    return req.arrays()["x"]


def test_tensor_content_little_endian() -> None:
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    got = decode(proto(1, [3, 2], tensor_content=x.astype("<f4").tobytes()))
    assert got.dtype == np.float32 and np.array_equal(got, x)


@pytest.mark.parametrize("dtype,field,values,np_dtype", [
    (1, "float_val", [1.5, -2.0], np.float32), (2, "double_val", [1.5, 2.25], np.float64),
    (3, "int_val", [1, -7], np.int32), (4, "int_val", [0, 255], np.uint8),
    (9, "int64_val", [2**40, -1], np.int64), (10, "bool_val", [True, False], np.bool_),
    (22, "uint32_val", [1, 2**32 - 1], np.uint32), (23, "uint64_val", [1, 2**64 - 1], np.uint64),
])  # fmt: skip
def test_typed_fields(dtype, field, values, np_dtype) -> None:
    got = decode(proto(dtype, [1, 2], **{field: values}))
    assert got.dtype == np_dtype and got.tolist() == [values]


def test_half_val_bit_patterns() -> None:
    h = np.array([1.5, -0.25], np.float16)
    got = decode(proto(19, [1, 2], half_val=h.view(np.uint16).tolist()))
    assert got.dtype == np.float16 and np.array_equal(got, [h])


def test_typed_values_take_the_shape() -> None:
    got = decode(proto(1, [2, 3], float_val=list(range(6))))
    assert got.shape == (2, 3) and got.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_one_value_is_broadcast() -> None:
    got = decode(proto(1, [2, 3], float_val=[4.0]))
    assert got.shape == (2, 3) and (got == 4.0).all()


@pytest.mark.parametrize("msg,words", [
    (proto(1, [2, 2], float_val=[1.0, 2.0, 3.0]), ["'x'", "4 elements", "float_val has 3"]),
    (proto(1, [2, 2], tensor_content=b"\0" * 12), ["'x'", "16 bytes", "tensor_content has 12"]),
    (proto(1, [1, 2], int64_val=[1, 2]), ["'x'", "DT_FLOAT values go in float_val", "int64_val"]),
    (proto(1, [1, 1], float_val=[1.0], tensor_content=b"\0" * 4), ["'x'", "both"]),
    (proto(7, [1], string_val=[b"a"]), ["string"]),
    (proto(14, [1], float_val=[1.0]), ["'x'", "unsupported dtype 14"]),
    (proto(4, [1, 1], int_val=[300]), ["'x'", "out of range"]),
])  # fmt: skip
def test_errors_name_the_input(msg, words) -> None:
    with pytest.raises(CodecError) as e:
        decode(msg)
    assert all(w in e.value.message for w in words), e.value.message


def test_output_filter_and_validation() -> None:
    msg = proto(1, [1, 2], float_val=[1.0, 2.0])
    msg.output_filter.append("y")
    req = InferRequest.from_tensorproto(msg.inputs, msg.output_filter)
    assert req.validate(SIG) == 1 and req.output_names(SIG) == ["y"]
    msg.output_filter.append("nope")
    with pytest.raises(CodecError, match="unknown output 'nope'"):
        InferRequest.from_tensorproto(msg.inputs, msg.output_filter).validate(SIG)


def test_response_to_tensorproto() -> None:
    y = np.arange(6, dtype=np.float32).reshape(3, 2)
    c = np.array([[1], [2], [3]], np.int64)
    out = InferResponse.from_arrays("m", {"y": y, "c": c}).to_tensorproto(PredictResponse().outputs)
    assert out["y"].dtype == 1 and [d.size for d in out["y"].tensor_shape.dim] == [3, 2]
    assert np.array_equal(np.frombuffer(out["y"].tensor_content, "<f4").reshape(3, 2), y)
    assert out["c"].dtype == 9 and np.frombuffer(out["c"].tensor_content, "<i8").tolist() == [1, 2, 3]


def test_tensorflow_make_tensor_proto_round_trip() -> None:
    """What tf.make_tensor_proto writes (the usual client) decodes to the same array, and what the
    codec writes, tf.make_ndarray reads back."""
    tf = pytest.importorskip("tensorflow")
    for a in (np.arange(6, dtype=np.float32).reshape(3, 2), np.array([[1, -2]], np.int64),
              np.array([[True, False]]), np.array([[1.5, 2]], np.float16)):  # fmt: skip
        msg = PredictRequest()
        msg.inputs["x"].ParseFromString(tf.make_tensor_proto(a).SerializeToString())
        assert np.array_equal(decode(msg), a)
        out = InferResponse.from_arrays("m", {"y": a}).to_tensorproto(PredictResponse().outputs)
        back = tf.make_ndarray(tf.make_tensor_proto(0).__class__.FromString(out["y"].SerializeToString()))
        assert back.dtype == a.dtype and np.array_equal(back, a)


# --- the gateway as TF Serving's gRPC client: request out, answer back ----------------------------

PAIR = Signature(
    inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 2]),
            TensorSpec(name="ids", datatype="INT64", shape=[-1, -1], role="token_ids",
                       value_range=(0, 10))],
    outputs=[TensorSpec(name="p", datatype="FP16", shape=[-1, 2]),
             TensorSpec(name="k", datatype="INT32", shape=[-1]),
             TensorSpec(name="m", datatype="BOOL", shape=[-1, 3])],
)  # fmt: skip
INT_DTYPES = (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.int64, np.uint32, np.uint64,
              np.bool_, np.float16, np.float64)


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_request_to_tensorproto_round_trip(dtype) -> None:
    """Every input goes as tensor_content, little-endian, with its dtype and shape: what the
    gateway's from_tensorproto (and TensorFlow) read back value for value."""
    x = (np.arange(12) % 2 if dtype is np.bool_ else np.arange(12) - 3 * (np.dtype(dtype).kind == "i"))
    arrays = {"a": x.astype(dtype).reshape(3, 4), "b": np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2)}
    msg = PredictRequest()
    InferRequest.from_arrays(arrays).to_tensorproto(msg.inputs)
    assert all(len(msg.inputs[k].tensor_content) == v.nbytes for k, v in arrays.items())
    back = InferRequest.from_tensorproto(PredictRequest.FromString(msg.SerializeToString()).inputs)
    for k, v in back.arrays().items():
        assert v.dtype == arrays[k].dtype and np.array_equal(v, arrays[k]), k


def test_request_to_tensorproto_checks_values_against_the_signature() -> None:
    ok = {"x": np.zeros((1, 2), np.float32), "ids": np.array([[1, 9]], np.int64)}
    InferRequest.from_arrays(ok).to_tensorproto(PredictRequest().inputs, PAIR)
    with pytest.raises(CodecError, match="input 'ids': value 10 is outside"):
        InferRequest.from_arrays({**ok, "ids": np.array([[1, 10]], np.int64)}).to_tensorproto(
            PredictRequest().inputs, PAIR)
    with pytest.raises(CodecError, match="input 'x'.*not a finite"):
        InferRequest.from_arrays({**ok, "x": np.array([[np.nan, 0]], np.float32)}).to_tensorproto(
            PredictRequest().inputs, PAIR)


def _answer(arrays: dict[str, np.ndarray]) -> PredictResponse:
    msg = PredictResponse()
    InferResponse.from_arrays("m", arrays).to_tensorproto(msg.outputs)
    return PredictResponse.FromString(msg.SerializeToString())


OUTS = {"m": np.array([[True, False, True]] * 2), "p": np.array([[1.5, -2], [0, 65504]], np.float16),
        "k": np.array([-7, 2**31 - 1], np.int32)}  # fmt: skip


def test_response_from_tensorproto_several_outputs_in_signature_order() -> None:
    got = InferResponse.from_tensorproto("m", _answer(OUTS).outputs, PAIR, 2, id="r1")
    assert [t.name for t in got.outputs] == ["p", "k", "m"] and got.id == "r1"
    for k, v in got.arrays().items():
        assert v.dtype == OUTS[k].dtype and np.array_equal(v, OUTS[k]), k


def test_response_typed_fields_as_tensorflow_may_send_them() -> None:
    msg = _answer(OUTS)
    msg.outputs["k"].ClearField("tensor_content")
    msg.outputs["k"].int_val.extend([-7, 2**31 - 1])
    got = InferResponse.from_tensorproto("m", msg.outputs, PAIR, 2).arrays()
    assert np.array_equal(got["k"], OUTS["k"]) and got["k"].dtype == np.int32


@pytest.mark.parametrize("change,words", [
    (lambda o: o.pop("k"), "no output 'k'"),
    (lambda o: o.update(k=o["k"].astype(np.int64)), "output 'k' is INT64, the signature says INT32"),
    (lambda o: o.update(m=o["m"][:1]), "output 'm' has shape \\[1, 3\\], batch 2 expected"),
])  # fmt: skip
def test_response_from_tensorproto_refuses_what_the_signature_does_not_say(change, words) -> None:
    outs = dict(OUTS)
    change(outs)
    with pytest.raises(CodecError, match=words):
        InferResponse.from_tensorproto("m", _answer(outs).outputs, PAIR, 2)
