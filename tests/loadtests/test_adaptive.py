"""Adaptive repeats (loadtests/adaptive.py): a fake bench whose points draw their throughput from
known distributions; measure() appends a run the way the runner does."""

from dataclasses import replace

import numpy as np

from loadtests import adaptive
from loadtests.report.stats import Method
from loadtests.report.verdict import verdict
from loadtests.scenarios import PROFILES
from tests.loadtests import synthetic

PROFILE = replace(PROFILES["quick"], name="synthetic", repeats=3, max_repeats=8, adaptive_s=600.0)


def bench(noise: float, seed: int = 5):
    """Synthetic results whose gateway throughputs carry lognormal noise, and a measure() that
    draws new repeats from the same distributions (what a real re-run does)."""
    rng = np.random.default_rng(seed)
    results = synthetic.results(repeats=3, spread=0.0)
    results["profile"] = PROFILE.to_dict()
    for r in results["runs"]:
        if r.get("ok") and r["via"] == "gateway":
            r["rps"] *= float(np.exp(rng.normal(0, noise)))
    calls = []

    def measure(spec):
        calls.append(spec)
        rps = synthetic.rps_of(spec.model, spec.runtime, spec.users) * np.exp(rng.normal(0, noise))
        run = synthetic.run(spec.via, spec.mode, spec.model, spec.runtime, spec.users,
                            spec.repeat, float(rps), rate=spec.rate)
        results["runs"].append(run)
        return run

    return results, measure, calls


def outcomes(results):
    return [f["outcome"] for row in verdict(results) for c in row["cells"].values()
            for f in c["findings"]]


def test_open_points_are_measured_again_until_decided():
    results, measure, calls = bench(noise=0.08)
    before = outcomes(results).count("inconclusive")
    log = adaptive.repeat_until_decided(PROFILE, results["runs"], measure)
    after = outcomes(results).count("inconclusive")
    assert before > 0 and calls and after < before
    assert log["extra_runs"] == len(calls) and log["rounds"] >= 1
    # Only the points a comparison reads, never beyond max_repeats, each with a fresh run id.
    assert {(s.via, s.mode) for s in calls} == {("gateway", "closed")}
    per_point = {}
    for r in results["runs"]:
        if r["via"] == "gateway" and r["mode"] == "closed" and r.get("ok"):
            key = (r["model"], r["runtime"], r["users"])
            per_point[key] = per_point.get(key, 0) + 1
    assert max(per_point.values()) <= PROFILE.max_repeats
    ids = [r["id"] for r in results["runs"]]
    assert len(ids) == len(set(ids))
    assert log["stopped"] == "every comparison decided or beyond max_repeats"
    assert adaptive.open_points({"profile": PROFILE.to_dict(), "runs": results["runs"]},
                                PROFILE.max_repeats, Method()) == {}


def test_nothing_to_decide_costs_nothing():
    results, measure, calls = bench(noise=0.0)
    log = adaptive.repeat_until_decided(PROFILE, results["runs"], measure)
    assert calls == [] and log["stopped"].startswith("every comparison decided")


def test_the_time_budget_stops_it():
    results, measure, calls = bench(noise=0.3)
    now = [0.0]

    def clock():
        now[0] += 2.0  # every look at the clock: 2 s later
        return now[0]

    short = replace(PROFILE, adaptive_s=20.0)
    log = adaptive.repeat_until_decided(short, results["runs"], measure, clock=clock)
    assert log["stopped"] == "time budget spent" and 0 < len(calls) < 10


def test_off_when_the_profile_has_no_budget():
    results, measure, calls = bench(noise=0.3)
    log = adaptive.repeat_until_decided(PROFILES["smoke"], results["runs"], measure)
    assert calls == [] and log["stopped"] == "off in this profile"
