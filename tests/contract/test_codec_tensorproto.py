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
