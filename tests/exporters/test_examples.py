"""The eight example models in the store that `make export` builds: every format, every certificate."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from contract.manifest import VARIANT_SEP, load_store
from contract.runtimes import FORMATS
from exporters.quantize import SOURCE_VARIANTS, VARIANTS
from exporters.store import sha256, size
from exporters.targets import formats_for, routes
from tests.conftest import EXAMPLES
from tests.exporters.signatures import check_artifacts

TRANSFORMERS = ("digits-transformer-torch", "digits-transformer-keras")


@pytest.fixture(scope="module")
def stored(real_store):
    return load_store(real_store)


@pytest.fixture(scope="module")
def manifests(stored):
    """The manifests with their float artifacts only: quantized variants have certificates of
    their own (test_quantized_variants_of_the_examples)."""
    return {n: m.model_copy(update={
        "artifacts": {k: a for k, a in m.artifacts.items() if a.variant is None},
        "failed": {k: f for k, f in m.failed.items() if VARIANT_SEP not in k}}) for n, m in stored.items()}  # fmt: skip


def test_quantized_variants_of_the_examples(real_store, stored):
    """`make export` quantizes every trained example: each variant is an artifact with a
    certificate, or a failure saying why; the digits MLPs and CNNs pass every certificate."""
    for m in stored.values():
        keys = {k for k in [*m.artifacts, *m.failed] if VARIANT_SEP in k}
        if m.source.weights == "random-init":
            assert not keys, (m.name, keys)  # skipped: top-1 of a random-init net is near-ties
            continue
        # every variant of a format the source reaches (Keras: no executorch:int8)
        expected = {k: v for k, v in {**VARIANTS, **SOURCE_VARIANTS}.items() if formats_for(m.source.framework, (v.format,))}
        assert keys == set(expected), (m.name, keys)
        for key, variant in expected.items():
            art = m.artifacts.get(key)
            if art is None:
                assert m.failed[key].error.startswith(f"no {key}"), (m.name, m.failed[key])
                continue
            path = m.artifact_path(real_store, key)
            assert path.relative_to(real_store / m.name).parts[:2] == (f"{variant.format}-{variant.name}", "1")
            assert art.bytes == size(path) and art.sha256 == sha256(path)
            q = art.parity.quantized
            assert q is not None and q.samples == 32 and q.accuracy is not None and q.min_top1_agreement == 0.98
            if art.parity.ok:
                assert art.parity.top1_agreement >= 0.98 and q.accuracy_drop <= 0.01, (m.name, key)
            else:
                assert "below the minimum" in art.parity.error or "exceeds the maximum" in art.parity.error
            if "-transformer-" not in m.name:
                assert art.parity.ok, (m.name, key, art.parity.error)


def _expected_formats(m) -> list[str]:
    """Every format with a route from the source's framework (Keras: no ExecuTorch); Keras
    sources reach AOTInductor only through onnx2torch."""
    formats = formats_for(m.source.framework, FORMATS)
    if m.source.framework != "pytorch" and importlib.util.find_spec("onnx2torch") is None:
        formats = [f for f in formats if f != "aotinductor"]
    return sorted(formats)


def test_all_eight_examples_have_every_format_of_their_framework_with_passing_parity(manifests):
    assert len(EXAMPLES) == 8 and sorted(manifests) == sorted(EXAMPLES)
    problems = []
    for m in manifests.values():
        expected = _expected_formats(m)
        problems += [f"{m.name}/{fmt}: {why.error}" for fmt, why in m.failed.items() if fmt in expected]
        if "aotinductor" not in expected and "needs onnx2torch" not in getattr(m.failed.get("aotinductor"), "error", ""):
            problems.append(f"{m.name}: no aotinductor failure saying it needs onnx2torch")
        if sorted(m.artifacts) != expected:
            problems.append(f"{m.name}: artifacts {sorted(m.artifacts)}")
        for fmt, art in m.artifacts.items():
            p = art.parity
            if not p.ok:
                problems.append(f"{m.name}/{fmt}: {p.error}")
    assert not problems, "\n".join(problems)


def test_every_certificate_is_complete(manifests):
    for m in manifests.values():
        for fmt, art in m.artifacts.items():
            p = art.parity
            assert p.batch_sizes == [1, 32] and p.tolerance == 1e-4, (m.name, fmt)
            assert set(p.outputs) == set(m.signature.output_names()), (m.name, fmt)
            for name, o in p.outputs.items():  # within tolerance x max(1, |output|)
                assert o.scale >= 1.0 and o.max_abs_error <= p.tolerance * o.scale, (m.name, fmt, name, o)
            assert p.max_abs_error == max(o.max_abs_error for o in p.outputs.values())
            assert p.top1_agreement == 1.0, (m.name, fmt, p.top1_agreement)  # logits [batch, classes]
            assert "checked at: batch 1, batch 32" in p.inputs, p.inputs
            assert ("dynamic dims at 7" in p.inputs) == (m.name in TRANSFORMERS), (m.name, p.inputs)
            assert art.route in [r.name for r in routes(fmt, m.source.framework)], (m.name, fmt, art.route)
            assert art.converters and art.export_seconds >= 0


def test_manifest_records_source_and_artifact_facts(real_store, manifests):
    for m in manifests.values():
        assert m.schema_version == 2
        assert m.source.framework == ("pytorch" if m.name.endswith("-torch") else "keras")
        assert m.source.single_sample_ms and m.source.single_sample_ms > 0
        for fmt, art in m.artifacts.items():
            path = m.artifact_path(real_store, fmt)
            assert path.exists()
            assert art.bytes == size(path)
            assert art.sha256 == sha256(path)
            assert path.relative_to(real_store / m.name).parts[:2] == (fmt, str(art.version))


def test_reference_arrays_are_keyed_by_tensor_name(real_store, manifests):
    for m in manifests.values():
        with np.load(real_store / m.name / "reference" / "inputs.npz") as f:
            assert sorted(f.files) == sorted(m.signature.input_names()), m.name
        with np.load(real_store / m.name / "reference" / "outputs.npz") as f:
            assert sorted(f.files) == sorted(m.signature.output_names()), m.name
        inputs, outputs, _ = m.load_reference(real_store)
        for spec in m.signature.inputs:
            a = inputs[spec.name]
            assert a.dtype == spec.numpy_dtype and a.shape[0] == 32, (m.name, spec.name)
            assert all(d < 0 or d == n for d, n in zip(spec.shape[1:], a.shape[1:])), (m.name, spec.name, a.shape)
        for spec in m.signature.outputs:
            assert outputs[spec.name].shape == (32, *spec.shape[1:]), (m.name, spec.name)


def test_digits_models_are_trained_and_mobilenets_labelled_random(real_store, manifests):
    for m in manifests.values():
        inputs, outputs, labels = m.load_reference(real_store)
        logits = outputs["logits"]
        assert logits.shape[0] == 32 and all(a.shape[0] == 32 for a in inputs.values())
        if m.source.architecture.startswith("digits"):
            assert m.source.weights == "trained" and labels is not None and labels.shape == (32,)
            assert m.source.test_accuracy >= (0.95 if "cnn" in m.name else 0.9), (m.name, m.source.test_accuracy)
            assert (logits.argmax(1) == labels).mean() >= 0.8, m.name  # the held-out batch is classified
        else:
            assert m.source.weights == "random-init" and labels is None
            assert "RANDOM INITIALISATION" in m.source.note
            assert logits.std() > 0.01, "random-init outputs must not be constant (parity would prove nothing)"
            assert np.abs(logits - logits[:1]).max() > 10 * 1e-4 * max(1.0, np.abs(logits).max())


def test_transformer_signature_and_reference_sequences(real_store, manifests):
    for name in TRANSFORMERS:
        m = manifests[name]
        ids, mask = m.signature.inputs
        assert (ids.name, ids.datatype, ids.shape, ids.role) == ("input_ids", "INT64", [-1, -1], "token_ids")
        assert (mask.name, mask.datatype, mask.shape, mask.role) == ("attention_mask", "INT64", [-1, -1], "mask")
        assert ids.dims[0] == mask.dims[0] == "batch" and ids.dims[1] == mask.dims[1] != ""  # same named dims
        assert tuple(mask.value_range) == (0, 2) and ids.value_range[0] == 0
        (out,) = m.signature.outputs
        assert (out.name, out.shape, out.datatype) == ("logits", [-1, 10], "FP32")
        inputs, _, _ = m.load_reference(real_store)
        x, k = inputs["input_ids"], inputs["attention_mask"]
        assert x.shape == k.shape == (32, 64)
        lengths = k.sum(1)
        assert lengths.min() >= 59 and lengths.max() == 64 and lengths.min() < 64  # padded rows too
        for row, n in zip(k, lengths):
            assert row[:n].all() and not row[n:].any()  # a prefix of ones, then padding
        assert not x[k == 0].any()  # padding ids are 0
        assert x.min() >= ids.value_range[0] and x.max() < ids.value_range[1]
    torch_sig, keras_sig = (manifests[n].signature for n in TRANSFORMERS)
    assert torch_sig.model_dump() == keras_sig.model_dump()  # the same signature in both frameworks


def test_same_architecture_same_signature_shape_across_frameworks(manifests):
    for arch in ("digits-mlp", "digits-cnn", "mobilenetv2", "digits-transformer"):
        torch_sig, keras_sig = manifests[f"{arch}-torch"].signature, manifests[f"{arch}-keras"].signature
        assert torch_sig.output_names() == keras_sig.output_names() == ["logits"]
        assert [o.shape for o in torch_sig.outputs] == [o.shape for o in keras_sig.outputs]
        assert torch_sig.input_names() == keras_sig.input_names()
        for t, k in zip(torch_sig.inputs, keras_sig.inputs):
            assert sorted(t.shape) == sorted(k.shape) and t.datatype == k.datatype  # NCHW vs NHWC
    assert manifests["digits-cnn-torch"].signature.inputs[0].layout == "NCHW"
    assert manifests["digits-cnn-keras"].signature.inputs[0].layout == "NHWC"


def test_every_artifact_takes_the_source_signature(real_store, manifests):
    """Names, shape (dynamic dims), dtype of each artifact's N inputs and outputs as its runtime
    sees them; the .mar carries the handler and the manifest's signature."""
    for m in manifests.values():
        check_artifacts(m, real_store)


def test_tflite_batch_is_resizable(real_store, manifests):
    from ai_edge_litert.interpreter import Interpreter

    m = manifests["digits-cnn-keras"]
    inputs, outputs, _ = m.load_reference(real_store)
    runner = Interpreter(str(m.artifact_path(real_store, "tflite"))).get_signature_runner()
    for b in (1, 7, 32):
        np.testing.assert_allclose(runner(input=inputs["input"][:b])["logits"], outputs["logits"][:b], atol=1e-4)


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_transformer_artifacts_agree_at_another_batch_and_sequence_length(real_store, manifests, name):
    """The dynamic sequence works in every artifact: at batch 5 and length 40 each agrees with ONNX
    Runtime (itself certified against the source)."""
    from exporters.targets import target

    m = manifests[name]
    inputs, _, _ = m.load_reference(real_store)
    x = {k: np.ascontiguousarray(v[:5, :40]) for k, v in inputs.items()}
    want = target("onnx").runner(m.artifact_path(real_store, "onnx"), m.signature)(x)["logits"]
    assert want.shape == (5, 10)
    for fmt in m.artifacts:  # (a missing format fails test_all_eight_examples_...)
        got = target(fmt).runner(m.artifact_path(real_store, fmt), m.signature)(x)["logits"]
        np.testing.assert_allclose(got, want, atol=1e-4 * max(1.0, float(np.abs(want).max())), err_msg=f"{name}/{fmt}")


def test_runtime_views_of_the_store(real_store, manifests):
    """TorchServe's model store and TF Serving's config list exactly the parity-passed artifacts."""
    marred = sorted(p.stem for p in (real_store / "torchserve").glob("*.mar"))
    assert marred == sorted(n for n, m in manifests.items() if m.passed("torchserve"))
    config = (real_store / "tfserving" / "models.config").read_text()
    for name, m in manifests.items():
        assert (f'name: "{name}"' in config) == m.passed("savedmodel"), name
        assert (f'base_path: "/models/{name}/savedmodel"' in config) == m.passed("savedmodel"), name
