"""InferRequest.from_grpc / InferResponse.to_grpc on tritonclient's generated messages (the codec
itself imports neither grpc nor protobuf: it is duck-typed)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from tritonclient.grpc import InferResult
from tritonclient.grpc import service_pb2 as pb

from contract.codec import CodecError, InferRequest, InferResponse, Limits
from contract.datatypes import numpy_dtype
from contract.manifest import Signature, TensorSpec
from tests.conftest import REPO, python_env

SIG = Signature(inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 2]),
                        TensorSpec(name="ids", datatype="INT64", shape=[-1, -1])],
                outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1, 2])])  # fmt: skip


def typed(datatype: str, field: str, values: list, shape: list[int] | None = None) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="m")
    t = msg.inputs.add(name="t", datatype=datatype, shape=shape or [1, len(values)])
    getattr(t.contents, field).extend(values)
    return msg


def test_the_contract_imports_no_grpc() -> None:
    """contract/ travels inside TorchServe .mar files: numpy and orjson only."""
    code = ("import sys, contract.codec; bad = [m for m in ('grpc', 'google.protobuf', "
            "'tritonclient') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=python_env(), check=True)


def test_raw_inputs_outputs_id_and_parameters() -> None:
    x = np.arange(4, dtype=np.float32).reshape(2, 2)
    ids = np.array([[1, 2, 3], [4, 5, 6]], np.int64)
    msg = pb.ModelInferRequest(model_name="m", id="r1")
    msg.inputs.add(name="x", datatype="FP32", shape=[2, 2])
    msg.inputs.add(name="ids", datatype="INT64", shape=[2, 3])
    msg.raw_input_contents.extend([x.tobytes(), ids.tobytes()])
    msg.outputs.add(name="y")
    msg.parameters["priority"].int64_param = 3
    req = InferRequest.from_grpc(msg)
    assert req.validate(SIG, Limits(max_batch=8)) == 2
    assert req.id == "r1" and req.parameters == {"priority": 3} and req.output_names(SIG) == ["y"]
    for arrays in (req.arrays(SIG), InferRequest.from_oip(*req.to_oip(binary=True)).arrays()):
        np.testing.assert_array_equal(arrays["x"], x)
        np.testing.assert_array_equal(arrays["ids"], ids)
    empty = InferRequest.from_grpc(pb.ModelInferRequest(inputs=msg.inputs,
                                                        raw_input_contents=msg.raw_input_contents))
    assert empty.id is None and empty.outputs is None and empty.parameters == {}


@pytest.mark.parametrize("datatype, field, values", [
    ("BOOL", "bool_contents", [True, False]),
    ("UINT8", "uint_contents", [0, 255]),
    ("UINT32", "uint_contents", [0, 2**32 - 1]),
    ("UINT64", "uint64_contents", [0, 2**64 - 1]),
    ("INT8", "int_contents", [-128, 127]),
    ("INT16", "int_contents", [-(2**15), 2**15 - 1]),
    ("INT32", "int_contents", [-(2**31), 2**31 - 1]),
    ("INT64", "int64_contents", [-(2**63), 2**63 - 1]),
    ("FP32", "fp32_contents", [0.5, -1.25]),
    ("FP64", "fp64_contents", [1e300, -0.1]),
])  # fmt: skip
def test_typed_contents_of_every_datatype(datatype: str, field: str, values: list) -> None:
    (t,) = InferRequest.from_grpc(typed(datatype, field, values)).inputs
    a = t.decode()
    assert a.dtype == numpy_dtype(datatype) and a.tolist() == [values]


@pytest.mark.parametrize("msg, message", [
    (typed("UINT8", "uint_contents", [256]), "value 256 is out of range for UINT8"),
    (typed("FP32", "int64_contents", [1]), "FP32 values go in contents.fp32_contents, the request "
                                           "sets contents.int64_contents"),
    (typed("FP16", "fp32_contents", [1.0]), "FP16 has no typed contents field"),
    (typed("FP8", "fp32_contents", [1.0]), "unsupported datatype 'FP8'"),
    (typed("BYTES", "bytes_contents", [b"a"]), "string tensors (BYTES) are not served"),
    (typed("FP32", "fp32_contents", [1.0], shape=[1, -2]), "non-negative integers"),
    (typed("FP32", "fp32_contents", [1.0, 2.0], shape=[1, 3]), "needs 3 elements, data has 2"),
    (pb.ModelInferRequest(model_name="m"), "'inputs' must be a non-empty list"),
])  # fmt: skip
def test_refusals_name_the_tensor(msg: pb.ModelInferRequest, message: str) -> None:
    with pytest.raises(CodecError) as e:
        InferRequest.from_grpc(msg).inputs[0].decode()
    assert e.value.status == 400 and message in e.value.message


def test_raw_entries_must_match_the_inputs() -> None:
    msg = pb.ModelInferRequest(model_name="m")
    msg.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    msg.raw_input_contents.extend([b"\0" * 8, b"\0" * 8])
    with pytest.raises(CodecError, match="2 raw_input_contents entries for 1 inputs"):
        InferRequest.from_grpc(msg)
    del msg.raw_input_contents[1]
    msg.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    msg.raw_input_contents.append(b"\0" * 8)
    with pytest.raises(CodecError, match="tensor 'x' appears twice"):
        InferRequest.from_grpc(msg)


def test_response_to_grpc_reads_back_with_tritonclient() -> None:
    arrays = {"y": np.array([[1.5, -2.0]], np.float32), "n": np.array([[7]], np.int64),
              "b": np.array([[True, False]]), "h": np.array([[0.25]], np.float16)}
    resp = InferResponse.from_arrays("m", arrays, "3", "r9")
    resp.parameters = {"a": True, "b": 2, "c": 0.5, "d": "s", "e": [1], "u": 2**64 - 1}
    msg = resp.to_grpc(pb.ModelInferResponse())
    result = InferResult(msg)
    for name, want in arrays.items():
        got = result.as_numpy(name)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    assert (msg.model_name, msg.model_version, msg.id) == ("m", "3", "r9")
    params = {k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in msg.parameters.items()}
    assert params == {"a": True, "b": 2, "c": 0.5, "d": "s", "e": "[1]", "u": 2**64 - 1}
