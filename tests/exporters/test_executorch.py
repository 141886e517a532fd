"""The ExecuTorch (.pte, XNNPACK) target: the digits CNN and MLP examples and a two-input model
(float + int64 ids, two outputs), each exported into a scratch store and run by executorch.runtime
at batch 1, 5 and the largest the artifact declares; and the one-line failure without executorch.
The int8 variant (executorch:int8): quantized from the torch source, certified and stored like the
other quantized variants, or listed as not certified with the root cause."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest

from exporters.examples.build import sources
from contract.manifest import load_manifest
from exporters.pipeline import export_model
from exporters.quantize import quantize_model
from exporters.targets import executorch as et
from exporters.user import load_user_source
from exporters.workspace import Workspace
from tests.exporters.test_quantize import BROKEN_CALIBRATIONS, assert_top1_failed, broken_calibration

XNNPACK_ROUTE = et.ROUTES[0].name
INT8 = "executorch:int8"


def _tiled(x: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """n rows drawn from the reference batch (repeated when it has fewer)."""
    return {k: np.ascontiguousarray(np.resize(v, (n, *v.shape[1:]))) for k, v in x.items()}


def _export(src, store):
    manifest, rows = export_model(src, store, ("executorch",))
    return manifest, rows


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    store = tmp_path_factory.mktemp("et-examples")
    return store, {src.name: (src, *_export(src, store)) for src in sources(("digits-cnn-torch", "digits-mlp-torch"))}


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    store = tmp_path_factory.mktemp("et-two")
    src = load_user_source("tests.exporters.tiny_models:two_inputs", "two",
                           inputs=["features:float32:batch,6", "ids:int64:batch,seq"])  # fmt: skip
    return store, src, *_export(src, store)


def _check_batches(src, manifest, store) -> list[int]:
    art = manifest.artifacts["executorch"]
    largest = art.fixed_shapes[src.signature.inputs[0].name][0]
    run = et.runner(manifest.artifact_path(store, "executorch"), src.signature)
    for n in (1, 5, largest):
        x = _tiled(src.reference_inputs, n)
        for spec, want in zip(src.signature.outputs, src.predict(x)):
            got = run(x)[spec.name]
            assert got.shape == want.shape and got.dtype == want.dtype, (src.name, n, spec.name)
            np.testing.assert_allclose(got, want, atol=1e-4, err_msg=f"{src.name} batch {n} {spec.name}")
    return [1, 5, largest]


@pytest.mark.parametrize("name", ["digits-cnn-torch", "digits-mlp-torch"])
def test_examples_export_with_xnnpack_and_run_at_every_declared_batch(examples, name):
    store, done = examples
    src, manifest, rows = done[name]
    assert rows[0].ok, rows[0].message
    art = manifest.artifacts["executorch"]
    assert art.route == XNNPACK_ROUTE and art.extra["delegate"] == "XNNPACK"
    assert art.parity.ok and art.parity.top1_agreement == 1.0 and art.parity.batch_sizes == [1, 32]
    assert art.parity.runtime == et.RUNNER_LABEL
    # the batch bound is declared, not the example's hint (lowering once narrowed it to 15)
    assert art.fixed_shapes == {"input": [64, *src.signature.inputs[0].shape[1:]]}
    assert json.loads(art.extra["max_shapes"])["input"][0] == 64
    assert _check_batches(src, manifest, store) == [1, 5, 64]


def test_two_inputs_int64_ids_and_two_outputs(two):
    store, src, manifest, rows = two
    assert rows[0].ok, rows[0].message
    art = manifest.artifacts["executorch"]
    assert art.parity.ok and set(art.parity.outputs) == {"scores", "pooled"}
    assert "dynamic dims at 7" in art.parity.inputs  # the sequence is dynamic in the .pte too
    seq = src.reference_inputs["ids"].shape[1]
    assert json.loads(art.extra["max_shapes"]) == {"features": [64, 6], "ids": [64, seq]}
    assert art.fixed_shapes == {"features": [64, 6], "ids": [64, -1]}
    _check_batches(src, manifest, store)


def test_memory_plan_keeps_the_declared_batch_bound(tmp_path):
    """Lowering a convolution narrows the shape environment's batch range (torch's fake conv kernel
    guards on batch < 16 with the example's batch as hint); restore_bounds puts the declared 64
    back before memory planning, so the input is planned for 64 rows, not 15."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    src = load_user_source("tests.exporters.tiny_models:conv", "conv", input_shape="1,8,8")
    ws = Workspace(src, tmp_path)
    edge = to_edge_transform_and_lower(ws.bounded_program, partitioner=[XnnpackPartitioner()])
    program = edge.exported_program()
    (x,) = [n for n in program.graph.nodes if n.name in program.graph_signature.user_inputs]
    batch = x.meta["val"].shape[0].node
    assert batch.shape_env.var_to_range[batch.expr].upper < 64  # the narrowing restore_bounds undoes
    et.restore_bounds(program)
    planned = edge.to_executorch().exported_program()
    (x,) = [n for n in planned.graph.nodes if n.name in planned.graph_signature.user_inputs]
    assert list(x.meta["spec"].shape) == [64, 1, 8, 8]


def test_without_executorch_the_route_fails_with_one_line_saying_how_to_install(tmp_path, monkeypatch):
    src = load_user_source("tests.exporters.tiny_models:linear", "lin", input_shape="6")
    for mod in ("executorch", "executorch.exir", "executorch.runtime"):
        monkeypatch.setitem(sys.modules, mod, None)  # `import executorch.exir` now raises ImportError
    manifest, rows = export_model(src, tmp_path, ("executorch",))
    assert not rows[0].ok and "executorch" not in manifest.artifacts
    failure = manifest.failed["executorch"]
    assert len(failure.routes_failed) == len(et.ROUTES)
    for f in failure.routes_failed:
        assert f.error.startswith("executorch is not importable"), f.error
        assert "pip install --no-deps -r requirements-edge.lock" in f.error and "\n" not in f.error
        assert "Traceback" not in f.error


def test_a_torchscript_source_goes_through_ts2ep(tmp_path):
    """torch.export refuses a ScriptModule: bounded_program converts it (TS2EPConverter) first."""
    import torch

    from tests.exporters.tiny_models import linear

    torch.jit.trace(linear().eval(), torch.rand(2, 6)).save(str(tmp_path / "user.pt"))
    src = load_user_source(str(tmp_path / "user.pt"), "user-ts", input_shape="6")
    manifest, rows = _export(src, tmp_path / "store")
    assert rows[0].ok, rows[0].message
    assert manifest.artifacts["executorch"].route == XNNPACK_ROUTE
    _check_batches(src, manifest, tmp_path / "store")


@pytest.fixture(scope="module")
def int8(examples):
    """executorch:int8 of the CNN, quantized from its source into the module's store."""
    store, done = examples
    src = done["digits-cnn-torch"][0]
    return store, src, *quantize_model(store, src.name, (INT8,), source=src)


def _copy(examples, dest):
    """The CNN's float export in a store of its own (a test that breaks the variant there)."""
    store, done = examples
    src = done["digits-cnn-torch"][0]
    shutil.copytree(store / src.name, dest / src.name)
    return src


def test_int8_variant_of_the_cnn_is_stored_certified_smaller_and_runs_at_every_batch(int8):
    store, src, manifest, rows = int8
    assert [(r.format, r.ok) for r in rows] == [(INT8, True)], rows[0].message
    assert load_manifest(store / src.name) == manifest  # what the servers and the gateway read
    art, flt = manifest.artifacts[INT8], manifest.artifacts["executorch"]
    assert (art.format, art.variant, art.path) == ("executorch", "int8", "executorch-int8/1/model.pte")
    assert art.route.endswith("from the pytorch source model") and art.export_seconds > 0
    path = manifest.artifact_path(store, INT8)
    assert art.bytes == path.stat().st_size < flt.bytes / 2  # int8 weights: about a quarter
    assert art.extra["precision"].startswith("int8") and art.extra["delegate"] == "XNNPACK"
    # the same bounds as the float program: the server cuts batches at 64 and checks max_shapes
    assert art.fixed_shapes == flt.fixed_shapes == {"input": [64, 1, 8, 8]}
    assert json.loads(art.extra["max_shapes"]) == {"input": [64, 1, 8, 8]}
    assert "torchao" in art.converters and "executorch" in art.converters
    # its certificate: the figures of the artifact, recomputed here in its runtime
    x, ref, labels = manifest.load_reference(store)
    p, q = art.parity, art.parity.quantized
    assert p.ok and p.error is None and p.tolerance is None and p.runtime == et.RUNNER_LABEL
    run = et.runner(path, src.signature)
    got = run(x)["logits"]
    assert p.top1_agreement == pytest.approx(float((got.argmax(1) == ref["logits"].argmax(1)).mean()))
    assert p.top1_agreement >= 0.98
    assert 0 < p.max_abs_error < 5 and p.max_abs_error >= float(np.abs(got - ref["logits"]).max()) - 1e-6
    assert q.samples == 32 and q.accuracy == pytest.approx(float((got.argmax(1) == labels).mean()))
    assert q.accuracy_drop == pytest.approx(q.source_accuracy - q.accuracy) and q.accuracy_drop <= 0.01
    for n in (1, 5, 64):
        x = _tiled(src.reference_inputs, n)
        got, (want,) = run(x)["logits"], src.predict(x)
        assert got.shape == want.shape and got.dtype == want.dtype
        assert (got.argmax(1) == want.argmax(1)).mean() >= 0.9, n  # quantized: same classes, not same logits


@pytest.mark.parametrize("broken", BROKEN_CALIBRATIONS)
def test_int8_with_a_broken_calibration_fails_its_certificate(examples, tmp_path, broken):
    src = _copy(examples, tmp_path)
    bad = broken_calibration(src.reference_inputs, broken)
    m, rows = quantize_model(tmp_path, src.name, (INT8,), calibration=bad, source=src)
    assert_top1_failed(m, rows)
    assert not load_manifest(tmp_path / src.name).artifacts[INT8].parity.ok  # on disk: the gateway won't route it


def test_int8_that_cannot_be_built_is_listed_with_the_root_cause(examples, tmp_path, monkeypatch):
    src = _copy(examples, tmp_path)
    for mod in ("executorch", "executorch.exir", "executorch.runtime"):
        monkeypatch.setitem(sys.modules, mod, None)
    m, rows = quantize_model(tmp_path, src.name, (INT8,), source=src)
    assert not rows[0].ok and INT8 not in m.artifacts
    error = m.failed[INT8].error
    assert error.startswith(f"no {INT8}: ExecuTorch int8") and "executorch is not importable" in error, error
    assert "pip install --no-deps -r requirements-edge.lock" in error and "Traceback" not in error
    assert m.variants("executorch") == {"int8": None} and m.passed("executorch")  # the float one stays


def test_a_keras_source_has_no_executorch_route_and_that_is_not_a_failure(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((6,), name="x"), keras.layers.Dense(3)])
    model.save(tmp_path / "k.keras")
    src = load_user_source(str(tmp_path / "k.keras"), "k")
    manifest, rows = export_model(src, tmp_path / "store", ("onnx", "executorch"))
    assert [(r.format, r.ok) for r in rows] == [("onnx", True)]
    assert "executorch" not in manifest.failed and list(manifest.artifacts) == ["onnx"]


def test_one_dim_builder_shares_named_dims_and_keeps_placeholders_per_input(tmp_path):
    """dynamic_shapes() serves torch.export for AOTInductor (unbounded) and ExecuTorch (bounded):
    a named dim is one Dim shared by the inputs naming it, bounded by the largest of their bounds;
    a placeholder "d<i>" is one Dim per input (two inputs with "d1" need not have equal sizes)."""
    src = load_user_source("tests.exporters.tiny_models:two_inputs", "two",
                           inputs=["features:float32:batch,6", "ids:int64:batch,seq"])  # fmt: skip
    ws = Workspace(src, tmp_path)
    features, ids = ws.sig.inputs
    ws.source.signature = ws.sig.model_copy(update={"inputs": [
        features.model_copy(update={"shape": [-1, -1], "dims": ["batch", "d1"]}),
        ids.model_copy(update={"shape": [-1, -1], "dims": ["batch", "d1"]})]})
    ((f, i),) = ws.dynamic_shapes({"features": [64, 6], "ids": [32, 16]})
    assert f[0] is i[0] and f[0].max == 64  # batch: shared, the larger bound
    assert f[1] is not i[1] and (f[1].__name__, f[1].max, i[1].__name__, i[1].max) == ("features_d1", 6, "ids_d1", 16)
    ((f, i),) = ws.dynamic_shapes()
    assert f[0] is i[0] and f[1] is not i[1] and i[1].max > 16  # unbounded: torch.export decides
