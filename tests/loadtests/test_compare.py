"""`python -m loadtests compare`: repeatability of two benches, per runtime."""

from __future__ import annotations

import copy

from loadtests.report.compare import compare, render
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
