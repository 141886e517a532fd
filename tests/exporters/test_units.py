"""In-process checks of the pieces that decide pass/fail, routes and atomicity (no CLI, no store)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from contract.manifest import Parity, load_manifest
from exporters import inputs as ref_inputs
from exporters import parity, pipeline
from exporters.errors import ConversionError, root_cause
from exporters.sources import SourceError, pytorch
from exporters.targets import Exported, Route
from tests.exporters.tiny_models import VOCAB, constant, flat_softmax, linear, two_inputs


@pytest.fixture
def source():
    x = np.random.default_rng(0).random((32, 6), dtype=np.float32)
    return pytorch.from_module("tiny", linear(), {"input": x}, architecture="tiny")


@pytest.fixture
def two_source():
    """Two inputs (float features + int64 ids with a dynamic sequence), two outputs (a dict)."""
    specs = ref_inputs.with_roles([ref_inputs.parse_input("features:float32:batch,6"),
                                   ref_inputs.parse_input("ids:int64:batch,seq")], VOCAB)  # fmt: skip
    x, note = ref_inputs.draw(specs, 32)
    return pytorch.from_module("two", two_inputs(), x, architecture="two", input_specs=specs, inputs_note=note)


class FakeTarget:
    def __init__(self, outputs):
        self.outputs = outputs

    def runner(self, path, signature):
        return lambda x: self.outputs(x)


def fake(monkeypatch, outputs):
    monkeypatch.setattr(parity, "target", lambda fmt: FakeTarget(outputs))


# --- sources ------------------------------------------------------------------------------------


def test_dict_outputs_are_named_by_key_in_order(two_source):
    sig = two_source.signature
    assert sig.output_names() == ["scores", "pooled"]
    assert [o.shape for o in sig.outputs] == [[-1, 3], [-1, 4]]
    assert sig.input_names() == ["features", "ids"]
    ids = sig.inputs[1]
    assert ids.shape == [-1, -1] and ids.dims == ["batch", "seq"]
    assert ids.role == "token_ids" and tuple(ids.value_range) == (0, VOCAB)
    out = two_source.predict(two_source.reference_inputs)
    assert [o.shape for o in out] == [(32, 3), (32, 4)]


def test_vocab_size_is_read_from_the_embedding():
    assert pytorch.vocab_size(two_inputs()) == VOCAB
    assert pytorch.vocab_size(linear()) is None


def test_inputs_that_do_not_fit_the_model_are_refused():
    bad = {"input": np.zeros((4, 5), np.float32)}  # linear() takes 6 features
    with pytest.raises(SourceError, match=r"does not accept inputs input float32\[5\]"):
        pytorch.from_module("bad", linear(), bad, architecture="bad")


def test_output_names_must_match_the_outputs(source):
    x = source.reference_inputs
    with pytest.raises(SourceError, match="returns 1 outputs"):
        pytorch.from_module("tiny", linear(), x, architecture="tiny", output_names=["a", "b"])


# --- reference inputs ---------------------------------------------------------------------------


def test_parse_input_names_dynamic_dims_and_checks_batch_first():
    s = ref_inputs.parse_input("input_ids:int64:batch,seq")
    assert (s.datatype, s.shape, s.dims, s.role) == ("INT64", [-1, -1], ["batch", "seq"], "token_ids")
    s = ref_inputs.parse_input("pixels:float32:batch,3,224,224")
    assert (s.datatype, s.shape, s.dims, s.role) == ("FP32", [-1, 3, 224, 224], ["batch", "", "", ""], None)
    assert ref_inputs.parse_input("attention_mask:int64:batch,seq").role == "mask"
    assert ref_inputs.parse_input("token_type_ids:int64:batch,seq").role == "segment_ids"
    with pytest.raises(SourceError, match="batch dimension first"):
        ref_inputs.parse_input("x:float32:3,batch")
    with pytest.raises(SourceError, match="unknown dtype"):
        ref_inputs.parse_input("x:float99:batch,3")
    with pytest.raises(SourceError, match="NAME:DTYPE:DIMS"):
        ref_inputs.parse_input("x:float32")
    with pytest.raises(SourceError, match="neither a positive size nor a name"):
        ref_inputs.parse_input("x:float32:batch,0")


def test_token_ids_without_vocabulary_are_refused():
    specs = [ref_inputs.parse_input("ids:int64:batch,8")]
    with pytest.raises(SourceError, match="--vocab-size"):
        ref_inputs.with_roles(specs, None)
    (s,) = ref_inputs.with_roles(specs, 50)
    assert tuple(s.value_range) == (0, 50)


def test_drawn_inputs_are_valid_and_seeded():
    specs = ref_inputs.with_roles([ref_inputs.parse_input("input_ids:int64:batch,seq"),
                                   ref_inputs.parse_input("attention_mask:int64:batch,seq"),
                                   ref_inputs.parse_input("pixels:float32:batch,3")], 30)  # fmt: skip
    x, note = ref_inputs.draw(specs, 32)
    again, _ = ref_inputs.draw(specs, 32)
    for k in x:
        np.testing.assert_array_equal(x[k], again[k])
    ids, mask = x["input_ids"], x["attention_mask"]
    assert ids.dtype == mask.dtype == np.int64 and ids.shape == mask.shape == (32, ref_inputs.DYNAMIC_SIZE)
    assert ids.min() >= 0 and ids.max() < 30
    lengths = mask.sum(1)
    assert lengths[0] == ref_inputs.DYNAMIC_SIZE and lengths.min() < lengths.max()  # padded rows too
    for row, n in zip(mask, lengths):  # each row: a prefix of ones, then padding
        assert row[:n].all() and not row[n:].any()
    assert not ids[mask == 0].any()  # ids past the mask are padding (0)
    assert x["pixels"].dtype == np.float32 and 0 <= x["pixels"].min() and x["pixels"].max() < 1
    assert "input_ids: uniform ids in [0, 30)" in note


def test_constant_reference_input_is_refused():
    with pytest.raises(SourceError, match="'x' is constant"):
        ref_inputs.check_meaningful({"x": np.ones((32, 4), np.float32)})
    ref_inputs.check_meaningful({"x": np.arange(8, dtype=np.float32)})


def test_outputs_that_hardly_vary_are_refused():
    softmax = np.full((32, 10), 0.1, np.float32)
    softmax[:, 0] += np.linspace(0, 1e-4, 32, dtype=np.float32)  # varies, but within 10 x tolerance
    with pytest.raises(SourceError, match="'probs' hardly varies"):
        ref_inputs.check_outputs_vary({"probs": softmax}, 1e-4)
    big = np.full((32, 3), 500.0) + np.linspace(0, 0.04, 32)[:, None]  # 0.04 < 10 x 1e-4 x 500
    with pytest.raises(SourceError, match="hardly varies"):
        ref_inputs.check_outputs_vary({"logits": big}, 1e-4)
    ref_inputs.check_outputs_vary({"logits": big * np.linspace(1, 2, 32)[:, None]}, 1e-4)
    ref_inputs.check_outputs_vary({"ids": np.zeros((32, 3), np.int64)}, 1e-4)  # integers: not judged


def test_crop_cuts_dynamic_dims_and_keeps_a_token_in_the_mask():
    specs = ref_inputs.with_roles([ref_inputs.parse_input("input_ids:int64:batch,seq"),
                                   ref_inputs.parse_input("attention_mask:int64:batch,seq"),
                                   ref_inputs.parse_input("pixels:float32:batch,3")], 30)  # fmt: skip
    x, _ = ref_inputs.draw(specs, 8)
    cut = ref_inputs.crop(x, specs, 5)
    assert cut["input_ids"].shape == cut["attention_mask"].shape == (8, 5) and cut["pixels"].shape == (8, 3)
    assert cut["attention_mask"][:, 0].all()
    assert ref_inputs.crop({"pixels": x["pixels"]}, specs[2:], 5) is None  # nothing dynamic


# --- parity -------------------------------------------------------------------------------------


def test_nan_output_fails_parity(monkeypatch, source):
    fake(monkeypatch, lambda x: {"output_0": np.full((len(x["input"]), 3), np.nan, np.float32)})
    result = parity.check(source, "tflite", None)
    assert not result.ok and result.max_abs_error == float("inf")


def test_wrong_shape_or_missing_output_fails_parity(monkeypatch, source):
    fake(monkeypatch, lambda x: {"output_0": np.zeros((len(x["input"]), 4), np.float32)})
    result = parity.check(source, "onnx", None)
    assert not result.ok and "output 'output_0' at batch 1 is float32[1, 4]" in result.error
    fake(monkeypatch, lambda x: {"other": np.zeros((len(x["input"]), 3), np.float32)})
    result = parity.check(source, "onnx", None)
    assert not result.ok and "output 'output_0' missing" in result.error and "other" in result.error


def test_exact_runner_passes_with_top1(monkeypatch, source):
    fake(monkeypatch, lambda x: {"output_0": source.predict(x)[0]})
    result = parity.check(source, "onnx", None)
    assert result.ok and result.max_abs_error == 0.0 and result.top1_agreement == 1.0
    assert result.batch_sizes == [1, 32]
    assert set(result.outputs) == {"output_0"} and result.outputs["output_0"].top1_agreement == 1.0
    assert "checked at: batch 1, batch 32" in result.inputs and "dynamic dims" not in result.inputs


def test_parity_records_every_output_and_names_the_one_that_fails(monkeypatch, two_source):
    def off(x):
        scores, pooled = two_source.predict(x)
        return {"scores": scores, "pooled": pooled + 1e-3}

    fake(monkeypatch, off)
    result = parity.check(two_source, "onnx", None, tolerance=1e-4)
    assert not result.ok
    assert set(result.outputs) == {"scores", "pooled"}
    assert result.outputs["scores"].max_abs_error == 0.0
    assert result.outputs["pooled"].max_abs_error == pytest.approx(1e-3, rel=1e-2)
    assert "output pooled" in result.error and "output scores" not in result.error
    # the dynamic sequence is also checked at a second, shorter length
    assert "dynamic dims at 7" in result.inputs
    assert any(x["ids"].shape[1] == 7 for _, x in parity.cases(two_source))


def test_tolerance_scales_with_the_output_magnitude(monkeypatch):
    big = linear()
    with torch.no_grad():
        for p in big.parameters():
            p.mul_(1000)
    x = np.random.default_rng(0).random((32, 6), dtype=np.float32)
    src = pytorch.from_module("big", big, {"input": x}, architecture="big")
    scale = float(np.abs(src.predict(src.reference_inputs)[0]).max())
    assert scale > 100
    for err, ok in ((0.5 * 1e-4 * scale, True), (2 * 1e-4 * scale, False)):
        fake(monkeypatch, lambda x, err=err: {"output_0": src.predict(x)[0] + np.float32(err)})
        result = parity.check(src, "onnx", None, tolerance=1e-4)
        assert result.ok is ok, (err, result.error)
        assert result.outputs["output_0"].scale == pytest.approx(scale)


def test_the_source_runs_once_per_case_for_every_format(monkeypatch, two_source):
    """Each case's expected outputs are computed once and every format is held to those same
    arrays: an artifact that is off still fails in the second format checked."""
    calls: list[tuple] = []
    real = two_source.predict
    two_source.predict = lambda x: calls.append(tuple(v.shape for v in x.values())) or real(x)
    reference = parity.reference_outputs(two_source)  # what export_model records, before the formats
    fake(monkeypatch, lambda x: dict(zip(["scores", "pooled"], real(x))))
    assert parity.check(two_source, "onnx", None).ok
    assert parity.check(two_source, "tflite", None).ok
    assert sorted(calls) == sorted(tuple(v.shape for v in x.values()) for _, x in parity.cases(two_source))
    assert len(calls) == len(parity.cases(two_source)) == 3  # batch 1, batch 32 (the reference), sequence 7
    assert parity.reference_outputs(two_source) is reference
    fake(monkeypatch, lambda x: {"scores": real(x)[0] + 1e-3, "pooled": real(x)[1]})
    result = parity.check(two_source, "savedmodel", None)
    assert not result.ok and "output scores" in result.error and len(calls) == 3


# --- root causes --------------------------------------------------------------------------------


def _chained():
    try:
        try:
            raise ValueError("\x1b[31mDimensions must be equal, but are 17 and 128\x1b[0m for node Add")
        except ValueError as e:
            raise RuntimeError("Exception encountered when calling layer tf.math.add_8") from e
    except RuntimeError as e:
        raise RuntimeError("Exception encountered when calling layer tf.math.add_8") from e


def test_root_cause_is_the_inner_telling_line_without_ansi():
    with pytest.raises(RuntimeError) as info:
        _chained()
    text = root_cause(info.value)
    assert text.startswith("ValueError: Dimensions must be equal, but are 17 and 128"), text
    assert "tf.math.add_8" in text  # where, from the outer message
    assert "\x1b" not in text and "[31m" not in text
    assert "\n" not in text


def test_root_cause_prefers_the_error_over_an_incidental_one_it_was_raised_during():
    try:
        try:
            raise TypeError("You are passing KerasTensor(...), an intermediate TF-Keras symbolic input/output, "
                            "to a TF API that does not allow registering custom dispatch")  # fmt: skip
        except TypeError:
            raise ValueError('Exception encountered when calling layer "tf.math.add_82" (type TFOpLambda).\n\n'
                             "Dimensions must be equal, but are 32 and 64 for AddV2")  # fmt: skip
    except ValueError as e:
        assert "Dimensions must be equal, but are 32 and 64" in root_cause(e)


# --- pipeline: routes, logs, atomicity ----------------------------------------------------------


def _working_onnx_route():
    from exporters.targets import onnx

    return onnx.ROUTES[0]  # torch.onnx.export: a real ONNX file the real parity check runs


def test_route_fallback_records_the_failed_route_and_keeps_its_log(monkeypatch, source, tmp_path):
    store = tmp_path / "store"

    def broken(ws, dest):
        (dest / "partial.onnx").write_bytes(b"half")
        raise ConversionError("first-route: converter refused the model")

    first = Route("first route (always fails)", ("pytorch",), broken)
    second = _working_onnx_route()
    monkeypatch.setattr(pipeline, "routes", lambda fmt, fw: [first, second])
    manifest, rows = pipeline.export_model(source, store, ("onnx",))
    art = manifest.artifacts["onnx"]
    assert art.route == second.name and art.parity.ok
    assert [(f.route, f.error) for f in art.routes_failed] == [(first.name, "first-route: converter refused the model")]
    assert rows[0].ok and rows[0].route == second.name
    on_disk = load_manifest(store / "tiny")
    assert on_disk.artifacts["onnx"].routes_failed[0].route == first.name
    assert sorted(p.name for p in (store / "tiny" / "onnx" / "1").iterdir()) == ["model.onnx"]  # no partial
    log = (store / "tiny" / "logs" / "onnx.log").read_text()
    assert f"===== route: {first.name}" in log and f"===== route: {second.name}" in log
    assert log.index(first.name) < log.index(second.name)


def test_unforeseen_route_exception_is_recorded_by_its_root_cause(monkeypatch, source, tmp_path):
    def crash(ws, dest):
        _chained()

    monkeypatch.setattr(pipeline, "routes", lambda fmt, fw: [Route("crashes", ("pytorch",), crash), _working_onnx_route()])
    manifest, _ = pipeline.export_model(source, tmp_path / "store", ("onnx",))
    (failed,) = manifest.artifacts["onnx"].routes_failed
    assert failed.route == "crashes" and failed.error.startswith("ValueError: Dimensions must be equal")


def test_parity_failure_tries_the_next_route(monkeypatch, source, tmp_path):
    calls = []
    real_check = parity.check

    def check(src, fmt, path, tol):
        calls.append(path)
        if len(calls) == 1:
            return Parity(ok=False, runtime="fake", batch_sizes=[1], tolerance=tol, error="output output_0: off")
        return real_check(src, fmt, path, tol)

    route = _working_onnx_route()
    again = Route("the same exporter again", ("pytorch",), route.export)
    monkeypatch.setattr(parity, "check", check)
    monkeypatch.setattr(pipeline, "routes", lambda fmt, fw: [route, again])
    manifest, _ = pipeline.export_model(source, tmp_path / "store", ("onnx",))
    art = manifest.artifacts["onnx"]
    assert art.route == again.name and art.parity.ok
    assert art.routes_failed[0].route == route.name and art.routes_failed[0].error == "parity failed: output output_0: off"


def test_last_route_failing_parity_is_kept_with_its_certificate(monkeypatch, source, tmp_path):
    monkeypatch.setattr(pipeline, "routes", lambda fmt, fw: [_working_onnx_route()])
    manifest, rows = pipeline.export_model(source, tmp_path / "store", ("onnx",), tolerance=0.0)
    if manifest.artifacts["onnx"].parity.ok:
        pytest.skip("ONNX Runtime matched torch bit for bit: nothing exceeds tolerance 0")
    assert not rows[0].ok and "exceeds 0 x max(1," in rows[0].message
    assert "onnx" not in manifest.failed


def test_all_routes_failing_records_why_and_writes_no_artifact(monkeypatch, source, tmp_path):
    store = tmp_path / "store"

    def refuse(msg):
        def export(ws, dest):
            (dest / "model.onnx").write_bytes(b"junk")
            raise ConversionError(msg)

        return export

    monkeypatch.setattr(pipeline, "routes", lambda fmt, fw: [Route("a", ("pytorch",), refuse("no Bessel")),
                                                             Route("b", ("pytorch",), refuse("no Bessel either"))])  # fmt: skip
    manifest, rows = pipeline.export_model(source, store, ("onnx",))
    failure = manifest.failed["onnx"]
    assert [(f.route, f.error) for f in failure.routes_failed] == [("a", "no Bessel"), ("b", "no Bessel either")]
    assert "2 route(s) tried: [a] no Bessel; [b] no Bessel either" in failure.error
    assert failure.log == "tiny/logs/onnx.log" and (store / failure.log).is_file()
    assert not (store / "tiny" / "onnx").exists() and "onnx" not in manifest.artifacts
    assert not rows[0].ok and rows[0].message == failure.error
    assert load_manifest(store / "tiny").failed["onnx"] == failure


def test_onnx_then_savedmodel_are_exported_first_and_rows_keep_the_requested_order(monkeypatch, source, tmp_path):
    order = []

    def record(fmt):
        def export(ws, dest):
            order.append(fmt)
            raise ConversionError("not today")

        return export

    monkeypatch.setattr(pipeline, "routes", lambda fmt, fw: [Route(fmt, ("pytorch",), record(fmt))])
    _, rows = pipeline.export_model(source, tmp_path / "store", ("tflite", "savedmodel", "onnx"))
    assert order == ["onnx", "savedmodel", "tflite"]  # TFLite and the .mar start from certified files
    assert [r.format for r in rows] == ["tflite", "savedmodel", "onnx"]


def test_debug_keeps_no_log_file(monkeypatch, source, tmp_path):
    monkeypatch.setattr(pipeline, "routes", lambda fmt, fw: [_working_onnx_route()])
    pipeline.export_model(source, tmp_path / "store", ("onnx",), debug=True)
    assert not (tmp_path / "store" / "tiny" / "logs").exists()


def test_interrupted_export_leaves_store_untouched(monkeypatch, source, tmp_path):
    store = tmp_path / "store"

    def boom(ws, dest):
        (dest / "partial.bin").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "routes", lambda fmt, fw: [Route("boom", ("pytorch",), boom)])
    with pytest.raises(KeyboardInterrupt):
        pipeline.export_model(source, store, ("onnx",))
    assert list(store.iterdir()) == []


@pytest.mark.parametrize("factory", [constant, flat_softmax], ids=["zeros-times-x-plus-one", "flat-softmax"])
def test_source_with_constant_output_is_refused_before_anything_is_written(factory, tmp_path):
    x = np.random.default_rng(0).random((32, 6), dtype=np.float32)
    src = pytorch.from_module("const", factory(), {"input": x}, architecture="const")
    with pytest.raises(SourceError, match="hardly varies"):
        pipeline.export_model(src, tmp_path / "store", ("onnx",))
    assert list((tmp_path / "store").iterdir()) == []


def test_source_with_constant_input_is_refused(tmp_path):
    src = pytorch.from_module("flat", linear(), {"input": np.full((32, 6), 0.5, np.float32)}, architecture="flat")
    with pytest.raises(SourceError, match="'input' is constant"):
        pipeline.export_model(src, tmp_path / "store", ("onnx",))
    assert list((tmp_path / "store").iterdir()) == []


# --- the user's signature on the command line ---------------------------------------------------


def test_user_signature_options():
    from contract.manifest import TensorSpec
    from exporters.user import _specs

    with pytest.raises(SourceError, match="not both"):
        _specs(None, ["x:float32:batch,6"], "6", None, "float32")
    (s,) = _specs(None, [], "3,8,8", "pixels", "float32")
    assert (s.name, s.shape, s.datatype) == ("pixels", [-1, 3, 8, 8], "FP32")
    model = [TensorSpec(name="image", datatype="FP32", shape=[-1, -1, -1, 3])]
    (s,) = _specs(model, [], "8,8,3", None, "float32")  # fixes the model's dynamic dims
    assert (s.name, s.shape) == ("image", [-1, 8, 8, 3])
    with pytest.raises(SourceError, match="has 2 dims"):
        _specs(model, [], "8,8", None, "float32")
    two = [TensorSpec(name="a", datatype="FP32", shape=[-1, 4]), TensorSpec(name="b", datatype="INT64", shape=[-1, -1])]
    got = _specs(two, ["b:int64:batch,12"], None, None, "float32")
    assert [(g.name, g.shape) for g in got] == [("a", [-1, 4]), ("b", [-1, 12])]  # given by name, the rest kept
    with pytest.raises(SourceError, match=r"\['zzz'\] are not inputs of the model"):
        _specs(two, ["zzz:int64:batch,12"], None, None, "float32")


def test_certified_onnx_artifact_is_the_stored_one(source, tmp_path):
    from exporters.store import sha256, size

    store = tmp_path / "store"
    manifest, _ = pipeline.export_model(source, store, ("onnx", "savedmodel"))
    art = manifest.artifacts["onnx"]
    path = manifest.artifact_path(store, "onnx")
    assert (art.bytes, art.sha256) == (size(path), sha256(path))


# --- the AOTInductor compile cache --------------------------------------------------------------


def test_aotinductor_cache_is_the_users_not_the_clones(monkeypatch, tmp_path):
    """A fresh clone on the same machine finds the packages compiled before (as torch's inductor
    cache and pip's are found): $XDG_CACHE_HOME, else ~/.cache; SERVEBENCH_AOTI_CACHE wins."""
    from exporters.targets import aotinductor

    monkeypatch.delenv(aotinductor.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert aotinductor.cache_dir() == tmp_path / "xdg" / "servebench" / "aotinductor"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert aotinductor.cache_dir() == tmp_path / "home" / ".cache" / "servebench" / "aotinductor"
    monkeypatch.setenv(aotinductor.CACHE_ENV, str(tmp_path / "mine"))
    assert aotinductor.cache_dir() == tmp_path / "mine"
