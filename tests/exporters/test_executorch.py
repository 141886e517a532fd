"""The ExecuTorch (.pte, XNNPACK) target: the digits CNN and MLP examples and a two-input model
(float + int64 ids, two outputs), each exported into a scratch store and run by executorch.runtime
at batch 1, 5 and the largest the artifact declares; and the one-line failure without executorch."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from exporters.examples.build import sources
from exporters.pipeline import export_model
from exporters.targets import executorch as et
from exporters.user import load_user_source
from exporters.workspace import Workspace

XNNPACK_ROUTE = et.ROUTES[0].name


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


def test_int8_variant_of_the_cnn_is_smaller_and_agrees_with_the_float_model(examples, tmp_path):
    store, done = examples
    src, manifest, _ = done["digits-cnn-torch"]
    ws = Workspace(src, tmp_path)
    exported = et.INT8_ROUTE.export(ws, tmp_path)
    assert exported.extra["precision"].startswith("int8") and exported.fixed_shapes == {"input": [64, 1, 8, 8]}
    path = tmp_path / exported.filename
    assert path.stat().st_size < manifest.artifacts["executorch"].bytes / 2
    run = et.runner(path, src.signature)
    for n in (1, 64):
        x = _tiled(src.reference_inputs, n)
        got, (want,) = run(x)[src.signature.outputs[0].name], src.predict(x)
        assert got.shape == want.shape
        assert (got.argmax(1) == want.argmax(1)).mean() >= 0.9, n  # quantized: same classes, not same logits


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
