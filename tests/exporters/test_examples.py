"""The six example models in the store that `make export` builds: every format, every certificate."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from exporters.store import sha256, size
from contract.manifest import load_store
from contract.runtimes import FORMATS
from tests.conftest import EXAMPLES


@pytest.fixture(scope="module")
def manifests(real_store):
    return load_store(real_store)


def test_all_six_examples_have_all_four_formats_with_passing_parity(manifests):
    assert sorted(manifests) == sorted(EXAMPLES)
    for m in manifests.values():
        assert not m.failed, f"{m.name}: {m.failed}"
        assert sorted(m.artifacts) == sorted(FORMATS)
        for fmt, art in m.artifacts.items():
            p = art.parity
            assert p.ok, f"{m.name}/{fmt}: {p.error}"
            assert p.batch_sizes == [1, 32]
            assert p.max_abs_error is not None and p.max_abs_error <= p.tolerance == 1e-4
            assert art.route and art.converters and art.export_seconds >= 0


def test_manifest_records_source_and_artifact_facts(real_store, manifests):
    for m in manifests.values():
        assert m.source.framework == ("pytorch" if m.name.endswith("-torch") else "keras")
        for fmt, art in m.artifacts.items():
            path = m.artifact_path(real_store, fmt)
            assert path.exists()
            assert art.bytes == size(path)
            assert art.sha256 == sha256(path)
            assert path.relative_to(real_store / m.name).parts[:2] == (fmt, str(art.version))


def test_digits_models_are_trained_and_mobilenets_labelled_random(real_store, manifests):
    for m in manifests.values():
        inputs, outputs, labels = m.load_reference(real_store)
        assert inputs.shape[0] == outputs.shape[0] == 32
        if m.source.architecture.startswith("digits"):
            assert m.source.weights == "trained" and labels is not None
            assert m.source.test_accuracy >= (0.95 if "cnn" in m.name else 0.9)
        else:
            assert m.source.weights == "random-init"
            assert "RANDOM INITIALISATION" in m.source.note
            assert outputs.std() > 0.01, "random-init outputs must not be constant (parity would prove nothing)"


def test_same_architecture_same_signature_shape_across_frameworks(manifests):
    for arch in ("digits-mlp", "digits-cnn", "mobilenetv2"):
        torch_sig, keras_sig = manifests[f"{arch}-torch"].signature, manifests[f"{arch}-keras"].signature
        assert [o.shape for o in torch_sig.outputs] == [o.shape for o in keras_sig.outputs]
        assert sorted(torch_sig.inputs[0].shape) == sorted(keras_sig.inputs[0].shape)  # NCHW vs NHWC
    assert manifests["digits-cnn-torch"].signature.inputs[0].layout == "NCHW"
    assert manifests["digits-cnn-keras"].signature.inputs[0].layout == "NHWC"


def test_every_artifact_takes_the_source_signature(real_store, manifests):
    """Names, shape (dynamic batch), dtype of each artifact as its runtime sees it."""
    import onnxruntime as ort
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    for m in manifests.values():
        spec, outs = m.signature.inputs[0], [o.name for o in m.signature.outputs]
        sess = ort.InferenceSession(str(m.artifact_path(real_store, "onnx")))
        (inp,) = sess.get_inputs()
        assert inp.name == spec.name and isinstance(inp.shape[0], str) and inp.shape[1:] == spec.shape[1:]
        assert [o.name for o in sess.get_outputs()] == outs

        fn = tf.saved_model.load(str(m.artifact_path(real_store, "savedmodel"))).signatures["serving_default"]
        (name, tspec), = fn.structured_input_signature[1].items()
        assert name == spec.name and tspec.shape.as_list() == [None, *spec.shape[1:]]
        assert sorted(fn.structured_outputs) == sorted(outs)
        assert (m.artifact_path(real_store, "savedmodel") / "saved_model.pb").exists()

        sig = Interpreter(str(m.artifact_path(real_store, "tflite"))).get_signature_list()["serving_default"]
        assert sig["inputs"] == [spec.name] and sorted(sig["outputs"]) == sorted(outs)

        with zipfile.ZipFile(m.artifact_path(real_store, "torchserve")) as z:
            names = z.namelist()
            assert "handler.py" in names and "manifest.json" in names
            assert ("model.pt" if m.name.endswith("-torch") else "model.onnx") in names
            assert json.loads(z.read("manifest.json"))["signature"] == m.signature.model_dump()


def test_tflite_batch_is_resizable(real_store, manifests):
    from ai_edge_litert.interpreter import Interpreter

    m = manifests["digits-cnn-keras"]
    inputs, outputs, _ = m.load_reference(real_store)
    runner = Interpreter(str(m.artifact_path(real_store, "tflite"))).get_signature_runner()
    for b in (1, 7, 32):
        np.testing.assert_allclose(runner(input=inputs[:b])["logits"], outputs[:b], atol=1e-4)


def test_runtime_views_of_the_store(real_store, manifests):
    for name in manifests:
        assert (real_store / "torchserve" / f"{name}.mar").is_file()
    config = (real_store / "tfserving" / "models.config").read_text()
    for name in manifests:
        assert f'name: "{name}"' in config
        assert f'base_path: "/models/{name}/savedmodel"' in config
