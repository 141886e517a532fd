"""CI's tiny bench: the smoke profile of `make bench` against the real stack, then its report."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.real_stack


def test_smoke_bench_measures_every_runtime_and_writes_the_report(real_stack, tmp_path):
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "loadtests", "bench", "--profile", "smoke", "--out", str(out)],
                          cwd=REPO, env=real_stack["env"], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    measured = [r for r in results["runs"] if r["via"] == "gateway"]
    assert {r["runtime"] for r in measured} == {"onnxruntime", "tflite", "tfserving", "torchserve"}
    for run in results["runs"]:
        assert run["requests"] > 0, run["id"]
        assert run["failures"] == 0, (run["id"], run["failure_reasons"])  # every answer was checked
    assert results["ceilings"], "the client ceiling is measured before the runs"
    report = (out / "report.md").read_text()
    for section in ("## Client ceiling", "## Verdict", "Performance: a tie?", "stand-in"):
        assert section in report
    assert (out / "report.html").exists() and list((out / "plots").glob("*.png"))
