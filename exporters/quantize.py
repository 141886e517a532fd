"""Quantized variants of a model's certified float artifacts, each with its own certificate.

A variant derives from an artifact already in the store that passed parity (TFLite variants from
the SavedModel, ONNX variants from the ONNX file); calibrated variants use the model's held-out
reference batch (reference/inputs.npz) as representative data. Variants, by manifest key:

    tflite:int8-dynamic   TFLiteConverter, Optimize.DEFAULT (weights int8, activations float)
    tflite:int8-static    full-integer int8 (TFLITE_BUILTINS_INT8), calibrated; float32 inputs
                          and outputs, so clients send the same tensors as to the float model
    tflite:fp16           float16 weights
    onnx:int8-dynamic     onnxruntime.quantization.quantize_dynamic (int8 weights)
    onnx:int8-static      quantize_static, QDQ format, per-channel int8 weights, calibrated (MinMax)
    executorch:int8       PT2E XNNPACKQuantizer (int8 activations, per-channel int8 weights),
                          calibrated, lowered to the XNNPACK delegate (PyTorch sources only)

ExecuTorch's quantizer works on the torch program, not on a stored file: executorch:int8 is a
SOURCE_VARIANTS entry, built while the source model is at hand (`python -m exporters examples`
passes it to quantize_model); `python -m exporters quantize` builds the VARIANTS only.

A quantized artifact cannot meet the float tolerance. Its certificate (Parity.quantized) records,
on the reference batch: top-1 agreement with the float source, max abs error, accuracy on the
labels where the model has them, the source's accuracy and the drop. It passes when every
configured threshold holds (Thresholds; `--min-top1`, `--max-accuracy-drop`, `--max-abs-error`).
The evaluation batch is also the calibration batch: the certificate is an optimistic bound, and on
32 samples one disagreement is 3.1 points.

Written as <model>/<format>-<variant>/<version>/ and manifest key "<format>:<variant>"; a variant
that cannot be made (an op without int8 kernels, ...) is recorded in `failed` with the root cause.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from contract.manifest import Artifact, ExportFailure, Manifest, Parity, QuantizedCheck, load_manifest, variant_key
from contract.runtimes import RUNTIMES, RUNTIME_OF_FORMAT
from exporters import store as store_io
from exporters.errors import captured, root_cause
from exporters.pipeline import Row
from exporters.sources import SourceModel
from exporters.targets import Exported, formats_for, target
from exporters.workspace import versions

log = logging.getLogger("exporters")
Inputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class Thresholds:
    """A variant passes when every threshold that is not None holds (defaults: top-1 agreement
    with the float source >= 0.98 and accuracy drop <= 1 point; max abs error not checked)."""

    min_top1_agreement: float | None = 0.98
    max_accuracy_drop: float | None = 0.01
    max_abs_error: float | None = None


@dataclass(frozen=True)
class Variant:
    format: str  # the float format it derives from and is served as
    name: str
    source_format: str  # the certified artifact it is made from
    method: str
    # (source file, or the SourceModel when from_source; dest file; calibration) -> converters, or
    # an Exported when the variant has its own fixed shapes and extras (ExecuTorch's max_shapes)
    build: Callable[[Path | SourceModel, Path, Inputs | None], dict[str, str] | Exported]
    calibrated: bool = False
    from_source: bool = False  # built from the source model, not from the source_format file
    # why it cannot be built from this certified source artifact (known in advance), or None
    blocked: Callable[[Artifact], str | None] | None = None
    # built in a child process: its converter can abort the process (a C++ check, no exception)
    isolated: bool = False

    @property
    def key(self) -> str:
        return variant_key(self.format, self.name)

    @property
    def filename(self) -> str:
        return {"tflite": "model.tflite", "executorch": "model.pte"}.get(self.format, "model.onnx")


def _samples(x: Inputs) -> list[Inputs]:
    n = len(next(iter(x.values())))
    return [{k: v[i : i + 1] for k, v in x.items()} for i in range(n)]


def _tflite(kind: str) -> Callable[[Path, Path, Inputs | None], dict[str, str]]:
    def build(saved_model: Path, dest: Path, calibration: Inputs | None) -> dict[str, str]:
        import tensorflow as tf

        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if kind == "fp16":
            converter.target_spec.supported_types = [tf.float16]
        if kind == "int8-static":
            rows = _samples(calibration or {})
            # keyed by the SavedModel signature's input names (the manifest's: exporters keep them)
            converter.representative_dataset = lambda: iter(rows)
            # every op int8, or the conversion fails naming the op; inputs/outputs stay float32
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        dest.write_bytes(converter.convert())
        return versions("tensorflow", "ai-edge-litert")

    return build


class _Reader:
    """onnxruntime's CalibrationDataReader over the calibration batch, one sample per call."""

    def __init__(self, x: Inputs) -> None:
        self.rows = iter(_samples(x))

    def get_next(self) -> Inputs | None:
        return next(self.rows, None)


def _onnx_dynamic(src: Path, dest: Path, calibration: Inputs | None) -> dict[str, str]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dest), weight_type=QuantType.QInt8)
    return versions("onnxruntime", "onnx")


def _onnx_static(src: Path, dest: Path, calibration: Inputs | None) -> dict[str, str]:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # onnxruntime's recommended pre-processing (shape inference, graph optimisation); symbolic
    # shape inference is skipped: it fails on the transformers' dynamic sequence ("Incomplete
    # symbolic shape inference") and the plain ONNX one is enough for QDQ placement.
    pre = dest.with_name("preprocessed.onnx")
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    # Per-channel weights (one scale per output channel instead of per tensor), as TFLite's
    # full-integer quantizer does for convolutions and ExecuTorch's XNNPACK one does here. Per
    # tensor, digits-cnn-keras trained on an AMD EPYC (AVX-512) flipped 1 of its 32 reference
    # samples (max abs error 0.31, certificate failed); per channel, none (0.22); no example was
    # worse (2026-12-07).
    quantize_static(str(pre), str(dest), _Reader(calibration or {}), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True)  # fmt: skip
    pre.unlink()
    return versions("onnxruntime", "onnx")


def _executorch_int8(source: SourceModel, dest: Path, calibration: Inputs | None) -> Exported:
    from exporters.targets import executorch
    from exporters.workspace import Workspace

    with tempfile.TemporaryDirectory(prefix=f"quantize-{source.name}-") as tmp:
        # log None: the caller captures the converter output into the variant's log
        return executorch.export_int8(Workspace(source, Path(tmp)), dest.parent, calibration)


VARIANTS: dict[str, Variant] = {
    v.key: v
    for v in (
        Variant("tflite", "int8-dynamic", "savedmodel", "TFLite dynamic-range int8 (Optimize.DEFAULT)", _tflite("int8-dynamic")),
        Variant("tflite", "int8-static", "savedmodel", "TFLite full-integer int8 (TFLITE_BUILTINS_INT8, float32 I/O), "
                "calibrated on the reference batch", _tflite("int8-static"), calibrated=True, isolated=True),
        Variant("tflite", "fp16", "savedmodel", "TFLite float16 weights", _tflite("fp16")),
        Variant("onnx", "int8-dynamic", "onnx", "onnxruntime.quantization.quantize_dynamic (int8 weights)", _onnx_dynamic),
        Variant("onnx", "int8-static", "onnx", "onnxruntime.quantization.quantize_static (QDQ, int8, per-channel weights, MinMax), "
                "calibrated on the reference batch", _onnx_static, calibrated=True),
    )
}  # fmt: skip
SOURCE_VARIANTS: dict[str, Variant] = {
    v.key: v
    for v in (
        Variant("executorch", "int8", "executorch", "ExecuTorch int8 (PT2E XNNPACKQuantizer, per-channel weights, XNNPACK "
                "delegate), calibrated on the reference batch", _executorch_int8, calibrated=True, from_source=True,
                blocked=lambda float_artifact: target("executorch").int8_blocked(float_artifact)),
    )
}  # fmt: skip


ISOLATED_TIMEOUT_S = 900


class ConverterDied(Exception):
    """An isolated build's child process ended without an answer (killed by a signal, aborted)."""


def _build_in_child(manifest: Manifest, store: Path, key: str, origin: Path, dest: Path,
                    calibration: Inputs | None, thresholds: Thresholds, answer: Path) -> None:
    """The child's body: build one variant, then run its certificate; each step's result is in
    `answer` (JSON) before the next starts, so the parent knows which one died."""
    variant = VARIANTS[key]
    try:
        converters = variant.build(origin, dest, calibration)
    except Exception as e:  # noqa: BLE001 - handed to the parent as this variant's failure
        answer.write_text(json.dumps({"error": root_cause(e)}))
        return
    answer.write_text(json.dumps({"converters": converters}))
    parity = certify(manifest, store, variant, dest, thresholds)
    answer.write_text(json.dumps({"converters": converters, "parity": parity.model_dump(mode="json")}))


def _isolated(manifest: Manifest, store: Path, variant: Variant, origin: Path, dest: Path,
              calibration: Inputs | None, thresholds: Thresholds,
              body: Callable[..., None] = _build_in_child) -> tuple[dict[str, str], Parity]:
    """Build and certify in a spawned child: TFLite aborts the whole process on some int8 models
    (a Hugging Face RoBERTa from config: LiteRT dies running the full-integer model, SIGABRT,
    no Python exception), which would take the other variants and the manifest with it.
    (converters, certificate); raises ConverterDied if the build or the certificate's run did not
    answer, so a model that kills its runtime is a failed variant and never reaches the store."""
    import multiprocessing
    import signal

    answer = dest.parent / ".build-answer.json"
    child = multiprocessing.get_context("spawn").Process(
        target=body, args=(manifest, store, variant.key, origin, dest, calibration, thresholds, answer),
        daemon=True)  # fmt: skip
    child.start()
    child.join(ISOLATED_TIMEOUT_S)
    timed_out = child.is_alive()
    if timed_out:
        child.kill()
        child.join()
    code = child.exitcode
    how = (f"killed after the {ISOLATED_TIMEOUT_S} s bound" if timed_out else
           f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}")
    doc = json.loads(answer.read_text()) if answer.is_file() else {}
    answer.unlink(missing_ok=True)
    if "error" in doc:
        raise ConverterDied(doc["error"])
    if "converters" not in doc:
        raise ConverterDied(f"the converter process died ({how}) without a Python error")
    if "parity" not in doc:  # built, then its runtime died running it: never stored, never served
        label = RUNTIMES[RUNTIME_OF_FORMAT[variant.format]].label
        raise ConverterDied(f"{label} died running the {variant.key} model on the reference batch ({how}); "
                            f"not stored: its server would die loading or warming it up")
    return doc["converters"], Parity.model_validate(doc["parity"])


def certify(manifest: Manifest, store: Path, variant: Variant, path: Path, thresholds: Thresholds) -> Parity:
    """Run the variant in its runtime on the reference batch (whole, and each sample alone) and
    measure it against the float source's outputs (max abs error over both; top-1 agreement and
    accuracy of the whole batch) and the labels."""
    x, expected, labels = manifest.load_reference(store)
    n = len(next(iter(x.values())))
    base = {"runtime": RUNTIMES[RUNTIME_OF_FORMAT[variant.format]].parity_runner, "tolerance": None,
            "batch_sizes": sorted({1, n}), "inputs": f"the reference batch ({n} samples), whole and one by one"}  # fmt: skip
    check = QuantizedCheck(method=variant.method, samples=n, min_top1_agreement=thresholds.min_top1_agreement,
                           max_accuracy_drop=thresholds.max_accuracy_drop, max_abs_error=thresholds.max_abs_error)  # fmt: skip
    try:
        run = target(variant.format).runner(path, manifest.signature)
        got = run(x)
        # and one sample at a time: dynamic quantization scales activations per batch, so an
        # answer depends on the batch it came in (the server's adaptive batching decides)
        alone = [run({k: v[i : i + 1] for k, v in x.items()}) for i in range(n)]
        one = {s.name: np.concatenate([a[s.name] for a in alone]) for s in manifest.signature.outputs}
    except Exception as e:  # noqa: BLE001 - a runtime refusing the artifact fails its certificate
        return Parity(ok=False, error=root_cause(e), quantized=check, **base)
    from contract.manifest import OutputParity

    outputs: dict[str, OutputParity] = {}
    for spec in manifest.signature.outputs:
        want, have = expected[spec.name].astype(np.float64), np.asarray(got[spec.name], np.float64)
        if have.shape != want.shape:
            return Parity(ok=False, error=f"output {spec.name!r} has shape {list(have.shape)}, the source gives "
                          f"{list(want.shape)}", quantized=check, **base)  # fmt: skip
        single = np.asarray(one[spec.name], np.float64)
        both = np.concatenate([have, single])
        err = float(np.max(np.abs(both - np.concatenate([want, want])))) if np.isfinite(both).all() else float("inf")
        top1 = None
        if want.ndim == 2 and want.shape[1] > 1:
            top1 = float((have.argmax(1) == want.argmax(1)).mean())
        outputs[spec.name] = OutputParity(max_abs_error=err, top1_agreement=top1)
    worst = max(o.max_abs_error for o in outputs.values())
    cls = next((n for n, o in outputs.items() if o.top1_agreement is not None), None)
    top1 = outputs[cls].top1_agreement if cls else None
    if labels is not None and cls is not None:
        check.accuracy = float((np.asarray(got[cls]).argmax(1) == labels).mean())
        check.source_accuracy = float((expected[cls].argmax(1) == labels).mean())
        check.accuracy_drop = check.source_accuracy - check.accuracy
    problems = _judge(thresholds, top1, check.accuracy_drop, worst, labels is not None)
    return Parity(ok=not problems, max_abs_error=worst, top1_agreement=top1, outputs=outputs,
                  error="; ".join(problems) or None, quantized=check, **base)  # fmt: skip


def _judge(t: Thresholds, top1: float | None, drop: float | None, worst: float, labelled: bool) -> list[str]:
    """Every threshold that fails, named with its measured value; a threshold that cannot be
    measured fails too (a certificate that checked nothing would pass anything)."""
    problems = []
    if t.min_top1_agreement is not None:
        if top1 is None:
            problems.append("top-1 agreement cannot be measured (no [batch, classes] output): "
                            "set --min-top1 none and a --max-abs-error instead")  # fmt: skip
        elif top1 < t.min_top1_agreement:
            problems.append(f"top-1 agreement with the float source {top1:.3f} is below the minimum {t.min_top1_agreement:g}")
    if t.max_accuracy_drop is not None and labelled and top1 is not None and drop is not None and drop > t.max_accuracy_drop + 1e-12:
        problems.append(f"accuracy drop {drop * 100:.1f} points exceeds the maximum {t.max_accuracy_drop * 100:g} points")
    if t.max_abs_error is not None and not worst <= t.max_abs_error:
        problems.append(f"max abs error {worst:.3g} exceeds the maximum {t.max_abs_error:g}")
    if all(v is None for v in (t.min_top1_agreement, t.max_accuracy_drop, t.max_abs_error)):
        problems.append("no threshold configured: the certificate would prove nothing")
    return problems


def quantize_model(store: Path, name: str, keys: tuple[str, ...] = tuple(VARIANTS), thresholds: Thresholds = Thresholds(),
                   calibration: Inputs | None = None, version: int = 1,
                   source: SourceModel | None = None) -> tuple[Manifest, list[Row]]:  # fmt: skip
    """Build, certify and record the variants `keys` of one model of the store. `calibration`
    replaces the reference batch as representative data (tests break it on purpose). `source`:
    the model's SourceModel, needed by SOURCE_VARIANTS. A variant of a format the source's
    framework has no route to (Keras -> ExecuTorch) is skipped, as its float format is."""
    store = Path(store)
    model_dir = store / name
    manifest = load_manifest(model_dir)
    reference, _, _ = manifest.load_reference(store)
    rows = []
    for key in keys:
        variant = VARIANTS.get(key) or SOURCE_VARIANTS[key]
        if not formats_for(manifest.source.framework, (variant.format,)):
            continue
        if variant.from_source and source is None:
            raise ValueError(f"{key} is built from the source model while it is exported (python -m exporters "
                             "examples), not from the store")  # fmt: skip
        manifest.artifacts.pop(key, None)
        manifest.failed.pop(key, None)
        rows.append(_one(manifest, store, variant, thresholds, calibration if calibration is not None else reference,
                         version, source))  # fmt: skip
    tmp = model_dir / f".manifest-{os.getpid()}.json"
    tmp.write_text(manifest.model_dump_json(indent=2) + "\n")
    tmp.replace(model_dir / "manifest.json")  # readers never see half a manifest
    return manifest, rows


def _one(manifest: Manifest, store: Path, variant: Variant, thresholds: Thresholds, calibration: Inputs,
         version: int, source: SourceModel | None = None) -> Row:  # fmt: skip
    name, key = manifest.name, variant.key
    model_dir = store / name
    log_path = model_dir / "logs" / f"{variant.format}-{variant.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if not manifest.passed(variant.source_format):
        message = f"no {key}: the model has no {variant.source_format} artifact that passed parity to quantize"
        manifest.failed[key] = ExportFailure(error=message)
        log.error("[%s] %s", name, message)
        return Row(name, key, False, message=message)
    if variant.blocked is not None and (why := variant.blocked(manifest.artifacts[variant.source_format])):
        manifest.failed[key] = ExportFailure(error=f"no {key}: {why}")
        log.error("[%s] %s", name, manifest.failed[key].error)
        return Row(name, key, False, message=manifest.failed[key].error)
    staging = model_dir / f".staging-{variant.format}-{variant.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / str(version)).mkdir(parents=True)
    path = staging / str(version) / variant.filename
    log.info("[%s] %s: %s", name, key, variant.method)
    try:
        start = time.perf_counter()
        try:
            with captured(log_path):  # converters print a lot (MLIR, XNNPACK, onnxruntime warnings)
                origin = source if variant.from_source else manifest.artifact_path(store, variant.source_format)
                calib = calibration if variant.calibrated else None
                if variant.isolated:
                    built, cert = _isolated(manifest, store, variant, origin, path, calib, thresholds)
                else:
                    built, cert = variant.build(origin, path, calib), None
        except Exception as e:  # noqa: BLE001 - any converter failure is this variant's failure
            cause = str(e) if isinstance(e, ConverterDied) else root_cause(e)
            message = f"no {key}: {variant.method} failed: {cause}; converter log: {log_path}"
            manifest.failed[key] = ExportFailure(error=message, log=str(log_path.relative_to(store)))
            log.error("[%s] %s", name, message)
            return Row(name, key, False, message=message, seconds=time.perf_counter() - start)
        seconds = time.perf_counter() - start
        if cert is None:
            with captured(log_path):
                cert = certify(manifest, store, variant, path, thresholds)
        final = model_dir / f"{variant.format}-{variant.name}"
        store_io.replace_dir(staging, final)
        path = final / str(version) / variant.filename
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    made_from = f"the {manifest.source.framework} source model" if variant.from_source else \
        manifest.artifacts[variant.source_format].path
    exported = built if isinstance(built, Exported) else Exported(variant.filename, built)
    fixed = manifest.artifacts[variant.format].fixed_shapes if variant.format in manifest.artifacts else None
    art = manifest.artifacts[key] = Artifact(
        format=variant.format, variant=variant.name, version=version, path=str(path.relative_to(model_dir)),
        bytes=store_io.size(path), sha256=store_io.sha256(path), route=f"{variant.method}, from {made_from}",
        converters=exported.converters, export_seconds=round(seconds, 3), parity=cert,
        fixed_shapes=exported.fixed_shapes or fixed, extra=exported.extra,
    )  # fmt: skip
    q = cert.quantized
    acc = f", accuracy {q.accuracy:.3f} (float {q.source_accuracy:.3f})" if q and q.accuracy is not None else ""
    top1 = f"{cert.top1_agreement:.3f}" if cert.top1_agreement is not None else "-"
    log.info("[%s] %s: %.1f s, %d bytes, top-1 agreement %s, max abs error %s%s, %s", name, key, seconds, art.bytes,
             top1, f"{cert.max_abs_error:.3g}" if cert.max_abs_error is not None else "-", acc,
             "certificate ok" if cert.ok else f"CERTIFICATE FAILED: {cert.error}")  # fmt: skip
    return Row(name, key, cert.ok, cert.max_abs_error, art.bytes, seconds, cert.error or "", art.route)
