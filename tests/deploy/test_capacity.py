"""deploy/capacity.py and deploy/sizing.py: replica arithmetic on a small results.json in the
bench's own format (trimmed from a real one), the latency-target filter, the errors, the --json
output and the container resources (fast: no servers)."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from contract.runtimes import RUNTIMES
from deploy import capacity, sizing


def run(model, runtime, users, repeat, rps, p99, *, via="gateway", mode="closed", ok=True,
        failures=0, runtime_pct=80.0, gateway_pct=40.0, other_pct=3.0):
    """One run record as loadtests/runner.py writes it."""
    rid = f"{via}-{mode}-{model}-{runtime}-u{users}-rep{repeat}"
    return {
        "id": rid, "via": via, "mode": mode, "model": model, "runtime": runtime, "users": users,
        "repeat": repeat, "rate": 0.0, "exit_code": 0, "log": f"raw/{rid}.log",
        "csv": f"raw/{rid}_window_stats.csv", "window_start": 1765000000.0,
        "window_end": 1765000002.5, "window_s": 2.5, "requests": int(rps * 2.5),
        "failures": failures, "failure_reasons": {"HTTP 503": failures} if failures else {},
        "rps": rps, "latency_ms": {"p50": p99 / 3, "p90": p99 / 2, "p95": p99 / 1.5, "p99": p99,
                                   "mean": p99 / 3, "min": p99 / 10, "max": p99 * 2},
        "served_by": {runtime: int(rps * 2.5)}, "ok": ok,
        "cpu": {"wall_s": 2.5, "busy_pct": 190.0,
                "groups_pct": {"loadgen": 60.0, "gateway": gateway_pct, runtime: runtime_pct},
                "other_pct": other_pct},
        "noisy": other_pct > 20, "ceiling_fraction": rps / 2000.0,
    }


def results_doc(runs):
    return {
        "schema": 1,
        "profile": {"name": "capacity-test", "models": ["m-torch"], "users": [1, 4, 16],
                    "repeats": 2, "warmup_s": 1.0, "window_s": 2.5, "ref_users": 4},
        "started": "2026-12-06T22:00:00+00:00", "finished": "2026-12-06T22:05:00+00:00",
        "environment": {"cpu_model": "Test CPU", "cores": 2, "memory_gb": 23.5,
                        "settings": {"omp_num_threads": 1}},
        "tfserving": {"kind": "stand-in", "detail": "X-Served-By: tfserving-standin"},
        "gateway_not_ready": None,
        "services": {"gateway": {"pids": [1], "rss_mb_idle": 80.0, "rss_mb_peak": 90.0,
                                 "startup_s": 1.0}},
        "ceilings": {"m-torch": 2000.0}, "ceiling_of": {"m-torch": "m-torch"},
        "open_rates": {}, "skipped": [],
        "runs": runs,
    }


# m-torch@onnxruntime: p99 within 50 ms up to 4 users (median of 2 repeats: 100 req/s, 40 ms);
# 16 users break it. m-torch@tfserving: never within 50 ms (best p99 60 ms at 20 req/s).
RUNS = [
    run("m-torch", "onnxruntime", 1, 1, 40.0, 10.0),
    run("m-torch", "onnxruntime", 1, 2, 44.0, 12.0),
    run("m-torch", "onnxruntime", 4, 1, 90.0, 30.0, gateway_pct=45.0),
    run("m-torch", "onnxruntime", 4, 2, 110.0, 50.0, gateway_pct=55.0),
    run("m-torch", "onnxruntime", 16, 1, 120.0, 150.0),
    run("m-torch", "onnxruntime", 16, 2, 125.0, 160.0),
    run("m-torch", "onnxruntime", 32, 1, 500.0, 1.0, ok=False),  # failed run: ignored
    run("m-torch", "onnxruntime", 64, 1, 500.0, 1.0, failures=3),  # failures: ignored
    run("m-torch", "onnxruntime", 8, 1, 900.0, 1.0, via="direct"),  # not through the gateway
    run("m-torch", "tfserving", 1, 1, 20.0, 60.0),
    run("m-torch", "tfserving", 4, 1, 30.0, 200.0),
]


@pytest.fixture
def results_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results_doc(RUNS), indent=1) + "\n")
    return path


def test_replicas_from_the_highest_concurrency_within_the_target(results_file):
    plan = capacity.make_plan(results_file, rate=1000, latency_ms=50, runtimes=["onnxruntime"])
    (row,) = plan.rows
    assert (row.point.users, row.point.rps, row.point.latency_ms) == (4, 100.0, 40.0)
    assert row.replicas == math.ceil(1000 / (100.0 * 0.7)) == 15
    # gateway: median of 45% / 90 req/s and 55% / 110 req/s = 5000 us; 1 core x 0.7 per replica
    assert row.gateway_cpu_us_per_request == 5000.0
    assert row.gateway_replicas == math.ceil(1000 * 5000 / 1e6 / 0.7) == 8
    rt, gw = sizing.memory_mi("onnxruntime"), sizing.memory_mi("gateway")
    assert sizing.cpu_m("onnxruntime", "large") == sizing.cpu_m("gateway", "large") == 1000
    assert row.totals() == {"cpu_m": (15 + 8) * 1000,
                            "memory_request_mi": 15 * rt[0] + 8 * gw[0],
                            "memory_limit_mi": 15 * rt[1] + 8 * gw[1]}
    # runtime CPU per request at that point: median of 80% of a core / 90 and / 110 req/s
    assert row.runtime_cpu_us_per_request == pytest.approx(
        (0.8e6 / 90 + 0.8e6 / 110) / 2, abs=0.1)


def test_headroom_and_tighter_target(results_file):
    plan = capacity.make_plan(results_file, rate=1000, latency_ms=20, headroom=0.5,
                              runtimes=["onnxruntime"])
    (row,) = plan.rows
    assert (row.point.users, row.per_replica_rps) == (1, 42.0)
    assert row.replicas == math.ceil(1000 / (42.0 * 0.5)) == 48


def test_no_point_within_the_target_says_the_lowest_measured(results_file):
    plan = capacity.make_plan(results_file, rate=1000, latency_ms=50)
    rows = {r.runtime: r for r in plan.rows}
    assert rows["onnxruntime"].replicas == 15
    assert rows["tfserving"].replicas is None
    assert rows["tfserving"].problem == (
        "no measured point meets p99 <= 50 ms for m-torch@tfserving; the lowest p99 measured "
        "was 60.0 ms at 20.0 req/s (1 user)")
    assert "not feasible: no measured point meets p99 <= 50 ms" in capacity.render(plan)


def test_recorded_capacity_is_preferred_when_its_target_is_as_strict(tmp_path):
    doc = results_doc(RUNS)
    doc[capacity.CAPACITY_KEY] = {
        "m-torch@onnxruntime": {"rps": 200.0, "latency_ms": 40, "percentile": "p99"},
        "m-torch@tfserving": {"rps": 50.0, "latency_ms": 100, "percentile": "p99"},  # too loose
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc))
    rows = {r.runtime: r for r in capacity.make_plan(path, rate=1000, latency_ms=50).rows}
    assert rows["onnxruntime"].per_replica_rps == 200.0
    assert rows["onnxruntime"].replicas == math.ceil(1000 / 140) == 8
    assert rows["onnxruntime"].source.startswith(capacity.CAPACITY_KEY)
    assert rows["tfserving"].replicas is None  # falls back to the sweep, which misses 50 ms


def test_errors_are_clear(tmp_path, results_file):
    with pytest.raises(capacity.PlanError, match="no results file at .*loadtests bench"):
        capacity.make_plan(tmp_path / "missing.json", rate=1, latency_ms=50)
    with pytest.raises(capacity.PlanError, match="model 'resnet' is not in .*measured m-torch"):
        capacity.make_plan(results_file, rate=1, latency_ms=50, models=["resnet"])
    with pytest.raises(capacity.PlanError, match="runtime 'tflite' is not in"):
        capacity.make_plan(results_file, rate=1, latency_ms=50, runtimes=["tflite"])
    with pytest.raises(capacity.PlanError, match="headroom"):
        capacity.make_plan(results_file, rate=1, latency_ms=50, headroom=1.5)
    (tmp_path / "bad.json").write_text('{"runs": 3}')
    with pytest.raises(capacity.PlanError, match="not a bench's results.json"):
        capacity.make_plan(tmp_path / "bad.json", rate=1, latency_ms=50)


def test_cli_json_and_exit_codes(results_file, tmp_path):
    cli = CliRunner()
    args = ["--results", str(results_file), "--rate", "1000", "--latency-ms", "50"]
    out = cli.invoke(capacity.app, [*args, "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["percentile"] == "p99" and doc["headroom"] == 0.7
    assert doc["results"]["profile"] == "capacity-test" and doc["results"]["cores"] == 2
    rows = {r["target"]: r for r in doc["rows"]}
    assert rows["m-torch@onnxruntime"]["replicas"] == 15
    assert rows["m-torch@onnxruntime"]["gateway_replicas"] == 8
    assert rows["m-torch@onnxruntime"]["totals"]["cpu_m"] == 23000
    assert rows["m-torch@onnxruntime"]["per_replica"]["cpu_m"] == 1000
    assert rows["m-torch@tfserving"]["replicas"] is None
    assert doc["gateway_per_replica"]["cpu_m"] == 1000
    assert any("lower bound" in a for a in doc["assumptions"])

    text = cli.invoke(capacity.app, args).stdout
    assert "Assumptions:" in text and "m-torch@onnxruntime" in text
    header = next(line for line in text.splitlines() if line.startswith("model@runtime"))
    row = next(line for line in text.splitlines() if line.startswith("m-torch@onnxruntime"))
    assert len(header) == len(row)  # aligned columns

    infeasible = cli.invoke(capacity.app, [*args, "--runtimes", "tfserving"])
    assert infeasible.exit_code == 1 and "lowest p99 measured was 60.0 ms" in infeasible.stdout
    missing = cli.invoke(capacity.app, ["--results", str(tmp_path / "no.json"), "--rate", "1",
                                        "--latency-ms", "5"])
    assert missing.exit_code == 2 and "no results file" in missing.stderr


@pytest.mark.parametrize("service", sorted(sizing.SERVICES))
@pytest.mark.parametrize("profile", ["small", "large"])
def test_container_resources_shape(service, profile):
    res = sizing.container_resources(service, profile)
    assert set(res) == {"requests", "limits"}
    assert set(res["requests"]) == {"cpu", "memory"} and set(res["limits"]) == {"memory"}
    assert res["requests"]["cpu"].endswith("m")
    request, limit = sizing.memory_mi(service)
    assert request % 64 == 0 and limit % 64 == 0 and limit >= request
    assert request >= sizing.SERVICES[service]["steady_rss_mib"]
    assert limit >= sizing.SERVICES[service]["peak_rss_mib"] * sizing.MEMORY_HEADROOM
    for q in (res["requests"]["memory"], res["limits"]["memory"]):
        assert q.endswith(("Mi", "Gi"))


def test_every_service_is_sized_and_large_is_one_core():
    assert set(sizing.SERVICES) == {*RUNTIMES, "gateway", "locust"}
    assert all(sizing.cpu_m(s, "large") == 1000 for s in sizing.SERVICES)


def test_small_profile_fits_one_4_cpu_16_gib_node():
    assert sizing.SMALL_NODE == {"cpu_m": 4000, "memory_mi": 16 * 1024}
    cpu = sum(sizing.cpu_m(s, "small") for s in sizing.SERVICES)
    limits = sum(sizing.memory_mi(s)[1] for s in sizing.SERVICES)
    assert cpu <= sizing.SMALL_NODE_ALLOCATABLE["cpu_m"] <= sizing.SMALL_NODE["cpu_m"]
    # limits, not just requests: every service at its peak x headroom still fits
    assert limits <= sizing.SMALL_NODE_ALLOCATABLE["memory_mi"] <= sizing.SMALL_NODE["memory_mi"]


def test_unknown_service_and_profile():
    with pytest.raises(ValueError, match="unknown service 'triton'; known services: onnxruntime"):
        sizing.container_resources("triton")
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        sizing.container_resources("gateway", "huge")
