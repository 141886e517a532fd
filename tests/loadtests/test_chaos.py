"""The pure parts of loadtests.chaos and loadtests.soak: classification, verdicts, tables, pacing."""

import asyncio

import aiohttp
import numpy as np
import pytest

from loadtests import chaos, soak, stackrun
from loadtests.chaos import Result

T = 100.0  # the fault's time.monotonic()


def bare(start, end, code="200", by="onnxruntime"):
    return Result("bare", T + start, T + end, code, by if code == "200" else None)


def test_classify_splits_by_fault_time_and_grace():
    results = [
        bare(-3, -2.9),  # steady
        bare(-1, -0.5, "503"),  # steady, lost before the fault: not the fault's
        bare(-0.1, 0.3, "502"),  # in flight at the fault, lost
        bare(-0.05, 0.4, by="tflite"),  # in flight, failed over
        bare(1.0, 1.2, "timeout"),  # first 2 s
        bare(2.5, 2.6, "503"),  # after
        bare(3.0, 3.1, by="tflite"),
        Result("pinned", T - 1, T - 0.9, "200"),  # before: not counted
        Result("pinned", T + 0.5, T + 0.6, "503", detail="backend tflite unreachable"),
        Result("pinned", T + 9, T + 9.1, "200"),
        Result("poll", T - 0.2, T + 7.0, "200"),  # sent before the fault: not a recovery
        Result("poll", T + 4.0, T + 4.4, "200"),
        Result("poll", T + 4.2, T + 4.3, "200"),  # first answered
        Result("poll", T + 0.2, T + 0.3, "503"),
    ]
    s = chaos.classify(results, T)
    assert s["steady_ok"] == 1 and s["steady_lost"] == {"503": 1}
    assert s["steady_served_by"] == {"onnxruntime": 1}
    assert s["in_flight_at_fault"] == 2
    assert s["bare_ok"] == 2 and s["bare_served_by"] == {"tflite": 2}
    assert s["bare_lost_first"] == {"502": 1, "timeout": 1}
    assert s["bare_lost_after"] == {"503": 1}
    assert s["bare_max_s"] == pytest.approx(0.45)  # the slowest bare request hit by the fault
    assert s["pinned_ok"] == 1 and s["pinned_lost"] == {"503": 1}
    assert s["recovery_s"] == pytest.approx(4.3)
    assert s["examples"] == {"pinned 503": "backend tflite unreachable"}


def test_classify_never_recovered():
    assert chaos.classify([Result("poll", T + 1, T + 2, "503")], T)["recovery_s"] is None


def summary(first=None, after=None, in_flight=8, recovery=4.0):
    return {"bare_lost_first": first or {}, "bare_lost_after": after or {},
            "in_flight_at_fault": in_flight, "recovery_s": recovery}


@pytest.mark.parametrize("fault,s,met,why", [
    ("kill9", summary(), True, ""),
    ("kill9", summary(first={"502": 3}), False, "3 bare lost (<= 8 in flight)"),
    ("kill9", summary(first={"502": 3}, after={"503": 7}), False, "10 bare lost (> 8 in flight)"),
    ("kill9-worker", summary(after={"503": 1}), False, "1 bare lost (<= 8 in flight)"),
    ("sigstop", summary(first={"504": 8}), True, ""),  # the first 2 s are allowed
    ("sigstop", summary(after={"504": 2}), False, "2 bare lost after 2 s"),
    ("stall", summary(recovery=2.1), True, ""),
    ("stall", {**summary(), "killed_by_watchdog": True}, False,
     "a pause shorter than the watchdog's window was killed as a hang"),
    ("sigstop", summary(recovery=12.5), False, "recovery 12.5 s > 10 s"),
    ("kill9", summary(recovery=None), False, "never served again"),
])  # fmt: skip
def test_verdict(fault, s, met, why):
    assert chaos.verdict(fault, s) == (met, why)


def test_render_table():
    s = {**summary(first={"502": 1, "503": 2}), "bare_ok": 6491, "pinned_ok": 606, "bare_max_s": 4.51,
         "pinned_lost": {"503": 73}}
    text = chaos.render([{"fault": "kill9", "runtime": "onnxruntime", "summary": s, "met": False,
                          "why": "3 bare lost (<= 8 in flight)"},
                         {"fault": "stall", "runtime": "tflite", "met": True, "why": "",
                          "summary": {**s, "bare_lost_first": {}, "recovery_s": None}}])
    head, rule, row1, row2 = text.splitlines()
    assert head.split("  ")[0] == "fault" and "recovery s" in head and set(rule) <= {"-", " "}
    assert "502:1 503:2" in row1 and "503:73" in row1 and "4.00" in row1 and "4.51" in row1
    assert row1.endswith("no: 3 bare lost (<= 8 in flight)")
    assert "never" in row2 and row2.endswith("yes")
    assert row1.index("6491") == head.index("bare ok")  # columns line up


def test_phases_of_a_restart():
    svc = {"last_exit": {"at": 1003.5}, "spawned_at": 1005.5, "ready_at": 1013.0}
    p = chaos.phases(1000.0, 15.0, svc)
    assert p == {"detect_s": 3.5, "backoff_s": 2.0, "startup_s": 7.5, "gateway_s": 2.0}
    assert chaos.phases(1000.0, 2.0, {**svc, "last_exit": {"at": 990.0}}) is None  # older exit
    assert chaos.phases(1000.0, None, svc) is None
    row = {"fault": "sigstop", "runtime": "tflite", "summary": {"recovery_s": 15.0}, "phases": p}
    text = chaos.render_phases([row, {**row, "phases": None}])
    assert len(text.splitlines()) == 3 and "7.5" in text.splitlines()[2]


def test_plan_worker_fault_only_on_torchserve():
    assert chaos.plan(["onnxruntime", "torchserve"], list(chaos.FAULTS)) == [
        ("onnxruntime", "kill9"), ("onnxruntime", "sigstop"), ("onnxruntime", "stall"),
        ("torchserve", "kill9"), ("torchserve", "sigstop"), ("torchserve", "stall"),
        ("torchserve", "kill9-worker")]


def test_error_codes():
    assert stackrun.error_code(asyncio.TimeoutError()) == "timeout"
    assert stackrun.error_code(aiohttp.ServerDisconnectedError()) == "disconnected"
    assert stackrun.error_code(aiohttp.ClientOSError(104, "reset")) == "reset"
    assert stackrun.error_code(aiohttp.ClientPayloadError("x")) == "ClientPayloadError"
    assert stackrun.codes_text({}) == "0" and stackrun.codes_text({"503": 2, "502": 1}) == "502:1 503:2"


def test_poisson_arrivals_rate_and_gaps():
    t = soak.arrival_offsets(300, 60, "poisson", np.random.default_rng(1))
    assert 0 <= t[0] and t[-1] < 60 and np.all(np.diff(t) > 0)
    assert len(t) == pytest.approx(18000, rel=0.03)  # sd of a Poisson count: ~0.7%
    gaps = np.diff(t)
    assert gaps.mean() == pytest.approx(1 / 300, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)  # exponential: CV 1
    per_s = np.bincount(t.astype(int), minlength=60)
    assert per_s.var() / per_s.mean() == pytest.approx(1.0, abs=0.5)  # Poisson counts


def test_constant_arrivals_and_unknown_kind():
    t = soak.arrival_offsets(4, 2, "constant")
    assert list(t) == [0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    with pytest.raises(ValueError, match="unknown arrivals"):
        soak.arrival_offsets(1, 1, "bursty")


def test_pick_targets_mix():
    names = soak.pick_targets(4000, ["a", "b"], ["onnxruntime", "tflite"], 0.25,
                              np.random.default_rng(0))
    pinned = [n for n in names if "@" in n]
    assert len(pinned) / len(names) == pytest.approx(0.25, abs=0.03)
    assert {n.split("@")[0] for n in names} == {"a", "b"}
    assert {n.split("@")[1] for n in pinned} == {"onnxruntime", "tflite"}
    assert all("@" not in n for n in soak.pick_targets(50, ["a"], [], 0.9, np.random.default_rng(0)))


def test_per_interval_rows():
    recs = [(0.5, 0.010, "200"), (10, 0.020, "200"), (59.9, 1.0, "503"), (60, 0.004, "200"),
            (61, 0.0, "client-overload"), (90, 15.0, "timeout")]
    rows = soak.per_interval(recs, 60, 100)
    assert [r["requests"] for r in rows] == [3, 3] and [r["ok"] for r in rows] == [2, 1]
    assert rows[0]["non_2xx"] == {"503": 1}
    assert rows[1]["non_2xx"] == {"client-overload": 1, "timeout": 1}
    assert rows[0]["p50_ms"] == 20.0 and rows[1]["p50_ms"] == pytest.approx(7502.0)
    assert rows[0]["rate"] == 0.1 and rows[1]["rate"] == 0.1  # the last interval is 40 s
    text = soak.render_intervals(rows, 60)
    assert text.splitlines()[0].startswith("minute") and "client-overload:1 timeout:1" in text
    assert soak.per_interval([], 60, 60)[0]["p50_ms"] is None


def test_per_target():
    recs = [(0, 0.010, "200", "a"), (1, 0.030, "503", "a@tflite"), (2, 0.020, "200", "a")]
    assert soak.per_target(recs) == [
        {"target": "a", "requests": 2, "non_2xx": {}, "p50_ms": 15.0, "p99_ms": 19.9},
        {"target": "a@tflite", "requests": 1, "non_2xx": {"503": 1}, "p50_ms": 30.0,
         "p99_ms": 30.0}]


def test_rss_growth():
    g = soak.rss_growth({"gateway": 80.0, "tflite": 100.0}, {"gateway": 88.0, "torchserve": 500.0})
    assert g["gateway"] == {"start_mb": 80.0, "end_mb": 88.0, "growth_pct": 10.0}
    assert g["tflite"]["growth_pct"] is None and g["torchserve"]["start_mb"] is None
    text = soak.render_rss(g, {"gateway": 1})
    assert "+10.0" in text and text.splitlines()[2].split()[-1] == "1"
