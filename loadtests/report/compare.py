"""Repeatability of the bench: two results.json of the same profile, point by point and per runtime,
and whether their verdicts agree (the same answer in each comparison, never opposite winners);
and, from several benches, how often two benches with N repeats per point would agree
(expected_agreement: a bootstrap of benches).

Open-loop points are left out: their throughput is the offered rate, and the rate itself is derived
from each bench's own closed-loop peak."""

from __future__ import annotations

import re
import statistics
from collections import Counter

import numpy as np

from loadtests.report import stats
from loadtests.report.aggregate import aggregate, repeats as repeats_of
from loadtests.report.verdict import verdict


def _rel(a: float, b: float) -> float:
    """|a - b| relative to their mean."""
    return abs(a - b) / ((a + b) / 2) if a + b else 0.0


def compare(a: dict, b: dict) -> dict:
    pa = {p.key: p for p in aggregate(a) if p.mode == "closed" and p.via != "ceiling"}
    pb = {p.key: p for p in aggregate(b) if p.mode == "closed" and p.via != "ceiling"}
    points = []
    for key in sorted(pa.keys() & pb.keys()):
        x, y = pa[key], pb[key]
        points.append({
            "via": x.via, "model": x.model, "runtime": x.runtime, "users": x.users,
            "rps": [x.rps.median, y.rps.median], "p50_ms": [x.p50.median, y.p50.median],
            "rps_diff": _rel(x.rps.median, y.rps.median), "p50_diff": _rel(x.p50.median, y.p50.median),
        })  # fmt: skip
    runtimes: dict[str, dict] = {}
    for rt in sorted({p["runtime"] for p in points}):
        mine = [p for p in points if p["runtime"] == rt]
        runtimes[rt] = {
            "points": len(mine),
            "rps_diff_median": statistics.median(p["rps_diff"] for p in mine),
            "p50_diff_median": statistics.median(p["p50_diff"] for p in mine),
            "rps_diff_max": max(p["rps_diff"] for p in mine),
            "p50_diff_max": max(p["p50_diff"] for p in mine),
        }
    return {"points": points, "runtimes": runtimes}


def render(result: dict, tolerance: float = 0.15) -> str:
    lines = [f"{'runtime':<12} {'points':>6} {'req/s diff median (max)':>24} {'p50 diff median (max)':>23}  within {tolerance:.0%}?"]
    for rt, r in result["runtimes"].items():
        ok = r["rps_diff_median"] <= tolerance and r["p50_diff_median"] <= tolerance
        lines.append(f"{rt:<12} {r['points']:>6} {r['rps_diff_median']:>15.1%} ({r['rps_diff_max']:>5.1%}) "
                     f"{r['p50_diff_median']:>14.1%} ({r['p50_diff_max']:>5.1%})  {'yes' if ok else 'NO'}")  # fmt: skip
    lines.append("")
    lines.append(f"{'point':<48} {'req/s A':>9} {'req/s B':>9} {'diff':>6} {'p50 A':>7} {'p50 B':>7} {'diff':>6}")
    for p in result["points"]:
        name = f"{p['via']} {p['model']}@{p['runtime']} u={p['users']}"
        lines.append(f"{name:<48} {p['rps'][0]:>9.1f} {p['rps'][1]:>9.1f} {p['rps_diff']:>6.1%} "
                     f"{p['p50_ms'][0]:>7.2f} {p['p50_ms'][1]:>7.2f} {p['p50_diff']:>6.1%}")  # fmt: skip
    return "\n".join(lines)


# The figures of an answer (ratios, intervals, repeats still needed, the edge row's sizes and
# latencies) change from bench to bench while the answer stays the same: they are left out when
# two answers are compared.
_FIGURES = re.compile(r"\d+\.\d+×|\[[^\]]*\]|\(needs [^)]*\)|:\s*needs .*$"
                      r"|\s*\(?\b\d+(?:\.\d+)? (?:ms|kB|MB)(?: p50)?\)?(?:, next [^)]*\))?")
# "not told apart: A, B, C" lists the leaders fastest first: their order within the tie is noise.
_TIED = re.compile(r"(not told apart: )([^;]*)")


def answer_class(answer: str) -> str:
    """'No: TorchServe/m 1.33× faster [1.28–1.39]' -> 'No: TorchServe/m faster'; every
    undecided answer is the same answer, whatever is left open; leaders not told apart are a set."""
    if answer.startswith("Inconclusive"):
        return "Inconclusive"
    text = _FIGURES.sub("", answer)
    text = _TIED.sub(lambda m: m[1] + ", ".join(sorted(x.strip() for x in m[2].split(","))), text)
    return " ".join(text.split())


def agreement(a: dict, b: dict, method: stats.Method | None = None) -> dict:
    """The verdicts of two benches, comparison by comparison (each a cell's finding: faster,
    slower, tie or inconclusive) and answer by answer (a cell of the table): how many are the
    same, and how many name opposite winners (A better in one bench, B in the other)."""
    method = method or stats.Method.from_env()
    rows_b = {r["question"]: r["cells"] for r in verdict(b, method)}
    comparisons, answers = [], []
    for row in verdict(a, method):
        for arch, cell in row["cells"].items():
            other = rows_b.get(row["question"], {}).get(arch)
            if other is None:
                continue
            answers.append({"question": row["question"], "arch": arch, "a": cell["answer"],
                            "b": other["answer"],
                            "same": answer_class(cell["answer"]) == answer_class(other["answer"])})
            theirs = {f["key"]: f["outcome"] for f in other["findings"]}
            for f in cell["findings"]:
                if f["key"] not in theirs or "missing" in (f["outcome"], theirs[f["key"]]):
                    continue
                pair = {f["outcome"], theirs[f["key"]]}
                comparisons.append({"question": row["question"], "arch": arch, "key": f["key"],
                                    "a": f["outcome"], "b": theirs[f["key"]],
                                    "same": len(pair) == 1, "opposite": pair == {"a", "b"}})
    return {"method": method.describe(), "comparisons": comparisons, "answers": answers,
            "comparisons_same": sum(c["same"] for c in comparisons),
            "opposite": sum(c["opposite"] for c in comparisons),
            "answers_same": sum(c["same"] for c in answers)}


def render_agreement(result: dict, bar: float = 0.9) -> str:
    n, k = len(result["comparisons"]), result["comparisons_same"]
    na, ka = len(result["answers"]), result["answers_same"]
    ok = n and k / n >= bar and not result["opposite"]
    lines = [f"verdicts ({result['method']}):",
             f"  comparisons: {k}/{n} the same ({k / n if n else 0:.0%}), "
             f"{n - k} different, {result['opposite']} opposite winners"
             f"  -> {'holds' if ok else 'DOES NOT HOLD'} (bar: >= {bar:.0%} the same, "
             "no opposite winners)",
             f"  answers:     {ka}/{na} the same"]
    for c in result["comparisons"]:
        if not c["same"]:
            flag = "OPPOSITE" if c["opposite"] else "differs"
            lines.append(f"  {flag:<8} {c['question']} [{c['arch']}] {c['key']}: "
                         f"{c['a']} vs {c['b']}")
    return "\n".join(lines)


def resampled_bench(benches: list[dict], repeats: int, rng: np.random.Generator) -> dict:
    """A bench as this machine might give it next time: each closed-loop gateway point (what the
    verdict's throughput and latency comparisons read) gets `repeats` runs drawn with replacement
    from that point's runs in all the given benches, so the drift between benches is in it, not
    only the noise within one. The rest is the last bench's, less its edge phase (its rounds are
    not resampled: it would agree with itself)."""
    if repeats < 2:
        raise ValueError(f"repeats={repeats}: at least 2 per point")
    points: dict[tuple, list[dict]] = {}
    for bench in benches:
        for key, runs in repeats_of(bench).items():
            if key[:2] == ("gateway", "closed"):
                points.setdefault(key, []).extend(runs)
    out = {k: v for k, v in benches[-1].items() if k not in ("runs", "edge")}
    out["runs"] = [r for r in benches[-1]["runs"]
                   if (r.get("via"), r.get("mode")) != ("gateway", "closed")]
    for key in sorted(points):
        runs = points[key]
        out["runs"] += [runs[i] for i in rng.integers(0, len(runs), repeats)]
    return out


def expected_agreement(benches: list[dict], repeats: int, pairs: int = 20,
                       method: stats.Method | None = None, seed: int = 20261207) -> dict:
    """Bootstrap of benches: how often two benches with `repeats` runs per point would give the
    same verdicts, drawn from the runs of the benches measured (resampled_bench). Answers "would
    more repeats make the verdict reproducible on this machine?" without hours of benches: with
    more repeats the intervals narrow, so comparisons far from a decision edge settle, but one
    whose ratio sits at an edge (±negligible, or an interval's width beyond it) flips at any
    count. The edge phase is left out (see resampled_bench)."""
    if len(benches) < 2 or pairs < 1:
        raise ValueError("needs at least 2 benches and 1 pair")
    method = method or stats.Method.from_env()
    rng = np.random.default_rng(seed)
    same, answers, opposite, differ, n = [], [], 0, Counter(), 0
    for _ in range(pairs):
        ag = agreement(resampled_bench(benches, repeats, rng),
                       resampled_bench(benches, repeats, rng), method)
        n = len(ag["comparisons"])
        same.append(ag["comparisons_same"] / n if n else 1.0)
        answers.append(ag["answers_same"] / len(ag["answers"]) if ag["answers"] else 1.0)
        opposite += ag["opposite"]
        differ.update(f"{c['question']} [{c['arch']}] {c['key']}"
                      for c in ag["comparisons"] if not c["same"])
    return {"repeats": repeats, "pairs": pairs, "benches": len(benches), "comparisons": n,
            "comparisons_same": same, "answers_same": answers, "opposite": opposite,
            "differ": differ.most_common()}


def render_expected(result: dict, bar: float = 0.9, top: int = 5) -> str:
    same, answers = np.asarray(result["comparisons_same"]), np.asarray(result["answers_same"])
    lines = [f"with {result['repeats']} repeats per point (bootstrap of {result['benches']} "
             f"benches, {result['pairs']} pairs, {result['comparisons']} comparisons, edge phase "
             f"left out): comparisons the same {same.mean():.0%} on average "
             f"[{same.min():.0%}-{same.max():.0%}], >= {bar:.0%} in {(same >= bar).sum()} of "
             f"{same.size} pairs; answers the same {answers.mean():.0%} "
             f"[{answers.min():.0%}-{answers.max():.0%}]; opposite winners {result['opposite']}"]
    lines += [f"  differed in {k} of {result['pairs']} pairs: {name}"
              for name, k in result["differ"][:top]]
    return "\n".join(lines)
