"""The edge phase in the verdict, the report and the "Your model" ranking, from synthetic results
with known answers (tests/loadtests/synthetic.py: with_edge)."""

import json

from loadtests.report import ranking
from loadtests.report.build import build_report
from loadtests.report.edge_verdict import QUESTION, candidates
from loadtests.report.verdict import verdict
from tests.loadtests import synthetic


def edge_cell(results, arch="digits-cnn"):
    return {r["question"]: r["cells"] for r in verdict(results)}[QUESTION][arch]


def test_candidates_are_the_int8_variants_per_runtime_and_the_float_artifact_where_none():
    doc = synthetic.with_edge(synthetic.results())["edge"]["models"]
    torch = [r["key"] for r in candidates(doc["digits-cnn-torch"])]
    # TFLite int8-static failed its certificate: not a candidate; ExecuTorch has no int8 here.
    assert torch == ["executorch", "tflite:int8-dynamic", "onnx:int8-dynamic", "onnx:int8-static"]
    assert [r["key"] for r in candidates(doc["digits-cnn-keras"])] == ["tflite:int8-dynamic", "onnx:int8-dynamic"]


def test_edge_verdict_names_the_smallest_and_the_fastest_or_says_they_tie():
    cell = edge_cell(synthetic.with_edge(synthetic.results()))
    torch, keras = cell["answer"].split("; digits-cnn-keras: ")
    # 0.020 vs 0.021 ms (5% apart, 5% noise over 200 calls): not told apart; 45,000 B is the smallest.
    assert torch.startswith("digits-cnn-torch: smallest ONNX Runtime int8-dynamic (45.0 kB, next TFLite int8-dynamic 46.2 kB)")
    assert "fastest not told apart: TFLite int8-dynamic 0.020 ms, ONNX Runtime int8-static 0.021 ms" in torch
    assert keras.startswith("smallest TFLite int8-dynamic (46.0 kB") and "fastest TFLite int8-dynamic (0.020 ms p50)" in keras
    details = "\n".join(cell["details"])
    assert "ExecuTorch (float) — no certified int8 variant: 159.0 kB, p50 0.050 ms (200 calls), RSS +2.0 MB" in details
    assert "ONNX Runtime int8-static: 46.5 kB" in details and "accuracy drop 3.0 pt" in details
    assert "TFLite int8-static" not in details  # its certificate failed: not a candidate
    outcomes = {f["key"].split("vs ")[-1]: f["outcome"] for f in cell["findings"]}
    assert outcomes["ONNX Runtime int8-static (p50 in-process)"] == "tie"
    assert outcomes["ExecuTorch (float) (p50 in-process)"] == "a"
    assert all(f["more"] is None and f["points"] == [] for f in cell["findings"])  # adaptive repeats skip them


def test_no_edge_phase_no_edge_row():
    assert QUESTION not in {r["question"] for r in verdict(synthetic.results())}


def test_aotinductor_row_compares_with_tf_serving_beside_torchserve_and_onnx_runtime():
    res = synthetic.with_aotinductor(synthetic.results())
    cell = {r["question"]: r["cells"] for r in verdict(res)}[
        "PyTorch's current server path (AOTInductor) vs TF Serving (and vs TorchServe)"]["digits-cnn"]
    # AOTInductor 700 vs TF Serving (stand-in) 300, TorchServe 400, ONNX Runtime 900 req/s (x3 at 8 users)
    answer = cell["answer"]
    assert answer.startswith("Partly: AOTInductor faster 3, the other faster 1")
    assert "vs TF Serving (stand-in) serving digits-cnn-keras: AOTInductor/digits-cnn-torch 2.33× faster [" in answer
    assert "vs TF Serving (stand-in) serving digits-cnn-torch: AOTInductor 2.33× faster [" in answer
    assert "vs TorchServe: AOTInductor 1.75× faster [" in answer and "vs ONNX Runtime: ONNX Runtime 1.29× faster [" in answer
    assert [f["outcome"] for f in cell["findings"]] == ["a", "a", "a", "b"]


def test_report_has_the_edge_section_plot_and_the_ranking_shows_every_variant(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(synthetic.with_edge(synthetic.results())))
    build_report(path)
    md = (tmp_path / "report.md").read_text()
    edge = md.split("## Edge: every certified in-process artifact")[1].split("\n## ")[0]
    assert "![edge](plots/edge.png)" in edge and (tmp_path / "plots" / "edge.png").stat().st_size > 5000
    assert "| `tflite:int8-dynamic` | TFLite | 46.2 kB | 2.0 | 0.020 / " in edge
    assert "| `onnx:int8-static` | ONNX Runtime | 46.5 kB | 2.0 |" in edge and "| 0.940 (-3.0 pt) |" in edge
    assert "| `tflite:int8-static` | TFLite | 46.4 kB | **not certified**, not run: FAILED" in edge
    mine = md.split("## Your model: digits-cnn-torch")[1].split("\n## ")[0]
    variants = [line for line in mine.splitlines() if "`" in line and line.startswith("| ")]
    assert len(variants) == 7  # every edge artifact of the model, the uncertified one included
    assert variants[0].startswith("| TFLite int8-dynamic `tflite:int8-dynamic` | 46.2 kB | 0.020 / ")
    assert variants[-1].startswith("| TFLite int8-static `tflite:int8-static` | 46.4 kB | **not certified**")


def test_ranking_has_no_edge_rows_without_an_edge_phase():
    assert ranking.edge_rows(synthetic.results(), "digits-cnn-torch") == []


def with_rounds(res: dict, model: str, p50s_of: dict[str, list[float]]) -> dict:
    """res with these artifacts' rows measured in interleaved rounds at the given p50s (their
    per-call latencies regrouped so the run's p50 is what the rounds pooled give)."""
    import numpy as np

    for row in res["edge"]["models"][model]["rows"]:
        if row["key"] in p50s_of:
            p50s, m = p50s_of[row["key"]], row["measured"]
            noise = np.exp(np.random.default_rng(len(row["key"])).normal(0, 0.02, 60))
            m["latencies_ms"] = [float(p * n) for p in p50s for n in noise]
            m["p50_ms"], m["calls"] = float(np.median(m["latencies_ms"])), len(m["latencies_ms"])
            m["rounds"] = [{"round": i, "calls": 60, "p50_ms": p, "window_s": [i, i + 0.1]} for i, p in enumerate(p50s)]
    res["edge"]["limits"]["rounds"] = 3
    return res


def keras_pair(tflite_rounds, onnx_rounds):
    res = with_rounds(synthetic.with_edge(synthetic.results()), "digits-cnn-keras",
                      {"tflite:int8-dynamic": tflite_rounds, "onnx:int8-dynamic": onnx_rounds})
    return [f for f in edge_cell(res)["findings"] if "digits-cnn-keras" in f["key"]], edge_cell(res)


def test_a_pair_whose_rounds_disagree_is_not_called_a_winner():
    # TFLite 1.5x ahead in two rounds, 1.33x behind in the third: pooled over the calls TFLite's
    # p50 is 0.020 vs 0.030 and the per-call bootstrap (no drift in it) calls it 1.5x faster.
    found, cell = keras_pair([0.020, 0.020, 0.040], [0.030, 0.030, 0.030])
    assert [f["outcome"] for f in found] == ["inconclusive"]
    assert "fastest not told apart: TFLite int8-dynamic" in cell["answer"]
    text = next(d for d in cell["details"] if "digits-cnn-keras: not told apart" in d)
    assert "(inconclusive): TFLite int8-dynamic 1.19× [" in text and text.endswith("(3 interleaved rounds)")


def test_a_pair_apart_in_every_round_is_called_and_so_is_a_tie():
    found, cell = keras_pair([0.020, 0.023, 0.019], [0.041, 0.044, 0.040])
    assert [f["outcome"] for f in found] == ["a"]
    assert "fastest TFLite int8-dynamic (" in cell["answer"]
    assert any("TFLite int8-dynamic 2.02× lower latency [" in d and d.endswith("vs ONNX Runtime int8-dynamic "
               "(3 interleaved rounds)") for d in cell["details"])  # fmt: skip
    found, _ = keras_pair([0.020, 0.023, 0.019], [0.0201, 0.0232, 0.0192])  # same drift, 1% apart
    assert [f["outcome"] for f in found] == ["tie"]


def test_two_rounds_decide_nothing_and_a_result_without_rounds_says_how_it_was_compared():
    res = with_rounds(synthetic.with_edge(synthetic.results()), "digits-cnn-keras",
                      {"tflite:int8-dynamic": [0.020, 0.021], "onnx:int8-dynamic": [0.090, 0.091]})
    found = [f for f in edge_cell(res)["findings"] if "digits-cnn-keras" in f["key"]]
    assert [f["outcome"] for f in found] == ["inconclusive"]  # stats.Method.min_repeats = 3
    old = edge_cell(synthetic.with_edge(synthetic.results()))
    assert any(d.endswith("(one run, per-call bootstrap: drift between runs not in it)") for d in old["details"])


def test_the_report_shows_each_rounds_p50_and_a_dash_without_rounds(tmp_path):
    res = with_rounds(synthetic.with_edge(synthetic.results()), "digits-cnn-keras",
                      {"tflite:int8-dynamic": [0.020, 0.023, 0.019]})
    path = tmp_path / "results.json"
    path.write_text(json.dumps(res))
    build_report(path)
    edge = (tmp_path / "report.md").read_text().split("## Edge: every certified in-process artifact")[1]
    assert "split over 3 interleaved rounds" in edge
    assert "| 0.020 / 0.023 / 0.019 |" in edge.split("digits-cnn-keras")[1]
    assert "(200) | – |" in edge.split("digits-cnn-keras")[0]  # the torch rows have no rounds
