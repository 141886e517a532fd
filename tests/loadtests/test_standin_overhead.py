"""loadtests.standin_overhead: the TF Serving stand-in against the same SavedModel in-process, and
its section in the bench report."""

import json
import subprocess
import sys

import numpy as np
import pytest

from loadtests.report.build import standin_sections, to_markdown
from loadtests.standin_overhead import paired_cost
from tests.conftest import REPO, python_env


def _tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loadtests.standin_overhead", *args], cwd=REPO,
                          env=python_env(), capture_output=True, text=True, timeout=240)  # fmt: skip


@pytest.mark.real_store
def test_measures_in_process_rest_and_grpc(real_store, tmp_path):
    out = tmp_path / "so.json"
    p = _tool("--store", str(real_store), "--models", "digits-mlp-keras", "--requests", "60", "--json", str(out))
    assert p.returncode == 0, p.stderr[-2000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["model"] == "digits-mlp-keras" and row["in_process"]["n"] == 60
    for arm in ("in_process", "rest_json", "grpc"):
        assert 0 < row[arm]["p50"] <= row[arm]["p95"] <= row[arm]["p99"], arm
    # A network hop, a codec and a batching queue cost something on top of the session call.
    assert row["rest_json"]["p50"] > row["in_process"]["p50"]
    assert row["grpc"]["p50"] > row["in_process"]["p50"]
    for arm in ("rest_json", "grpc"):  # paired by round: a cost above 0 with its interval
        lo, hi = row[f"overhead_{arm}_interval_ms"]
        assert 0 < lo <= row[f"overhead_{arm}_ms"] <= hi, arm
    assert "digits-mlp-keras" in p.stdout  # the table


def test_a_model_without_savedmodel_is_refused(tmp_path):
    p = _tool("--store", str(tmp_path), "--models", "nope")
    assert p.returncode == 2 and "no SavedModel" in p.stderr and "nope" in p.stderr


def test_paired_cost_is_the_median_difference_with_a_distribution_free_interval():
    rng = np.random.default_rng(0)
    drift = rng.uniform(0.010, 0.030, 200)  # the machine's drift, shared by both arms of a round
    base = drift + rng.normal(0, 0.0005, 200)
    cost = paired_cost(list(base + 0.002), list(base))  # 2 ms dearer in every round
    assert cost["median_ms"] == pytest.approx(2.0, abs=1e-6) and cost["interval_ms"] == [2.0, 2.0]
    noisy = paired_cost(list(drift + rng.normal(0.0005, 0.002, 200)), list(drift))
    lo, hi = noisy["interval_ms"]
    assert lo < noisy["median_ms"] < hi and lo < 0.5 < hi  # covers the true 0.5 ms
    # the rank of the bound: P(Binomial(200, 1/2) < 86) ~ 2.5%, so d_(86) and d_(115) bound 95%
    d = list(np.arange(200) / 1000)
    assert paired_cost(d, [0.0] * 200)["interval_ms"] == [85.0, 114.0]


def test_report_section():
    stats = lambda p50: {"n": 40, "p50": p50, "p95": p50 * 1.2, "p99": p50 * 1.5}  # noqa: E731
    row = {"model": "m-keras", "in_process": stats(20.0), "rest_json": stats(64.0), "grpc": stats(21.5),
           "overhead_rest_json_ms": 44.0, "overhead_rest_json_interval_ms": [41.5, 46.0],
           "overhead_grpc_ms": -1.5, "overhead_grpc_interval_ms": [-3.0, 0.5]}
    md = to_markdown("t", standin_sections({"standin_overhead": {"rows": [row]}}))
    assert ("| m-keras | 20.00 / 24.00 / 30.00 | 64.00 / 76.80 / 96.00 | 21.50 / 25.80 / 32.25 | "
            "+44.00 [+41.50 to +46.00] | none measurable (-1.50 [-3.00 to +0.50]) | 40 |") in md
    slower = {**row, "overhead_grpc_ms": -8.04, "overhead_grpc_interval_ms": [-9.81, -5.92]}
    assert "| in-process slower (-8.04 [-9.81 to -5.92]) |" in to_markdown(
        "t", standin_sections({"standin_overhead": {"rows": [slower]}}))
    old = {k: v for k, v in row.items() if not k.endswith("_interval_ms")}  # a result from before
    assert "| +44.00 | -1.50 | 40 |" in to_markdown("t", standin_sections({"standin_overhead": {"rows": [old]}}))
    failed = to_markdown("t", standin_sections({"standin_overhead": {"error": "took over 300 s"}}))
    assert "Not measured: took over 300 s" in failed
    assert standin_sections({}) == []
