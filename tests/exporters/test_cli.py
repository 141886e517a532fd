"""The exporter CLI on users' own models: every route, the error paths, atomic writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from contract.manifest import load_manifest
from contract.runtimes import FORMATS
from tests.conftest import REPO, python_env


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporters", *args], cwd=REPO, env=python_env(),
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def assert_all_ok(store: Path, name: str, formats=FORMATS):
    m = load_manifest(store / name)
    assert sorted(m.artifacts) == sorted(formats), m.failed
    for fmt, art in m.artifacts.items():
        assert art.parity.ok, f"{fmt}: {art.parity.error}"
        assert (store / name / art.path).exists()
    return m


def no_leftovers(store: Path) -> bool:
    return not [p for p in store.iterdir() if p.name.startswith((".staging", ".trash"))]


@pytest.fixture
def store(tmp_path):
    return tmp_path / "store"


def test_keras_file_all_formats(tmp_path, store):
    import keras

    model = keras.Sequential([keras.Input((6,), name="features"), keras.layers.Dense(3, name="scores")])
    model.save(tmp_path / "user.keras")
    done = run_cli("export", str(tmp_path / "user.keras"), "--name", "user-keras", "--store", str(store))
    assert done.returncode == 0, done.stderr
    m = assert_all_ok(store, "user-keras")
    assert m.signature.inputs[0].name == "features"  # read from the model
    assert m.signature.inputs[0].shape == [-1, 6] and m.signature.inputs[0].datatype == "FP32"
    assert (store / "torchserve" / "user-keras.mar").exists()
    assert "user-keras" in (store / "tfserving" / "models.config").read_text()
    assert "user-keras" in done.stdout and "ok" in done.stdout  # the summary table
    assert no_leftovers(store)


def test_torchscript_file_all_formats(tmp_path, store):
    import torch

    from tests.exporters.tiny_models import linear

    torch.jit.script(linear()).save(str(tmp_path / "user.pt"))
    sample = np.random.default_rng(1).random((32, 6), dtype=np.float32)
    np.save(tmp_path / "sample.npy", sample)
    done = run_cli("export", str(tmp_path / "user.pt"), "--name", "user-ts", "--input-shape", "6",
                   "--sample-data", str(tmp_path / "sample.npy"), "--output-names", "scores", "--store", str(store))  # fmt: skip
    assert done.returncode == 0, done.stderr
    m = assert_all_ok(store, "user-ts")
    assert [o.name for o in m.signature.outputs] == ["scores"]
    np.testing.assert_array_equal(np.load(store / "user-ts" / "reference" / "inputs.npy"), sample)


def test_factory_with_state_dict(tmp_path, store):
    import torch

    from tests.exporters.tiny_models import linear

    torch.manual_seed(3)
    torch.save(linear().state_dict(), tmp_path / "weights.pt")
    done = run_cli("export", "tests.exporters.tiny_models:linear", "--state-dict", str(tmp_path / "weights.pt"),
                   "--name", "user-factory", "--input-shape", "6", "--formats", "onnx,torchserve", "--store", str(store))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert_all_ok(store, "user-factory", ("onnx", "torchserve"))


def test_savedmodel_directory_source(tmp_path, store):
    import tensorflow as tf

    class Scale(tf.Module):
        def __init__(self):
            self.w = tf.Variable(np.arange(12, dtype=np.float32).reshape(4, 3))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.matmul(x, self.w)}

    mod = Scale()
    tf.saved_model.save(mod, str(tmp_path / "sm"), signatures={"serving_default": mod.serve})
    done = run_cli("export", str(tmp_path / "sm"), "--name", "user-sm", "--formats", "savedmodel,tflite,onnx", "--store", str(store))
    assert done.returncode == 0, done.stderr
    m = assert_all_ok(store, "user-sm", ("savedmodel", "tflite", "onnx"))
    assert m.signature.inputs[0].name == "x" and m.signature.outputs[0].name == "y"


def test_missing_file_is_one_line_naming_model_and_cause(store):
    done = run_cli("export", "/nonexistent/model.keras", "--name", "ghost", "--store", str(store))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == "error: model ghost, format source: Keras model file not found: /nonexistent/model.keras"
    assert "Traceback" not in done.stderr
    assert not (store / "ghost").exists()


def test_corrupt_file_and_debug_traceback(tmp_path, store):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"this is not TorchScript")
    done = run_cli("export", str(bad), "--name", "broken", "--input-shape", "6", "--store", str(store))
    assert done.returncode == 2
    assert "error: model broken, format source: not a loadable TorchScript file" in done.stderr
    assert "Traceback" not in done.stderr
    debug = run_cli("export", str(bad), "--name", "broken", "--input-shape", "6", "--store", str(store), "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_unknown_format_is_rejected(tmp_path, store):
    done = run_cli("export", "x.keras", "--name", "x", "--formats", "onnx,coreml", "--store", str(store))
    assert done.returncode == 2 and "coreml" in done.stderr


def test_unsupported_operator_fails_its_formats_only(tmp_path, store):
    done = run_cli("export", "tests.exporters.tiny_models:bessel", "--name", "bessel", "--input-shape", "6",
                   "--store", str(store))  # fmt: skip
    assert done.returncode == 1
    assert "bessel/onnx: torch.onnx.export failed: UnsupportedOperatorError" in done.stderr
    m = load_manifest(store / "bessel")
    assert set(m.failed) == {"onnx", "savedmodel", "tflite"}  # all three go through ONNX
    assert m.artifacts["torchserve"].parity.ok  # TorchScript handles it: that format still completes
    assert not (store / "bessel" / "onnx").exists()  # nothing half-written
    assert "FAIL" in done.stdout and no_leftovers(store)


def test_parity_over_tolerance_fails_with_clear_message(tmp_path, store):
    import torch

    from tests.exporters.tiny_models import linear

    torch.jit.script(linear()).save(str(tmp_path / "user.pt"))
    done = run_cli("export", str(tmp_path / "user.pt"), "--name", "strict", "--input-shape", "6",
                   "--tolerance", "0", "--formats", "tflite,onnx", "--store", str(store))  # fmt: skip
    m = load_manifest(store / "strict")
    failed = [f for f, a in m.artifacts.items() if not a.parity.ok]
    assert failed, "some float32 conversion differs from the source by more than 0"
    assert done.returncode == 1
    for f in failed:
        assert "exceeds tolerance 0" in m.artifacts[f].parity.error
        assert f"strict/{f}: max abs error" in done.stderr
