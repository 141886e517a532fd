"""Tensor codecs, in one place: OIP v2 JSON tensors, OIP binary tensor extension, TF Serving REST.

Every decode error is a CodecError whose message names the tensor and what is wrong; servers map it
to HTTP 400.
"""

from __future__ import annotations

import base64
from typing import Any, Iterable

import numpy as np

OIP_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
NUMPY_TO_OIP: dict[np.dtype, str] = {v: k for k, v in OIP_TO_NUMPY.items()}
# TF Serving's metadata names (tensorflow.DataType enum names).
OIP_TO_TF: dict[str, str] = {
    "BOOL": "DT_BOOL",
    "UINT8": "DT_UINT8",
    "UINT16": "DT_UINT16",
    "UINT32": "DT_UINT32",
    "UINT64": "DT_UINT64",
    "INT8": "DT_INT8",
    "INT16": "DT_INT16",
    "INT32": "DT_INT32",
    "INT64": "DT_INT64",
    "FP16": "DT_HALF",
    "FP32": "DT_FLOAT",
    "FP64": "DT_DOUBLE",
    "BYTES": "DT_STRING",
}
TF_TO_OIP: dict[str, str] = {v: k for k, v in OIP_TO_TF.items()}

BINARY_HEADER = "inference-header-content-length"


class CodecError(ValueError):
    """The request body does not describe a valid tensor; the message says which and why."""


def numpy_dtype(datatype: str) -> np.dtype:
    try:
        return OIP_TO_NUMPY[datatype]
    except KeyError:
        raise CodecError(
            f"unsupported datatype {datatype!r}; expected one of {', '.join(OIP_TO_NUMPY)}"
        ) from None


def oip_datatype(dtype: np.dtype) -> str:
    try:
        return NUMPY_TO_OIP[np.dtype(dtype)]
    except KeyError:
        raise CodecError(f"numpy dtype {dtype} has no Open Inference Protocol datatype") from None


def element_count(shape: Iterable[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


# --- OIP v2 JSON tensors -------------------------------------------------------------------------


def _is_count(v: Any) -> bool:
    """A non-negative JSON integer (JSON true/false are bools, not counts)."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _tensor_header(t: Any) -> tuple[str, list[int], str]:
    if not isinstance(t, dict):
        raise CodecError("each tensor must be a JSON object with name, shape, datatype, data")
    name = t.get("name")
    if not isinstance(name, str):
        raise CodecError("tensor is missing its 'name'")
    shape = t.get("shape")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise CodecError(f"tensor {name!r}: 'shape' must be a list of non-negative integers")
    datatype = t.get("datatype")
    if not isinstance(datatype, str):
        raise CodecError(f"tensor {name!r} is missing its 'datatype'")
    return name, shape, datatype


def decode_json_tensor(t: Any) -> tuple[str, np.ndarray]:
    """One OIP JSON tensor -> (name, array shaped and typed as declared)."""
    name, shape, datatype = _tensor_header(t)
    dtype = numpy_dtype(datatype)
    if "data" not in t:
        raise CodecError(f"tensor {name!r} has no 'data'")
    try:
        arr = np.asarray(t["data"], dtype=dtype)
    except (ValueError, TypeError, OverflowError) as e:  # Overflow: e.g. 300 as UINT8
        raise CodecError(f"tensor {name!r}: data is not {datatype}: {e}") from None
    expected = element_count(shape)
    if arr.size != expected:
        raise CodecError(
            f"tensor {name!r}: shape {shape} needs {expected} elements, data has {arr.size}"
        )
    return name, arr.reshape(shape)


def encode_json_tensor(name: str, arr: np.ndarray) -> dict[str, Any]:
    arr = np.asarray(arr)
    return {
        "name": name,
        "shape": list(arr.shape),
        "datatype": oip_datatype(arr.dtype),
        "data": arr.ravel().tolist(),
    }


# --- OIP v2 binary tensor data extension ---------------------------------------------------------


def split_binary_body(body: bytes, header_length: int | None) -> tuple[bytes, bytes]:
    """(JSON part, binary part) of a request or response using the binary extension."""
    if header_length is None:
        return body, b""
    if header_length < 0 or header_length > len(body):
        raise CodecError(
            f"Inference-Header-Content-Length {header_length} is outside the body "
            f"({len(body)} bytes)"
        )
    return body[:header_length], body[header_length:]


def decode_tensors(tensors: Any, binary: bytes = b"") -> dict[str, np.ndarray]:
    """The 'inputs' (or 'outputs') list of an OIP body -> {name: array}; binary_data_size entries
    are taken in order from `binary`."""
    if not isinstance(tensors, list) or not tensors:
        raise CodecError("'inputs' must be a non-empty list of tensors")
    out: dict[str, np.ndarray] = {}
    offset = 0
    for t in tensors:
        params = t.get("parameters") or {} if isinstance(t, dict) else {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is None:
            name, arr = decode_json_tensor(t)
        else:
            name, shape, datatype = _tensor_header(t)
            dtype = numpy_dtype(datatype)
            if not _is_count(size) or offset + size > len(binary):
                raise CodecError(
                    f"tensor {name!r}: binary_data_size {size} exceeds the {len(binary) - offset} "
                    "binary bytes left in the body"
                )
            expected = element_count(shape) * dtype.itemsize
            if size != expected:
                raise CodecError(
                    f"tensor {name!r}: shape {shape} of {datatype} needs {expected} bytes, "
                    f"binary_data_size is {size}"
                )
            arr = np.frombuffer(binary, dtype=dtype, count=element_count(shape), offset=offset)
            arr = arr.reshape(shape)
            offset += size
        if name in out:
            raise CodecError(f"tensor {name!r} appears twice")
        out[name] = arr
    if offset != len(binary):
        raise CodecError(f"{len(binary) - offset} binary bytes after the last tensor are unused")
    return out


def encode_binary_tensors(
    outputs: dict[str, np.ndarray], binary_names: set[str] | None = None
) -> tuple[list[dict[str, Any]], bytes]:
    """{name: array} -> (OIP tensor list, binary blob). Names in binary_names (all if None) are sent
    as raw little-endian bytes with parameters.binary_data_size, the rest as JSON data."""
    tensors: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, arr in outputs.items():
        arr = np.asarray(arr)
        if binary_names is None or name in binary_names:
            raw = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
            tensors.append(
                {
                    "name": name,
                    "shape": list(arr.shape),
                    "datatype": oip_datatype(arr.dtype),
                    "parameters": {"binary_data_size": len(raw)},
                }
            )
            chunks.append(raw)
        else:
            tensors.append(encode_json_tensor(name, arr))
    return tensors, b"".join(chunks)


# --- TF Serving REST :predict --------------------------------------------------------------------


def _tf_array(value: Any, dtype: np.dtype, where: str) -> np.ndarray:
    if isinstance(value, dict) and "b64" in value:
        try:
            return np.frombuffer(base64.b64decode(value["b64"]), dtype=dtype)
        except (ValueError, TypeError) as e:
            raise CodecError(f"{where}: bad b64 value: {e}") from None
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError) as e:
        raise CodecError(f"{where}: not a {dtype} tensor: {e}") from None
    # Checked first: with dtype=float32 numpy turns null into NaN and "1.5" into 1.5 silently.
    if arr.dtype.kind not in "biuf":
        raise CodecError(f"{where}: not a {dtype} tensor: values must be numbers of one shape")
    try:
        return arr.astype(dtype, copy=False)
    except (ValueError, TypeError, OverflowError) as e:
        raise CodecError(f"{where}: not a {dtype} tensor: {e}") from None


def decode_tfserving_predict(
    body: Any, input_dtypes: dict[str, np.dtype]
) -> tuple[dict[str, np.ndarray], bool]:
    """A TF Serving :predict body -> ({input name: array}, row_format).

    Row format: {"instances": [...]} where each instance is a value (single-input model) or an
    object keyed by input name. Columnar format: {"inputs": value or {name: value}}.
    """
    if not isinstance(body, dict):
        raise CodecError("request body must be a JSON object with 'instances' or 'inputs'")
    if ("instances" in body) == ("inputs" in body):
        raise CodecError("request body must contain exactly one of 'instances' or 'inputs'")
    names = list(input_dtypes)
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise CodecError("'instances' must be a non-empty list")
        if all(isinstance(i, dict) and not ("b64" in i and len(i) == 1) for i in instances):
            columns: dict[str, list[Any]] = {}
            for i, inst in enumerate(instances):
                if set(inst) != set(names):
                    raise CodecError(
                        f"instance {i} has inputs {sorted(inst)}, the model takes {sorted(names)}"
                    )
                for k, v in inst.items():
                    columns.setdefault(k, []).append(v)
            return {k: _tf_array(v, input_dtypes[k], f"input {k!r}") for k, v in columns.items()}, True
        if len(names) != 1:
            raise CodecError(f"the model takes several inputs {names}: name them in each instance")
        return {names[0]: _tf_array(instances, input_dtypes[names[0]], f"input {names[0]!r}")}, True
    inputs = body["inputs"]
    if isinstance(inputs, dict):
        unknown = set(inputs) - set(names)
        missing = set(names) - set(inputs)
        if unknown or missing:
            raise CodecError(
                f"'inputs' has {sorted(inputs)}, the model takes {sorted(names)}"
            )
        return {k: _tf_array(v, input_dtypes[k], f"input {k!r}") for k, v in inputs.items()}, False
    if len(names) != 1:
        raise CodecError(f"the model takes several inputs {names}: pass 'inputs' as an object")
    return {names[0]: _tf_array(inputs, input_dtypes[names[0]], f"input {names[0]!r}")}, False


def encode_tfserving_predict(outputs: dict[str, np.ndarray], row_format: bool) -> dict[str, Any]:
    """Outputs -> TF Serving's response: {"predictions": ...} for row requests, {"outputs": ...}
    for columnar ones; a single output is unwrapped, as TF Serving does."""
    lists = {k: np.asarray(v).tolist() for k, v in outputs.items()}
    if row_format:
        if len(lists) == 1:
            return {"predictions": next(iter(lists.values()))}
        batch = len(next(iter(lists.values())))
        return {"predictions": [{k: v[i] for k, v in lists.items()} for i in range(batch)]}
    if len(lists) == 1:
        return {"outputs": next(iter(lists.values()))}
    return {"outputs": lists}
