"""Checks a request against the manifest signature before anything is forwarded.

OIP JSON tensors are checked without building arrays: names, datatype, shape against the signature
(batch dimension free), element count of the (flat or nested) data list, binary_data_size against
shape x itemsize. Values themselves are left to the backend (its 4xx is passed through) or to the
codec when the gateway has to convert the tensor anyway.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from model_store.manifest import Manifest
from services.common.codecs import OIP_TO_NUMPY, element_count
from services.gateway.errors import BadRequest


class _Input(NamedTuple):
    name: str
    datatype: str
    shape: list[int]
    itemsize: int


class _Signature(NamedTuple):
    model: Manifest  # held so that its id() is not reused while cached
    inputs: dict[str, _Input]
    outputs: frozenset[str]


_signatures: dict[int, _Signature] = {}


def _signature(model: Manifest) -> _Signature:
    sig = _signatures.get(id(model))
    if sig is None:
        inputs = {
            s.name: _Input(s.name, s.datatype, list(s.shape), OIP_TO_NUMPY[s.datatype].itemsize)
            for s in model.signature.inputs
        }
        outputs = frozenset(s.name for s in model.signature.outputs)
        sig = _signatures[id(model)] = _Signature(model, inputs, outputs)
    return sig


def _check_shape(model: Manifest, spec: _Input, shape: Any) -> int:
    """The batch size of a tensor of `shape` for input `spec`, or BadRequest naming the problem."""
    if type(shape) is not list or not all(type(d) is int and d >= 0 for d in shape):
        raise BadRequest(f"input {spec.name!r}: shape must be a list of non-negative integers")
    expected = spec.shape
    if len(shape) != len(expected) or any(
        e >= 0 and d != e for d, e in zip(shape[1:], expected[1:])
    ):
        raise BadRequest(
            f"input {spec.name!r}: shape {shape} does not match {model.name}'s "
            f"{expected} (-1 = any size)"
        )
    if shape[0] < 1:
        raise BadRequest(f"input {spec.name!r}: batch dimension must be >= 1, got {shape[0]}")
    return shape[0]


def _count(data: Any) -> int:
    if type(data) is not list:
        raise BadRequest("tensor 'data' must be a JSON array")
    if data and type(data[0]) is list:  # nested row-major form: count the leaves
        return sum(_count(row) for row in data)
    return len(data)


def _check_names(model: Manifest, specs: dict[str, _Input], names: list[Any]) -> None:
    if len(names) == len(specs) and set(names) == specs.keys():
        return
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise BadRequest(f"unknown input {unknown[0]!r}; {model.name} takes {sorted(specs)}")
    missing = sorted(specs.keys() - set(names))
    if missing:
        raise BadRequest(f"missing input(s) {missing}; {model.name} takes {sorted(specs)}")
    raise BadRequest("an input appears twice")


def _batch(batches: dict[str, int]) -> int:
    if len(set(batches.values())) > 1:
        raise BadRequest(f"inputs disagree on the batch size: {batches}")
    return next(iter(batches.values()))


def check_oip_request(model: Manifest, header: Any, binary_len: int) -> int:
    """Validate an OIP inference request header; return its batch size."""
    if type(header) is not dict:
        raise BadRequest("request body must be a JSON object with 'inputs'")
    inputs = header.get("inputs")
    if type(inputs) is not list or not inputs or not all(type(t) is dict for t in inputs):
        raise BadRequest("'inputs' must be a non-empty list of tensor objects")
    names = [t.get("name") for t in inputs]
    if not all(type(n) is str for n in names):
        raise BadRequest("every input tensor needs a string 'name'")
    sig = _signature(model)
    _check_names(model, sig.inputs, names)
    batches: dict[str, int] = {}
    offset = 0
    for t in inputs:
        spec = sig.inputs[t["name"]]
        if t.get("datatype") != spec.datatype:
            raise BadRequest(
                f"input {spec.name!r}: datatype {t.get('datatype')!r}, {model.name} takes "
                f"{spec.datatype}"
            )
        shape = t.get("shape")
        batches[spec.name] = _check_shape(model, spec, shape)
        n = element_count(shape)
        params = t.get("parameters")
        size = params.get("binary_data_size") if type(params) is dict else None
        if size is not None:
            need = n * spec.itemsize
            if size != need:
                raise BadRequest(
                    f"input {spec.name!r}: shape {shape} of {spec.datatype} needs {need} bytes, "
                    f"binary_data_size is {size}"
                )
            offset += size
        elif "data" not in t:
            raise BadRequest(f"input {spec.name!r} has neither 'data' nor binary_data_size")
        else:
            got = _count(t["data"])
            if got != n:
                raise BadRequest(
                    f"input {spec.name!r}: shape {shape} needs {n} elements, data has {got}"
                )
    if offset != binary_len:
        raise BadRequest(
            f"binary_data_size of the inputs add up to {offset} bytes, the body carries "
            f"{binary_len} binary bytes"
        )
    outputs = header.get("outputs")
    if outputs is not None:
        if type(outputs) is not list or not all(type(o) is dict for o in outputs):
            raise BadRequest("'outputs' must be a list of objects with a 'name'")
        for o in outputs:
            name = o.get("name")
            if type(name) is not str or name not in sig.outputs:
                raise BadRequest(
                    f"unknown output {name!r}; {model.name} returns {sorted(sig.outputs)}"
                )
    return _batch(batches)


def check_arrays(model: Manifest, arrays: dict[str, np.ndarray]) -> int:
    """Validate decoded input arrays (TF Serving API); return the batch size."""
    sig = _signature(model)
    _check_names(model, sig.inputs, list(arrays))
    return _batch({k: _check_shape(model, sig.inputs[k], list(a.shape)) for k, a in arrays.items()})
