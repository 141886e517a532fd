"""loadtests.standin_overhead: the TF Serving stand-in against the same SavedModel in-process, and
its section in the bench report."""

import json
import subprocess
import sys

import pytest

from loadtests.report.build import standin_sections, to_markdown
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
    assert row["overhead_rest_json_ms"] == pytest.approx(row["rest_json"]["p50"] - row["in_process"]["p50"], abs=1e-3)
    assert "digits-mlp-keras" in p.stdout  # the table


def test_a_model_without_savedmodel_is_refused(tmp_path):
    p = _tool("--store", str(tmp_path), "--models", "nope")
    assert p.returncode == 2 and "no SavedModel" in p.stderr and "nope" in p.stderr


def test_report_section():
    stats = lambda p50: {"n": 40, "p50": p50, "p95": p50 * 1.2, "p99": p50 * 1.5}  # noqa: E731
    row = {"model": "m-keras", "in_process": stats(20.0), "rest_json": stats(64.0), "grpc": stats(21.5),
           "overhead_rest_json_ms": 44.0, "overhead_grpc_ms": 1.5}
    md = to_markdown("t", standin_sections({"standin_overhead": {"rows": [row]}}))
    assert "| m-keras | 20.00 / 24.00 / 30.00 | 64.00 / 76.80 / 96.00 | 21.50 / 25.80 / 32.25 | +44.00 | +1.50 | 40 |" in md
    failed = to_markdown("t", standin_sections({"standin_overhead": {"error": "took over 300 s"}}))
    assert "Not measured: took over 300 s" in failed
    assert standin_sections({}) == []
