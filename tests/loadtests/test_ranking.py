"""The "Your model" ranking (loadtests/report/ranking.py) on synthetic results with known answers:
at 8 users TFLite 3,300 > ONNX Runtime 2,700 > TorchServe 1,200 > TF Serving 900 req/s (x1.0 for
digits-cnn-torch, +-2% over 3 repeats); at 1 user TFLite has the lowest p99 and the smallest RSS."""

import json

from loadtests.report import ranking
from loadtests.report.aggregate import aggregate, one, ref_users
from loadtests.report.build import build_report
from tests.loadtests import synthetic

MODEL = "digits-cnn-torch"
label = {"tflite": "TFLite", "onnxruntime": "ONNX Runtime", "torchserve": "TorchServe",
         "tfserving": "TF Serving"}.get


def ranked(results, model=MODEL):
    points = aggregate(results)
    return ranking.rows(results, points, model, ref_users(results, points))


def scale(results, runtime, users, factor, model=MODEL):
    for r in results["runs"]:
        if (r["via"], r["mode"], r["model"], r["runtime"], r["users"]) == \
                ("gateway", "closed", model, runtime, users) and r.get("ok"):
            r["rps"] *= factor


def test_runtimes_ranked_by_throughput_at_the_reference_users():
    rows = ranked(synthetic.results())
    assert [(r.runtime, r.rank) for r in rows] == [
        ("tflite", 1), ("onnxruntime", 2), ("torchserve", 3), ("tfserving", 4), ("aotinductor", None),
        ("executorch", None)]
    assert all(r.why_not is None and r.artifact["bytes"] > 0 for r in rows[:4])
    # the synthetic store has no .pt2 and no .pte: the fifth and sixth runtimes keep their rows
    # with the reason
    assert rows[4].why_not == "no .pt2 artifact in the store" and rows[4].artifact is None
    assert rows[5].why_not == "no .pte artifact in the store" and rows[5].artifact is None


def test_runtimes_the_verdict_would_not_call_faster_share_a_rank():
    results = synthetic.results()
    scale(results, "onnxruntime", 8, 3100 / 2700)  # 3,300 vs 3,100 +-2%: 6% apart, under 10%
    rows = ranked(results)
    assert {r.runtime for r in rows if r.rank == 1} == {"tflite", "onnxruntime"}
    assert [r.rank for r in rows] == [1, 1, 3, 4, None, None]  # no .pt2 / .pte in the synthetic store
    cells = ranking.table_rows(rows, label)
    assert [c[0] for c in cells[:3]] == ["1 (not told apart)", "1 (not told apart)", "3"]
    line = ranking.recommend(rows, 8, label)
    assert "not told apart" in line and "highest throughput" not in line
    scale(results, "onnxruntime", 8, 3200 / 3100)  # 3% apart: the verdict's tie, the same rank
    assert [r.rank for r in ranked(results)][:2] == [1, 1]


def test_single_repeats_are_never_ranked_apart():
    results = synthetic.results(repeats=1, spread=0.0)
    scale(results, "onnxruntime", 8, 1000 / 2700)  # 3,300 vs 1,000, one run each: no spread
    # (AOTInductor and ExecuTorch, last, are not in these results: unranked)
    assert [r.rank for r in ranked(results)] == [1, 1, 1, 1, None, None]
    assert "at least 3 repeats" in ranking.note(results, 8)
    assert [r.rank for r in ranked(synthetic.results(repeats=3, spread=0.0))] == [1, 2, 3, 4, None, None]


def test_a_runtime_that_could_not_serve_the_model_keeps_its_row_with_the_reason():
    results = synthetic.results()
    results["runs"] = [r for r in results["runs"]
                       if not (r["model"] == MODEL and r["runtime"] == "tflite")]
    info = results["models"][MODEL]
    del info["artifacts"]["tflite"]
    info["failed"] = {"tflite": "tflite: op FlexErf is not a TFLite builtin (every route tried)"}
    results["models"][MODEL]["artifacts"]["savedmodel"]["parity_ok"] = False
    results["models"][MODEL]["artifacts"]["savedmodel"]["parity_error"] = "max abs error 0.3 > 1e-4"
    results["runs"] = [r for r in results["runs"]
                       if not (r["model"] == MODEL and r["runtime"] == "tfserving")]
    rows = ranked(results)
    assert [r.runtime for r in rows] == ["onnxruntime", "torchserve", "tfserving", "tflite", "aotinductor",
                                         "executorch"]
    by = {r.runtime: r for r in rows}
    assert by["onnxruntime"].rank == 1 and by["tflite"].rank is None
    assert "FlexErf" in by["tflite"].why_not
    assert "parity certificate failed" in by["tfserving"].why_not
    cells = {c[1]: c for c in ranking.table_rows(rows, label)}
    assert cells["TFLite"][0] == "–"
    assert "**not served:** no .tflite artifact: tflite: op FlexErf" in cells["TFLite"][4][0]
    assert cells["TF Serving"][3] == "**failed**"
    assert "ONNX Runtime" in ranking.recommend(rows, 8, label)


def test_the_bench_skip_note_is_the_reason_when_the_manifest_has_none():
    results = synthetic.results()
    results["runs"] = [r for r in results["runs"]
                       if not (r["model"] == MODEL and r["runtime"] == "torchserve")]
    results["skipped"].append({"via": "gateway", "model": MODEL, "runtime": "torchserve",
                               "reason": "HTTP 507: worker died"})
    by = {r.runtime: r for r in ranked(results)}
    assert by["torchserve"].why_not == "skipped by the bench: HTTP 507: worker died"


def test_recommendation_names_the_best_runtime_and_cites_figures_from_the_results():
    results = synthetic.results()
    points = aggregate(results)
    line = ranking.recommend(ranked(results), 8, label)
    fig = {rt: one(points, via="gateway", mode="closed", model=MODEL, runtime=rt, users=u)
           for rt, u in (("tflite", 8), ("onnxruntime", 8))}
    single = {rt: one(points, via="gateway", mode="closed", model=MODEL, runtime=rt, users=1)
              for rt in ("tflite", "onnxruntime")}
    rss = {rt: results["services"][rt]["rss_mb_peak"] for rt in ("tflite", "onnxruntime")}
    assert line.startswith("**Recommendation: TFLite** (.tflite artifact): ")
    assert (f"highest throughput at 8 users ({ranking.num(fig['tflite'].rps.median)} req/s vs "
            f"{ranking.num(fig['onnxruntime'].rps.median)} next)") in line
    assert (f"lowest p99 at 1 user ({ranking.num(single['tflite'].p99.median)} ms vs "
            f"{ranking.num(single['onnxruntime'].p99.median)} next)") in line
    assert (f"smallest RSS ({ranking.num(rss['tflite'])} MB vs "
            f"{ranking.num(rss['onnxruntime'])} next)") in line
    # Derived, not hard-coded: make ONNX Runtime clearly fastest and it becomes the pick.
    scale(results, "onnxruntime", 8, 2.0)
    line = ranking.recommend(ranked(results), 8, label)
    assert line.startswith("**Recommendation: ONNX Runtime** (ONNX artifact): highest throughput")
    assert "smallest RSS" not in line  # TFLite's service is still the smaller one


def test_the_report_opens_with_one_ranking_section_per_model(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(synthetic.results()))
    page = build_report(path).read_text()
    md = (tmp_path / "report.md").read_text()
    titles = [line[3:] for line in md.splitlines() if line.startswith("## ")]
    # The synthetic profile names no models: every measured model, by name.
    assert titles[:5] == [f"Your model: {m}" for m in sorted(synthetic.MODELS)] + ["Summary"]
    assert "<h2>Your model: digits-cnn-torch</h2>" in page
    assert "<strong>Recommendation: TFLite</strong>" in page
    # The caption's note once, after the first ranking; "not measured" latency says why.
    assert md.count("where the profile searched it, is the line above the table") == 1


def test_the_ranking_orders_two_runtimes_exactly_when_the_verdict_names_a_winner():
    """Noisy repeats (lognormal 40%): wherever the verdict's "ONNX Runtime vs native" comparison
    is decided, the ranking puts the winner above; where it is not, neither is ranked above the
    other on that pair's account (same statistics, same pooled noise)."""
    import numpy as np

    from loadtests.report.verdict import noise_pools, verdict

    rng = np.random.default_rng(4)
    results = synthetic.results(spread=0.0)
    for r in results["runs"]:
        if r.get("ok"):
            r["rps"] *= float(np.exp(rng.normal(0, 0.4)))
    points = aggregate(results)
    pools = noise_pools(points)
    row = next(r for r in verdict(results) if r["question"].startswith("Does ONNX Runtime"))
    seen = set()
    for arch_cell in row["cells"].values():
        for f in arch_cell["findings"]:
            (_, _, model, a_rt, users, _), (_, _, _, b_rt, _, _) = f["points"]
            pa, pb = (one(points, via="gateway", mode="closed", model=model, runtime=rt,
                          users=users) for rt in (a_rt, b_rt))
            above = ranking.clearly_above(pa.rps, pb.rps, None,
                                          (pools[(a_rt, "rps")], pools[(b_rt, "rps")]))
            assert above == (f["outcome"] == "a"), f
            seen.add(f["outcome"])
            by = {r.runtime: r.rank for r in ranked(results, model)}
            if f["outcome"] == "a":
                assert by[a_rt] < by[b_rt]
    assert "a" in seen and "inconclusive" in seen  # both cases exercised
