"""The verdict table: the seed articles' claims, answered from the measurements.

verdict(results) is a pure function of the results JSON. Every comparison reads the spread of the
repeats: overlapping [min, max] ranges are "no measurable difference"; otherwise the better side
wins and the cell cites both figures. Throughput is read through the gateway, closed loop, at the
profile's reference user count; latency is p50 at 1 user.
"""

from __future__ import annotations

from dataclasses import dataclass

from loadtests.report.aggregate import Point, aggregate, one, ref_users

RUNTIME_NAMES = {"torchserve": "TorchServe", "tfserving": "TF Serving",
                 "onnxruntime": "ONNX Runtime", "tflite": "TFLite", "aotinductor": "AOTInductor"}
RUNTIMES = tuple(RUNTIME_NAMES)
FORMAT_NAMES = {"torchserve": ".mar", "savedmodel": "SavedModel", "onnx": "ONNX",
                "tflite": ".tflite", "aotinductor": ".pt2"}
NO_DIFF = "no measurable difference"


def runtime_label(runtime: str, tfserving_kind: str | None) -> str:
    name = RUNTIME_NAMES.get(runtime, runtime)
    if runtime == "tfserving" and tfserving_kind != "real":
        name += " (stand-in)" if tfserving_kind == "stand-in" else " (real or stand-in: unknown)"
    return name


@dataclass(frozen=True)
class Finding:
    outcome: str  # "a", "b", "tie" or "missing"
    text: str


def compare(a_label: str, a: Point | None, b_label: str, b: Point | None, metric: str) -> Finding:
    """a vs b on metric 'rps' (higher is better) or 'p50' (lower is better)."""
    if a is None or b is None:
        missing = " and ".join(lbl for lbl, p in ((a_label, a), (b_label, b)) if p is None)
        return Finding("missing", f"{missing}: not measured")
    sa, sb = getattr(a, metric), getattr(b, metric)
    unit = "req/s" if metric == "rps" else "ms p50"
    digits = 1 if metric == "rps" else 2
    figures = f"{a_label} {sa.fmt(digits)} vs {b_label} {sb.fmt(digits)} {unit}"
    if sa.n < 2 and sb.n < 2:
        figures += " (1 repeat: spread unknown)"
    if sa.overlaps(sb):
        return Finding("tie", f"{NO_DIFF}: {figures}")
    a_better = sa.median > sb.median if metric == "rps" else sa.median < sb.median
    hi, lo = max(sa.median, sb.median), min(sa.median, sb.median)
    ratio = f" ({hi / lo:.2f}×)" if lo > 0 else ""
    winner = a_label if a_better else b_label
    word = "faster" if metric == "rps" else "lower latency"
    return Finding("a" if a_better else "b", f"{winner} {word}{ratio}: {figures}")


def pairs(results: dict) -> dict[str, tuple[str, str]]:
    """Architecture -> (torch-source model, keras-source model), for pairs present in the runs."""
    measured = {r["model"] for r in results.get("runs", []) if r.get("via") == "gateway"}
    out = {}
    for name in sorted(measured):
        if name.endswith("-torch") and name[: -len("-torch")] + "-keras" in measured:
            arch = name[: -len("-torch")]
            out[arch] = (name, arch + "-keras")
    return out


def _summary(findings: list[Finding], a_wins: str, b_wins: str, yes_if: str) -> str:
    """One-line answer over several findings; yes_if is the outcome that means "yes"."""
    counted = [f for f in findings if f.outcome != "missing"]
    if not counted:
        return "not measured"
    n = len(counted)
    a = sum(f.outcome == "a" for f in counted)
    b = sum(f.outcome == "b" for f in counted)
    ties = n - a - b
    if n == 1 and ties == 0:  # one comparison: say who won, e.g. "TorchServe/m faster (1.3×)"
        return f"{'Yes' if counted[0].outcome == yes_if else 'No'}: {counted[0].text.split(':')[0]}"
    tally = f"{a_wins} {a}, {b_wins} {b}, {NO_DIFF} {ties} (of {n})"
    if yes_if == "tie":
        return f"Yes: {NO_DIFF} ({n}/{n})" if ties == n else f"No: {tally}"
    wins = a if yes_if == "a" else b
    if wins == n:
        return f"Yes ({n}/{n})"
    if ties == n:
        return f"No: {NO_DIFF} ({n}/{n})"
    return f"{'Partly' if wins else 'No'}: {tally}"


def _cell(answer: str, findings: list) -> dict:
    return {"answer": answer,
            "details": [f.text if isinstance(f, Finding) else f for f in findings]}


class _Measures:
    """The figures the verdict reads, with the runtimes' honest labels."""

    def __init__(self, results: dict):
        self.results = results
        self.points = aggregate(results)
        self.users = ref_users(results, self.points)
        kind = (results.get("tfserving") or {}).get("kind")
        self.lbl = {rt: runtime_label(rt, kind) for rt in RUNTIMES}

    def tput(self, model: str, runtime: str) -> Point | None:
        return one(self.points, via="gateway", mode="closed", model=model, runtime=runtime,
                   users=self.users)

    def lat1(self, model: str, runtime: str) -> Point | None:
        return one(self.points, via="gateway", mode="closed", model=model, runtime=runtime,
                   users=1)

    def rps(self, a_label, a: tuple[str, str], b_label, b: tuple[str, str]) -> Finding:
        return compare(a_label, self.tput(*a), b_label, self.tput(*b), "rps")


def verdict(results: dict) -> list[dict]:
    """Rows of {"question", "claim", "basis", "cells": {architecture: {"answer", "details"}}}."""
    m = _Measures(results)
    basis = f"throughput through the gateway at {m.users} users"
    rows = [
        {"question": "Performance: a tie? (same runtime)",
         "claim": "PyTorch and TensorFlow/Keras models perform about the same once deployed.",
         "basis": basis + "; torch-source vs keras-source artifact on each runtime"},
        {"question": "Performance: a tie? (native runtimes)",
         "claim": "Each framework's own server is as fast as the other's.",
         "basis": basis + f"; {m.lbl['torchserve']} serving the torch model vs "
                          f"{m.lbl['tfserving']} serving the keras model"},
        {"question": "Deployment: is TF Serving faster than TorchServe?",
         "claim": "TF Serving is the faster, more production-ready serving system.",
         "basis": basis + "; natives, then each model on both"},
        {"question": "TFLite the lightest for edge?",
         "claim": "TFLite is the lightest format and runtime, made for edge devices.",
         "basis": "artifact bytes (manifest), service RSS peak, p50 latency at 1 user"},
        {"question": "Does ONNX Runtime beat both native runtimes?",
         "claim": "Exporting to ONNX and serving with ONNX Runtime beats TorchServe and "
                  "TF Serving.",
         "basis": basis + "; each model, ONNX Runtime vs each native server"},
        {"question": "Does PyTorch's compiled path (AOTInductor) beat TorchServe?",
         "claim": "torch.export + AOTInductor, PyTorch's current server path, serves a PyTorch "
                  "model faster than TorchServe, as fast as ONNX Runtime.",
         "basis": basis + "; the torch-source model on AOTInductor vs TorchServe and vs ONNX Runtime"},
    ]
    answers = (_same_runtime, _natives, _deployment, _tflite, _onnx, _aotinductor)
    for row in rows:
        row["cells"] = {}
    for arch, (tm, km) in pairs(results).items():
        for row, answer in zip(rows, answers):
            row["cells"][arch] = answer(m, tm, km)
    return rows


def _same_runtime(m: _Measures, tm: str, km: str) -> dict:
    found = []
    for rt in RUNTIMES:
        if m.tput(tm, rt) is None and m.tput(km, rt) is None:
            continue  # a runtime this bench did not measure says nothing about the claim
        f = m.rps("torch-src", (tm, rt), "keras-src", (km, rt))
        found.append(Finding(f.outcome, f"{m.lbl[rt]}: {f.text}"))
    return _cell(_summary(found, "torch-src faster", "keras-src faster", "tie"), found)


def _natives(m: _Measures, tm: str, km: str) -> dict:
    f = m.rps(f"{m.lbl['torchserve']}/{tm}", (tm, "torchserve"),
              f"{m.lbl['tfserving']}/{km}", (km, "tfserving"))
    return _cell(_summary([f], "TorchServe faster", "TF Serving faster", "tie"), [f])


def _deployment(m: _Measures, tm: str, km: str) -> dict:
    found = [m.rps(f"{m.lbl['tfserving']}/{km}", (km, "tfserving"),
                   f"{m.lbl['torchserve']}/{tm}", (tm, "torchserve"))]
    for model in (tm, km):
        f = m.rps(m.lbl["tfserving"], (model, "tfserving"), m.lbl["torchserve"],
                  (model, "torchserve"))
        found.append(Finding(f.outcome, f"{model}: {f.text}"))
    return _cell(_summary(found, "TF Serving faster", "TorchServe faster", "a"), found)


def _onnx(m: _Measures, tm: str, km: str) -> dict:
    found = []
    for model in (tm, km):
        for native in ("torchserve", "tfserving"):
            f = m.rps(m.lbl["onnxruntime"], (model, "onnxruntime"), m.lbl[native],
                      (model, native))
            found.append(Finding(f.outcome, f"{model}: {f.text}"))
    return _cell(_summary(found, "ONNX Runtime faster", "native faster", "a"), found)


def _aotinductor(m: _Measures, tm: str, km: str) -> dict:
    """Keras sources have no AOTInductor package (no route without onnx2torch): the torch model."""
    found = [m.rps(m.lbl["aotinductor"], (tm, "aotinductor"), m.lbl[other], (tm, other))
             for other in ("torchserve", "onnxruntime")]  # fmt: skip
    found = [Finding(f.outcome, f"{tm}: {f.text}") for f in found]
    return _cell(_summary(found, "AOTInductor faster", "the other faster", "a"), found)


def _by_value(d: dict) -> list:
    return sorted(d.items(), key=lambda kv: kv[1])


def _tflite(m: _Measures, tm: str, km: str) -> dict:
    """Three criteria: smallest artifact (each model), lowest service RSS, lowest p50 at 1 user."""
    details, checks = [], []
    models = m.results.get("models") or {}
    for model in (tm, km):
        arts = (models.get(model) or {}).get("artifacts") or {}
        sizes = {fmt: a["bytes"] for fmt, a in arts.items() if a.get("bytes")}
        if "tflite" in sizes and len(sizes) > 1:
            ok = min(sizes, key=sizes.get) == "tflite"
            checks.append(ok)
            listing = ", ".join(f"{FORMAT_NAMES.get(f, f)} {b / 1e6:.2f} MB"
                                for f, b in _by_value(sizes))
            details.append(f"{model} size: {'smallest' if ok else 'not smallest'} ({listing})")
    services = m.results.get("services") or {}
    rss = {s: v["rss_mb_peak"] for s, v in services.items()
           if s in RUNTIMES and v.get("rss_mb_peak")}
    if "tflite" in rss and len(rss) > 1:
        ok = min(rss, key=rss.get) == "tflite"
        checks.append(ok)
        listing = ", ".join(f"{m.lbl[s]} {v:.0f} MB" for s, v in _by_value(rss))
        details.append(f"RSS per service (all models loaded): "
                       f"{'lowest' if ok else 'not lowest'} ({listing})")
    for model in (tm, km):
        t = m.lat1(model, "tflite")
        others = [(rt, p) for rt in RUNTIMES if rt != "tflite" and (p := m.lat1(model, rt))]
        if t and others:
            found = [compare(m.lbl["tflite"], t, m.lbl[rt], p, "p50") for rt, p in others]
            wins = sum(f.outcome == "a" for f in found)
            ties = sum(f.outcome == "tie" for f in found)
            checks.append(wins == len(found))
            state = ("lowest" if wins == len(found)
                     else "tied for lowest" if wins + ties == len(found) else "not lowest")
            details.append(f"{model} latency: {state}; " + "; ".join(f.text for f in found))
    if not checks:
        return _cell("not measured", details)
    n, yes = len(checks), sum(checks)
    if yes == n:
        return _cell(f"Yes ({n}/{n} criteria)", details)
    return _cell(f"{'Partly' if yes else 'No'}: {yes} of {n} criteria", details)
