"""The one Open Inference Protocol v2 codec (and TF Serving's REST :predict body).

One request type and one response type, each with from_*/to_* per wire form (KServe's
protocol/infer_type.py is the model): OIP JSON tensors, the OIP binary tensor extension, TF Serving
REST (row "instances" or columnar "inputs"), OIP gRPC messages (duck-typed: this module imports
neither grpc nor protobuf), and plain arrays. Every server of the stack, the TorchServe handler
(the .mar carries a copy of this file), the gateway and the load tests use it.

Validation against a signature (validate()) needs only the JSON header: names, datatypes, shapes
(dynamic dims free, fixed dims exact), element counts, binary sizes, batch and size limits. It
never recurses: nested `data` is walked no deeper than the tensor's rank. Decoding (arrays()) is
strict: numbers for numeric datatypes, integers for integer ones (in range), booleans for BOOL;
no strings, no nulls, no booleans as numbers. Every problem is a CodecError (HTTP 400, or 413 for
a limit) whose message names the tensor and what is wrong.

Encoding of non-finite floats in JSON answers: NaN and +-Inf are written as null (JSON has no such
numbers); use the binary extension to receive them exactly.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import orjson

from contract.datatypes import (
    GRPC_CONTENTS_FIELDS,
    OIP_TO_GRPC_CONTENTS,
    OIP_TO_NUMPY,
    OIP_TO_TENSORPROTO_FIELD,
    OIP_TO_TF,
    OIP_TO_TF_ENUM,
    TENSORPROTO_FIELDS,
    TF_ENUM_TO_OIP,
    DatatypeError,
    numpy_dtype,
    oip_datatype,
)

BINARY_HEADER = "Inference-Header-Content-Length"
DEFAULT_MAX_ELEMENTS = 64 * 1024 * 1024  # per request, all inputs together


class CodecError(ValueError):
    """A request or response that is not a valid tensor message; `status` is its HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Limits:
    max_batch: int | None = None  # samples per request
    max_elements: int = DEFAULT_MAX_ELEMENTS  # all input elements of a request together


def element_count(shape: Iterable[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _is_count(v: Any) -> bool:
    """A non-negative JSON integer (JSON true/false are bools, not counts)."""
    return type(v) is int and v >= 0


def _params(obj: dict, where: str) -> dict:
    p = obj.get("parameters")
    if p is None:
        return {}
    if type(p) is not dict:
        raise CodecError(f"{where}: 'parameters' must be an object")
    return p


# --- strict decoding of JSON data ---------------------------------------------------------------


def _json_leaves(data: Any, ndim: int, name: str) -> int:
    """Number of leaves of a flat or nested `data` list, walked no deeper than `ndim` levels."""
    if type(data) is not list:
        raise CodecError(f"tensor {name!r}: 'data' must be a JSON array")
    if not data or type(data[0]) is not list:
        return len(data)  # flat, row-major: the common case costs nothing
    count, stack = 0, [(data, 1)]
    while stack:
        items, depth = stack.pop()
        if depth > ndim:
            raise CodecError(f"tensor {name!r}: 'data' is nested deeper than the tensor's rank {ndim}")
        if items and type(items[0]) is list:
            for row in items:
                if type(row) is not list:
                    raise CodecError(f"tensor {name!r}: 'data' mixes numbers and arrays at one level")
                stack.append((row, depth + 1))
        else:
            count += len(items)
    return count


def _has_bool(value: Any) -> bool:
    """Whether nested lists hold a JSON true/false among their values (numpy would read it as 1
    or 0). Walked only when the body has such a literal at all (see InferRequest.from_oip)."""
    stack = [value]
    while stack:
        items = stack.pop()
        if type(items) is bool:
            return True
        if type(items) is list:
            if items and type(items[0]) is list:
                stack.extend(items)
            elif any(type(v) is bool for v in items):
                return True
    return False


def _exact_uint64(data: Any, arr: np.ndarray) -> tuple[np.ndarray, str]:
    """UINT64 data numpy read as float64 (values >= 2**63 beside smaller ones): the exact
    integers if every value is one, else the float array back (refused as floats)."""
    values = np.asarray(data, dtype=object).reshape(-1)
    if all(type(v) is int and 0 <= v < 2**64 for v in values):
        return np.array(values.tolist(), dtype=np.uint64).reshape(arr.shape), "u"
    return arr, "f"


def has_bool_literal(raw: bytes | memoryview) -> bool:
    """Whether a JSON body has a true/false literal anywhere (then its numbers are walked)."""
    raw = bytes(raw)
    return b"true" in raw or b"false" in raw


def _wrong_kind(kind: str, dtype: np.dtype, values: Any, maybe_bools: bool) -> str | None:
    """None if JSON values that numpy read as `kind` may become `dtype` (true/false for BOOL,
    integers for integer types, numbers for floats), else the kind they are: "b" also when
    true/false hide among numbers (numpy reads [1, true] as integers)."""
    if dtype.kind == "b":
        return None if kind == "b" else kind
    if kind not in ("iu" if dtype.kind in "iu" else "iuf"):
        return kind
    return "b" if maybe_bools and _has_bool(values) else None


def _out_of_range(arr: np.ndarray, dtype: np.dtype) -> int | None:
    """A value of the integer array `arr` that `dtype` cannot hold, if there is one."""
    if dtype.kind not in "iu" or not arr.size or arr.dtype == dtype:
        return None
    info = np.iinfo(dtype)
    lo, hi = int(arr.min()), int(arr.max())
    return lo if lo < info.min else hi if hi > info.max else None


def decode_json_data(data: Any, datatype: str, shape: list[int], name: str,
                     maybe_bools: bool = True) -> np.ndarray:  # fmt: skip
    """`data` of an OIP JSON tensor -> array of `shape` and `datatype`; CodecError if not exact."""
    dtype = numpy_dtype(datatype)
    need = element_count(shape)
    got = _json_leaves(data, max(len(shape), 1), name)
    if got != need:
        raise CodecError(f"tensor {name!r}: shape {shape} needs {need} elements, data has {got}")
    try:
        arr = np.asarray(data)  # untyped first: numpy would turn "1.5" and null into floats
    except (ValueError, TypeError, OverflowError):
        raise CodecError(f"tensor {name!r}: 'data' is not a regular array of {datatype} values") from None
    kind = arr.dtype.kind
    if need == 0:  # [] has no values to be of a wrong kind (numpy calls it float64)
        return np.zeros(shape, dtype)
    if dtype == np.uint64 and kind == "f":  # numpy mixes >= 2**63 and smaller ints into float64
        arr, kind = _exact_uint64(data, arr)
    wrong = _wrong_kind(kind, dtype, data, maybe_bools)
    if wrong is not None or arr.size != need:
        wrong = wrong or kind
        what = {"b": "booleans", "U": "strings", "O": "nulls or mixed values", "f": "floats"}.get(wrong, wrong)
        want = "true/false" if dtype.kind == "b" else "integers" if dtype.kind in "iu" else "numbers"
        raise CodecError(f"tensor {name!r}: {datatype} data must be {want}, got {what}")
    if (bad := _out_of_range(arr, dtype)) is not None:
        raise CodecError(f"tensor {name!r}: value {bad} is out of range for {datatype}")
    with np.errstate(over="ignore"):  # 1e39 as FP32 is Inf: InferRequest.arrays refuses it
        return arr.astype(dtype, copy=False).reshape(shape)


def encode_json_data(arr: np.ndarray) -> np.ndarray:
    """Flat, contiguous data for orjson (OPT_SERIALIZE_NUMPY writes NaN/Inf as null)."""
    return np.ascontiguousarray(arr).reshape(-1)


def _dumps(doc: Any) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def parse_json(data: bytes | memoryview, what: str = "request body") -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise CodecError(f"{what} is not valid JSON: {e}") from None


def split_binary_body(body: bytes | memoryview, header_length: int | None) -> tuple[Any, Any]:
    """(JSON part, binary part) of a message using the binary extension."""
    if header_length is None:
        return body, b""
    if header_length < 0 or header_length > len(body):
        raise CodecError(
            f"{BINARY_HEADER} {header_length} is outside the body ({len(body)} bytes)"
        )
    return body[:header_length], body[header_length:]


def header_length(value: str | bytes | None) -> int | None:
    """The Inference-Header-Content-Length header's value as an int, or None when absent."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else value
    if not text.isdigit():
        raise CodecError(f"{BINARY_HEADER} must be a non-negative integer, not {text!r}")
    return int(text)


# --- tensors ------------------------------------------------------------------------------------


def _itemsize(name: str, datatype: str) -> int:
    """Bytes per element of a served datatype; CodecError naming the tensor otherwise."""
    try:
        return numpy_dtype(datatype).itemsize
    except DatatypeError as e:
        raise CodecError(f"tensor {name!r}: {e}") from None


def _check_byte_size(name: str, datatype: str, shape: list[int], size: int, what: str) -> None:
    """Raw bytes must be exactly shape x itemsize; `what` says where the size came from."""
    need = element_count(shape) * _itemsize(name, datatype)
    if size != need:
        raise CodecError(f"tensor {name!r}: shape {shape} of {datatype} needs {need} bytes, "
                         f"{what} {size}")


def _check_names(tensors: list["Tensor"], what: str) -> None:
    if not tensors:
        raise CodecError(f"'{what}' must be a non-empty list of tensors")
    seen: set[str] = set()
    for t in tensors:
        if t.name in seen:
            raise CodecError(f"tensor {t.name!r} appears twice")
        seen.add(t.name)


@dataclass(slots=True)
class Tensor:
    """One tensor of a message: its header, and its values as JSON data, raw bytes or an array."""

    name: str
    datatype: str
    shape: list[int]
    data: Any = None  # JSON data (list), when sent as JSON
    raw: Any = None  # bytes / memoryview, when sent with the binary extension
    array: np.ndarray | None = None  # decoded (or given) values
    maybe_bools: bool = True  # its message has a true/false literal: check data for booleans

    @classmethod
    def from_json(cls, t: Any, binary: Any, offset: int) -> tuple["Tensor", int]:
        if type(t) is not dict:
            raise CodecError("each tensor must be a JSON object with name, shape, datatype, data")
        name = t.get("name")
        if type(name) is not str:
            raise CodecError("every tensor needs a string 'name'")
        shape = t.get("shape")
        if type(shape) is not list or not all(_is_count(d) for d in shape):
            raise CodecError(f"tensor {name!r}: 'shape' must be a list of non-negative integers")
        datatype = t.get("datatype")
        if type(datatype) is not str:
            raise CodecError(f"tensor {name!r} is missing its 'datatype'")
        _itemsize(name, datatype)
        size = _params(t, f"tensor {name!r}").get("binary_data_size")
        if size is None:
            if "data" not in t:
                raise CodecError(f"tensor {name!r} has neither 'data' nor binary_data_size")
            return cls(name, datatype, shape, data=t["data"]), offset
        if not _is_count(size) or offset + size > len(binary):
            raise CodecError(
                f"tensor {name!r}: binary_data_size {size!r} exceeds the {len(binary) - offset} "
                "binary bytes left in the body"
            )
        _check_byte_size(name, datatype, shape, size, "binary_data_size is")
        return cls(name, datatype, shape, raw=binary[offset : offset + size]), offset + size

    @classmethod
    def from_array(cls, name: str, arr: np.ndarray) -> "Tensor":
        arr = np.asarray(arr)
        try:
            datatype = oip_datatype(arr.dtype)
        except DatatypeError as e:
            raise CodecError(f"tensor {name!r}: {e}") from None
        return cls(name, datatype, list(arr.shape), array=arr)

    def count(self) -> int:
        """Elements the values carry (checked against the shape by validate())."""
        if self.array is not None or self.raw is not None:
            return element_count(self.shape)
        return _json_leaves(self.data, max(len(self.shape), 1), self.name)

    def decode(self) -> np.ndarray:
        if self.array is None:
            if self.raw is not None:
                dtype = numpy_dtype(self.datatype).newbyteorder("<")
                self.array = np.frombuffer(self.raw, dtype=dtype).reshape(self.shape)
            else:
                self.array = decode_json_data(self.data, self.datatype, self.shape, self.name,
                                              self.maybe_bools)
        return self.array

    def to_json(self) -> dict[str, Any]:
        values = self.decode()
        return {"name": self.name, "shape": self.shape, "datatype": self.datatype,
                "data": encode_json_data(values)}  # fmt: skip

    def to_binary(self) -> tuple[dict[str, Any], bytes]:
        if self.raw is not None:
            raw = bytes(self.raw)
        else:
            a = self.decode()
            raw = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
        head = {"name": self.name, "shape": self.shape, "datatype": self.datatype,
                "parameters": {"binary_data_size": len(raw)}}  # fmt: skip
        return head, raw


def _tensors(items: Any, binary: Any, what: str) -> list[Tensor]:
    if type(items) is not list or not items:
        raise CodecError(f"'{what}' must be a non-empty list of tensors")
    out, offset = [], 0
    for t in items:
        tensor, offset = Tensor.from_json(t, binary, offset)
        out.append(tensor)
    _check_names(out, what)
    if offset != len(binary):
        raise CodecError(
            f"the binary_data_size of the tensors add up to {offset} bytes, the body carries "
            f"{len(binary)} binary bytes"
        )
    return out


def _encode_message(head: dict[str, Any], key: str, tensors: list[Tensor], binary: set[str]) -> tuple[bytes, int | None]:
    """(body, Inference-Header-Content-Length or None) with the `binary` tensors as raw bytes."""
    docs, blobs = [], []
    for t in tensors:
        if t.name in binary:
            doc, raw = t.to_binary()
            blobs.append(raw)
        else:
            doc = t.to_json()
        docs.append(doc)
    head[key] = docs
    body = _dumps(head)
    if not blobs:
        return body, None
    return body + b"".join(blobs), len(body)


# --- OIP gRPC messages (KServe v2 / Triton inference.GRPCInferenceService), duck-typed ----------
# The gateway passes the generated protobuf messages in; they are read and filled by attribute
# only, so this module still imports with numpy and orjson alone (the TorchServe .mar copy).
INT64_MAX = 2**63 - 1


def _grpc_params(params: Any) -> dict[str, Any]:
    """A map<string, InferParameter> -> {key: bool | int | float | str}."""
    out = {}
    for key, p in params.items():
        which = p.WhichOneof("parameter_choice")
        out[key] = None if which is None else getattr(p, which)
    return out


def _set_grpc_params(target: Any, params: dict[str, Any]) -> None:
    """{key: value} -> a map<string, InferParameter>; anything but a scalar as its JSON text."""
    for key, value in params.items():
        p = target[key]
        if type(value) is bool:
            p.bool_param = value
        elif type(value) is int:
            if value > INT64_MAX:
                p.uint64_param = value
            else:
                p.int64_param = value
        elif type(value) is float:
            p.double_param = value
        elif type(value) is str:
            p.string_param = value
        else:
            p.string_param = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _grpc_input(t: Any, raw: bytes | None) -> Tensor:
    """One InferInputTensor with its raw_input_contents entry (None: none was sent)."""
    name, datatype, shape = t.name, t.datatype, list(t.shape)
    if not name:
        raise CodecError("every input needs a 'name'")
    if any(d < 0 for d in shape):
        raise CodecError(f"tensor {name!r}: 'shape' must be a list of non-negative integers")
    typed = [f for f in GRPC_CONTENTS_FIELDS if len(getattr(t.contents, f))]
    if raw is not None:
        if typed:
            raise CodecError(f"input {name!r} is sent both as raw_input_contents and as typed "
                             f"contents.{typed[0]}; send one of them")
        _check_byte_size(name, datatype, shape, len(raw), "its raw_input_contents entry has")
        return Tensor(name, datatype, shape, raw=raw)
    _itemsize(name, datatype)  # a datatype this stack serves (BYTES is refused here)
    field_name = OIP_TO_GRPC_CONTENTS.get(datatype)
    if field_name is None:
        raise CodecError(f"input {name!r}: {datatype} has no typed contents field; send it as "
                         "raw_input_contents")
    wrong = [f for f in typed if f != field_name]
    if wrong:
        raise CodecError(f"input {name!r}: {datatype} values go in contents.{field_name}, the "
                         f"request sets contents.{wrong[0]}")
    # The typed values are checked like JSON data (count against the shape, range of the
    # datatype); booleans can only come from bool_contents.
    return Tensor(name, datatype, shape, data=list(getattr(t.contents, field_name)),
                  maybe_bools=False)


# --- TF Serving gRPC TensorProto, duck-typed ----------------------------------------------------


# TF Serving's own table of error codes (tensorflow.error.Code names) to HTTP statuses
# (model_servers/http_server.cc, ToHTTPStatusCode); other codes: 500. The stand-in answers REST
# errors with it, the gateway maps a gRPC status from TF Serving onto its errors with it.
TF_CODE_HTTP_STATUS = {
    "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400, "ABORTED": 409, "UNAVAILABLE": 503, "INTERNAL": 500,
}  # fmt: skip


def _tensorproto_input(name: str, t: Any, what: str = "input") -> Tensor:
    """One TensorProto: dtype (tensorflow.DataType number), tensor_shape.dim[].size, and its values
    as tensor_content (raw little-endian bytes) or as the dtype's typed repeated field (one value
    is broadcast to the whole shape, as TensorFlow does). `what` names it in errors."""
    datatype = TF_ENUM_TO_OIP.get(t.dtype)
    if datatype is None:
        raise CodecError(f"{what} {name!r}: unsupported dtype {t.dtype} (tensorflow.DataType); "
                         f"expected one of {', '.join(OIP_TO_TF[d] for d in OIP_TO_NUMPY)}")
    if t.tensor_shape.unknown_rank:
        raise CodecError(f"{what} {name!r}: tensor_shape must be known (unknown_rank is set)")
    shape = [d.size for d in t.tensor_shape.dim]
    if any(d < 0 for d in shape):
        raise CodecError(f"tensor {name!r}: 'shape' must be a list of non-negative integers")
    _itemsize(name, datatype)  # a datatype this stack serves (DT_STRING is refused here)
    typed = [f for f in TENSORPROTO_FIELDS if len(getattr(t, f))]
    if t.tensor_content:
        if typed:
            raise CodecError(f"{what} {name!r} is sent both as tensor_content and as {typed[0]}; "
                             "send one of them")
        _check_byte_size(name, datatype, shape, len(t.tensor_content), "its tensor_content has")
        return Tensor(name, datatype, shape, raw=t.tensor_content)
    field_name = OIP_TO_TENSORPROTO_FIELD[datatype]
    wrong = [f for f in typed if f != field_name]
    if wrong:
        raise CodecError(f"{what} {name!r}: {OIP_TO_TF[datatype]} values go in {field_name}, "
                         f"the message sets {wrong[0]}")
    values, n = getattr(t, field_name), element_count(shape)
    if len(values) not in (n, 1) or (n == 0 and values):
        raise CodecError(f"{what} {name!r}: shape {shape} needs {n} elements, {field_name} has "
                         f"{len(values)}")
    dtype = numpy_dtype(datatype)
    if datatype == "FP16":  # half_val: the float16 bit patterns, as int32
        arr = np.asarray(values, dtype=np.uint16).view(np.float16)
    elif field_name == "int_val" and datatype != "INT32":  # int32 values for a narrower type
        arr = _tf_array(list(values), dtype, name, maybe_bools=False)
    else:  # the field's own type is the datatype's (finite floats: checked by arrays())
        arr = np.asarray(values, dtype=dtype)
    arr = arr.reshape(shape) if len(values) == n else np.broadcast_to(arr, shape)
    return Tensor(name, datatype, shape, array=arr)


def _fill_tensorproto(protos: Any, tensors: list[Tensor]) -> Any:
    """Fill a map<string, TensorProto> (PredictRequest.inputs, PredictResponse.outputs): dtype,
    tensor_shape and tensor_content as little-endian bytes (raw bytes as received, unconverted)."""
    for t in tensors:
        _, raw = t.to_binary()
        out = protos[t.name]
        out.dtype = OIP_TO_TF_ENUM[t.datatype]
        for d in t.shape:
            out.tensor_shape.dim.add().size = d
        out.tensor_content = raw
    return protos


def check_tf_signature_name(sig_name: str) -> None:
    """TF Serving's signature_name: empty or serving_default, the only one our models have."""
    if sig_name not in ("", "serving_default"):
        raise CodecError(f'Serving signature name: "{sig_name}" not found in signature def; this '
                         "model has serving_default only")


# --- requests -----------------------------------------------------------------------------------


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool | None = None  # parameters.binary_data; None = the request's default


@dataclass(slots=True)
class InferRequest:
    inputs: list[Tensor]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[RequestedOutput] | None = None  # None: every output
    # The body exactly as received (OIP), so a backend speaking the same protocol gets it as is.
    body: Any = None
    header_length: int | None = None

    # --- from_* ---

    @classmethod
    def from_oip(cls, body: bytes | memoryview, header_len: int | None = None) -> "InferRequest":
        """An OIP v2 request body (JSON, or JSON + binary tensors when header_len is given)."""
        head, binary = split_binary_body(body, header_len)
        doc = parse_json(head)
        if type(doc) is not dict:
            raise CodecError("request body must be a JSON object with an 'inputs' list")
        rid = doc.get("id")
        if rid is not None and type(rid) is not str:
            raise CodecError("request 'id' must be a string")
        params = _params(doc, "request")
        outputs = doc.get("outputs")
        requested = None
        if outputs is not None:
            if type(outputs) is not list or not all(type(o) is dict and type(o.get("name")) is str for o in outputs):
                raise CodecError("'outputs' must be a list of objects with a string 'name'")
            requested = []
            for o in outputs:
                b = _params(o, f"output {o['name']!r}").get("binary_data")
                if b is not None and type(b) is not bool:
                    raise CodecError(f"output {o['name']!r}: parameters.binary_data must be true or false")
                requested.append(RequestedOutput(o["name"], b))
        default = params.get("binary_data_output")
        if default is not None and type(default) is not bool:
            raise CodecError("parameters.binary_data_output must be true or false")
        inputs = _tensors(doc.get("inputs"), binary, "inputs")
        if not has_bool_literal(head):  # the common case: no per-value walk for booleans
            for tensor in inputs:
                tensor.maybe_bools = False
        return cls(inputs, rid, params, requested, body, header_len)

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], id: str | None = None,
                    outputs: list[str] | None = None, binary_output: bool = False) -> "InferRequest":  # fmt: skip
        req = cls([Tensor.from_array(k, v) for k, v in arrays.items()], id)
        if binary_output:
            req.parameters["binary_data_output"] = True
        if outputs is not None:
            req.outputs = [RequestedOutput(n) for n in outputs]
        return req

    @classmethod
    def from_tfserving(cls, body: bytes | memoryview, signature) -> tuple["InferRequest", bool]:
        """A TF Serving REST :predict body -> (request, row_format)."""
        doc = parse_json(body)
        if type(doc) is not dict:
            raise CodecError("request body must be a JSON object with 'instances' or 'inputs'")
        sig_name = doc.get("signature_name", "")
        if type(sig_name) is not str:
            raise CodecError("'signature_name' must be a string")
        check_tf_signature_name(sig_name)
        dtypes = {s.name: s.numpy_dtype for s in signature.inputs}
        arrays, row_format = decode_tfserving_predict(doc, dtypes, has_bool_literal(body))
        return cls.from_arrays(arrays), row_format

    @classmethod
    def from_grpc(cls, msg: Any) -> "InferRequest":
        """A ModelInferRequest: each input as typed `contents` or as raw_input_contents (then one
        entry per input, in input order, as Triton requires), never both. Raw bytes are kept as
        they are (little-endian, like the binary extension)."""
        raw, inputs = msg.raw_input_contents, msg.inputs
        if raw and len(raw) != len(inputs):
            if len(raw) < len(inputs):
                raise CodecError(f"input {inputs[len(raw)].name!r} has no raw_input_contents "
                                 f"entry: the request has {len(raw)} for {len(inputs)} inputs "
                                 "(one per input, in input order, or none)")
            raise CodecError(f"the request has {len(raw)} raw_input_contents entries for "
                             f"{len(inputs)} inputs (one per input, in input order, or none)")
        tensors = [_grpc_input(t, raw[i] if raw else None) for i, t in enumerate(inputs)]
        _check_names(tensors, "inputs")
        requested = [RequestedOutput(o.name) for o in msg.outputs] or None
        return cls(tensors, msg.id or None, _grpc_params(msg.parameters), requested)

    @classmethod
    def from_tensorproto(cls, inputs: Any, output_filter: Iterable[str] = ()) -> "InferRequest":
        """TF Serving gRPC PredictRequest.inputs (map<string, TensorProto>) and output_filter."""
        tensors = [_tensorproto_input(k, v) for k, v in inputs.items()]
        _check_names(tensors, "inputs")
        requested = [RequestedOutput(n) for n in output_filter] or None
        return cls(tensors, None, {}, requested)

    # --- checks ---

    def validate(self, signature, limits: Limits = Limits()) -> int:
        """Check the request against a Signature (names, datatypes, shapes, counts, limits);
        return its batch size. Values are checked when decoded (arrays())."""
        specs = {s.name: s for s in signature.inputs}
        names = [t.name for t in self.inputs]
        unknown = [n for n in names if n not in specs]
        if unknown:
            raise CodecError(f"unknown input {unknown[0]!r}; the model takes {list(specs)}")
        missing = [n for n in specs if n not in names]
        if missing:
            raise CodecError(f"missing input(s) {missing}; the model takes {list(specs)}")
        batches: dict[str, int] = {}
        total = 0
        for t in self.inputs:
            spec = specs[t.name]
            if t.datatype != spec.datatype:
                raise CodecError(f"input {t.name!r} has datatype {t.datatype}, the model takes {spec.datatype}")
            want = spec.shape
            if len(t.shape) != len(want) or any(w >= 0 and d != w for d, w in zip(t.shape[1:], want[1:])):
                raise CodecError(
                    f"input {t.name!r} has shape {t.shape}, the model takes {want} "
                    f"(-1 = any size: {_dim_names(spec)})"
                )
            if t.shape[0] < 1:
                raise CodecError(f"input {t.name!r} has an empty batch (shape {t.shape}); send at least one sample")
            n = element_count(t.shape)
            total += n
            if total > limits.max_elements:
                raise CodecError(f"the request carries more than {limits.max_elements} elements (limit)", 413)
            got = t.count()
            if got != n:
                raise CodecError(f"input {t.name!r}: shape {t.shape} needs {n} elements, data has {got}")
            batches[t.name] = t.shape[0]
        if len(set(batches.values())) > 1:
            raise CodecError(f"inputs disagree on the batch size: {batches}")
        batch = next(iter(batches.values()))
        if limits.max_batch is not None and batch > limits.max_batch:
            raise CodecError(f"batch of {batch} exceeds this model's limit of {limits.max_batch} samples", 413)
        outs = signature.output_names()
        for o in self.outputs or ():
            if o.name not in outs:
                raise CodecError(f"unknown output {o.name!r}; the model returns {outs}")
        return batch

    # --- views ---

    def arrays(self, signature=None) -> dict[str, np.ndarray]:
        """{input name: array}, in signature order when a signature is given; then values are
        checked too: ids outside the model's vocabulary (value_range) are refused, since runtimes
        differ on them (an error in one, a silent wrong answer or a crash in another)."""
        by_name = {t.name: t for t in self.inputs}
        if signature is None:
            return {n: t.decode() for n, t in by_name.items()}
        out = {}
        for spec in signature.inputs:
            a = out[spec.name] = by_name[spec.name].decode()
            check_finite(spec.name, a)
            check_range(spec, a)
        return out

    def output_names(self, signature) -> list[str]:
        if self.outputs:
            return [o.name for o in self.outputs]
        return signature.output_names()

    def tensor_bytes(self) -> int:
        """Bytes of every input's values, as raw tensors (what a binary wire form carries)."""
        return sum(element_count(t.shape) * _itemsize(t.name, t.datatype) for t in self.inputs)

    def binary_outputs(self, signature) -> set[str]:
        """Outputs to send as raw bytes: per output parameters.binary_data, else the request's
        binary_data_output (Triton's rule)."""
        default = self.parameters.get("binary_data_output") is True
        if not self.outputs:
            return set(signature.output_names()) if default else set()
        return {o.name for o in self.outputs if (default if o.binary is None else o.binary)}

    # --- to_* ---

    def _head(self) -> dict[str, Any]:
        head: dict[str, Any] = {}
        if self.id is not None:
            head["id"] = self.id
        if self.parameters:
            head["parameters"] = self.parameters
        if self.outputs is not None:
            head["outputs"] = [{"name": o.name, **({"parameters": {"binary_data": o.binary}} if o.binary is not None else {})}
                               for o in self.outputs]  # fmt: skip
        return head

    def to_oip(self, binary: bool = False, binary_outputs: bool = False) -> tuple[bytes, int | None]:
        """(body, Inference-Header-Content-Length or None): the received body when there is one
        and its form fits, else encoded (binary=True: every input as raw bytes; binary_outputs:
        every output asked for as raw bytes too, for a caller that re-encodes the answer)."""
        if self.body is not None and (self.header_length is not None) == binary and not binary_outputs:
            return bytes(self.body), self.header_length
        names = {t.name for t in self.inputs} if binary else set()
        for tensor in self.inputs:  # re-encoded: JSON cannot carry NaN / Inf
            if tensor.name not in names:
                check_finite(tensor.name, tensor.decode())
        head = self._head()
        if binary_outputs:
            head["parameters"] = {**self.parameters, "binary_data_output": True}
            if self.outputs is not None:
                head["outputs"] = [{"name": o.name} for o in self.outputs]
        return _encode_message(head, "inputs", self.inputs, names)

    def to_tfserving(self, signature=None) -> bytes:
        """The columnar TF Serving body {"inputs": {name: nested list}} (values checked against
        the signature when given, as arrays() does)."""
        arrays = self.arrays(signature) if signature is not None else self.arrays()
        return _dumps({"inputs": {k: np.ascontiguousarray(v) for k, v in arrays.items()}})

    def to_tensorproto(self, inputs: Any, signature=None) -> Any:
        """Fill a TF Serving gRPC PredictRequest.inputs map (TensorProto with tensor_content) and
        return it; values are checked against the signature when given, as to_tfserving does."""
        if signature is not None:
            self.arrays(signature)  # finite floats, ids in range: refused alike on every path
        return _fill_tensorproto(inputs, self.inputs)


def check_finite(name: str, a: np.ndarray) -> None:
    """Float inputs must be finite: JSON cannot carry NaN or Inf (they would reach the JSON-only
    runtimes as null, and 1e39 as FP32 overflows to Inf), and a model fed them answers NaN at
    best. Refused alike on every path, JSON or binary, direct or through the gateway."""
    if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
        i = int(np.flatnonzero(~np.isfinite(a))[0])
        raise CodecError(f"input {name!r}: value {a.flat[i]} at flat index {i} is not a finite "
                         f"number (NaN, Inf, or beyond the range of {a.dtype})")


def check_range(spec, a: np.ndarray) -> None:
    """Integer ids / masks / segments must lie in the spec's value_range [low, high)."""
    if spec.value_range is None or spec.role is None or a.size == 0:
        return
    lo, hi = spec.value_range
    amin, amax = a.min(), a.max()
    if amin < lo or amax >= hi:
        bad = amin if amin < lo else amax
        raise CodecError(
            f"input {spec.name!r}: value {bad} is outside the model's valid range [{lo:g}, {hi:g}) "
            f"({spec.role})"
        )


def _dim_names(spec) -> str:
    return ", ".join(f"{n or 'fixed'}={d}" for n, d in zip(spec.dims, spec.shape))


# --- responses ----------------------------------------------------------------------------------


@dataclass(slots=True)
class InferResponse:
    model_name: str
    outputs: list[Tensor]
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_arrays(cls, model_name: str, arrays: dict[str, np.ndarray], model_version: str | None = None,
                    id: str | None = None) -> "InferResponse":  # fmt: skip
        return cls(model_name, [Tensor.from_array(k, v) for k, v in arrays.items()], model_version, id)

    @classmethod
    def from_oip(cls, body: bytes | memoryview, header_len: int | None = None) -> "InferResponse":
        head, binary = split_binary_body(body, header_len)
        doc = parse_json(head, "response body")
        if type(doc) is not dict:
            raise CodecError("response body is not a JSON object")
        version = doc.get("model_version")
        return cls(str(doc.get("model_name", "")), _tensors(doc.get("outputs"), binary, "outputs"),
                   None if version is None else str(version), doc.get("id"), _params(doc, "response"))  # fmt: skip

    def arrays(self) -> dict[str, np.ndarray]:
        return {t.name: t.decode() for t in self.outputs}

    def select(self, names: list[str]) -> "InferResponse":
        by_name = {t.name: t for t in self.outputs}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise CodecError(f"the answer has no output(s) {missing}; it has {list(by_name)}")
        return InferResponse(self.model_name, [by_name[n] for n in names], self.model_version, self.id, self.parameters)

    def to_oip(self, binary: set[str] = frozenset()) -> tuple[bytes, int | None]:
        head: dict[str, Any] = {"model_name": self.model_name}
        if self.model_version is not None:
            head["model_version"] = self.model_version
        if self.id is not None:
            head["id"] = self.id
        if self.parameters:
            head["parameters"] = self.parameters
        return _encode_message(head, "outputs", self.outputs, set(binary))

    def to_tfserving(self, row_format: bool) -> bytes:
        return _dumps(encode_tfserving_predict(self.arrays(), row_format))

    def to_grpc(self, msg: Any) -> Any:
        """Fill a ModelInferResponse and return it: every output as raw_output_contents, in
        output order (Triton's form; tritonclient.grpc reads only that)."""
        msg.model_name = self.model_name
        if self.model_version is not None:
            msg.model_version = self.model_version
        if self.id is not None:
            msg.id = self.id
        _set_grpc_params(msg.parameters, self.parameters)
        for t in self.outputs:
            _, raw = t.to_binary()
            out = msg.outputs.add()
            out.name, out.datatype = t.name, t.datatype
            out.shape.extend(t.shape)
            msg.raw_output_contents.append(raw)
        return msg


    @classmethod
    def from_tensorproto(cls, model_name: str, outputs: Any, signature, batch: int,
                         id: str | None = None) -> "InferResponse":  # fmt: skip
        """A TF Serving gRPC PredictResponse.outputs map -> the signature's outputs, in its order,
        each of its datatype and `batch` samples (tensor_content stays raw bytes: no copy)."""
        out = []
        for s in signature.outputs:
            if s.name not in outputs:
                raise CodecError(f"TF Serving answer has no output {s.name!r}")
            t = _tensorproto_input(s.name, outputs[s.name], "output")
            if t.datatype != s.datatype:
                raise CodecError(f"TF Serving answer: output {s.name!r} is {t.datatype}, the "
                                 f"signature says {s.datatype}")
            if not t.shape or t.shape[0] != batch:
                raise CodecError(f"TF Serving answer: output {s.name!r} has shape {t.shape}, "
                                 f"batch {batch} expected")
            out.append(t)
        return cls(model_name, out, id=id)

    def to_tensorproto(self, outputs: Any) -> Any:
        """Fill a PredictResponse.outputs map (TensorProto: dtype, tensor_shape, tensor_content as
        little-endian bytes) and return it."""
        return _fill_tensorproto(outputs, self.outputs)


# --- TF Serving REST :predict -------------------------------------------------------------------


def _tf_array(value: Any, dtype: np.dtype, name: str, maybe_bools: bool = True) -> np.ndarray:
    where = f"input {name!r}"
    if type(value) is dict and "b64" in value:
        raise CodecError(f"{where}: b64 (string) values are not served by this stack's runtimes")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        depth, v = 0, value
        while type(v) is list and v and depth <= 64:
            depth, v = depth + 1, v[0]
        deep = f" (nested {depth if depth <= 64 else 'more than 64'} levels deep)" if depth > 8 else ""
        raise CodecError(f"{where}: not a regular array of {dtype} values{deep}") from None
    # Checked first: with dtype=float32 numpy turns null into NaN and "1.5" into 1.5 silently.
    if _wrong_kind(arr.dtype.kind, dtype, value, maybe_bools) is not None:
        raise CodecError(f"{where}: values must be {'true/false' if dtype.kind == 'b' else 'numbers'} "
                         f"of one shape ({dtype} tensor)")  # fmt: skip
    if _out_of_range(arr, dtype) is not None:
        raise CodecError(f"{where}: a value is out of range for {dtype}")
    with np.errstate(over="ignore"):  # 1e39 as float32 is Inf: check_finite says so
        out = arr.astype(dtype, copy=False)
    check_finite(name, out)
    return out


def decode_tfserving_predict(body: Any, input_dtypes: dict[str, np.dtype],
                             maybe_bools: bool = True) -> tuple[dict[str, np.ndarray], bool]:
    """A TF Serving :predict body -> ({input name: array}, row_format).

    Row format: {"instances": [...]} where each instance is a value (single-input model) or an
    object keyed by input name. Columnar format: {"inputs": value or {name: value}}.
    """
    if type(body) is not dict:
        raise CodecError("request body must be a JSON object with 'instances' or 'inputs'")
    if ("instances" in body) == ("inputs" in body):
        raise CodecError("request body must contain exactly one of 'instances' or 'inputs'")
    names = list(input_dtypes)
    if "instances" in body:
        instances = body["instances"]
        if type(instances) is not list or not instances:
            raise CodecError("'instances' must be a non-empty list")
        if all(type(i) is dict for i in instances):
            columns: dict[str, list[Any]] = {}
            for i, inst in enumerate(instances):
                if set(inst) != set(names):
                    raise CodecError(f"instance {i} has inputs {sorted(inst)}, the model takes {sorted(names)}")
                for k, v in inst.items():
                    columns.setdefault(k, []).append(v)
            return {k: _tf_array(columns[k], input_dtypes[k], k, maybe_bools) for k in names}, True
        if len(names) != 1:
            raise CodecError(f"the model takes several inputs {names}: name them in each instance")
        return {names[0]: _tf_array(instances, input_dtypes[names[0]], names[0], maybe_bools)}, True
    inputs = body["inputs"]
    if type(inputs) is dict:
        if set(inputs) != set(names):
            raise CodecError(f"'inputs' has {sorted(inputs)}, the model takes {sorted(names)}")
        return {k: _tf_array(inputs[k], input_dtypes[k], k, maybe_bools) for k in names}, False
    if len(names) != 1:
        raise CodecError(f"the model takes several inputs {names}: pass 'inputs' as an object")
    return {names[0]: _tf_array(inputs, input_dtypes[names[0]], names[0], maybe_bools)}, False


def encode_tfserving_predict(outputs: dict[str, np.ndarray], row_format: bool) -> dict[str, Any]:
    """Outputs -> TF Serving's response: {"predictions": ...} for row requests, {"outputs": ...}
    for columnar ones; a single output is unwrapped, as TF Serving does."""
    arrays = {k: np.ascontiguousarray(v) for k, v in outputs.items()}
    if row_format:
        if len(arrays) == 1:
            return {"predictions": next(iter(arrays.values()))}
        batch = len(next(iter(arrays.values())))
        return {"predictions": [{k: v[i] for k, v in arrays.items()} for i in range(batch)]}
    if len(arrays) == 1:
        return {"outputs": next(iter(arrays.values()))}
    return {"outputs": arrays}


def decode_tfserving_outputs(body: bytes, signature, batch: int) -> dict[str, np.ndarray]:
    """A TF Serving columnar answer {"outputs": ...} -> {output: array} cast to the signature's
    datatypes (its JSON carries neither dtype nor shape)."""
    doc = parse_json(body, "response body")
    outputs = doc.get("outputs") if type(doc) is dict else None
    specs = signature.outputs
    if outputs is None:
        raise CodecError("TF Serving answer without 'outputs'")
    if len(specs) == 1 and type(outputs) is not dict:
        outputs = {specs[0].name: outputs}
    if type(outputs) is not dict:
        raise CodecError("TF Serving answer: 'outputs' is not keyed by output name")
    out = {}
    for s in specs:
        if s.name not in outputs:
            raise CodecError(f"TF Serving answer has no output {s.name!r}")
        a = np.asarray(outputs[s.name], dtype=s.numpy_dtype)
        if a.ndim == 0 or a.shape[0] != batch:
            raise CodecError(f"TF Serving answer: output {s.name!r} has shape {list(a.shape)}, batch {batch} expected")
        out[s.name] = a
    return out


__all__ = [
    "BINARY_HEADER", "CodecError", "InferRequest", "InferResponse", "Limits", "OIP_TO_NUMPY",
    "RequestedOutput", "TF_CODE_HTTP_STATUS", "Tensor", "check_finite", "decode_json_data", "decode_tfserving_outputs",
    "decode_tfserving_predict", "element_count", "encode_tfserving_predict", "has_bool_literal",
    "header_length",
    "parse_json", "split_binary_body",
]  # fmt: skip
