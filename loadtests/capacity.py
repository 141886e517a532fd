"""Server scenario: the capacity of a (model, runtime) at a latency target.

Capacity = the highest Poisson arrival rate at which p99 (latency from the scheduled send time,
loadtests/openloop.py) stays within the target with no more than MAX_ERROR_SHARE of errors. It is
found by a bounded search, like MLPerf LoadGen's server scenario and Triton perf_analyzer's
`--latency-threshold`: measure the lowest rate of the range (failing there: capacity is *below the
range*), then the highest (passing there: capacity is *at least* the highest rate), then bisect
geometrically (rates span orders of magnitude) between the highest passing and the lowest failing
rate until they are within `resolution` of each other or the step budget is spent. Every step
measures at least `min_requests` requests (a longer window at low rates, up to max_window_s).

The pure parts (search, target, range) take a `measure(rate) -> run record` callable: the bench
passes one that runs openloop.run_open against the stack; the tests pass a fake server.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

RESULTS_KEY = "capacity_at_latency_target"  # what deploy/capacity.py plans on (same name there)
MAX_ERROR_SHARE = 0.001  # errors above this share of a step's requests fail the step


@dataclass(frozen=True)
class SearchSpec:
    lo: float  # req/s
    hi: float  # req/s
    target_ms: float  # p99 must stay at or under this
    resolution: float = 0.1  # stop when lowest failing / highest passing rate <= 1 + this
    max_steps: int = 7  # measurements, bounds included
    extend_down: int = 2  # lo fails: try lo / 4, lo / 16 ... this many times before giving up


@dataclass(frozen=True)
class Step:
    rate: float  # offered (Poisson arrival) rate
    p99_ms: float | None
    rps: float  # answered per second
    requests: int
    failures: int
    passed: bool
    why: str  # what decided it
    run_id: str | None = None
    send_lag_p99_ms: float | None = None  # how late the load generator sent (part of latency)
    noisy: bool = False  # other processes used the CPU during the step


def judge(record: dict, target_ms: float) -> tuple[bool, str]:
    """Does one step's run record meet the target? (passed, the reason in words)."""
    if not record.get("ok", True) and not record.get("requests"):
        return False, f"run failed: {str(record.get('error'))[:120]}"
    n = record.get("requests", 0)
    if n == 0:
        return False, "no request measured"
    failures = record.get("failures", 0)
    if failures > MAX_ERROR_SHARE * n:
        reasons = ", ".join(f"{k} x{v}" for k, v in (record.get("failure_reasons") or {}).items())
        return False, f"{failures}/{n} requests failed ({reasons[:120]})"
    p99 = record["latency_ms"]["p99"]
    if p99 > target_ms:
        lag = record.get("send_lag_p99_ms")
        late = (f" (the load generator itself sent late: send lag p99 {lag:.1f} ms)"
                if lag is not None and lag > target_ms / 2 else "")
        return False, f"p99 {p99:.2f} ms > {target_ms:g} ms{late}"
    return True, f"p99 {p99:.2f} ms <= {target_ms:g} ms"


def round_rate(rate: float) -> float:
    """Three significant figures: readable rates, and run ids that do not carry float noise."""
    return float(f"{rate:.3g}")


def search(measure: Callable[[float, int], dict], spec: SearchSpec) -> dict:
    """Bounded search for the capacity; measure(rate, step number from 1) -> run record.

    Order: lo; if it fails, lo / 4, lo / 16 ... (spec.extend_down times: the range is a guess from
    the closed loop, a loaded machine can put the capacity below it); else hi; then bisection.
    Returns status "found" (bracketed within the resolution), "budget" (step budget spent first:
    capacity is between the bracket's ends), "below-range" (even the lowest rate tried misses the
    target: capacity < lowest_failing_rps, unknown how much), "above-range" (the highest rate
    meets it: capacity >= hi). capacity_rps is the highest rate that met the target (None below
    the range)."""
    if not 0 < spec.lo < spec.hi:
        raise ValueError(f"need 0 < lo < hi, got lo={spec.lo}, hi={spec.hi}")
    if spec.max_steps < 2:
        raise ValueError("max_steps must be at least 2 (the two ends of the range)")
    steps: list[Step] = []

    def step(rate: float) -> bool:
        record = measure(rate, len(steps) + 1)
        passed, why = judge(record, spec.target_ms)
        steps.append(Step(rate, (record.get("latency_ms") or {}).get("p99"),
                          round(record.get("rps", 0.0), 2), record.get("requests", 0),
                          record.get("failures", 0), passed, why, record.get("id"),
                          record.get("send_lag_p99_ms"), bool(record.get("noisy"))))
        return passed

    good: float | None = None
    bad: float | None = None
    rate = spec.lo
    for _ in range(spec.extend_down + 1):
        if step(rate):
            good = rate
            break
        bad = rate
        rate = round_rate(rate / 4)
        if len(steps) >= spec.max_steps:
            break
    if good is None:
        status = "below-range"
    elif bad is None and step(spec.hi):
        status, good = "above-range", spec.hi
    else:
        bad = bad or spec.hi
        while bad / good > 1 + spec.resolution and len(steps) < spec.max_steps:
            mid = round_rate(math.sqrt(good * bad))
            if not good < mid < bad:  # rounding met an end: the bracket is as fine as it gets
                break
            if step(mid):
                good = mid
            else:
                bad = mid
        # Out of the loop with steps to spare: the bracket is within the resolution (or as fine
        # as three significant figures make it).
        status = "found" if len(steps) < spec.max_steps or bad / good <= 1 + spec.resolution \
            else "budget"
    return {"status": status, "capacity_rps": good, "lowest_failing_rps": bad,
            **asdict(spec), "steps": [asdict(s) for s in steps]}


def latency_target(p50_single_ms: float | None, factor: float, floor_ms: float,
                   override_ms: float | None = None) -> tuple[float | None, str]:
    """(target ms, how it was set): an explicit override, else factor x the model's single-stream
    p50 on its fastest runtime, never under floor_ms (below a few ms the loopback's and the
    scheduler's jitter on a shared 2-core machine would decide the answer, not the runtime)."""
    if override_ms is not None:
        return float(override_ms), f"set explicitly: {override_ms:g} ms"
    if p50_single_ms is None:
        return None, "no single-stream p50 measured for this model"
    target = max(floor_ms, factor * p50_single_ms)
    basis = f"{factor:g} x single-stream p50 on the fastest runtime ({p50_single_ms:.2f} ms)"
    if target == floor_ms:
        basis += f", raised to the floor of {floor_ms:g} ms"
    return round(target, 2), basis


def search_range(closed_peak_rps: float, lo_fraction: float, hi_fraction: float
                 ) -> tuple[float, float]:  # fmt: skip
    """The range searched for one runtime, from its closed-loop peak throughput."""
    return round_rate(lo_fraction * closed_peak_rps), round_rate(hi_fraction * closed_peak_rps)


def step_window(rate: float, window_s: float, min_requests: int, max_window_s: float) -> float:
    """Seconds measured at `rate`: the profile's window, longer at low rates so that the step holds
    min_requests requests (p99 of fewer than ~100 is the maximum), capped at max_window_s."""
    return round(min(max(window_s, min_requests / rate), max(window_s, max_window_s)), 2)


# --- from the closed-loop sweep: the target's basis and the range ------------------------------


def _median(values: list[float]) -> float:
    values = sorted(values)
    n = len(values)
    return (values[n // 2] + values[(n - 1) // 2]) / 2


def single_stream_p50(runs: list[dict], model: str) -> float | None:
    """The model's p50 at 1 user (closed loop, through the gateway), on its fastest runtime (median
    of the repeats); None when the model was not measured at 1 user (a reference-concurrency-only
    model: its p50 under load is no basis for a single-stream target)."""
    by_runtime: dict[str, list[float]] = {}
    for r in runs:
        if r.get("ok") and r.get("latency_ms") and r.get("users") == 1 and \
                (r.get("via"), r.get("mode"), r.get("model")) == ("gateway", "closed", model):
            by_runtime.setdefault(r["runtime"], []).append(r["latency_ms"]["p50"])
    return min((_median(v) for v in by_runtime.values()), default=None)


def closed_peak(runs: list[dict], model: str, runtime: str) -> float | None:
    """Highest median closed-loop throughput through the gateway over the sweep's user counts."""
    by_users: dict[int, list[float]] = {}
    for r in runs:
        if r.get("ok") and (r.get("via"), r.get("mode"), r.get("model"), r.get("runtime")) \
                == ("gateway", "closed", model, runtime):
            by_users.setdefault(r["users"], []).append(r["rps"])
    return max((_median(v) for v in by_users.values()), default=None)


def planned_record(outcome: dict) -> dict | None:
    """The entry deploy/capacity.py plans on (results["capacity_at_latency_target"]): the highest
    rate that met the target, as a lower bound when the search ran out of range."""
    if outcome.get("capacity_rps") is None:
        return None
    return {"rps": outcome["capacity_rps"], "latency_ms": outcome["target_ms"],
            "percentile": "p99", "status": outcome["status"]}


def parse_targets(text: str, models: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    """`--latency-target-ms`: "25" (every model) or "model=ms,model=ms" -> ((model, ms), ...)."""
    def ms(value: str, what: str) -> float:
        try:
            x = float(value)
        except ValueError:
            x = -1.0
        if not x > 0:
            raise ValueError(f"latency target {what}: {value!r} is not a positive number of ms "
                             "(give MS, or MODEL=MS,MODEL=MS)")
        return x

    text = text.strip()
    if "=" not in text:
        return tuple((m, ms(text, "for every model")) for m in models)
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        model, _, value = part.partition("=")
        if model.strip() not in models:
            raise ValueError(f"latency target for {model.strip()!r}: not a model of this bench "
                             f"({', '.join(models)})")
        out.append((model.strip(), ms(value.strip(), f"for {model.strip()}")))
    return tuple(out)
