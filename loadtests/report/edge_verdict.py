"""The verdict's edge question, answered per model from the bench's edge phase: which certified
in-process artifact is the smallest and which the fastest, per source framework.

Candidates: PyTorch sources ExecuTorch vs TFLite int8 vs ONNX int8; Keras sources TFLite int8 vs
ONNX int8. Per runtime, its certified int8 variants; a runtime without one is represented by its
float artifact, and says so. Smallest: artifact bytes (exact). Fastest: p50 at batch 1, and a
candidate is named only when it is faster than every other one the way the verdict means it
(stats.py: the whole 95% interval of the ratio beyond ±10%); otherwise the leaders not told apart
are listed.

The interval comes from the edge phase's interleaved rounds (loadtests/edge.py): per round, the
ratio of the two artifacts' p50s, measured seconds apart in that round; over the rounds, a Student
t interval of the mean log ratio (paired: the drift a round shares cancels in its ratio; log: a
ratio; t with rounds-1 degrees of freedom: exact 95% coverage for normal log-ratio noise even from
3 rounds, and as wide as the rounds disagree). A percentile bootstrap over 3 rounds would be the
rounds' own range, which covers the middle of their distribution only 3 times in 4. The spread of
the rounds carries both the within-round sampling error of each p50 and the machine's drift from
round to round (the two-level argument of stats.py), so the per-call latencies are not resampled.
Results from before rounds existed fall back to the bootstrap over the per-call latencies of the
one run (calls taken as independent: the drift between runs is not in it), and say so.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import t as t_dist

from loadtests.edge import round_p50s
from loadtests.report import stats
from loadtests.report.edge_report import drop_pt, edge_models, measured, name, size

FAMILIES = {"pytorch": ("executorch", "tflite", "onnxruntime"), "keras": ("tflite", "onnxruntime"),
            "tensorflow": ("tflite", "onnxruntime")}  # fmt: skip
QUESTION = "Edge: the lightest, fastest certified artifact per source framework"


def candidates(model: dict) -> list[dict]:
    """The measured rows the question compares (see the module's rule)."""
    out = []
    for fam in FAMILIES.get(model.get("framework"), ()):
        mine = [r for r in model.get("rows", []) if r["family"] == fam and measured(r)]
        int8 = [r for r in mine if "int8" in (r.get("variant") or "")]
        out += int8 or [r for r in mine if not r.get("variant")]
    return out


def describe(r: dict, model: dict) -> str:
    m, d = measured(r), drop_pt(r, model)
    float_note = "" if r.get("variant") else " — no certified int8 variant"
    return (f"{name(r)}{float_note}: {size(r['bytes'])}, p50 {m['p50_ms']:.3f} ms ({m['calls']} calls), "
            f"RSS +{m['rss_mb']:.1f} MB, accuracy drop "
            + ("n/a (no labels)" if d is None else f"{d:.1f} pt"))


def by_rounds(lead: dict, other: dict, method: stats.Method) -> stats.Ratio | None:
    """lead's advantage over other (> 1: lead faster) from their per-round p50s, paired by round
    (see the module's docstring); None when the two have no rounds to pair."""
    a, b = round_p50s(lead), round_p50s(other)
    if not a or len(a) != len(b):
        return None
    logs = np.log(np.asarray(b, dtype=np.float64) / np.asarray(a, dtype=np.float64))
    n, mean = len(logs), float(logs.mean())
    half = (float(t_dist.ppf((1 + method.confidence) / 2, n - 1)) * float(logs.std(ddof=1)) / math.sqrt(n)
            if n >= 2 else 0.0)  # fmt: skip
    return stats.decide(math.exp(mean), math.exp(mean - half), math.exp(mean + half), n, n, method)


def speed(m: dict) -> float:
    """What "fastest" sorts by: the geometric mean of the round p50s (so the leader's paired
    ratio against every other is >= 1), the run's p50 without rounds."""
    p50s = round_p50s(m)
    return math.exp(float(np.mean(np.log(p50s)))) if p50s else m["p50_ms"]


def fastest(rows: list[dict], method: stats.Method) -> tuple[list[dict], list[dict], list[dict]]:
    """(the leaders not told apart, the comparisons of the leader with each other row as findings
    {"key", "outcome", "more", "points", "text"}, in order)."""
    by_speed = sorted(rows, key=lambda r: speed(measured(r)))
    lead, found, leaders = by_speed[0], [], [by_speed[0]]
    for other in by_speed[1:]:
        r = by_rounds(measured(lead), measured(other), method)
        how = f"{r.n_a} interleaved rounds" if r else "one run, per-call bootstrap: drift between runs not in it"
        if r is None:
            r = stats.ratio(measured(lead)["latencies_ms"], measured(other)["latencies_ms"], False, method)
        outcome = {stats.FASTER: "a", stats.SLOWER: "b", stats.TIE: "tie"}.get(r.outcome, "inconclusive")
        ratio = f"{r.est:.2f}× [{r.lo:.2f}–{r.hi:.2f}]"
        text = {stats.FASTER: f"{name(lead)} {r.text(method, 'lower latency')}",
                stats.TIE: r.text(method)}.get(r.outcome, f"not told apart ({stats.INCONCLUSIVE}): {name(lead)} {ratio}")
        text += f" vs {name(other)} ({how})"
        found.append({"key": f"edge {name(lead)} vs {name(other)} (p50 in-process)", "outcome": outcome,
                      "more": None, "points": [], "text": text})
        if r.outcome != stats.FASTER:
            leaders.append(other)
    return leaders, found, by_speed


def answer_model(model_name: str, model: dict, method: stats.Method) -> tuple[str, list[str], list[dict]]:
    """(one-line answer, detail lines, findings) for one model."""
    rows = candidates(model)
    if not rows:
        return f"{model_name}: no certified in-process artifact measured", [], []
    small, *bigger = sorted(rows, key=lambda r: r["bytes"])
    details = [f"{model_name}: " + describe(r, model) for r in sorted(rows, key=lambda r: r["bytes"])]
    if len(rows) == 1:
        return f"{model_name}: only {name(rows[0])} ({size(rows[0]['bytes'])})", details, []
    leaders, found, _ = fastest(rows, method)
    details += [f"{model_name}: {f['text']}" for f in found]
    for f in found:
        f["key"] = f"{model_name}: {f['key']}"
    if len(leaders) == 1:
        lead = measured(leaders[0])["p50_ms"]
        speed = f"fastest {name(leaders[0])} ({lead:.3f} ms p50)"
    else:
        speed = "fastest not told apart: " + ", ".join(f"{name(r)} {measured(r)['p50_ms']:.3f} ms" for r in leaders)
    return (f"{model_name}: smallest {name(small)} ({size(small['bytes'])}, next {name(bigger[0])} "
            f"{size(bigger[0]['bytes'])}); {speed}"), details, found


def edge_cells(results: dict, method: stats.Method) -> dict[str, dict]:
    """{architecture: verdict cell} for every model of the edge phase (architecture: the model's
    name without -torch / -keras, the verdict table's columns)."""
    cells: dict[str, dict] = {}
    for model_name, model in edge_models(results).items():
        arch = model_name.removesuffix("-torch").removesuffix("-keras")
        answer, details, found = answer_model(model_name, model, method)
        cell = cells.setdefault(arch, {"answer": "", "details": [], "findings": []})
        cell["answer"] = f"{cell['answer']}; {answer}" if cell["answer"] else answer
        cell["details"] += details
        cell["findings"] += [{k: v for k, v in f.items() if k != "text"} for f in found]
    return cells
