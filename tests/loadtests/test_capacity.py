"""The server scenario: the bounded capacity search, the Poisson open-loop client, CPU sets, and
what the report says about them."""

import asyncio
import json
import math
import time

import numpy as np
import pytest

from deploy import capacity as plan
from loadtests import affinity, capacity, openloop, payloads
from loadtests.report.build import build_report
from tests.loadtests import synthetic
from tests.loadtests.fakes import FakeOIPServer
from contract.manifest import load_manifest


class QueueingServer:
    """A fake server whose p99 grows with the offered rate like an M/M/1 queue's:
    p99 = base / (1 - rate / mu), infinite at mu; it counts the rates it was measured at."""

    def __init__(self, base_ms: float = 2.0, mu: float = 1000.0, errors_above: float = math.inf):
        self.base_ms, self.mu, self.errors_above = base_ms, mu, errors_above
        self.rates: list[float] = []

    def capacity_at(self, target_ms: float) -> float:
        return self.mu * (1 - self.base_ms / target_ms)

    def __call__(self, rate: float, step: int) -> dict:
        self.rates.append(rate)
        assert step == len(self.rates)
        p99 = self.base_ms / (1 - rate / self.mu) if rate < self.mu else 1e6
        n = int(rate * 3)
        failures = n // 10 if rate > self.errors_above else 0
        return {"id": f"step{step}", "ok": True, "requests": n, "failures": failures,
                "failure_reasons": {"HTTP 503": failures} if failures else {},
                "rps": min(rate, self.mu), "latency_ms": {"p50": p99 / 3, "p99": p99}}


@pytest.mark.parametrize("target_ms", [2.5, 5.0, 20.0, 100.0])
def test_bisection_brackets_the_capacity_within_its_resolution(target_ms):
    srv = QueueingServer()
    spec = capacity.SearchSpec(lo=50.0, hi=1500.0, target_ms=target_ms, resolution=0.1,
                               max_steps=9)
    out = capacity.search(srv, spec)
    true = srv.capacity_at(target_ms)
    assert out["status"] == "found"
    assert out["capacity_rps"] <= true < out["lowest_failing_rps"]
    assert out["lowest_failing_rps"] / out["capacity_rps"] <= 1.1 + 1e-9
    assert len(out["steps"]) == len(srv.rates) <= spec.max_steps
    assert srv.rates[:2] == [50.0, 1500.0]  # both ends first, then bisection inside
    assert all(out["capacity_rps"] <= r or r <= out["capacity_rps"] for r in srv.rates)
    for s in out["steps"]:
        assert s["passed"] == (s["p99_ms"] <= target_ms)


def test_search_stops_at_its_step_budget_and_says_so():
    srv = QueueingServer()
    spec = capacity.SearchSpec(lo=10.0, hi=1500.0, target_ms=5.0, resolution=0.01, max_steps=4)
    out = capacity.search(srv, spec)
    assert out["status"] == "budget" and len(srv.rates) == 4
    assert out["capacity_rps"] <= srv.capacity_at(5.0) < out["lowest_failing_rps"]
    assert out["lowest_failing_rps"] / out["capacity_rps"] > 1.01


def test_below_the_lowest_rate_is_reported_without_a_capacity():
    srv = QueueingServer(base_ms=2.0, mu=10.0)
    out = capacity.search(srv, capacity.SearchSpec(lo=200.0, hi=800.0, target_ms=5.0))
    assert out["status"] == "below-range" and out["capacity_rps"] is None
    assert srv.rates == [200.0, 50.0, 12.5] and out["lowest_failing_rps"] == 12.5
    assert capacity.planned_record(out) is None


def test_a_failing_low_end_extends_the_range_down():
    srv = QueueingServer(base_ms=2.0, mu=100.0)  # capacity at 5 ms: 60 req/s, under lo
    out = capacity.search(srv, capacity.SearchSpec(lo=200.0, hi=800.0, target_ms=5.0))
    assert srv.rates[:2] == [200.0, 50.0] and 800.0 not in srv.rates
    assert out["status"] == "found"
    assert out["capacity_rps"] <= srv.capacity_at(5.0) < out["lowest_failing_rps"]


def test_above_the_highest_rate_is_a_lower_bound():
    srv = QueueingServer(mu=10_000.0)
    out = capacity.search(srv, capacity.SearchSpec(lo=100.0, hi=1000.0, target_ms=5.0))
    assert out["status"] == "above-range" and out["capacity_rps"] == 1000.0
    assert srv.rates == [100.0, 1000.0] and out["lowest_failing_rps"] is None


def test_errors_fail_a_step_even_when_latency_is_fine():
    srv = QueueingServer(mu=10_000.0, errors_above=400.0)
    out = capacity.search(srv, capacity.SearchSpec(lo=100.0, hi=1000.0, target_ms=50.0,
                                                   resolution=0.05, max_steps=12))
    assert out["status"] == "found" and out["capacity_rps"] <= 400.0 < out["lowest_failing_rps"]
    failed = [s for s in out["steps"] if not s["passed"]]
    assert failed and all("failed (HTTP 503" in s["why"] for s in failed)


def test_search_rejects_a_bad_range():
    with pytest.raises(ValueError, match="lo < hi"):
        capacity.search(QueueingServer(), capacity.SearchSpec(lo=100.0, hi=100.0, target_ms=5))


def test_latency_target_from_single_stream_p50_with_floor_and_override():
    assert capacity.latency_target(1.5, 5.0, 5.0) == (7.5, "5 x single-stream p50 on the "
                                                      "fastest runtime (1.50 ms)")
    ms, why = capacity.latency_target(0.4, 5.0, 5.0)
    assert ms == 5.0 and "floor of 5 ms" in why
    assert capacity.latency_target(0.4, 5.0, 5.0, 30.0)[0] == 30.0
    assert capacity.latency_target(None, 5.0, 5.0)[0] is None


def test_target_basis_and_range_come_from_the_closed_sweep():
    runs = synthetic.results(repeats=2)["runs"]
    # synthetic p50 = 1000 x users / rps: at 1 user the fastest runtime (tflite, 1100 req/s for
    # digits-cnn-torch) has 0.91 ms (the median of its two repeats at +-2%).
    p50 = capacity.single_stream_p50(runs, "digits-cnn-torch")
    assert p50 == pytest.approx(1000 / synthetic.rps_of("digits-cnn-torch", "tflite", 1), rel=1e-3)
    peak = capacity.closed_peak(runs, "digits-cnn-torch", "onnxruntime")
    assert peak == pytest.approx(2700.0, rel=1e-6)  # 900 x 3 at 8 users
    assert capacity.search_range(peak, 0.2, 1.5) == (540.0, 4050.0)
    assert capacity.step_window(50.0, 2.5, 300, 4.0) == 4.0
    assert capacity.step_window(1000.0, 2.5, 300, 4.0) == 2.5


def test_a_model_measured_only_under_load_has_no_single_stream_basis():
    runs = [r for r in synthetic.results(repeats=2)["runs"] if r["users"] != 1]
    assert runs and capacity.single_stream_p50(runs, "digits-cnn-torch") is None
    assert capacity.latency_target(None, 5.0, 10.0)[1] == "no single-stream p50 measured for this model"


def test_poisson_gaps_have_the_rate_and_a_coefficient_of_variation_of_one():
    t = openloop.arrival_offsets(400.0, 10.0, "poisson", np.random.default_rng(7))
    gaps = np.diff(t)
    assert len(gaps) > 3000
    assert gaps.mean() == pytest.approx(1 / 400.0, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.06)
    constant = np.diff(openloop.arrival_offsets(400.0, 10.0, "constant"))
    assert constant.std() / constant.mean() < 1e-6


class SerializedPool:
    """Forwards to a real pool, one request at a time, each held `hold` s: a server that answers
    requests in turn, so those that arrive together wait for each other."""

    def __init__(self, pool, hold: float):
        self.pool, self.hold = pool, hold
        self.lock = asyncio.Lock()
        self.service_s: list[float] = []

    async def request(self, *args):
        async with self.lock:
            loop = asyncio.get_running_loop()
            t = loop.time()
            await asyncio.sleep(self.hold)
            out = await self.pool.request(*args)
            self.service_s.append(loop.time() - t)
            return out

    async def close(self):
        await self.pool.close()


def _payload(store, model="digits-cnn-torch", runtime="onnxruntime"):
    manifest = load_manifest(store / model)
    p = payloads.build_payload(payloads.Target("gateway", model, runtime), manifest, store)
    return p, openloop.encode_bodies(p)


def test_latency_runs_from_the_scheduled_time_not_the_send_time(store):
    payload, bodies = _payload(store)
    with FakeOIPServer(store, "digits-cnn-torch") as srv:
        loop = openloop.OpenLoop(payload, bodies, srv.url, {})
        slow = loop.pool = SerializedPool(loop.pool, hold=0.02)

        async def go():
            try:
                return await loop.run(np.zeros(8))  # 8 requests due at once
            finally:
                await slow.close()

        records, served_by, _ = asyncio.run(go())
    assert all(r[2] is None for r in records) and served_by["onnxruntime"] == 8
    lat = sorted(r[1] for r in records)
    # Each answer took ~20 ms of service, but the k-th waited for the k-1 before it: from the
    # scheduled time its latency is ~k x 20 ms (measured from the send, all would be ~20 ms).
    assert max(slow.service_s) < 0.06
    for k, x in enumerate(lat, start=1):
        assert x >= k * 0.02 - 0.002
    assert lat[-1] > 3 * max(slow.service_s)


def test_run_open_sends_poisson_traffic_and_checks_answers(store):
    payload, bodies = _payload(store)
    with FakeOIPServer(store, "digits-cnn-torch") as srv:
        r = openloop.run_open(payload, bodies, srv.url, 150.0, 0.3, 1.5, seed=3)
    assert r["arrivals"] == "poisson" and r["offered_rate"] == 150.0
    assert 150 * 1.5 * 0.75 < r["requests"] < 150 * 1.5 * 1.25 and r["failures"] == 0
    assert set(r["served_by"]) == {"onnxruntime"}
    assert 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"] <= r["latency_ms"]["max"]
    # No request leaves before its scheduled time (uvloop's timers may wake a little early).
    assert r["latency_ms"]["min"] > 0 and r["send_lag_p50_ms"] >= 0
    assert r["window_end"] - r["window_start"] == pytest.approx(1.5)
    with FakeOIPServer(store, "digits-cnn-torch", wrong=True) as srv:
        bad = openloop.run_open(payload, bodies, srv.url, 100.0, 0.0, 0.5, seed=3)
    assert bad["requests"] > 0 and bad["failures"] == bad["requests"]
    assert list(bad["failure_reasons"]) == ["wrong class"]
    assert capacity.judge(bad, 1000.0)[0] is False


def test_binary_tensor_bodies_are_sent_with_their_header_length(store):
    manifest = load_manifest(store / "digits-cnn-torch")
    payload = payloads.build_payload(payloads.Target("gateway", "digits-cnn-torch", "onnxruntime"),
                                     manifest, store, encoding="binary")
    bodies = openloop.encode_bodies(payload)
    assert all(b.header_len for b in bodies) and len(bodies) == len(payload.bodies)
    with FakeOIPServer(store, "digits-cnn-torch") as srv:
        r = openloop.run_open(payload, bodies, srv.url, 100.0, 0.0, 0.5, seed=1)
    assert r["requests"] > 0 and r["failures"] == 0 and srv.binary == srv.requests


def test_cpu_sets_split_only_with_enough_cores():
    assert affinity.plan({0, 1}) is None
    gen, servers = affinity.plan(set(range(8)))
    assert gen == {6, 7} and servers == set(range(6)) and not gen & servers
    assert affinity.plan({0, 1, 2, 3}) == ({3}, {0, 1, 2})
    done = affinity.apply(None, {})
    assert done["mode"] == "shared" and "shared" in done["note"]


def test_recorded_capacity_is_what_the_deploy_plan_reads():
    assert capacity.RESULTS_KEY == plan.CAPACITY_KEY
    out = capacity.search(QueueingServer(), capacity.SearchSpec(50.0, 1500.0, 10.0))
    rec = capacity.planned_record(out)
    doc = {plan.CAPACITY_KEY: {"m@onnxruntime": rec}}
    assert plan.recorded_capacity(doc, "m", "onnxruntime", 10.0)["rps"] == out["capacity_rps"]
    assert plan.recorded_capacity(doc, "m", "onnxruntime", 5.0) is None  # a stricter target


def test_report_leads_with_capacity_and_gives_the_load_generator_share(tmp_path):
    results = synthetic.results()
    results["profile"].update(capacity_range=[0.2, 1.5], capacity_resolution=0.1,
                              capacity_max_steps=7, capacity_warmup_s=0.5,
                              capacity_min_requests=300, capacity_max_window_s=10.0)
    results["cpu_sets"] = affinity.public(affinity.apply(None, {}))
    srv = QueueingServer()
    found = capacity.search(srv, capacity.SearchSpec(100.0, 1500.0, 5.0))
    results["capacity"] = {
        "digits-cnn-torch@onnxruntime": {**found, "target_basis": "5 x p50",
                                         "closed_peak_rps": 2700},
        "digits-cnn-torch@tflite": {**capacity.search(QueueingServer(mu=10_000.0),
                                                      capacity.SearchSpec(100.0, 1500.0, 5.0)),
                                    "target_basis": "5 x p50", "closed_peak_rps": 3000},
        "digits-cnn-torch@torchserve": {**capacity.search(QueueingServer(mu=5.0),
                                                          capacity.SearchSpec(100.0, 600.0, 5.0)),
                                        "target_basis": "5 x p50", "closed_peak_rps": 1200},
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    build_report(path)
    md = (tmp_path / "report.md").read_text()
    assert md.split("\n## ")[1].startswith("Capacity at a latency target")
    section = md.split("\n## ")[1]
    assert f"**{found['capacity_rps']:g}** (fails at {found['lowest_failing_rps']:g})" in section
    assert "**≥ 1500** (above the range)" in section
    assert "**< 6.25** (below the lowest rate tried)" in section
    assert "Not searched in the synthetic profile" in section and "mobilenetv2-torch" in section
    own = md.split("## Your model: digits-cnn-torch")[1].split("\n## ")[0]
    assert "Capacity at p99 ≤ 5 ms (Poisson arrivals): ONNX Runtime" not in own  # tflite leads
    assert "Capacity at p99 ≤ 5 ms (Poisson arrivals): TFLite **≥ 1500**" in own
    share = md.split("## Load generator's share of the CPU")[1].split("\n## ")[0]
    assert "No CPU sets" in share and "shared by the load generator and the servers" in share
    # synthetic runs: loadgen 60% of a core, the runtime 100%, busy 190%: 38% of the bench's CPU
    # time, 32% of the machine's.
    assert "| 60 | 100 | 190 | 38% | 32% |" in share
    assert "took 38%–38% of the bench's CPU time (median 38%): CPU the servers could not use" \
        in share


def test_latency_targets_from_the_command_line():
    models = ("a", "b")
    assert capacity.parse_targets("25", models) == (("a", 25.0), ("b", 25.0))
    assert capacity.parse_targets("b=7.5", models) == (("b", 7.5),)
    with pytest.raises(ValueError, match="'c': not a model of this bench"):
        capacity.parse_targets("c=5", models)
    with pytest.raises(ValueError, match="'-3' is not a positive number of ms"):
        capacity.parse_targets("a=-3", models)


def test_disjoint_cpu_sets_pin_server_threads_and_are_put_back():
    import os
    import subprocess
    import sys

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.fail("needs 2 CPUs to split")  # the development machine has 2
    before = set(cpus)
    server = subprocess.Popen([sys.executable, "-c", "import threading, time; "
                               "threading.Thread(target=time.sleep, args=(30,)).start(); "
                               "time.sleep(30)"])
    try:
        deadline = time.monotonic() + 30  # its second thread started (slow on a loaded machine)
        while len(os.listdir(f"/proc/{server.pid}/task")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        done = affinity.apply(({cpus[-1]}, set(cpus[:-1])), {"svc": {server.pid}})
        try:
            assert done["mode"] == "disjoint" and "2 server threads pinned" in done["note"]
            tids = [int(t) for t in os.listdir(f"/proc/{server.pid}/task")]
            assert len(tids) == 2
            assert all(os.sched_getaffinity(t) == set(cpus[:-1]) for t in tids)
            assert os.sched_getaffinity(0) == {cpus[-1]}
            assert "saved" not in affinity.public(done)
        finally:
            affinity.restore(done)
        assert os.sched_getaffinity(0) == before
        assert all(os.sched_getaffinity(t) == before for t in tids)
    finally:
        server.kill()
        server.wait()
