"""Adaptive repeats: after the profile's fixed repeats, measure again the points whose verdict is
still open, until every comparison is decided or a time / repeat budget runs out.

The model is perf_analyzer's stability criterion (measure until the last windows agree), applied
to what the report concludes rather than to one point: a point gets another repeat only while a
verdict comparison that reads it is "inconclusive" and the repeats it needs (stats.py's estimate)
might fit under the profile's max_repeats (within a factor 2: the estimate from 3 repeats is
rough). Comparisons that would need far more (a ratio right at the negligible threshold) are left
inconclusive at once instead of eating the budget. Each round adds
one repeat to every open point, the closest to a decision first, so a shortened budget still
settles the cheapest questions.
"""

from __future__ import annotations

import time
from typing import Callable

from loadtests.report import stats
from loadtests.report.aggregate import repeats
from loadtests.report.verdict import verdict
from loadtests.scenarios import Profile, RunSpec

Key = tuple  # Point.key: (via, mode, model, runtime, users, rate)


def open_points(results: dict, max_repeats: int, method: stats.Method) -> dict[Key, int]:
    """Point -> repeats it still needs, over the verdict's inconclusive comparisons that might be
    decided before their points reach max_repeats (points already there are left out)."""
    done = {key: len(runs) for key, runs in repeats(results).items()}
    need: dict[Key, int] = {}
    for row in verdict(results, method):
        for cell in row["cells"].values():
            for f in cell["findings"]:
                if f["outcome"] != "inconclusive" or f["more"] is None:
                    continue
                keys = [tuple(k) for k in f["points"]]
                left = {k: max_repeats - done.get(k, 0) for k in keys}
                # The estimate from 3 repeats is rough (their spread is itself uncertain): a
                # comparison is tried if it might be decided within twice the repeats left.
                if f["more"] > 2 * max(left.values()):
                    continue
                for k in keys:
                    if left[k] > 0:
                        need[k] = min(need.get(k, f["more"]), f["more"])
    return need


def _tried(runs: list[dict], key: Key) -> int:
    """Runs of the point so far, failed ones included (the next one gets a fresh run id)."""
    return sum((r.get("via"), r.get("mode"), r.get("model"), r.get("runtime"), r.get("users"),
                r.get("rate", 0.0)) == key for r in runs)


def repeat_until_decided(profile: Profile, runs: list[dict], measure: Callable[[RunSpec], dict],
                         method: stats.Method | None = None,
                         clock: Callable[[], float] = time.monotonic) -> dict:
    """Runs extra repeats through measure(spec) (which appends its record to runs) while the
    verdict over `runs` has open points and the budget lasts; returns what it did, for
    results.json."""
    method = method or stats.Method.from_env()
    log = {"budget_s": profile.adaptive_s, "max_repeats": profile.max_repeats, "extra_runs": 0,
           "rounds": 0, "stopped": "nothing to decide"}
    if profile.adaptive_s <= 0 or profile.max_repeats <= profile.repeats:
        log["stopped"] = "off in this profile"
        return log
    run_s = profile.warmup_s + profile.window_s + 1.0
    start = clock()
    while True:
        results = {"profile": profile.to_dict(), "runs": runs}
        need = open_points(results, profile.max_repeats, method)
        if not need:
            log["stopped"] = "every comparison decided or beyond max_repeats"
            break
        log["rounds"] += 1
        ok_before = sum(bool(r.get("ok")) for r in runs)
        for key in sorted(need, key=lambda k: (need[k], k)):
            if clock() - start + run_s > profile.adaptive_s:
                log["stopped"] = "time budget spent"
                log["open_points"] = len(need)
                log["used_s"] = round(clock() - start, 1)
                return log
            via, mode, model, runtime, users, rate = key
            measure(RunSpec(via, mode, model, runtime, users, _tried(runs, key) + 1, rate))
            log["extra_runs"] += 1
        if sum(bool(r.get("ok")) for r in runs) == ok_before:
            log["stopped"] = "a whole round of runs failed"
            break
    log["used_s"] = round(clock() - start, 1)
    return log
