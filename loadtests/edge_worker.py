"""The in-process half of the edge measurement (loadtests/edge.py): one runtime family's artifacts,
measured one after another in this process, with the serving adapter's own load code.

    python -m loadtests.edge_worker JOB.json OUT.json    (edge.py writes the job, reads OUT)

One process per family keeps TensorFlow/torch imports out of each other's RSS. The baseline RSS is
taken after the family's imports; then a primer (the first artifact of the job, loaded once more,
run, and kept) pays the runtime's and this process's one-time set-up (thread pools, allocators,
kernel registries, the timing loop's own objects), so it is not charged to whichever artifact
happens to come first. Every measured artifact stays loaded
until the end: nothing is freed, so no load reuses another's freed pages and each RSS growth is
what that artifact added.
"""

from __future__ import annotations

import gc
import importlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import psutil

from contract.manifest import Manifest, load_manifest
from services.settings import StackSettings

# The serving adapter of each family: its load() is the code under test, no second copy.
ADAPTERS = {
    "onnxruntime": "services.onnxruntime.runtime:OnnxModel",
    "tflite": "services.tflite.runtime:TFLiteModel",
    "executorch": "services.executorch.runtime:ExecuTorchModel",
}
# Imported before the baseline RSS: what the adapter imports only on load (ExecuTorch's bindings
# and torch, for the tensors it passes) is the process's, not the first artifact's.
PRE_IMPORTS = {"executorch": ("torch", "executorch.runtime")}


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def adapter(family: str):
    module, _, cls = ADAPTERS[family].partition(":")
    for name in PRE_IMPORTS.get(family, ()):
        importlib.import_module(name)
    return getattr(importlib.import_module(module), cls)


def full_length_samples(manifest: Manifest, store: Path) -> tuple[list[dict], np.ndarray | None, np.ndarray | None]:
    """(batch-1 samples of the reference batch, every input at its full length; labels; the source
    model's predicted class per sample), the samples in reference order as loadtests/payloads.py
    takes them, but never cropped: a device runs the sequence it is given, and a full-length
    sample is the worst case the artifact is certified for."""
    inputs, outputs, labels = manifest.load_reference(store)
    n = len(next(iter(inputs.values())))
    samples = [{s.name: np.ascontiguousarray(inputs[s.name][i : i + 1], s.numpy_dtype)
                for s in manifest.signature.inputs} for i in range(n)]  # fmt: skip
    cls = classification_output(manifest)
    ref = np.argmax(outputs[cls], axis=1) if cls else None
    return samples, labels, ref


def classification_output(manifest: Manifest) -> str | None:
    """The first output shaped [batch, classes] with more than one class (as payloads.py)."""
    return next((s.name for s in manifest.signature.outputs if len(s.shape) == 2 and s.shape[1] > 1), None)


def timed_calls(predict, samples: list[dict], warmup: int, max_calls: int, max_seconds: float
                ) -> tuple[list[float], list[dict]]:  # fmt: skip
    """(per-call seconds, outputs of the first pass over the samples): `warmup` untimed calls, then
    calls round robin over the samples until max_calls or max_seconds."""
    for i in range(warmup):
        predict(samples[i % len(samples)])
    times, first_pass = [], []
    deadline = time.perf_counter() + max_seconds
    while len(times) < max_calls and (not times or time.perf_counter() < deadline):
        x = samples[len(times) % len(samples)]
        t0 = time.perf_counter()
        y = predict(x)
        times.append(time.perf_counter() - t0)
        if len(first_pass) < len(samples):
            first_pass.append(y)
    return times, first_pass


def quality(first_pass: list[dict], cls: str | None, labels, ref) -> dict:
    """Top-1 agreement with the source model and accuracy on the labels, over the samples run."""
    if not cls or not first_pass:
        return {}
    pred = np.array([int(np.argmax(y[cls])) for y in first_pass])
    n = len(pred)
    out = {"quality_samples": n, "top1_agreement": round(float(np.mean(pred == ref[:n])), 4)}
    if labels is not None:
        out["accuracy"] = round(float(np.mean(pred == np.asarray(labels)[:n])), 4)
    return out


def measure_one(cls, manifest: Manifest, store: Path, key: str, settings: StackSettings,
                data: tuple, limits: dict) -> tuple[object, dict]:  # fmt: skip
    """(the loaded model, kept by the caller; its figures)."""
    samples, labels, ref = data
    gc.collect()
    rss0 = rss_mb()
    model = cls(manifest, store, settings, key)
    t0 = time.perf_counter()
    model.load()
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.warm_up()  # what a server does after load: the reference batch's first row
    first_ms = (time.perf_counter() - t0) * 1000
    rss_loaded = rss_mb()
    times, first_pass = timed_calls(model.predict, samples, limits["warmup_calls"],
                                    limits["max_calls"], limits["max_seconds"])
    ms = np.asarray(times) * 1000
    return model, {
        "load_s": round(load_s, 4), "first_call_ms": round(first_ms, 3),
        "calls": len(times), "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "latencies_ms": [round(float(v), 4) for v in ms],
        "rss_load_mb": round(rss_loaded - rss0, 2), "rss_mb": round(rss_mb() - rss0, 2),
        **quality(first_pass, classification_output(manifest), labels, ref),
    }


def run(job: dict) -> dict:
    """job: {"family", "store", "models": {model: [artifact keys]}, "limits"} -> {"family",
    "version", "baseline_rss_mb", "setup_rss_mb", "artifacts": {model: {key: figures or
    {"error"}}}, "seconds"}."""
    started = time.perf_counter()
    family, store, limits = job["family"], Path(job["store"]), job["limits"]
    try:
        cls = adapter(family)
    except Exception as e:  # noqa: BLE001 - e.g. executorch not installed: the family's rows say so
        return {"family": family, "error": f"cannot import the {family} adapter: {type(e).__name__}: {e}"}
    settings = StackSettings()
    out = {"family": family, "version": cls.library_version(),
           "threads": settings.runtime_intra_op_threads, "baseline_rss_mb": round(rss_mb(), 1),
           "artifacts": {}}
    manifests = {m: load_manifest(store / m) for m in job["models"]}
    keep = []
    for model, keys in job["models"].items():  # the primer: the runtime's one-time set-up
        for key in keys:
            try:
                primer = cls(manifests[model], store, settings, key)
                primer.load()
                primer.warm_up()
                # and this process's own first timed loop (Python objects, numpy buffers): ~1 MB
                # the first measured artifact would otherwise carry
                timed_calls(primer.predict, full_length_samples(manifests[model], store)[0], 0, 20, 0.2)
                keep.append(primer)
                break
            except Exception:  # noqa: BLE001 - measure_one reports this artifact's error
                continue
        if keep:
            break
    out["setup_rss_mb"] = round(rss_mb() - out["baseline_rss_mb"], 1)
    for model, keys in job["models"].items():
        data = full_length_samples(manifests[model], store)
        mine = out["artifacts"].setdefault(model, {})
        for key in keys:
            try:
                loaded, mine[key] = measure_one(cls, manifests[model], store, key, settings, data, limits)
                keep.append(loaded)
            except Exception as e:  # noqa: BLE001 - one artifact's failure never stops the others
                mine[key] = {"error": f"{type(e).__name__}: {e}"[:400]}
    out["seconds"] = round(time.perf_counter() - started, 2)
    return out


if __name__ == "__main__":
    # A file, not stdout: runtimes print their own lines (TFLite's delegate notice, ...).
    Path(sys.argv[2]).write_text(json.dumps(run(json.loads(Path(sys.argv[1]).read_text()))))
