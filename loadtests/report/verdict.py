"""The verdict table: the seed articles' claims, answered from the measurements.

verdict(results) is a pure function of the results JSON. Every comparison is a ratio with its
confidence interval over the repeats, read against a stated "negligible" threshold (stats.py):
"faster", "slower", "tie (within 10%)" or "inconclusive: needs N more repeats", never a winner
inside the noise. Throughput is read through the gateway, closed loop, at the profile's reference
user count; latency is p50 at 1 user.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from loadtests.report import edge_verdict, stats
from loadtests.report.aggregate import Point, aggregate, one, ref_users

RUNTIME_NAMES = {"torchserve": "TorchServe", "tfserving": "TF Serving",
                 "onnxruntime": "ONNX Runtime", "tflite": "TFLite", "aotinductor": "AOTInductor",
                 "executorch": "ExecuTorch"}
RUNTIMES = tuple(RUNTIME_NAMES)
FORMAT_NAMES = {"torchserve": ".mar", "savedmodel": "SavedModel", "onnx": "ONNX",
                "tflite": ".tflite", "aotinductor": ".pt2", "executorch": ".pte"}
UNDECIDED = "inconclusive"
AOTI_QUESTION = "PyTorch's current server path (AOTInductor) vs TF Serving (and vs TorchServe)"


def runtime_label(runtime: str, tfserving_kind: str | None) -> str:
    name = RUNTIME_NAMES.get(runtime, runtime)
    if runtime == "tfserving" and tfserving_kind != "real":
        name += " (stand-in)" if tfserving_kind == "stand-in" else " (real or stand-in: unknown)"
    return name


@dataclass(frozen=True)
class Finding:
    outcome: str  # "a", "b", "tie", "inconclusive" or "missing"
    text: str  # headline: figures
    key: str = ""  # names the comparison, the same in every bench (compare.py matches on it)
    headline: str = ""  # the answer alone, e.g. "ONNX Runtime 1.31× faster [1.18–1.45]"
    points: tuple = ()  # the Point.key of each side (adaptive repeats re-measure these)
    more: int | None = 0  # inconclusive: repeats per point still needed (None: too many)

    def within(self, prefix: str, text: bool = True) -> "Finding":
        """The same finding under a heading, e.g. the runtime or model it is about (in its key
        only, with text=False)."""
        return replace(self, text=f"{prefix}: {self.text}" if text else self.text,
                       key=f"{prefix}: {self.key}")


def compare(a_label: str, a: Point | None, b_label: str, b: Point | None, metric: str,
            method: stats.Method | None = None, pools: dict | None = None) -> Finding:
    """a vs b on metric 'rps' (higher is better) or 'p50' (lower is better); pools: noise per
    (runtime, metric) from noise_pools(), else each side's own repeats are resampled."""
    key = f"{a_label} vs {b_label} ({metric})"
    if a is None or b is None:
        missing = " and ".join(lbl for lbl, p in ((a_label, a), (b_label, b)) if p is None)
        return Finding("missing", f"{missing}: not measured", key, "not measured")
    method = method or stats.Method()
    sa, sb = getattr(a, metric), getattr(b, metric)
    unit = "req/s" if metric == "rps" else "ms p50"
    digits = 1 if metric == "rps" else 2
    figures = (f"{a_label} {sa.fmt(digits)} vs {b_label} {sb.fmt(digits)} {unit} "
               f"({sa.n} vs {sb.n} repeats)")
    pool = (pools or {}).get
    r = stats.ratio(sa.values, sb.values, metric == "rps", method,
                    (pool((a.runtime, metric)), pool((b.runtime, metric))))
    word = "faster" if metric == "rps" else "lower latency"
    outcome, headline = {
        stats.FASTER: ("a", f"{a_label} {r.text(method, word)}"),
        stats.SLOWER: ("b", f"{b_label} {r.text(method, worse=word)}"),
        stats.TIE: ("tie", r.text(method)),
        stats.INCONCLUSIVE: (UNDECIDED, r.text(method)),
    }[r.outcome]
    return Finding(outcome, f"{headline}: {figures}", key, headline, (a.key, b.key), r.more)


def noise_pools(points: list[Point]) -> dict:
    """(runtime, metric) -> that runtime's pooled window-to-window noise over every closed-loop
    gateway point of the bench (stats.residual_pool)."""
    groups: dict = {}
    for p in points:
        if (p.via, p.mode) == ("gateway", "closed"):
            for metric in ("rps", "p50"):
                groups.setdefault((p.runtime, metric), []).append(getattr(p, metric).values)
    return {k: stats.residual_pool(g) for k, g in groups.items()}


def verdict_method_line(results: dict, method: stats.Method | None = None) -> str:
    """How the report decides, and what the adaptive repeats did (for the report's summary)."""
    method = method or stats.Method.from_env()
    line = (f"Comparisons: {method.describe()}. A cell says faster / slower only when the whole "
            "interval is beyond the threshold, a tie when it is all within it, otherwise "
            "inconclusive with the repeats a decision would need; each cites the repeats each "
            "side took.")
    a = results.get("adaptive") or {}
    if a.get("extra_runs") is not None:
        line += (f" Adaptive repeats: {a['extra_runs']} extra runs, up to {a.get('max_repeats')} "
                 f"repeats per point in {a.get('budget_s'):g} s at most ({a.get('stopped')}).")
    return line


def pairs(results: dict) -> dict[str, tuple[str, str]]:
    """Architecture -> (torch-source model, keras-source model), for pairs present in the runs."""
    measured = {r["model"] for r in results.get("runs", []) if r.get("via") == "gateway"}
    out = {}
    for name in sorted(measured):
        if name.endswith("-torch") and name[: -len("-torch")] + "-keras" in measured:
            arch = name[: -len("-torch")]
            out[arch] = (name, arch + "-keras")
    return out


def _summary(findings: list[Finding], a_wins: str, b_wins: str, yes_if: str,
             method: stats.Method) -> str:
    """One-line answer over several findings; yes_if is the outcome that means "yes". Any
    inconclusive comparison leaves the whole answer undecided: it could go either way."""
    counted = [f for f in findings if f.outcome != "missing"]
    if not counted:
        return "not measured"
    n = len(counted)
    a = sum(f.outcome == "a" for f in counted)
    b = sum(f.outcome == "b" for f in counted)
    ties = sum(f.outcome == "tie" for f in counted)
    open_ = n - a - b - ties
    if n == 1:  # one comparison: its answer, e.g. "TorchServe/m 1.31× faster [1.18–1.45]"
        f = counted[0]
        word = "Inconclusive" if open_ else "Yes" if f.outcome == yes_if else "No"
        return f"{word}: {f.headline.removeprefix(UNDECIDED + ': ')}"
    tally = (f"{a_wins} {a}, {b_wins} {b}, {method.tie_text()} {ties}"
             + (f", {UNDECIDED} {open_}" if open_ else "") + f" (of {n})")
    if open_:
        need = [f.more for f in counted if f.outcome == UNDECIDED]
        most = (f"needs more than {method.most_repeats} more repeats" if None in need
                else f"needs up to {max(need)} more repeats")
        return f"Inconclusive ({most}): {tally}"
    if yes_if == "tie":
        return f"Yes: {method.tie_text()} ({n}/{n})" if ties == n else f"No: {tally}"
    wins = a if yes_if == "a" else b
    if wins == n:
        return f"Yes ({n}/{n})"
    if ties == n:
        return f"No: {method.tie_text()} ({n}/{n})"
    return f"{'Partly' if wins else 'No'}: {tally}"


def _cell(answer: str, findings: list) -> dict:
    """The answer, a line per comparison, and the comparisons themselves (outcome, and the
    points each compared) for compare.py and the adaptive repeats."""
    found = [f for f in findings if isinstance(f, Finding)]
    return {"answer": answer,
            "details": [f.text if isinstance(f, Finding) else f for f in findings],
            "findings": [{"key": f.key, "outcome": f.outcome, "more": f.more,
                          "points": [list(k) for k in f.points]} for f in found]}


class _Measures:
    """The figures the verdict reads, with the runtimes' honest labels."""

    def __init__(self, results: dict, method: stats.Method):
        self.results, self.method = results, method
        self.points = aggregate(results)
        self.users = ref_users(results, self.points)
        kind = (results.get("tfserving") or {}).get("kind")
        self.lbl = {rt: runtime_label(rt, kind) for rt in RUNTIMES}
        self.pools = noise_pools(self.points)

    def tput(self, model: str, runtime: str) -> Point | None:
        return one(self.points, via="gateway", mode="closed", model=model, runtime=runtime,
                   users=self.users)

    def lat1(self, model: str, runtime: str) -> Point | None:
        return one(self.points, via="gateway", mode="closed", model=model, runtime=runtime,
                   users=1)

    def rps(self, a_label, a: tuple[str, str], b_label, b: tuple[str, str]) -> Finding:
        return compare(a_label, self.tput(*a), b_label, self.tput(*b), "rps", self.method,
                       self.pools)

    def summary(self, found: list[Finding], a_wins: str, b_wins: str, yes_if: str) -> str:
        return _summary(found, a_wins, b_wins, yes_if, self.method)


def verdict(results: dict, method: stats.Method | None = None) -> list[dict]:
    """Rows of {"question", "claim", "basis", "cells": {architecture: {"answer", "details",
    "findings"}}}; method: the statistics' settings (default: Method.from_env())."""
    m = _Measures(results, method or stats.Method.from_env())
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
        {"question": AOTI_QUESTION,
         "claim": "torch.export + AOTInductor, PyTorch's current server path, serves a PyTorch "
                  "model at least as fast as TF Serving serves the Keras one, faster than "
                  "TorchServe, as fast as ONNX Runtime.",
         "basis": basis + f"; the torch-source model on AOTInductor vs {m.lbl['tfserving']} serving "
                          "the keras model (each framework's server path), then vs TF Serving, "
                          "TorchServe and ONNX Runtime on the torch model"},
    ]
    answers = (_same_runtime, _natives, _deployment, _tflite, _onnx, _aotinductor)
    for row in rows:
        row["cells"] = {}
    for arch, (tm, km) in pairs(results).items():
        for row, answer in zip(rows, answers):
            row["cells"][arch] = answer(m, tm, km)
    if edge_verdict.edge_models(results):
        rows.append({"question": edge_verdict.QUESTION,
                     "claim": "TFLite (int8) is the lightest, fastest way to run a model on a "
                              "device; ExecuTorch (PyTorch) and ONNX int8 are the alternatives.",
                     "basis": "in-process at batch 1 (bench's edge phase): artifact bytes, p50 "
                              "per interleaved round (each pair compared round by round, a t "
                              f"interval over the rounds, ±{m.method.negligible:.0%} a tie; a "
                              "result without rounds: bootstrapped per call), RSS added, accuracy drop vs the "
                              "float source; PyTorch sources ExecuTorch vs TFLite int8 vs ONNX int8, "
                              "Keras sources TFLite int8 vs ONNX int8 (a runtime without a certified "
                              "int8 variant: its float artifact)",
                     "cells": edge_verdict.edge_cells(results, m.method)})
    return rows


def _same_runtime(m: _Measures, tm: str, km: str) -> dict:
    # Only runtimes that served both models compare them (Keras sources have no AOTInductor
    # package; a failed point is listed under Run quality, not here).
    found = [m.rps("torch-src", (tm, rt), "keras-src", (km, rt)).within(m.lbl[rt])
             for rt in RUNTIMES if m.tput(tm, rt) is not None and m.tput(km, rt) is not None]
    return _cell(m.summary(found, "torch-src faster", "keras-src faster", "tie"), found)


def _natives(m: _Measures, tm: str, km: str) -> dict:
    f = m.rps(f"{m.lbl['torchserve']}/{tm}", (tm, "torchserve"),
              f"{m.lbl['tfserving']}/{km}", (km, "tfserving"))
    return _cell(m.summary([f], "TorchServe faster", "TF Serving faster", "tie"), [f])


def _deployment(m: _Measures, tm: str, km: str) -> dict:
    found = [m.rps(f"{m.lbl['tfserving']}/{km}", (km, "tfserving"),
                   f"{m.lbl['torchserve']}/{tm}", (tm, "torchserve"))]
    for model in (tm, km):
        found.append(m.rps(m.lbl["tfserving"], (model, "tfserving"), m.lbl["torchserve"],
                           (model, "torchserve")).within(model))
    return _cell(m.summary(found, "TF Serving faster", "TorchServe faster", "a"), found)


def _onnx(m: _Measures, tm: str, km: str) -> dict:
    found = [m.rps(m.lbl["onnxruntime"], (model, "onnxruntime"), m.lbl[native],
                   (model, native)).within(model)
             for model in (tm, km) for native in ("torchserve", "tfserving")]
    return _cell(m.summary(found, "ONNX Runtime faster", "native faster", "a"), found)


def _aotinductor(m: _Measures, tm: str, km: str) -> dict:
    """Keras sources have no AOTInductor package (no route without onnx2torch): the torch model,
    against TF Serving serving the keras model (each framework's own server path), then against
    every other server on the torch model itself. The answer gives each opponent's headline."""
    aoti = f"{m.lbl['aotinductor']}/{tm}"
    native = m.rps(aoti, (tm, "aotinductor"), f"{m.lbl['tfserving']}/{km}", (km, "tfserving"))
    same = [m.rps(m.lbl["aotinductor"], (tm, "aotinductor"), m.lbl[other], (tm, other)).within(tm)
            for other in ("tfserving", "torchserve", "onnxruntime")]  # fmt: skip
    found = [native, *same]
    if all(f.outcome == "missing" for f in found):
        return _cell("not measured", found)
    parts = [f"vs {m.lbl['tfserving']} serving {km}: {native.headline}"]
    parts += [f"vs {m.lbl[other]}" + (f" serving {tm}" if other == "tfserving" else "") + f": {f.headline}"
              for other, f in zip(("tfserving", "torchserve", "onnxruntime"), same)]  # fmt: skip
    return _cell(m.summary(found, "AOTInductor faster", "the other faster", "a") + " — " + "; ".join(parts), found)


def _by_value(d: dict) -> list:
    return sorted(d.items(), key=lambda kv: kv[1])


def _tflite(m: _Measures, tm: str, km: str) -> dict:
    """Three criteria: smallest artifact (each model), lowest service RSS, lowest p50 at 1 user.
    Sizes and RSS are single readings (no repeats); latency goes through compare()."""
    details, checks = [], []
    models = m.results.get("models") or {}
    for model in (tm, km):
        arts = (models.get(model) or {}).get("artifacts") or {}
        # float formats only: a quantized variant ("tflite:int8-static") answers another question
        sizes = {fmt: a["bytes"] for fmt, a in arts.items() if a.get("bytes") and ":" not in fmt}
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
    latency = []
    for model in (tm, km):
        t = m.lat1(model, "tflite")
        others = [(rt, p) for rt in RUNTIMES if rt != "tflite" and (p := m.lat1(model, rt))]
        if t and others:
            found = [compare(m.lbl["tflite"], t, m.lbl[rt], p, "p50", m.method,
                             m.pools).within(model, text=False)
                     for rt, p in others]
            latency += found
            outcomes = {f.outcome for f in found}
            wins = outcomes == {"a"}
            # An undecided comparison leaves the criterion undecided unless another one is
            # already lost (then it is "not lowest" whatever the undecided one says).
            checks.append(None if UNDECIDED in outcomes and "b" not in outcomes else wins)
            state = ("lowest" if wins else "not lowest" if "b" in outcomes
                     else "undecided" if UNDECIDED in outcomes else "tied for lowest")
            details.append(f"{model} latency: {state}; " + "; ".join(f.text for f in found))
    decided = [c for c in checks if c is not None]
    cell = _cell("not measured", details)
    if checks:
        n, yes = len(checks), sum(decided)
        cell["answer"] = (f"Yes ({n}/{n} criteria)" if yes == n
                          else f"Inconclusive: {yes} of {n} criteria met, "
                               f"{n - len(decided)} undecided" if len(decided) < n
                          else f"{'Partly' if yes else 'No'}: {yes} of {n} criteria")
    cell["findings"] = _cell("", latency)["findings"]
    return cell
