"""The exporter CLI on users' own models: every source kind, N inputs/outputs, the refusals, the
error paths, atomic writes. Each CLI run imports torch + tensorflow (~10 s): runs whose store several
tests read are module-scoped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from contract.manifest import load_manifest
from contract.runtimes import FORMATS
from exporters.targets import formats_for, routes
from tests.conftest import REPO, python_env
from tests.exporters.signatures import check_artifacts
from tests.exporters.tiny_models import VOCAB

TWO_INPUTS = ("--input", "features:float32:batch,6", "--input", "ids:int64:batch,seq")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = python_env()
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as on a user's terminal: the CLI must quiet TF itself
    return subprocess.run([sys.executable, "-m", "exporters", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def assert_all_ok(store: Path, name: str, formats=FORMATS):
    m = load_manifest(store / name)
    # "n/a": a route that needs a package this machine lacks (Keras -> AOTInductor: onnx2torch)
    unavailable = {fmt for fmt, why in m.failed.items() if why.unavailable}
    assert unavailable <= {"aotinductor"}, m.failed
    assert sorted(m.artifacts) == sorted(set(formats_for(m.source.framework, formats)) - unavailable), m.failed
    for fmt, art in m.artifacts.items():
        assert art.parity.ok, f"{fmt}: {art.parity.error}"
        assert (store / name / art.path).exists()
    return m


def assert_refused(done: subprocess.CompletedProcess, name: str, store: Path, *fragments: str) -> str:
    """Exit 2, one `error:` line naming the model and the cause, no traceback, nothing in the store."""
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(f"error: model {name}, format source: "), errors[0]
    for f in fragments:
        assert f in errors[0], errors[0]
    assert "Traceback" not in done.stderr
    assert not store.exists() or list(store.iterdir()) == [], list(store.iterdir())
    return errors[0]


def no_leftovers(store: Path) -> bool:
    return not [p for p in store.iterdir() if p.name.startswith((".staging", ".trash"))]


@pytest.fixture
def store(tmp_path):
    return tmp_path / "store"


# --- a two-input, two-output PyTorch factory: one run, read by several tests --------------------


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    store = tmp_path_factory.mktemp("two") / "store"
    done = run_cli("export", "tests.exporters.tiny_models:two_inputs", "--name", "two", *TWO_INPUTS, "--store", str(store))
    assert done.returncode in (0, 1), done.stderr[-3000:]  # 1: some format failed (checked below)
    return store, done, load_manifest(store / "two")


def test_two_inputs_every_format_passes_or_the_manifest_says_why(two):
    store, done, m = two
    assert sorted([*m.artifacts, *m.failed]) == sorted(FORMATS)
    assert "onnx" in m.artifacts and "torchserve" in m.artifacts  # these two always convert this model
    for fmt, art in m.artifacts.items():
        assert art.parity.ok, f"{fmt}: {art.parity.error}"
        assert art.route in [r.name for r in routes(fmt, "pytorch")]
    for fmt, why in m.failed.items():
        assert why.routes_failed and all(f.error for f in why.routes_failed), why
        assert [f.route for f in why.routes_failed] == [r.name for r in routes(fmt, "pytorch")]
        assert why.log == f"two/logs/{fmt}.log" and (store / why.log).is_file()
        assert f"two/{fmt}: no {fmt} artifact" in done.stderr
    assert done.returncode == (1 if m.failed else 0)


def test_two_inputs_all_formats_pass(two):
    store, done, _ = two
    assert done.returncode == 0, done.stderr[-3000:]
    assert_all_ok(store, "two")


def test_two_outputs_do_not_defeat_the_onnx2tf_route(two):
    _, _, m = two
    for fmt in ("savedmodel", "tflite"):
        errors = [f.error for f in (m.artifacts[fmt].routes_failed if fmt in m.artifacts else m.failed[fmt].routes_failed)]
        assert not [e for e in errors if "cannot match the outputs" in e], errors
    assert "onnx2tf" in m.artifacts["savedmodel"].route


def test_two_inputs_signature_from_the_command_line_and_the_dict_keys(two):
    _, _, m = two
    features, ids = m.signature.inputs
    assert (features.name, features.datatype, features.shape, features.dims) == ("features", "FP32", [-1, 6], ["batch", ""])
    assert (ids.name, ids.datatype, ids.shape, ids.dims) == ("ids", "INT64", [-1, -1], ["batch", "seq"])
    assert ids.role == "token_ids" and tuple(ids.value_range) == (0, VOCAB)  # read from the nn.Embedding
    assert m.signature.output_names() == ["scores", "pooled"]  # the dict's keys, in order
    assert [o.shape for o in m.signature.outputs] == [[-1, 3], [-1, 4]]
    assert m.source.weights == "unknown"  # the default: never guessed
    assert m.source.framework == "pytorch" and m.source.single_sample_ms > 0


def test_two_inputs_reference_arrays_per_tensor(two):
    store, _, m = two
    with np.load(store / "two" / "reference" / "inputs.npz") as f:
        assert sorted(f.files) == ["features", "ids"]
    with np.load(store / "two" / "reference" / "outputs.npz") as f:
        assert sorted(f.files) == ["pooled", "scores"]
    inputs, outputs, labels = m.load_reference(store)
    assert labels is None
    assert inputs["features"].dtype == np.float32 and inputs["ids"].dtype == np.int64
    assert inputs["features"].shape[0] == inputs["ids"].shape[0] == 32
    assert inputs["ids"].min() >= 0 and inputs["ids"].max() < VOCAB and len(np.unique(inputs["ids"])) > 1
    assert outputs["scores"].shape == (32, 3) and outputs["pooled"].shape == (32, 4)


def test_two_inputs_parity_records_both_outputs(two):
    _, _, m = two
    for fmt, art in m.artifacts.items():
        p = art.parity
        assert set(p.outputs) == {"scores", "pooled"}, fmt
        for name, o in p.outputs.items():
            assert o.max_abs_error <= p.tolerance * max(1.0, o.scale), (fmt, name, o)
        assert p.max_abs_error == max(o.max_abs_error for o in p.outputs.values())
        assert "uniform ids in [0, 20)" in p.inputs and "dynamic dims at 7" in p.inputs, p.inputs


def test_two_inputs_artifacts_take_the_signature(two):
    store, _, m = two
    check_artifacts(m, store)


def test_no_framework_dump_on_the_terminal(two):
    _, done, _ = two
    dump = [ln for ln in done.stderr.splitlines() if ln.startswith(("I0000", "W0000", "E0000"))]
    assert not dump, dump
    assert "Traceback" not in done.stderr


# --- every source kind --------------------------------------------------------------------------


def test_keras_file_two_inputs_all_formats(tmp_path, store):
    import keras

    features = keras.Input((6,), name="features")
    ids = keras.Input((5,), name="ids", dtype="int64")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(VOCAB, 4)(ids))
    hidden = keras.layers.Concatenate()([keras.layers.Dense(4)(features), pooled])
    model = keras.Model([features, ids], [keras.layers.Dense(3, name="scores")(hidden),
                                          keras.layers.Dense(2, name="extra")(hidden)])  # fmt: skip
    model.save(tmp_path / "user.keras")
    done = run_cli("export", str(tmp_path / "user.keras"), "--name", "user-keras", "--store", str(store))
    assert done.returncode == 0, done.stderr[-3000:]
    m = assert_all_ok(store, "user-keras")
    f, i = m.signature.inputs  # read from the model
    assert (f.name, f.shape, f.datatype) == ("features", [-1, 6], "FP32")
    assert (i.name, i.shape, i.datatype, i.role) == ("ids", [-1, 5], "INT64", "token_ids")
    assert tuple(i.value_range) == (0, VOCAB)  # read from the Embedding layer
    assert m.signature.output_names() == ["scores", "extra"]
    assert m.source.framework == "keras" and m.source.weights == "unknown"
    check_artifacts(m, store)
    assert (store / "torchserve" / "user-keras.mar").exists()
    assert "user-keras" in (store / "tfserving" / "models.config").read_text()
    assert "user-keras" in done.stdout and "ok" in done.stdout  # the summary table
    assert no_leftovers(store)


@pytest.fixture(scope="module")
def torchscript(tmp_path_factory):
    import torch

    from tests.exporters.tiny_models import linear

    tmp = tmp_path_factory.mktemp("ts")
    store = tmp / "store"
    torch.jit.script(linear()).save(str(tmp / "user.pt"))
    sample = np.random.default_rng(1).random((32, 6), dtype=np.float32)
    np.save(tmp / "sample.npy", sample)
    done = run_cli("export", str(tmp / "user.pt"), "--name", "user-ts", "--input-shape", "6", "--weights", "trained",
                   "--sample-data", str(tmp / "sample.npy"), "--output-names", "scores", "--store", str(store))  # fmt: skip
    assert done.returncode in (0, 1), done.stderr[-3000:]
    return store, done, sample, tmp / "sample.npy"


def test_torchscript_file_with_npy_sample_and_trained_weights(torchscript):
    store, _, sample, path = torchscript
    m = load_manifest(store / "user-ts")
    assert m.signature.input_names() == ["input"] and m.signature.inputs[0].shape == [-1, 6]
    assert m.signature.output_names() == ["scores"]
    assert m.source.weights == "trained"
    with np.load(store / "user-ts" / "reference" / "inputs.npz") as f:
        assert f.files == ["input"]
        np.testing.assert_array_equal(f["input"], sample)
    assert m.artifacts["torchserve"].parity.ok
    assert all(f"user samples from {path}" in a.parity.inputs for a in m.artifacts.values())
    check_artifacts(m, store)


def test_torchscript_file_all_formats(torchscript):
    """Every format but AOTInductor, which refuses a TorchScript source saying what to do instead
    (a known limitation: its torch.export conversion changed output shapes at batch 1)."""
    store, done, _, _ = torchscript
    assert done.returncode == 1  # one format failed, the others were written
    m = load_manifest(store / "user-ts")
    assert set(m.failed) == {"aotinductor"}
    assert "not TorchScript" in m.failed["aotinductor"].error and "MODULE:FUNCTION" in m.failed["aotinductor"].error
    assert_all_ok(store, "user-ts", tuple(f for f in FORMATS if f != "aotinductor"))


def test_factory_with_state_dict(tmp_path, store):
    import torch

    from tests.exporters.tiny_models import linear

    torch.manual_seed(3)
    trained = linear()
    torch.save(trained.state_dict(), tmp_path / "weights.pt")
    done = run_cli("export", "tests.exporters.tiny_models:linear", "--state-dict", str(tmp_path / "weights.pt"),
                   "--name", "user-factory", "--input-shape", "6", "--formats", "onnx,torchserve", "--store", str(store))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    m = assert_all_ok(store, "user-factory", ("onnx", "torchserve"))
    inputs, outputs, _ = m.load_reference(store)
    with torch.no_grad():  # the reference outputs are those of the loaded weights
        want = trained(torch.from_numpy(inputs["input"])).numpy()
    np.testing.assert_allclose(outputs["output_0"], want, rtol=1e-6, atol=1e-6)


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
    assert done.returncode == 0, done.stderr[-3000:]
    m = assert_all_ok(store, "user-sm", ("savedmodel", "tflite", "onnx"))
    assert m.signature.input_names() == ["x"] and m.signature.output_names() == ["y"]
    assert m.source.framework == "tensorflow"
    check_artifacts(m, store)


# --- reference inputs: sample data, vocabularies, refusals --------------------------------------


def test_sample_data_npz_keyed_by_input_name(tmp_path, store):
    rng = np.random.default_rng(5)
    features = rng.random((8, 6), dtype=np.float32)
    ids = rng.integers(0, VOCAB, size=(8, 11)).astype(np.int32)  # cast to the declared int64
    np.savez(tmp_path / "samples.npz", ids=ids, features=features, unused=np.zeros(3))
    done = run_cli("export", "tests.exporters.tiny_models:two_inputs", "--name", "two-samples", *TWO_INPUTS,
                   "--sample-data", str(tmp_path / "samples.npz"), "--formats", "onnx", "--store", str(store))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    m = assert_all_ok(store, "two-samples", ("onnx",))
    inputs, _, _ = m.load_reference(store)
    np.testing.assert_array_equal(inputs["features"], features)
    assert inputs["ids"].dtype == np.int64
    np.testing.assert_array_equal(inputs["ids"], ids)
    with np.load(store / "two-samples" / "reference" / "inputs.npz") as f:
        assert sorted(f.files) == ["features", "ids"]  # only the model's inputs
    assert m.artifacts["onnx"].parity.batch_sizes == [1]  # 8 samples: batch 32 cannot be checked
    assert "user samples from" in m.artifacts["onnx"].parity.inputs


def test_sample_data_missing_an_input_is_refused_naming_it(tmp_path, store):
    np.savez(tmp_path / "samples.npz", features=np.random.default_rng(5).random((8, 6), dtype=np.float32))
    done = run_cli("export", "tests.exporters.tiny_models:two_inputs", "--name", "two-missing", *TWO_INPUTS,
                   "--sample-data", str(tmp_path / "samples.npz"), "--formats", "onnx", "--store", str(store))  # fmt: skip
    line = assert_refused(done, "two-missing", store, "--sample-data")
    assert "'ids'" in line and "missing" in line


def test_integer_ids_without_vocabulary_are_refused(store):
    done = run_cli("export", "tests.exporters.tiny_models:ids_no_embedding", "--name", "ids", "--input", "ids:int64:batch,8",
                   "--formats", "onnx", "--store", str(store))  # fmt: skip
    assert_refused(done, "ids", store, "--vocab-size", "'ids'")


def test_vocab_size_draws_ids_in_range(store):
    done = run_cli("export", "tests.exporters.tiny_models:ids_no_embedding", "--name", "ids", "--input", "ids:int64:batch,8",
                   "--vocab-size", "50", "--weights", "trained", "--formats", "onnx", "--store", str(store))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    m = assert_all_ok(store, "ids", ("onnx",))
    (spec,) = m.signature.inputs
    assert spec.role == "token_ids" and tuple(spec.value_range) == (0, 50)
    with np.load(store / "ids" / "reference" / "inputs.npz") as f:
        ids = f["ids"]
    assert ids.dtype == np.int64 and ids.shape == (32, 8)
    assert ids.min() >= 0 and ids.max() < 50 and len(np.unique(ids)) > 10
    assert m.source.weights == "trained"


def test_constant_output_is_refused_and_nothing_written(store):
    done = run_cli("export", "tests.exporters.tiny_models:constant", "--name", "const", "--input-shape", "6",
                   "--store", str(store))  # fmt: skip
    assert_refused(done, "const", store, "output 'output_0' hardly varies")


def test_constant_sample_data_is_refused(tmp_path, store):
    np.save(tmp_path / "flat.npy", np.full((32, 6), 0.5, np.float32))
    done = run_cli("export", "tests.exporters.tiny_models:linear", "--name", "flat", "--input-shape", "6",
                   "--sample-data", str(tmp_path / "flat.npy"), "--store", str(store))  # fmt: skip
    assert_refused(done, "flat", store, "reference input 'input' is constant")


# --- error paths --------------------------------------------------------------------------------


def test_missing_file_is_one_line_naming_model_and_cause(store):
    done = run_cli("export", "/nonexistent/model.keras", "--name", "ghost", "--store", str(store))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == "error: model ghost, format source: Keras model file not found: /nonexistent/model.keras"
    assert "Traceback" not in done.stderr
    assert not (store / "ghost").exists()


def test_pytorch_without_signature_asks_for_input(store):
    done = run_cli("export", "tests.exporters.tiny_models:linear", "--name", "nosig", "--store", str(store))
    assert_refused(done, "nosig", store, "--input NAME:DTYPE:DIMS", "--input-shape")


def test_corrupt_file_and_debug_traceback(tmp_path, store):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"this is not TorchScript")
    done = run_cli("export", str(bad), "--name", "broken", "--input-shape", "6", "--store", str(store))
    assert done.returncode == 2
    assert "error: model broken, format source: not a loadable TorchScript file" in done.stderr
    assert "Traceback" not in done.stderr
    debug = run_cli("export", str(bad), "--name", "broken", "--input-shape", "6", "--store", str(store), "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_unknown_format_or_weights_is_rejected(store):
    done = run_cli("export", "x.keras", "--name", "x", "--formats", "onnx,coreml", "--store", str(store))
    assert done.returncode == 2 and "coreml" in done.stderr
    done = run_cli("export", "x.keras", "--name", "x", "--weights", "pretrained", "--store", str(store))
    assert done.returncode == 2 and "--weights" in done.stderr and "pretrained" in done.stderr


@pytest.fixture(scope="module")
def bessel(tmp_path_factory):
    store = tmp_path_factory.mktemp("bessel") / "store"
    done = run_cli("export", "tests.exporters.tiny_models:bessel", "--name", "bessel", "--input-shape", "6", "--store", str(store))
    return store, done, load_manifest(store / "bessel")


def test_unsupported_operator_fails_its_formats_only(bessel):
    store, done, m = bessel
    assert done.returncode == 1
    assert "bessel/onnx: no onnx artifact: 2 route(s) tried" in done.stderr
    assert "UnsupportedOperatorError: Exporting the operator 'aten::special_bessel_j0'" in done.stderr
    # ONNX and the two formats made from it; ExecuTorch: not in the core ATen opset it lowers
    assert set(m.failed) == {"onnx", "savedmodel", "tflite", "executorch"}
    for fmt, why in m.failed.items():
        assert [f.route for f in why.routes_failed] == [r.name for r in routes(fmt, "pytorch")]
        assert (store / why.log).is_file() and "===== route:" in (store / why.log).read_text()
        assert f"converter log: {store / why.log}" in why.error
    assert m.artifacts["torchserve"].parity.ok  # TorchScript handles it: that format still completes
    assert m.artifacts["aotinductor"].parity.ok  # and so does Inductor's generated code
    assert not (store / "bessel" / "onnx").exists()  # nothing half-written
    assert "FAIL" in done.stdout and no_leftovers(store)
    assert not [ln for ln in done.stderr.splitlines() if ln.startswith(("I0000", "W0000", "E0000", "Traceback"))]


def test_every_failed_route_names_the_operator(bessel):
    _, _, m = bessel
    for why in m.failed.values():
        for f in why.routes_failed:
            assert "bessel_j0" in f.error and "(at found)" not in f.error, f


def test_parity_over_tolerance_fails_with_clear_message(store):
    done = run_cli("export", "tests.exporters.tiny_models:linear", "--name", "strict", "--input-shape", "6",
                   "--tolerance", "0", "--formats", "tflite,onnx", "--store", str(store))  # fmt: skip
    m = load_manifest(store / "strict")
    failed = [f for f, a in m.artifacts.items() if not a.parity.ok]
    assert failed, "some float32 conversion differs from the source by more than 0"
    assert done.returncode == 1
    for f in failed:
        art = m.artifacts[f]
        assert "output output_0: max abs error" in art.parity.error and "exceeds 0 x max(1," in art.parity.error
        assert art.route == routes(f, "pytorch")[-1].name  # every route was tried; the last one is kept
        assert len(art.routes_failed) == len(routes(f, "pytorch")) - 1
        assert f"strict/{f}: output output_0: max abs error" in done.stderr
    for f, why in m.failed.items():  # the last route did not convert: the parity failures are still recorded
        assert any(r.error.startswith("parity failed: output output_0") for r in why.routes_failed), why
