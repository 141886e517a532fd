""""Your model": the runtimes (and the artifact each serves) of one model, ranked from a bench's
results (pure functions over results + aggregated points; build.py renders them).

Ranked by throughput through the gateway at the reference concurrency. A runtime's rank is 1 + the
number of runtimes clearly faster than it, "clearly" meaning what the verdict table means by
"faster" (stats.py: the whole confidence interval of the ratio beyond the negligible threshold), so
runtimes the verdict would call a tie or inconclusive share a rank: never a winner inside the
noise, and never a ranking that contradicts the verdict. A runtime that could not serve the model
keeps its row, with the reason from the manifest or the bench.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from contract.runtimes import FORMAT_OF_RUNTIME
from loadtests.report import stats
from loadtests.report.aggregate import Point, Spread, find, one
from loadtests.report.verdict import FORMAT_NAMES, RUNTIMES, noise_pools

# RSS is one reading per service, not repeated: readings closer than 15% (+-7.5% each, the
# tolerance of the bench's repeatability tool) are not told apart.
SINGLE_RUN_NOISE = 0.15


@dataclass(frozen=True)
class Row:
    runtime: str
    artifact: dict | None  # results["models"][model]["artifacts"][format]
    rps: Spread | None  # gateway, closed loop, at the reference users
    single: Point | None  # gateway, closed loop, 1 user: single-stream latency
    rss_mb: float | None  # peak RSS of the runtime's service (every model of the store loaded)
    failures: int
    requests: int
    noisy: bool
    why_not: str | None  # why there is no throughput figure
    rank: int | None = None


def clearly_above(a: Spread, b: Spread, method: stats.Method | None = None,
                  pools: tuple = (None, None)) -> bool:
    """a's repeats are above b's the way the verdict's "faster" means it (pools: each side's
    runtime noise, verdict.noise_pools, as the verdict uses them)."""
    return stats.ratio(a.values, b.values, True, method or stats.Method(),
                       pools).outcome == stats.FASTER


def reading_clearly_above(a: float, b: float) -> bool:
    """One reading each (RSS): apart by more than SINGLE_RUN_NOISE."""
    return a * (1 - SINGLE_RUN_NOISE / 2) > b * (1 + SINGLE_RUN_NOISE / 2)


def why_not_served(results: dict, model: str, runtime: str, users: int | None) -> str:
    """The reason a runtime has no throughput figure for the model, most specific first: the
    exporter's failure, a failed parity certificate, the bench's skip note, its failed runs."""
    fmt = FORMAT_OF_RUNTIME.get(runtime, "")
    info = (results.get("models") or {}).get(model) or {}
    if fmt in (info.get("failed") or {}):
        return f"no {FORMAT_NAMES.get(fmt, fmt)} artifact: {info['failed'][fmt]}"
    art = (info.get("artifacts") or {}).get(fmt)
    if art and not art.get("parity_ok"):
        return "parity certificate failed" + (f": {art['parity_error']}"
                                               if art.get("parity_error") else "")
    for s in results.get("skipped", []):
        if s.get("via") == "gateway" and (s.get("model"), s.get("runtime")) == (model, runtime):
            return f"skipped by the bench: {s['reason']}"
        if s.get("model") is None and s.get("reason", "").startswith(f"{model}@{runtime}:"):
            return f"skipped by the bench: {s['reason'].split(':', 1)[1].strip()}"
    failed = [r for r in results.get("runs", []) if not r.get("ok") and r.get("via") == "gateway"
              and (r.get("model"), r.get("runtime")) == (model, runtime)]
    if failed:
        err = str(failed[0].get("error") or failed[0].get("failure_reasons"))
        return f"{len(failed)} failed run(s): {err[:160]}"
    if art is None and info:
        return f"no {FORMAT_NAMES.get(fmt, fmt)} artifact in the store"
    if runtime not in ((results.get("profile") or {}).get("runtimes") or RUNTIMES):
        return "not in this bench's runtimes"
    return f"not measured at {n_users(users)}"


def rows(results: dict, points: list[Point], model: str, users: int | None,
         method: stats.Method | None = None) -> list[Row]:
    """One row per runtime, ranked ones first (best first), then those without a figure."""
    method = method or stats.Method.from_env()
    info = (results.get("models") or {}).get(model) or {}
    services = results.get("services") or {}
    gw = find(points, via="gateway", mode="closed", model=model)
    out = []
    for rt in RUNTIMES:
        ref, single = one(gw, runtime=rt, users=users), one(gw, runtime=rt, users=1)
        mine = find(gw, runtime=rt)
        out.append(Row(
            runtime=rt,
            artifact=(info.get("artifacts") or {}).get(FORMAT_OF_RUNTIME.get(rt, "")),
            rps=ref.rps if ref else None,
            single=single,
            rss_mb=(services.get(rt) or {}).get("rss_mb_peak"),
            failures=sum(p.failures for p in mine),
            requests=sum(p.requests for p in mine),
            noisy=any(p.noisy for p in mine),
            why_not=None if ref else why_not_served(results, model, rt, users),
        ))
    measured = [r for r in out if r.rps]
    pools = noise_pools(points)

    def faster(o: Row, r: Row) -> bool:
        return clearly_above(o.rps, r.rps, method,
                             (pools.get((o.runtime, "rps")), pools.get((r.runtime, "rps"))))

    ranked = [replace(r, rank=1 + sum(faster(o, r) for o in measured))
              for r in measured]
    ranked.sort(key=lambda r: (r.rank, -r.rps.median))
    return ranked + [r for r in out if not r.rps]


def n_users(n: int | None) -> str:
    return f"{n} user" + ("" if n == 1 else "s")


def num(x: float) -> str:
    """2,310 / 46.6 / 4.66 / 0.052: about three significant figures, thousands separated."""
    ax = abs(x)
    if ax >= 100:
        return f"{x:,.0f}"
    return f"{x:.1f}" if ax >= 10 else f"{x:.2f}" if ax >= 1 else f"{x:.2g}"


def _p99(r: Row) -> float:
    return r.single.p99.median if r.single else float("inf")


def _clearly_lowest(rows_: list[Row], value, pick: Row, what: str, unit: str,
                    apart) -> str | None:
    """'lowest X (a unit vs b next)' when pick's X is clearly below every other row's (value(row):
    a figure or None; apart(x, y): x clearly above y); None when it is not, or when it is within
    noise of the next."""
    have = sorted((r for r in rows_ if value(r)), key=lambda r: _mid(value(r)))
    if len(have) < 2 or have[0] is not pick or not apart(value(have[1]), value(pick)):
        return None
    return f"{what} ({num(_mid(value(pick)))} {unit} vs {num(_mid(value(have[1])))} next)"


def _mid(x) -> float:
    return x.median if isinstance(x, Spread) else x


def recommend(ranked: list[Row], users: int | None, label) -> str:
    """One line naming the runtime to use and why, every figure taken from the rows."""
    measured = [r for r in ranked if r.rps]
    if not measured:
        return "**No recommendation:** no runtime served this model in this bench (reasons below)."
    top = [r for r in measured if r.rank == 1]
    # Among runtimes tied on throughput, prefer the lower single-stream p99, then the smaller RSS.
    pick = min(top, key=lambda r: (_p99(r), r.rss_mb or float("inf")))
    rest = [r for r in measured if r is not pick]
    if len(top) > 1:
        others = ", ".join(f"{label(r.runtime)} {num(r.rps.median)}" for r in top if r is not pick)
        reasons = [f"throughput at {n_users(users)} not told apart (a tie or within noise) "
                   f"({num(pick.rps.median)} req/s vs {others})"]
    elif rest:
        reasons = [f"highest throughput at {n_users(users)} ({num(pick.rps.median)} req/s vs "
                   f"{num(rest[0].rps.median)} next)"]
    else:
        reasons = [f"the only runtime measured ({num(pick.rps.median)} req/s at {n_users(users)})"]
    apart = [c for c in (
        _clearly_lowest(measured, lambda r: r.single and r.single.p99, pick,
                        "lowest p99 at 1 user", "ms", clearly_above),
        _clearly_lowest(measured, lambda r: r.rss_mb, pick, "smallest RSS", "MB",
                        reading_clearly_above)) if c]
    reasons += apart
    if len(top) > 1 and not apart:
        reasons.append("nothing else measured sets it apart from the tied runtimes")
    art = pick.artifact or {}
    if art.get("parity_max_abs_error") is not None:
        reasons.append(f"certified parity {art['parity_max_abs_error']:.1e}")
    elif art.get("parity_ok"):
        reasons.append("parity certified")
    if pick.failures:
        reasons.append(f"but {pick.failures} of {pick.requests} requests failed")
    if pick.noisy:
        reasons.append("caution: some of its runs were noisy (other processes busy)")
    fmt = FORMAT_NAMES.get(FORMAT_OF_RUNTIME.get(pick.runtime, ""), "")
    return f"**Recommendation: {label(pick.runtime)}** ({fmt} artifact): {'; '.join(reasons)}."


HEADERS = ["rank", "runtime", "artifact", "parity", "req/s at {users}",
           "p50 / p99 ms at 1 user", "service RSS peak MB", "failed requests"]


def _artifact(r: Row) -> str:
    fmt = FORMAT_NAMES.get(FORMAT_OF_RUNTIME.get(r.runtime, ""), r.runtime)
    return f"{fmt} {r.artifact['bytes'] / 1e6:.3f} MB" if r.artifact else f"{fmt}: none"


def _parity(r: Row) -> str:
    a = r.artifact
    if not a:
        return "–"
    if not a.get("parity_ok"):
        return "**failed**"
    err = a.get("parity_max_abs_error")
    return f"passed, max err {err:.1e}" if err is not None else "passed"


def table_rows(ranked: list[Row], label) -> list[list]:
    """Cells for build.py's Table (a list cell renders as lines of one cell)."""
    out = []
    for r in ranked:
        lat = f"{r.single.p50.fmt(2)} / {r.single.p99.fmt(2)}" if r.single else "not measured"
        figures = ([r.rps.fmt(1) + (" (noisy)" if r.noisy else ""), lat, num(r.rss_mb)
                    if r.rss_mb else "–", f"{r.failures}/{r.requests}"] if r.rps else
                   [[f"**not served:** {r.why_not}"], lat, "–", f"{r.failures}/{r.requests}"])
        tie = r.rank is not None and sum(o.rank == r.rank for o in ranked) > 1
        rank = "–" if r.rank is None else f"{r.rank}" + (" (not told apart)" if tie else "")
        out.append([rank, label(r.runtime), _artifact(r), _parity(r), *figures])
    return out


def models_to_rank(results: dict, points: list[Point]) -> list[str]:
    """The profile's models (--models order) that are in the store or were measured, then any
    other measured model: one ranking each."""
    measured = {p.model for p in points if p.via == "gateway"}
    known = measured | set(results.get("models") or {})
    wanted = [m for m in (results.get("profile") or {}).get("models", []) if m in known]
    return wanted + sorted(measured - set(wanted))


def note(results: dict, users: int | None) -> str:
    method = stats.Method.from_env()
    spread = (f"median of the repeats [min–max]; a runtime ranks above another only where the "
              f"verdict would call it faster: the whole {method.confidence:.0%} interval of the "
              f"ratio beyond ±{method.negligible:.0%}, with at least {method.min_repeats} "
              "repeats; others share a rank, not told apart")
    return (f"Ranked by throughput through the gateway at {n_users(users)}, closed loop "
            f"({spread}). p50 / p99 at 1 user: single-stream latency, one request at a "
            "time (\"not measured\" where the profile measured the model at its reference "
            "concurrency only: `make bench MODELS=<model>` sweeps it; the in-process batch-1 "
            "latency of its edge artifacts is in the table after this one). RSS is the runtime's "
            "whole service at its peak with every model of the store loaded, not this model "
            "alone. Parity is the exporter's certificate against the source framework. Capacity "
            "(the highest Poisson request rate with p99 under the latency target), where the "
            "profile searched it, is the line above the table.")


EDGE_HEADERS = ["artifact (in-process, batch 1)", "size", "p50 / p99 ms", "RSS +MB",
                "accuracy drop vs float source", "certificate"]


def edge_rows(results: dict, model: str) -> list[list]:
    """The model's in-process artifacts, every certified variant included, from the bench's edge
    phase (loadtests/edge.py), fastest first; uncertified ones last with the reason. [] without
    an edge phase."""
    from loadtests.report.edge_report import drop_pt, edge_models, measured, name, size, why_not

    info = edge_models(results).get(model)
    if not info:
        return []
    rows = sorted(info.get("rows", []), key=lambda r: (measured(r) is None, (measured(r) or {}).get("p50_ms", 0)))
    out = []
    for r in rows:
        head = [f"{name(r)} `{r['key']}`", size(r.get("bytes"))]
        if reason := why_not(r):
            out.append([*head, [reason], "", "", ""])
            continue
        m, d = measured(r), drop_pt(r, info)
        out.append([*head, f"{m['p50_ms']:.3f} / {m['p99_ms']:.3f}", f"{m['rss_mb']:.1f}",
                    "n/a (no labels)" if d is None else f"{d:.1f} pt",
                    (r.get("certificate") or {}).get("text", "")])
    return out
