"""CI's tiny bench: the smoke profile of `make bench` against the real stack, then its report."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from contract.runtimes import RUNTIMES
from tests.conftest import REPO

pytestmark = pytest.mark.real_stack


def test_smoke_bench_measures_every_runtime_and_writes_the_report(real_stack, tmp_path):
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "loadtests", "bench", "--profile", "smoke", "--out", str(out)],
                          cwd=REPO, env=real_stack["env"], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    measured = [r for r in results["runs"] if r["via"] == "gateway"]
    assert {r["runtime"] for r in measured} == set(RUNTIMES)  # every registered runtime, AOTInductor too
    for run in results["runs"]:
        assert run["requests"] > 0, run["id"]
        assert run["failures"] == 0, (run["id"], run["failure_reasons"])  # every answer was checked
    assert results["ceilings"], "the client ceiling is measured before the runs"
    # The OIP servers' own histograms were read around every closed gateway run (not TorchServe).
    oip = [r for r in measured if r["mode"] == "closed" and r["runtime"] != "torchserve"]
    assert oip and all(r["server_time"]["decode"][1] > 0 for r in oip)
    report = (out / "report.md").read_text()
    for section in ("## Client ceiling", "## Verdict", "Performance: a tie?", "stand-in",
                    "## Where the server's time goes: codec vs inference", "Tensor encoding: auto"):
        assert section in report
    assert (out / "report.html").exists() and list((out / "plots").glob("*.png"))


def test_single_request_latency_tool_checks_every_answer(real_stack):
    done = subprocess.run([sys.executable, "-m", "loadtests.latency", "--requests", "20", "--warmup", "5"],
                          cwd=REPO, env=real_stack["env"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines() if " p50 " in line]
    assert {(r[0], r[1]) for r in rows} == {
        (m, rt) for m in ("digits-cnn-torch", "digits-cnn-keras") for rt in ("onnxruntime", "tflite", "tfserving", "torchserve")
    }
    assert all(float(r[4]) > 0 for r in rows)
    # Direct, auto encoding: digits bodies are small (JSON); TF Serving gets its own REST JSON.
    assert {(r[1], r[2]) for r in rows} == {("onnxruntime", "json"), ("tflite", "json"),
                                            ("tfserving", "tfserving-json"), ("torchserve", "json")}
