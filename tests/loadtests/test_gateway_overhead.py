"""loadtests.gateway_overhead end to end, tiny: real OIP server, gateway, forward-only proxy and
the empty endpoint (the unit of the CPU targets)."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, python_env

pytestmark = pytest.mark.real_store


def _run_tool(tmp_path, *args: str, timeout: float):
    """Run the tool briefly (1 s at saturation, 2 rounds); its process and its JSON report."""
    out = tmp_path / "overhead.json"
    proc = subprocess.run(
        [sys.executable, "-m", "loadtests.gateway_overhead", *args, "--window", "1",
         "--rounds", "2", "--out", str(out)],
        cwd=REPO, env=python_env(), capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc, json.loads(out.read_text())


def test_overhead_tool_measures_direct_gateway_and_floor(real_store, tmp_path):
    proc, r = _run_tool(tmp_path, "--model", "digits-mlp-torch", "--store", str(real_store),
                        "--requests", "40", "--warmup", "5", "--concurrency", "4", timeout=180)
    assert set(r["throughput"]) == {"direct", "gateway", "passthrough", "reference"}
    for arm, t in r["throughput"].items():
        assert t["requests"] > 0 and t["errors"] == 0, arm
        assert r["latency"][arm]["n"] == 40, arm
    # every arm answered right (the tool checks each against the reference before measuring)
    assert r["served_by"]["gateway"] == "onnxruntime"
    assert 0 < r["throughput_ratio"] < 2 and 0 < r["passthrough_throughput_ratio"] < 2
    assert r["p50_delta_ms"] == pytest.approx(
        r["latency"]["gateway"]["p50_ms"] - r["latency"]["direct"]["p50_ms"], abs=1e-3)
    assert "floor (forward-only proxy" in proc.stdout
    # CPU in multiples of the empty endpoint's, each server measured in its own arm
    cpu, units = r["cpu_us_per_request_at_saturation"], r["cpu_in_reference_units"]
    unit = cpu["reference"]["reference"]
    assert unit > 0 and units["gateway"]["unit_us"] == unit
    assert units["gateway"]["value"] == pytest.approx(cpu["gateway"]["gateway"] / unit, abs=0.01)
    assert units["backend"]["value"] == pytest.approx(cpu["direct"]["backend"] / unit, abs=0.01)
    assert units["gateway"]["target"] == pytest.approx(100 / 31, abs=0.01)  # JSON
    assert r["pass"]["cpu_gateway"] == (units["gateway"]["value"] <= units["gateway"]["target"])
    assert "x the empty endpoint's" in proc.stdout


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_overhead_tool_measures_the_tf_serving_transports(real_store, tmp_path, transport):
    """--runtime tfserving: the stand-in on free REST + gRPC ports, the gateway reaching it over
    --backend-transport; direct is TF Serving's own REST :predict; no forward-only floor."""
    proc, r = _run_tool(tmp_path, "--model", "digits-mlp-keras", "--runtime", "tfserving",
                        "--backend-transport", transport, "--encoding", "binary",
                        "--store", str(real_store), "--requests", "20", "--warmup", "2",
                        "--concurrency", "2", timeout=240)
    assert set(r["throughput"]) == {"direct", "gateway", "reference"}
    assert r["backend_transport"] == {"rest": "REST JSON", "grpc": "gRPC TensorProto"}[transport]
    assert r["served_by"] == {"direct": "tfserving-standin", "gateway": "tfserving-standin",
                              "reference": "-"}
    for arm in ("direct", "gateway"):
        assert r["throughput"][arm]["errors"] == 0 and r["latency"][arm]["n"] == 20, arm
        assert r["cpu_us_per_request_at_saturation"][arm]["backend"] > 0, arm
    assert r["cpu_us_per_request_at_saturation"]["gateway"]["gateway"] > 0
    assert f"gateway -> backend {r['backend_transport']}" in proc.stdout
