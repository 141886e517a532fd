"""Checks that an artifact, as its own runtime sees it, takes the manifest's signature (N inputs)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from contract.manifest import Manifest

ONNX_TYPES = {"tensor(float)": "FP32", "tensor(int64)": "INT64", "tensor(int32)": "INT32"}
# converters may narrow int64 ids to int32 (the runners cast): allowed where noted
NARROWED = {"INT64": {"INT64", "INT32"}}


def _oip(dtype) -> str:
    from contract.datatypes import oip_datatype

    return oip_datatype(np.dtype(dtype))


def check_onnx(m: Manifest, store: Path) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(m.artifact_path(store, "onnx")), providers=["CPUExecutionProvider"])
    got = sess.get_inputs()
    assert [i.name for i in got] == m.signature.input_names(), f"{m.name}/onnx inputs"
    for inp, spec in zip(got, m.signature.inputs):
        assert ONNX_TYPES.get(inp.type) == spec.datatype, f"{m.name}/onnx {spec.name}: {inp.type}"
        assert len(inp.shape) == len(spec.shape), f"{m.name}/onnx {spec.name}: {inp.shape}"
        for d, want in zip(inp.shape, spec.shape):
            assert (isinstance(d, str) or d is None) if want < 0 else d == want, f"{m.name}/onnx {spec.name}: {inp.shape}"
    # by name: the servers ask for the manifest's outputs by name (tf2onnx sorts a dict's keys)
    assert sorted(o.name for o in sess.get_outputs()) == sorted(m.signature.output_names()), f"{m.name}/onnx outputs"


def check_savedmodel(m: Manifest, store: Path) -> None:
    import tensorflow as tf

    path = m.artifact_path(store, "savedmodel")
    assert (path / "saved_model.pb").exists()
    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    got = fn.structured_input_signature[1]
    assert sorted(got) == sorted(m.signature.input_names()), f"{m.name}/savedmodel inputs {sorted(got)}"
    for spec in m.signature.inputs:
        t = got[spec.name]
        assert t.shape.as_list() == [None if d < 0 else d for d in spec.shape], f"{m.name}/savedmodel {spec.name}"
        assert _oip(t.dtype.as_numpy_dtype) == spec.datatype, f"{m.name}/savedmodel {spec.name}: {t.dtype}"
    assert sorted(fn.structured_outputs) == sorted(m.signature.output_names()), f"{m.name}/savedmodel outputs"


def check_tflite(m: Manifest, store: Path) -> None:
    from exporters.targets.tflite import interpreter

    art = m.artifacts["tflite"]
    interp, _ = interpreter(m.artifact_path(store, "tflite"))
    runner = interp.get_signature_runner("serving_default")
    details = runner.get_input_details()
    assert sorted(details) == sorted(m.signature.input_names()), f"{m.name}/tflite inputs {sorted(details)}"
    fixed = art.fixed_shapes or {}
    for spec in m.signature.inputs:
        d = details[spec.name]
        want = fixed.get(spec.name, spec.shape)
        assert [int(v) for v in d["shape_signature"]] == want, f"{m.name}/tflite {spec.name}: {d['shape_signature']}"
        assert _oip(d["dtype"]) in NARROWED.get(spec.datatype, {spec.datatype}), f"{m.name}/tflite {spec.name}"
    assert sorted(runner.get_output_details()) == sorted(m.signature.output_names()), f"{m.name}/tflite outputs"


def check_torchserve(m: Manifest, store: Path) -> None:
    art = m.artifacts["torchserve"]
    with zipfile.ZipFile(m.artifact_path(store, "torchserve")) as z:
        names = z.namelist()
        assert "handler.py" in names and "manifest.json" in names
        assert ("model.pt" if "TorchScript" in art.route else "model.onnx") in names, (art.route, names)
        assert json.loads(z.read("manifest.json"))["signature"] == m.signature.model_dump(mode="json")


def check_executorch(m: Manifest, store: Path) -> None:
    """A .pte keeps no names: N inputs/outputs in the manifest's order, their datatypes, and each
    input planned for exactly the bounds the manifest records (fixed dims as the signature's)."""
    from services.executorch.runtime import SCALAR_TYPES, load_method

    art = m.artifacts["executorch"]
    meta = load_method(m.artifact_path(store, "executorch")).metadata
    assert (meta.num_inputs(), meta.num_outputs()) == (len(m.signature.inputs), len(m.signature.outputs)), m.name
    bounds = json.loads(art.extra["max_shapes"])
    for i, spec in enumerate(m.signature.inputs):
        t = meta.input_tensor_meta(i)
        assert SCALAR_TYPES[t.dtype()] == spec.datatype, f"{m.name}/executorch {spec.name}: {t.dtype()}"
        assert list(t.sizes()) == bounds[spec.name], f"{m.name}/executorch {spec.name}: planned {t.sizes()}"
        assert all(d < 0 or d == b for d, b in zip(spec.shape, bounds[spec.name])), f"{m.name}/executorch {spec.name}"
    for i, spec in enumerate(m.signature.outputs):
        assert SCALAR_TYPES[meta.output_tensor_meta(i).dtype()] == spec.datatype, f"{m.name}/executorch {spec.name}"


def check_aotinductor(m: Manifest, store: Path) -> None:
    """The package records the signature's names (the server checks them at load) and every
    dynamic dim of the manifest has a range."""
    from exporters.targets.aotinductor import load

    meta = load(m.artifact_path(store, "aotinductor")).get_metadata()
    assert meta["inputs"] == ",".join(m.signature.input_names()), f"{m.name}/aotinductor inputs {meta['inputs']}"
    assert meta["outputs"] == ",".join(m.signature.output_names()), f"{m.name}/aotinductor outputs"
    ranges = json.loads(m.artifacts["aotinductor"].extra["dim_ranges"])
    for spec in m.signature.inputs:
        dynamic = {spec.dims[i] for i, d in enumerate(spec.shape) if d < 0}
        assert set(ranges.get(spec.name, {})) == dynamic, f"{m.name}/aotinductor {spec.name}: {ranges}"


CHECKS = {"onnx": check_onnx, "savedmodel": check_savedmodel, "tflite": check_tflite, "torchserve": check_torchserve,
          "aotinductor": check_aotinductor, "executorch": check_executorch}  # fmt: skip


def check_artifacts(m: Manifest, store: Path) -> None:
    """Every artifact the manifest lists takes the source signature."""
    for fmt in m.artifacts:
        CHECKS[fmt](m, store)
