"""Datatypes by their Open Inference Protocol names, with numpy and TensorFlow equivalents.

BYTES (strings) is in the protocol but no runtime of this stack serves string tensors: it is named
here so that an error can say so, and refused wherever a numeric array is required.
"""

from __future__ import annotations

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
# TF Serving's names (tensorflow.DataType enum).
OIP_TO_TF: dict[str, str] = {
    "BOOL": "DT_BOOL", "UINT8": "DT_UINT8", "UINT16": "DT_UINT16", "UINT32": "DT_UINT32",
    "UINT64": "DT_UINT64", "INT8": "DT_INT8", "INT16": "DT_INT16", "INT32": "DT_INT32",
    "INT64": "DT_INT64", "FP16": "DT_HALF", "FP32": "DT_FLOAT", "FP64": "DT_DOUBLE",
    "BYTES": "DT_STRING",
}  # fmt: skip
TF_TO_OIP: dict[str, str] = {v: k for k, v in OIP_TO_TF.items()}
# TF Serving gRPC: tensorflow.DataType enum numbers (tensorflow/core/framework/types.proto) and the
# TensorProto field that carries a datatype's typed values (FP16: half_val holds the bit patterns).
OIP_TO_TF_ENUM: dict[str, int] = {
    "FP32": 1, "FP64": 2, "INT32": 3, "UINT8": 4, "INT16": 5, "INT8": 6, "BYTES": 7, "INT64": 9,
    "BOOL": 10, "UINT16": 17, "FP16": 19, "UINT32": 22, "UINT64": 23,
}  # fmt: skip
TF_ENUM_TO_OIP: dict[int, str] = {v: k for k, v in OIP_TO_TF_ENUM.items()}
OIP_TO_TENSORPROTO_FIELD: dict[str, str] = {
    "FP32": "float_val", "FP64": "double_val", "INT32": "int_val", "UINT8": "int_val",
    "INT16": "int_val", "INT8": "int_val", "UINT16": "int_val", "INT64": "int64_val",
    "BOOL": "bool_val", "FP16": "half_val", "UINT32": "uint32_val", "UINT64": "uint64_val",
    "BYTES": "string_val",
}  # fmt: skip
TENSORPROTO_FIELDS: tuple[str, ...] = tuple(dict.fromkeys(OIP_TO_TENSORPROTO_FIELD.values()))
# KServe v2 / Triton gRPC: the InferTensorContents field that carries a datatype's typed values.
# FP16 has none (it travels as raw bytes only).
OIP_TO_GRPC_CONTENTS: dict[str, str] = {
    "BOOL": "bool_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
    "UINT32": "uint_contents", "UINT64": "uint64_contents", "INT8": "int_contents",
    "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}  # fmt: skip
GRPC_CONTENTS_FIELDS: tuple[str, ...] = tuple(dict.fromkeys(OIP_TO_GRPC_CONTENTS.values()))
UNSERVED = {"BYTES": "string tensors (BYTES) are not served by this stack's runtimes"}


class DatatypeError(ValueError):
    """A datatype name or numpy dtype outside the table; the message lists what is supported."""


def numpy_dtype(datatype: str) -> np.dtype:
    try:
        return OIP_TO_NUMPY[datatype]
    except (KeyError, TypeError):
        if datatype in UNSERVED:
            raise DatatypeError(UNSERVED[datatype]) from None
        raise DatatypeError(
            f"unsupported datatype {datatype!r}; expected one of {', '.join(OIP_TO_NUMPY)}"
        ) from None


def oip_datatype(dtype) -> str:
    try:
        return NUMPY_TO_OIP[np.dtype(dtype)]
    except (KeyError, TypeError):
        raise DatatypeError(f"numpy dtype {dtype} has no Open Inference Protocol datatype") from None


def is_integer(datatype: str) -> bool:
    return datatype in OIP_TO_NUMPY and OIP_TO_NUMPY[datatype].kind in "iu"


def is_float(datatype: str) -> bool:
    return datatype in OIP_TO_NUMPY and OIP_TO_NUMPY[datatype].kind == "f"
