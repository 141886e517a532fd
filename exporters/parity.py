"""Parity certificate: run an artifact in its target runtime on the fixed held-out batch at batch
sizes 1 and 32 and, when the model has dynamic non-batch dimensions, at a second, shorter size of
them; compare every output with the source framework's. The certificate records the max abs error
per output and top-1 agreement where an output is a classification ([batch, classes]).

An output passes when its max abs error is within tolerance x max(1, its largest |value|): float32
rounding grows with the magnitude (random-init deep nets give logits in the hundreds), so 1e-4 is
absolute for outputs of order 1 and relative beyond."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contract.manifest import OutputParity, Parity
from contract.runtimes import RUNTIMES, RUNTIME_OF_FORMAT
from exporters import inputs as ref_inputs
from exporters.sources import SourceModel
from exporters.targets import target

DEFAULT_TOLERANCE = 1e-4
BATCH_SIZES = (1, 32)
SECOND_SIZE = 7  # a dynamic dimension is also checked at this size (the reference uses 16)


def cases(source: SourceModel) -> list[tuple[str, dict[str, np.ndarray]]]:
    x = source.reference_inputs
    out = [(f"batch {b}", {k: v[:b] for k, v in x.items()}) for b in BATCH_SIZES if b <= source.batch]
    cropped = ref_inputs.crop(x, source.signature.inputs, SECOND_SIZE)
    if cropped is not None:
        out.append((f"batch {source.batch}, dynamic dims at {SECOND_SIZE}", cropped))
    return out


def source_outputs(source: SourceModel, case: str, x: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The source's outputs on one case (named as in cases()), run once per source: a source is
    deterministic on a fixed batch, and re-running it for each format cost up to ~5 s per format
    (Keras MobileNetV2 at batch 32, eager, one thread)."""
    if case not in source.case_outputs:
        source.case_outputs[case] = source.predict(x)
    return source.case_outputs[case]


def reference_outputs(source: SourceModel) -> list[np.ndarray]:
    """The source's outputs on the whole reference batch: the case "batch <n>" of cases()."""
    return source_outputs(source, f"batch {source.batch}", source.reference_inputs)


def runner_label(fmt: str) -> str:
    """What runs the artifact: the registry's word, else (a format exported before its runtime is
    registered) the target module's RUNNER_LABEL."""
    name = RUNTIME_OF_FORMAT.get(fmt)
    return RUNTIMES[name].parity_runner if name else target(fmt).RUNNER_LABEL


def check(source: SourceModel, fmt: str, artifact: Path, tolerance: float = DEFAULT_TOLERANCE) -> Parity:
    label = runner_label(fmt)
    todo = cases(source)
    base = {"runtime": label, "tolerance": tolerance, "batch_sizes": [b for b in BATCH_SIZES if b <= source.batch],
            "inputs": f"{source.inputs_note}; checked at: " + ", ".join(n for n, _ in todo)}  # fmt: skip
    worst: dict[str, float] = {s.name: 0.0 for s in source.signature.outputs}
    where: dict[str, str] = {}
    scale: dict[str, float] = {s.name: 1.0 for s in source.signature.outputs}
    agree: dict[str, list[int]] = {}
    try:
        run = target(fmt).runner(artifact, source.signature)
        for what, x in todo:
            expected = source_outputs(source, what, x)
            got = run(x)
            for spec, want in zip(source.signature.outputs, expected):
                if spec.name not in got:
                    raise ValueError(f"output {spec.name!r} missing; the artifact returns {sorted(got)}")
                have = np.asarray(got[spec.name])
                if have.shape != want.shape or have.dtype != want.dtype:
                    raise ValueError(f"output {spec.name!r} at {what} is {have.dtype}{list(have.shape)}, "
                                     f"the source gives {want.dtype}{list(want.shape)}")  # fmt: skip
                diff = np.abs(have.astype(np.float64) - want.astype(np.float64))
                # NaN anywhere (e.g. a weightless TFLite file) is a failure, not an error of 0.
                err = float(np.max(diff)) if diff.size and np.isfinite(diff).all() else (0.0 if not diff.size else float("inf"))
                if want.size and want.dtype.kind == "f":
                    scale[spec.name] = max(scale[spec.name], float(np.nanmax(np.abs(want))))
                if err > worst[spec.name]:
                    worst[spec.name], where[spec.name] = err, what
                if want.ndim == 2 and want.shape[1] > 1 and want.dtype.kind == "f":
                    a = agree.setdefault(spec.name, [0, 0])
                    a[0] += int((have.argmax(1) == want.argmax(1)).sum())
                    a[1] += len(want)
    except Exception as e:  # noqa: BLE001 - a runtime refusing the artifact is a parity failure
        from exporters.errors import root_cause

        return Parity(ok=False, error=root_cause(e), **base)
    outputs = {n: OutputParity(max_abs_error=w, scale=scale[n],
                               top1_agreement=(agree[n][0] / agree[n][1]) if n in agree else None)
               for n, w in worst.items()}  # fmt: skip
    overall = max(worst.values())
    top1 = next((o.top1_agreement for o in outputs.values() if o.top1_agreement is not None), None)
    over = {n: w for n, w in worst.items() if w > tolerance * scale[n]}
    ok = not over
    error = None if ok else "; ".join(f"output {n}: max abs error {w:.3g} at {where[n]} exceeds {tolerance:g} x "
                                      f"max(1, |output| = {scale[n]:.3g})" for n, w in over.items())  # fmt: skip
    return Parity(ok=ok, max_abs_error=overall, top1_agreement=top1, outputs=outputs, error=error, **base)
