"""Parity certificate: run an artifact in its target runtime on the fixed held-out batch, at batch
sizes 1 and 32, and compare every output with the source framework's."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exporters.sources import SourceModel
from exporters.targets import target
from model_store.manifest import RUNTIME_OF_FORMAT, Parity

DEFAULT_TOLERANCE = 1e-4
BATCH_SIZES = (1, 32)

RUNTIME_LABEL = {
    "onnx": "onnxruntime",
    "tflite": "ai-edge-litert Interpreter",
    "savedmodel": "tf.saved_model.load (serving_default)",
    "torchserve": "services/torchserve/handler.py in-process (TorchServe's handler code)",
}


def check(source: SourceModel, fmt: str, artifact: Path, tolerance: float = DEFAULT_TOLERANCE) -> Parity:
    base = {"runtime": RUNTIME_LABEL.get(fmt, RUNTIME_OF_FORMAT[fmt]), "tolerance": tolerance}
    x = source.reference_inputs
    sizes = [b for b in BATCH_SIZES if b <= len(x)]
    worst, agree, total = 0.0, 0, 0
    try:
        run = target(fmt).runner(artifact)
        for b in sizes:
            expected = source.predict(x[:b])
            got = run(x[:b])
            for spec, want in zip(source.signature.outputs, expected):
                if spec.name not in got:
                    raise ValueError(f"output {spec.name!r} missing; artifact returns {sorted(got)}")
                have = np.asarray(got[spec.name])
                if have.shape != want.shape or have.dtype != want.dtype:
                    raise ValueError(
                        f"output {spec.name!r} at batch {b} is {have.dtype}{list(have.shape)}, "
                        f"source gives {want.dtype}{list(want.shape)}"
                    )
                diff = np.abs(have.astype(np.float64) - want)
                # NaN anywhere (e.g. a weightless TFLite file) is a failure, not an error of 0.
                worst = max(worst, float(np.max(diff)) if np.isfinite(diff).all() else float("inf"))
            if want.ndim == 2:  # top-1 agreement on the first output's classes
                agree += int((np.asarray(got[source.signature.outputs[0].name]).argmax(1) == expected[0].argmax(1)).sum())
                total += b
    except Exception as e:  # noqa: BLE001 - a runtime refusing the artifact is a parity failure
        return Parity(ok=False, batch_sizes=sizes, error=f"{type(e).__name__}: {e}", **base)
    top1 = agree / total if total else None
    ok = worst <= tolerance
    error = None if ok else f"max abs error {worst:.3g} exceeds tolerance {tolerance:g}"
    return Parity(ok=ok, batch_sizes=sizes, max_abs_error=worst, top1_agreement=top1, error=error, **base)
