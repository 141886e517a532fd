"""`python -m loadtests compare`: repeatability of two benches, per runtime."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from loadtests.__main__ import app
from loadtests.report.compare import (agreement, answer_class, compare, expected_agreement,
                                      render, render_agreement, render_expected, resampled_bench)
from tests.loadtests import synthetic


def test_identical_benches_agree_exactly():
    a = synthetic.results()
    result = compare(a, copy.deepcopy(a))
    assert set(result["runtimes"]) == set(synthetic.RUNTIMES)
    for r in result["runtimes"].values():
        assert r["rps_diff_max"] == 0.0 and r["p50_diff_max"] == 0.0
    assert "NO" not in render(result)


def test_a_runtime_that_drifts_is_reported():
    a = synthetic.results()
    b = copy.deepcopy(a)
    for run in b["runs"]:
        if run["runtime"] == "torchserve":
            run["rps"] *= 0.7  # 30% slower the second time
    result = compare(a, b)
    assert abs(result["runtimes"]["torchserve"]["rps_diff_median"] - 0.3 / 0.85) < 1e-9
    assert result["runtimes"]["onnxruntime"]["rps_diff_max"] == 0.0
    table = render(result, 0.15)
    assert any(line.startswith("torchserve") and line.endswith("NO") for line in table.splitlines())


def _scaled(results, runtime, factor, model=None):
    out = copy.deepcopy(results)
    for run in out["runs"]:
        if run.get("runtime") == runtime and model in (None, run["model"]) and run.get("ok"):
            run["rps"] *= factor
    return out


def test_verdicts_of_identical_benches_all_agree():
    a = synthetic.results()
    result = agreement(a, copy.deepcopy(a))
    n = len(result["comparisons"])
    assert n >= 20 and result["comparisons_same"] == n and result["opposite"] == 0
    assert result["answers_same"] == len(result["answers"]) == 12  # 6 questions x 2 architectures
    assert "holds" in render_agreement(result)


def test_a_noisier_bench_differs_without_naming_the_other_winner():
    a = synthetic.results()
    b = synthetic.results(spread=0.6)  # the same figures, +-60%: much is left inconclusive
    result = agreement(a, b)
    differ = [c for c in result["comparisons"] if not c["same"]]
    assert differ and all(c["b"] == "inconclusive" for c in differ)
    assert result["opposite"] == 0
    assert result["answers_same"] < len(result["answers"])


def test_opposite_winners_are_counted_and_named():
    a = synthetic.results()
    b = _scaled(a, "torchserve", 0.5)  # TorchServe 1.33x faster than TF Serving -> 1.5x slower
    result = agreement(a, b)
    opposite = [c for c in result["comparisons"] if c["opposite"]]
    assert opposite and result["opposite"] == len(opposite)
    assert all({c["a"], c["b"]} == {"a", "b"} for c in opposite)
    assert any("TorchServe" in c["key"] and "TF Serving" in c["key"] for c in opposite)
    text = render_agreement(result)
    assert "DOES NOT HOLD" in text and "OPPOSITE" in text


def test_answer_figures_do_not_count_as_a_different_answer():
    assert (answer_class("No: TorchServe/m 1.33× faster [1.28–1.39]")
            == answer_class("No: TorchServe/m 1.29× faster [1.20–1.37]"))
    undecided = "Inconclusive: needs 4 more repeats (1.12× [0.85–1.40])"
    assert answer_class(undecided) == "Inconclusive"
    assert (answer_class("Inconclusive (needs up to 5 more repeats): a 1, b 0, tie 0 (of 2)")
            == answer_class("Inconclusive (needs up to 9 more repeats): a 0, b 0, tie 1 (of 2)"))
    assert answer_class("Yes (4/4)") != answer_class("Partly: a 3, b 1 (of 4)")


def test_edge_answers_compare_by_their_leaders_not_their_figures():
    a = ("m: smallest TFLite (float) (13.98 MB, next ExecuTorch (float) 14.00 MB); fastest not told "
         "apart: TFLite (float) 11.755 ms, ONNX Runtime (float) 12.377 ms")
    b = ("m: smallest TFLite (float) (13.98 MB, next ExecuTorch (float) 14.00 MB); fastest not told "
         "apart: ONNX Runtime (float) 12.146 ms, TFLite (float) 12.703 ms")
    assert answer_class(a) == answer_class(b)  # the same tie, listed in another order
    decided = "m: smallest TFLite (float) (13.98 MB, next ExecuTorch (float) 14.00 MB); fastest TFLite (float) (11.2 ms p50)"
    assert answer_class(decided) != answer_class(a)  # one winner is not a tie
    other = decided.replace("fastest TFLite (float)", "fastest ONNX Runtime (float)")
    assert answer_class(other) != answer_class(decided)  # another winner
    smaller = a.replace("smallest TFLite (float)", "smallest ExecuTorch (float)")
    assert answer_class(smaller) != answer_class(a)


def _closed_points(bench):
    out = {}
    for r in bench["runs"]:
        if (r.get("via"), r.get("mode"), r.get("ok")) == ("gateway", "closed", True):
            out.setdefault((r["model"], r["runtime"], r["users"]), []).append(r["rps"])
    return out


def test_a_resampled_bench_draws_each_point_from_every_bench():
    a = synthetic.results()
    b = _scaled(a, "torchserve", 0.5)
    b["edge"] = {"models": {}}
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(10):
        s = resampled_bench([a, b], 4, rng)
        points = _closed_points(s)
        assert points.keys() == _closed_points(a).keys()
        assert all(len(v) == 4 for v in points.values())
        theirs = set(_closed_points(a)[("digits-cnn-torch", "torchserve", 8)]
                     + _closed_points(b)[("digits-cnn-torch", "torchserve", 8)])
        drawn = points[("digits-cnn-torch", "torchserve", 8)]
        assert set(drawn) <= theirs
        seen |= {"a" if x > 1000 else "b" for x in drawn}  # a: 1200 +-2%, b: 600 +-2%
        assert "edge" not in s  # the edge phase's rounds are not resampled
        assert [r for r in s["runs"] if r["mode"] == "open"] == [r for r in b["runs"] if r["mode"] == "open"]
    assert seen == {"a", "b"}
    with pytest.raises(ValueError, match="at least 2"):
        resampled_bench([a, b], 1, rng)


def test_benches_that_agree_are_expected_to_agree():
    a = synthetic.results()
    result = expected_agreement([a, copy.deepcopy(a)], repeats=3, pairs=3)
    assert result["comparisons"] >= 20 and min(result["comparisons_same"]) == 1.0
    assert result["opposite"] == 0 and result["differ"] == []
    assert "100% on average" in render_expected(result) and "differed" not in render_expected(result)


def test_a_point_that_moved_between_benches_is_expected_to_flip_its_comparisons():
    """TorchServe 1.33x TF Serving in one bench, 1.07x in the other: drawn from both, the
    comparison lands on either side of the 10% edge, and more repeats do not settle it."""
    a = synthetic.results()
    b = _scaled(a, "torchserve", 0.8)
    for n in (3, 12):
        result = expected_agreement([a, b], repeats=n, pairs=6)
        assert min(result["comparisons_same"]) < 1.0
        names = [name for name, _ in result["differ"]]
        assert any("TorchServe" in k and "TF Serving" in k for k in names)
        assert all("TorchServe" in k for k in names)  # nothing else moved
        assert result["opposite"] == 0  # 1.33x vs 1.07x: a winner or undecided, never the other
        assert "differed in" in render_expected(result)
    with pytest.raises(ValueError):
        expected_agreement([a], repeats=3)


def test_compare_cli_compares_every_pair_and_estimates_more_repeats(tmp_path):
    a = synthetic.results()
    files = []
    for i, bench in enumerate((a, copy.deepcopy(a), _scaled(a, "torchserve", 0.8))):
        files.append(tmp_path / f"{i}.json")
        files[-1].write_text(json.dumps(bench))
    out = CliRunner().invoke(app, ["compare", *map(str, files), "--resample", "3", "--pairs", "2"])
    assert out.exit_code == 0, out.output
    assert out.output.count("verdicts (") == 3  # 3 pairs
    assert "with 3 repeats per point (bootstrap of 3 benches, 2 pairs" in out.output
    one = CliRunner().invoke(app, ["compare", str(files[0])])
    assert one.exit_code == 2 and "at least two" in one.output
    for bad in (["--resample", "1"], ["--resample", "3,x"], ["--resample", "3", "--pairs", "0"]):
        out = CliRunner().invoke(app, ["compare", *map(str, files[:2]), *bad])
        assert out.exit_code == 2 and "whole numbers >= 2" in out.output, bad
        assert "verdicts (" not in out.output  # refused before any work
