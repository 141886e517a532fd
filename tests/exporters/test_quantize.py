"""Quantized variants and their certificates, built from copies of the example store's smallest
models (digits-mlp-*, digits-cnn-*): each variant derives from a certified float artifact."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from contract.manifest import load_manifest
from exporters.quantize import SOURCE_VARIANTS, VARIANTS, Thresholds, quantize_model
from exporters.targets import target
from tests.conftest import REPO, python_env

CALIBRATED = ("tflite:int8-static", "onnx:int8-static")
BROKEN_CALIBRATIONS = ["scaled by 1000", "constant"]


def broken_calibration(x: dict[str, np.ndarray], broken: str) -> dict[str, np.ndarray]:
    """The reference batch made useless as representative data: ranges 1000x too wide, or one value."""
    return {k: v * 1000 if broken == "scaled by 1000" else np.full_like(v, 0.5) for k, v in x.items()}


def assert_top1_failed(manifest, rows) -> None:
    """Every row's certificate failed on top-1 agreement, and says so with the measured value."""
    assert rows
    for row in rows:
        art = manifest.artifacts[row.format]
        assert not row.ok and not art.parity.ok, (row.format, art.parity)
        assert "top-1 agreement with the float source" in art.parity.error, art.parity.error
        assert "below the minimum 0.98" in art.parity.error
        assert art.parity.top1_agreement < 0.98


def copy_models(real_store: Path, dest: Path, *names: str) -> Path:
    for name in names:
        shutil.copytree(real_store / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def quantized(real_store, tmp_path_factory) -> tuple[Path, dict]:
    """Every variant of digits-mlp-torch and digits-cnn-keras, default thresholds."""
    store = copy_models(real_store, tmp_path_factory.mktemp("qstore"), "digits-mlp-torch", "digits-cnn-keras")
    rows = {}
    for name in ("digits-mlp-torch", "digits-cnn-keras"):
        rows[name] = {r.format: r for r in quantize_model(store, name)[1]}
    return store, rows


@pytest.mark.parametrize("model", ["digits-mlp-torch", "digits-cnn-keras"])
def test_every_variant_is_certified_with_measured_quality(quantized, model) -> None:
    store, rows = quantized
    m = load_manifest(store / model)  # what the servers and the gateway will read
    x, ref, labels = m.load_reference(store)
    out = m.signature.outputs[0].name
    for key, variant in VARIANTS.items():
        art = m.artifacts[key]
        assert rows[model][key].ok, (key, art.parity.error)
        assert art.format == variant.format and art.variant == variant.name
        assert art.path == f"{variant.format}-{variant.name}/1/{variant.filename}"
        path = store / model / art.path
        assert path.is_file() and art.bytes == path.stat().st_size
        # smaller than the float artifact: fp16 halves the weights, int8 quarters them
        assert art.bytes < m.artifacts[variant.format].bytes * (0.7 if variant.name == "fp16" else 0.45), key
        # the certificate's figures are those of the artifact, recomputed here in its runtime
        run = target(variant.format).runner(path, m.signature)
        got = run(x)[out]
        alone = np.concatenate([run({k: v[i : i + 1] for k, v in x.items()})[out] for i in range(len(got))])
        q, p = art.parity.quantized, art.parity
        assert q is not None and q.samples == len(labels)
        assert p.tolerance is None and p.ok and p.error is None
        assert p.top1_agreement == pytest.approx(float((got.argmax(1) == ref[out].argmax(1)).mean()))
        assert p.top1_agreement >= 0.98
        worst = max(np.abs(got.astype(np.float64) - ref[out]).max(), np.abs(alone.astype(np.float64) - ref[out]).max())
        assert p.max_abs_error == pytest.approx(float(worst), rel=1e-6)
        assert 0 < p.max_abs_error < 5  # quantized: not the float numbers, yet close
        assert q.accuracy == pytest.approx(float((got.argmax(1) == labels).mean()))
        assert q.source_accuracy == pytest.approx(float((ref[out].argmax(1) == labels).mean()))
        assert q.accuracy_drop == pytest.approx(q.source_accuracy - q.accuracy)
        assert (q.min_top1_agreement, q.max_accuracy_drop, q.max_abs_error) == (0.98, 0.01, None)
    assert m.passed("onnx") and m.passed("tflite")  # the float artifacts are untouched


@pytest.mark.parametrize("broken", BROKEN_CALIBRATIONS)
def test_a_broken_calibration_fails_its_certificate_naming_the_metric(real_store, tmp_path, broken) -> None:
    store = copy_models(real_store, tmp_path, "digits-cnn-torch")
    x, _, _ = load_manifest(store / "digits-cnn-torch").load_reference(store)
    m, rows = quantize_model(store, "digits-cnn-torch", CALIBRATED, calibration=broken_calibration(x, broken))
    assert_top1_failed(m, rows)
    # recorded on disk, so the gateway will not route it
    assert not load_manifest(store / "digits-cnn-torch").artifacts["onnx:int8-static"].parity.ok


def test_thresholds_are_configurable_and_a_certificate_must_check_something(real_store, tmp_path) -> None:
    store = copy_models(real_store, tmp_path, "digits-mlp-keras")
    key = ("onnx:int8-dynamic",)
    m, _ = quantize_model(store, "digits-mlp-keras", key, Thresholds(None, None, 1e-6))
    p = m.artifacts[key[0]].parity
    assert not p.ok and f"max abs error {p.max_abs_error:.3g} exceeds the maximum 1e-06" in p.error
    m, _ = quantize_model(store, "digits-mlp-keras", key, Thresholds(None, None, 10.0))
    assert m.artifacts[key[0]].parity.ok
    m, _ = quantize_model(store, "digits-mlp-keras", key, Thresholds(None, None, None))
    assert "no threshold configured" in m.artifacts[key[0]].parity.error


def test_a_variant_without_a_certified_source_is_recorded_as_failed(real_store, tmp_path) -> None:
    store = copy_models(real_store, tmp_path, "digits-mlp-torch")
    m = load_manifest(store / "digits-mlp-torch")
    m.artifacts["onnx"].parity.ok = False
    m.save(store / "digits-mlp-torch")
    m, rows = quantize_model(store, "digits-mlp-torch", ("onnx:int8-dynamic",))
    assert not rows[0].ok and "onnx:int8-dynamic" not in m.artifacts
    assert "no onnx artifact that passed parity" in m.failed["onnx:int8-dynamic"].error
    assert m.variants("onnx")["int8-dynamic"] is None  # listed, not routable (other variants stay as they were)


def test_a_source_variant_needs_the_source_and_a_keras_model_has_none(real_store, tmp_path) -> None:
    """executorch:int8 is quantized from the torch program: from the store alone it is refused
    (and the stored one kept); a Keras model has no ExecuTorch route, so no entry, not a failure."""
    (key,) = SOURCE_VARIANTS
    store = copy_models(real_store, tmp_path, "digits-mlp-torch", "digits-mlp-keras")
    before = (store / "digits-mlp-torch" / "manifest.json").read_text()
    with pytest.raises(ValueError, match=rf"{key} is built from the source model while it is exported \(python -m exporters examples\)"):
        quantize_model(store, "digits-mlp-torch", (key,))
    assert (store / "digits-mlp-torch" / "manifest.json").read_text() == before
    m, rows = quantize_model(store, "digits-mlp-keras", (key, "onnx:int8-dynamic"), source=object())
    assert [r.format for r in rows] == ["onnx:int8-dynamic"]
    assert key not in m.artifacts and key not in m.failed


def test_executorch_int8_is_not_attempted_where_xnnpack_refused_the_float_program(real_store, tmp_path) -> None:
    """The transformer's float .pte runs on the portable kernels (XNNPACK refused its reshapes);
    the int8 route lowers to XNNPACK and failed the same way after ~5 minutes: it is listed with
    that root cause at once, not rebuilt (the source is never touched: object() stands in)."""
    (key,) = SOURCE_VARIANTS
    store = copy_models(real_store, tmp_path, "digits-transformer-torch")
    m, rows = quantize_model(store, "digits-transformer-torch", (key,), source=object())
    assert not rows[0].ok and key not in m.artifacts
    error = m.failed[key].error
    assert error.startswith(f"no {key}: not attempted: the float program could not use the XNNPACK delegate"), error
    assert "XNNPACK reshape only supports 1 dynamic dimension" in error and "this int8 route lowers to XNNPACK" in error


def test_cli_quantize_refuses_unknown_variants_and_bad_thresholds(real_store, tmp_path) -> None:
    store = copy_models(real_store, tmp_path, "digits-mlp-torch")
    cmd = [sys.executable, "-m", "exporters", "quantize", "digits-mlp-torch", "--store", str(store)]
    r = subprocess.run([*cmd, "--variants", "onnx:int4"], cwd=REPO, env=python_env(), capture_output=True, text=True)
    assert r.returncode == 2 and "unknown variant(s) ['onnx:int4']" in r.stderr and "tflite:int8-static" in r.stderr
    r = subprocess.run([*cmd, "--variants", "executorch:int8"], cwd=REPO, env=python_env(), capture_output=True, text=True)
    assert r.returncode == 2 and "['executorch:int8'] are built from the source model" in r.stderr
    assert "(python -m exporters examples), not from the store" in r.stderr
    r = subprocess.run([*cmd, "--min-top1", "high"], cwd=REPO, env=python_env(), capture_output=True, text=True)
    assert r.returncode == 2 and "--min-top1 takes a number or 'none'" in r.stderr
    # an unreachable threshold: the variant is built, its certificate fails, exit 1 with the reason
    r = subprocess.run([*cmd, "--variants", "onnx:int8-dynamic", "--min-top1", "1.01"], cwd=REPO, env=python_env(),
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert "below the minimum 1.01" in r.stderr
    assert not load_manifest(store / "digits-mlp-torch").artifacts["onnx:int8-dynamic"].parity.ok


def test_examples_exit_code_counts_float_artifacts_but_quantize_counts_variants(tmp_path, capsys) -> None:
    """`make export` (examples) is not failed by a variant that failed its certificate (listed,
    not served); `python -m exporters quantize`, asked for variants, is."""
    import typer

    from exporters.cli import _finish
    from exporters.pipeline import Row

    rows = [Row("m", "onnx", True), Row("m", "tflite:int8-static", False, message="top-1 agreement 0.2 is below the minimum 0.98")]
    _finish(rows, tmp_path, variants_fail=False)
    assert "1 quantized variant(s) not certified, not served: m/tflite:int8-static: top-1" in capsys.readouterr().err
    with pytest.raises(typer.Exit) as e:
        _finish(rows, tmp_path)
    assert e.value.exit_code == 1
    with pytest.raises(typer.Exit):  # a float artifact's failure still fails examples
        _finish([*rows, Row("m", "tflite", False, message="parity")], tmp_path, variants_fail=False)


# Bodies for the isolated build's child (module level: the spawned child imports them from here).
def _child_aborts_running_the_model(manifest, store, key, origin, dest, calibration, thresholds, answer):
    answer.write_text(json.dumps({"converters": {"tensorflow": "x"}}))  # built: then the runtime dies
    os.abort()


def _child_aborts_converting(*args):
    os.abort()


def _child_raises(manifest, store, key, origin, dest, calibration, thresholds, answer):
    answer.write_text(json.dumps({"error": "ValueError: Quantization not yet supported for op: 'CUMSUM'"}))


def test_a_converter_or_runtime_that_aborts_the_process_fails_only_its_variant(real_store, tmp_path) -> None:
    """TFLite's full-integer int8 variant is built and certified in a child process: LiteRT aborted
    (SIGABRT, no Python exception) running a Hugging Face RoBERTa's int8 model, which used to take the
    whole `exporters quantize` with it."""
    from exporters.quantize import VARIANTS, ConverterDied, Thresholds, _isolated

    variant = VARIANTS["tflite:int8-static"]
    assert variant.isolated and not VARIANTS["tflite:int8-dynamic"].isolated
    manifest = load_manifest(real_store / "digits-cnn-keras")
    dest = tmp_path / "1" / "model.tflite"
    dest.parent.mkdir(parents=True)
    run = lambda body: _isolated(manifest, real_store, variant, tmp_path, dest, None, Thresholds(), body)  # noqa: E731
    with pytest.raises(ConverterDied) as died:  # a model that kills its runtime is never stored
        run(_child_aborts_running_the_model)
    assert str(died.value).startswith("TFLite (LiteRT) died running the tflite:int8-static model on the "
                                      "reference batch (killed by SIGABRT); not stored")
    with pytest.raises(ConverterDied, match=r"the converter process died \(killed by SIGABRT\) without a Python error"):
        run(_child_aborts_converting)
    with pytest.raises(ConverterDied, match="^ValueError: Quantization not yet supported for op: 'CUMSUM'$"):
        run(_child_raises)
    assert not (tmp_path / "1" / ".build-answer.json").exists()
