"""What travels between the public APIs and the backend clients.

A request keeps the body it arrived with, so a backend that speaks the same protocol gets the
bytes as they are; arrays are decoded only when a backend needs another wire format. A response
likewise keeps the backend's body when the client can take it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from model_store.manifest import Manifest
from services.common.codecs import (
    CodecError,
    decode_tensors,
    encode_binary_tensors,
    oip_datatype,
    split_binary_body,
)
from services.gateway.errors import BackendFailed, BadRequest

@dataclass(slots=True, eq=False)
class InferRequest:
    model: Manifest
    batch: int
    request_id: str = ""
    # From the OIP API: the body as received, its parsed JSON header and its binary part.
    body: bytes | None = None
    header: dict[str, Any] | None = None
    header_length: int | None = None
    binary: bytes | memoryview = b""
    # From the TF Serving API: the :predict body as received, and the arrays decoded from it.
    tfs_body: bytes | None = None
    row_format: bool = False
    _arrays: dict[str, np.ndarray] | None = field(default=None, repr=False)

    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            try:
                self._arrays = decode_tensors(self.header["inputs"], self.binary)
            except CodecError as e:
                raise BadRequest(str(e)) from None
        return self._arrays

    def output_names(self) -> list[str]:
        outs = (self.header or {}).get("outputs")
        if outs:
            return [o["name"] for o in outs]
        return [s.name for s in self.model.signature.outputs]

    def binary_outputs(self) -> set[str]:
        """Outputs the client wants as binary data (OIP binary tensor extension)."""
        header = self.header or {}
        params = header.get("parameters")
        default = bool(params.get("binary_data_output")) if isinstance(params, dict) else False
        outs = header.get("outputs")
        if not outs:
            return set(self.output_names()) if default else set()
        wanted = set()
        for o in outs:
            p = o.get("parameters")
            if (p.get("binary_data", default) if isinstance(p, dict) else default) is True:
                wanted.add(o["name"])
        return wanted


@dataclass(slots=True, eq=False)
class InferResponse:
    served_by: str
    body: bytes | None = None  # an OIP response fit to return unchanged
    header_length: int | None = None
    tfs_body: bytes | None = None  # a TF Serving response fit to return unchanged
    arrays: dict[str, np.ndarray] | None = None


def oip_json_request(arrays: dict[str, np.ndarray]) -> bytes:
    """{"inputs": [OIP JSON tensors]}, the data written by orjson straight from numpy."""
    tensors = [
        {"name": k, "shape": list(a.shape), "datatype": oip_datatype(a.dtype),
         "data": np.ascontiguousarray(a).ravel()}
        for k, a in arrays.items()
    ]
    return orjson.dumps({"inputs": tensors}, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_oip_response(
    model_name: str, version: str, arrays: dict[str, np.ndarray], binary: set[str], rid: Any
) -> tuple[bytes, int | None]:
    """(body, Inference-Header-Content-Length or None) with `binary` outputs as raw bytes."""
    tensors, blob = encode_binary_tensors(arrays, binary)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": version, "outputs": tensors}
    if rid is not None:
        doc["id"] = rid
    head = orjson.dumps(doc)
    if not binary.intersection(arrays):
        return head, None
    return head + blob, len(head)


def decode_oip_response(
    body: bytes, header_length: int | None, model: Manifest, runtime: str
) -> dict[str, np.ndarray]:
    """A backend's OIP response -> {output: array} cast to the manifest's datatypes."""
    try:
        head, binary = split_binary_body(body, header_length)
        arrays = decode_tensors(orjson.loads(head).get("outputs"), binary)
    except (CodecError, orjson.JSONDecodeError, AttributeError) as e:
        raise BackendFailed(f"backend {runtime} sent an unreadable response: {e}", runtime=runtime)
    return cast_outputs(arrays, model, runtime)


def cast_outputs(
    arrays: dict[str, np.ndarray], model: Manifest, runtime: str, batch: int | None = None
) -> dict[str, np.ndarray]:
    """Outputs in signature order with the manifest's datatypes; with `batch`, reshaped to
    [batch, *fixed dims] (TF Serving's JSON carries neither dtype nor an explicit shape)."""
    out: dict[str, np.ndarray] = {}
    for spec in model.signature.outputs:
        if spec.name not in arrays:
            raise BackendFailed(
                f"backend {runtime} did not return output {spec.name!r}", runtime=runtime
            )
        a = np.asarray(arrays[spec.name], dtype=spec.numpy_dtype)
        if batch is not None and list(spec.shape[1:]).count(-1) == 0:
            try:
                a = a.reshape([batch, *spec.shape[1:]])
            except ValueError:
                raise BackendFailed(
                    f"backend {runtime} returned {spec.name!r} of shape {list(a.shape)}, "
                    f"expected {[batch, *spec.shape[1:]]}",
                    runtime=runtime,
                ) from None
        out[spec.name] = a
    return out
