"""The in-process half of the edge measurement (loadtests/edge.py): one runtime family's artifacts,
in this process, with the serving adapter's own load code, timed in rounds the parent drives.

    python -m loadtests.edge_worker JOB.json OUT.json    (edge.py writes the job, sends the
                                                          commands on stdin, reads OUT)

One process per family keeps TensorFlow/torch imports out of each other's RSS. The baseline RSS is
taken after the family's imports; then a primer (the first artifact of the job, loaded once more,
run, and kept) pays the runtime's and this process's one-time set-up (thread pools, allocators,
kernel registries, the timing loop's own objects), so it is not charged to whichever artifact
happens to come first. Then the process answers "ready" and waits on stdin; each command times
one model's artifacts for one round's share of the calls (loading them in their first round), so
the parent can interleave the families round by round while only one process runs at a time.
Every measured artifact stays loaded until the end: nothing is freed, so no load reuses another's
freed pages and each RSS growth is what that artifact added.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
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


def adapter(family: str, override: str | None = None):
    """The family's serving adapter class (override: "module:Class", a test's stand-in)."""
    module, _, cls = (override or ADAPTERS[family]).partition(":")
    for name in () if override else PRE_IMPORTS.get(family, ()):
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


def timed_calls(predict, samples: list[dict], warmup: int, max_calls: int, max_seconds: float,
                start: int = 0, keep: int = 0) -> tuple[list[float], list[dict]]:  # fmt: skip
    """(per-call seconds, outputs of the first `keep` timed calls): `warmup` untimed calls, then
    calls round robin over the samples, from sample number `start` on (a later round goes on
    where the previous one stopped), until max_calls or max_seconds; at least one."""
    for i in range(warmup):
        predict(samples[(start + i) % len(samples)])
    times, outputs = [], []
    deadline = time.perf_counter() + max_seconds
    while len(times) < max_calls and (not times or time.perf_counter() < deadline):
        x = samples[(start + len(times)) % len(samples)]
        t0 = time.perf_counter()
        y = predict(x)
        times.append(time.perf_counter() - t0)
        if len(outputs) < keep:
            outputs.append(y)
    return times, outputs


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


def shares(total: float, rounds: int, whole: bool = True) -> list:
    """`total` calls (whole) or seconds split over the rounds: [67, 67, 66] for 200 over 3."""
    if not whole:
        return [total / rounds] * rounds
    return [max(1, total // rounds + (r < total % rounds)) for r in range(rounds)]


class Timed:
    """One artifact of the job: loaded in its first round (load time and the RSS it added measured
    as before rounds existed), then timed for its share of the calls in every round."""

    def __init__(self, cls, manifest: Manifest, store: Path, key: str, settings: StackSettings, data: tuple):
        self.cls, self.manifest, self.store, self.key, self.settings = cls, manifest, store, key, settings
        self.samples, self.labels, self.ref = data
        self.model = None
        self.times: list[float] = []
        self.outputs: list[dict] = []  # the first pass over the samples, for quality()
        self.rounds: list[dict] = []
        self.figures: dict = {}

    def load(self) -> None:
        gc.collect()
        self.rss0 = rss_mb()
        self.model = self.cls(self.manifest, self.store, self.settings, self.key)
        t0 = time.perf_counter()
        self.model.load()
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.model.warm_up()  # what a server does after load: the reference batch's first row
        first_ms = (time.perf_counter() - t0) * 1000
        self.figures = {"load_s": round(load_s, 4), "first_call_ms": round(first_ms, 3),
                        "rss_load_mb": round(rss_mb() - self.rss0, 2)}

    def time_round(self, number: int, limits: dict, clock_zero: float) -> None:
        """This round's share: after WARMUP calls in the first round, and after `rewarm_calls` in
        a later one (another process had the cores and the caches in between)."""
        rounds = limits["rounds"]
        first = self.model is None
        if first:
            self.load()
        started = time.monotonic()
        times, outputs = timed_calls(
            self.model.predict, self.samples,
            limits["warmup_calls"] if first else limits.get("rewarm_calls", 1),
            shares(limits["max_calls"], rounds)[number], shares(limits["max_seconds"], rounds, False)[number],
            start=len(self.times), keep=len(self.samples) - len(self.outputs))  # fmt: skip
        ended = time.monotonic()
        self.times += times
        self.outputs += outputs
        ms = np.asarray(times) * 1000
        self.rounds.append({"round": number, "calls": len(times), "p50_ms": round(float(np.median(ms)), 4),
                            "window_s": [round(started - clock_zero, 4), round(ended - clock_zero, 4)]})
        if first:  # as before rounds: what loading and running the artifact added
            self.figures["rss_mb"] = round(rss_mb() - self.rss0, 2)

    def result(self) -> dict:
        ms = np.asarray(self.times) * 1000
        return {
            **self.figures, "calls": len(self.times), "p50_ms": round(float(np.percentile(ms, 50)), 4),
            "p99_ms": round(float(np.percentile(ms, 99)), 4),
            "latencies_ms": [round(float(v), 4) for v in ms], "rounds": self.rounds,
            **quality(self.outputs, classification_output(self.manifest), self.labels, self.ref),
        }


class Worker:
    """The family's process state between the parent's commands (see run())."""

    def __init__(self, job: dict):
        self.family, self.store, self.limits = job["family"], Path(job["store"]), job["limits"]
        self.clock_zero = job.get("clock_zero", time.monotonic())
        self.cls = adapter(self.family, job.get("adapter"))
        self.settings = StackSettings()
        self.out = {"family": self.family, "version": self.cls.library_version(),
                    "threads": self.settings.runtime_intra_op_threads, "baseline_rss_mb": round(rss_mb(), 1),
                    "artifacts": {}}  # fmt: skip
        self.jobs = job["models"]
        self.manifests = {m: load_manifest(self.store / m) for m in self.jobs}
        self.keep = [self.prime()]
        self.out["setup_rss_mb"] = round(rss_mb() - self.out["baseline_rss_mb"], 1)
        self.timed: dict[str, dict[str, Timed]] = {}

    def prime(self):
        """The runtime's one-time set-up, paid before any artifact is measured: the first artifact
        that loads, loaded once more, run and kept."""
        for model, keys in self.jobs.items():
            for key in keys:
                try:
                    primer = self.cls(self.manifests[model], self.store, self.settings, key)
                    primer.load()
                    primer.warm_up()
                    # and this process's own first timed loop (Python objects, numpy buffers): ~1 MB
                    # the first measured artifact would otherwise carry
                    timed_calls(primer.predict, full_length_samples(self.manifests[model], self.store)[0], 0, 20, 0.2)
                    return primer
                except Exception:  # noqa: BLE001 - the artifact's own round reports its error
                    continue
        return None

    def round(self, number: int, model: str) -> None:
        """Every artifact of `model`, one after another, for round `number`'s share. Every one
        stays loaded to the end: no load reuses another's freed pages, and each RSS growth is
        what that artifact added."""
        if model not in self.timed:
            data = full_length_samples(self.manifests[model], self.store)
            self.timed[model] = {k: Timed(self.cls, self.manifests[model], self.store, k, self.settings, data)
                                 for k in self.jobs[model]}  # fmt: skip
        mine = self.out["artifacts"].setdefault(model, {})
        for key, t in self.timed[model].items():
            if "error" in mine.get(key, {}):
                continue
            try:
                t.time_round(number, self.limits, self.clock_zero)
            except Exception as e:  # noqa: BLE001 - one artifact's failure never stops the others
                mine[key] = {"error": f"{type(e).__name__}: {e}"[:400]}

    def result(self) -> dict:
        for model, timed in self.timed.items():
            for key, t in timed.items():
                if "error" not in self.out["artifacts"][model].get(key, {}):
                    self.out["artifacts"][model][key] = t.result()
        return self.out


def run(job_path: Path, out_path: Path, commands, replies) -> None:
    """The command loop. job: {"family", "store", "models": {model: [artifact keys]}, "limits":
    {"warmup_calls", "max_calls", "max_seconds", "rounds"}, "clock_zero", optional "adapter"}.
    Replies one JSON line per command on `replies`: {"ready"} once set up, then for each
    {"do": "round", "round": r, "model": m} -> {"done": [r, m]}; {"do": "finish"} writes the
    result to out_path ({"family", "version", "threads", "baseline_rss_mb", "setup_rss_mb",
    "artifacts": {model: {key: figures or {"error"}}}, "seconds" alive, "busy_s" working}) and
    ends the process.
    Between commands the process waits on `commands`, using no CPU."""
    started = time.perf_counter()
    job = json.loads(job_path.read_text())
    try:
        worker = Worker(job)
    except Exception as e:  # noqa: BLE001 - e.g. executorch not installed: the family's rows say so
        out_path.write_text(json.dumps({"family": job["family"], "error": f"cannot set up the {job['family']} "
                                        f"adapter: {type(e).__name__}: {e}"[:600]}))  # fmt: skip
        reply(replies, {"failed": True})
        return
    busy = time.perf_counter() - started  # set-up and rounds, not the waits between them
    reply(replies, {"ready": True})
    for line in commands:
        cmd = json.loads(line)
        if cmd["do"] == "round":
            t0 = time.perf_counter()
            worker.round(cmd["round"], cmd["model"])
            busy += time.perf_counter() - t0
            reply(replies, {"done": [cmd["round"], cmd["model"]]})
        elif cmd["do"] == "finish":
            out = worker.result()
            out["seconds"], out["busy_s"] = round(time.perf_counter() - started, 2), round(busy, 2)
            out_path.write_text(json.dumps(out))
            reply(replies, {"finished": True})
            return
        else:
            raise ValueError(f"unknown command {cmd!r} (expected round or finish)")


def reply(stream, message: dict) -> None:
    stream.write(json.dumps(message) + "\n")
    stream.flush()


if __name__ == "__main__":
    # Replies go to the original stdout; what runtimes print (TFLite's delegate notice, ...) is
    # sent to stderr instead, so it cannot garble the protocol.
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    run(Path(sys.argv[1]), Path(sys.argv[2]), sys.stdin, protocol)
