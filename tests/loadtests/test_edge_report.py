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
