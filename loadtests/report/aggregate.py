"""Repeats of the same point -> one Point with the spread of each figure (pure functions)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    """A figure over the repeats of a point. The point's value is the median: on a shared VM one
    window in eight or so runs on a slowed CPU (same CPU seconds, half the requests), and with
    three repeats the median ignores such a window where a mean would carry it."""

    median: float
    min: float
    max: float
    stdev: float
    n: int
    values: tuple[float, ...] = ()  # the repeats themselves: the verdict's bootstrap resamples them

    @classmethod
    def of(cls, values: list[float]) -> "Spread":
        return cls(
            median=statistics.median(values),
            min=min(values),
            max=max(values),
            stdev=statistics.stdev(values) if len(values) > 1 else 0.0,
            n=len(values),
            values=tuple(values),
        )

    def overlaps(self, other: "Spread") -> bool:
        return self.min <= other.max and other.min <= self.max

    def fmt(self, digits: int = 1) -> str:
        if self.n < 2 or self.min == self.max:
            return f"{self.median:.{digits}f}"
        return f"{self.median:.{digits}f} [{self.min:.{digits}f}–{self.max:.{digits}f}]"


@dataclass(frozen=True)
class Point:
    via: str
    mode: str
    model: str
    runtime: str
    users: int
    rate: float
    rps: Spread
    p50: Spread
    p95: Spread
    p99: Spread
    requests: int
    failures: int
    noisy: bool
    ceiling_fraction: float | None
    loadgen_cpu_pct: float | None

    @property
    def key(self) -> tuple:
        return (self.via, self.mode, self.model, self.runtime, self.users, self.rate)


def repeats(results: dict) -> dict[tuple, list[dict]]:
    """The successful runs of each point (Point.key order of fields)."""
    groups: dict[tuple, list[dict]] = {}
    for r in results.get("runs", []):
        if r.get("ok"):
            key = (r["via"], r["mode"], r["model"], r["runtime"], r["users"], r.get("rate", 0.0))
            groups.setdefault(key, []).append(r)
    return groups


def aggregate(results: dict) -> list[Point]:
    points = []
    for key, runs in sorted(repeats(results).items()):
        fracs = [r["ceiling_fraction"] for r in runs if r.get("ceiling_fraction") is not None]
        cpus = [r["cpu"]["groups_pct"].get("loadgen") for r in runs
                if r.get("cpu") and r["cpu"].get("groups_pct", {}).get("loadgen") is not None]
        points.append(Point(
            *key,
            rps=Spread.of([r["rps"] for r in runs]),
            p50=Spread.of([r["latency_ms"]["p50"] for r in runs]),
            p95=Spread.of([r["latency_ms"]["p95"] for r in runs]),
            p99=Spread.of([r["latency_ms"]["p99"] for r in runs]),
            requests=sum(r["requests"] for r in runs),
            failures=sum(r["failures"] for r in runs),
            noisy=any(r.get("noisy") for r in runs),
            ceiling_fraction=statistics.fmean(fracs) if fracs else None,
            loadgen_cpu_pct=statistics.fmean(cpus) if cpus else None,
        ))
    return points


def outliers(results: dict, off_by: float = 0.25) -> list[tuple[dict, float]]:
    """Repeats whose throughput is more than `off_by` away from their point's median, with the
    median: windows the median ignores (on a shared VM, mostly a slowed CPU: same CPU time, fewer
    requests). Points of fewer than 3 repeats have no meaningful median and are left out."""
    out = []
    for (via, *_), runs in repeats(results).items():
        if via == "ceiling" or len(runs) < 3:
            continue
        median = statistics.median(r["rps"] for r in runs)
        out += [(r, median) for r in runs if median and abs(r["rps"] / median - 1) > off_by]
    return out


def find(points: list[Point], **want) -> list[Point]:
    return [p for p in points if all(getattr(p, k) == v for k, v in want.items())]


def one(points: list[Point], **want) -> Point | None:
    found = find(points, **want)
    return found[0] if found else None


def ref_users(results: dict, points: list[Point]) -> int | None:
    """The user count for 'throughput at fixed concurrency': the profile's, else the largest
    closed-loop count measured through the gateway."""
    closed = {p.users for p in points if (p.via, p.mode) == ("gateway", "closed")}
    want = (results.get("profile") or {}).get("ref_users")
    if want in closed:
        return want
    return max(closed) if closed else None
