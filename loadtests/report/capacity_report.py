"""The report's server-scenario section (capacity at a latency target, the headline) and the load
generator's share of the CPU (how the cores were shared, per point)."""

from __future__ import annotations

import statistics

# build imports this module; its Section and Table are read when a section is made.
from loadtests.report import build

STATUS_WORDS = {
    "found": "within the search's resolution",
    "budget": "step budget spent before the resolution: capacity lies between the two rates",
    "above-range": "the highest rate searched met the target: capacity is at least this",
    "below-range": "even the lowest rate tried missed the target",
    "not-measured": "not measured",
}


def capacity_cell(outcome: dict) -> str:
    """The capacity in words that say what the search could and could not establish."""
    status, cap = outcome.get("status"), outcome.get("capacity_rps")
    if status == "above-range":
        return f"**≥ {cap:g}** (above the range)"
    if status == "below-range":
        return f"**< {outcome['lowest_failing_rps']:g}** (below the lowest rate tried)"
    if status in ("found", "budget"):
        return f"**{cap:g}** (fails at {outcome['lowest_failing_rps']:g})"
    return f"not measured: {outcome.get('why', '')}"


def _at_capacity(outcome: dict) -> dict | None:
    cap = outcome.get("capacity_rps")
    return next((s for s in outcome.get("steps", []) if s["rate"] == cap and s["passed"]), None)


def capacity_section(results: dict, label) -> build.Section | None:
    """None when the bench measured no capacity (profiles or results from before it existed)."""
    caps = results.get("capacity") or {}
    if not caps:
        return None
    prof = results.get("profile") or {}
    measured = sorted({k.split("@")[0] for k in caps})
    others = [m for m in (results.get("models") or {}) if m not in measured]
    rows, targets = [], {}
    for key, o in sorted(caps.items()):
        model, runtime = key.split("@", 1)
        if o.get("target_ms") is not None:
            targets[model] = f"{o['target_ms']:g} ms ({o.get('target_basis', '')})"
        at = _at_capacity(o)
        steps = o.get("steps", [])
        rows.append([model, label(runtime),
                     f"{o['target_ms']:g}" if o.get("target_ms") is not None else "–",
                     capacity_cell(o),
                     f"{at['p99_ms']:.2f}" if at and at.get("p99_ms") is not None else "–",
                     f"{at['rps']:.0f}" if at else "–",
                     f"{len(steps)}/{o.get('max_steps', '–')}"
                     + (f" ({n} noisy)" if (n := sum(bool(s.get("noisy")) for s in steps)) else ""),
                     STATUS_WORDS.get(o.get("status"), o.get("status", "")),
                     str(min((s["requests"] for s in steps), default="–")),
                     f"{o['closed_peak_rps']:.0f}" if o.get("closed_peak_rps") else "–"])
    text = [
        "**Capacity: the highest Poisson arrival rate at which p99 latency (measured from each "
        "request's scheduled send time, so a server that falls behind cannot hide it) stays within "
        "the model's target, with at most 0.1% errors.** Found per runtime by a bounded search "
        "(as MLPerf LoadGen's server scenario and perf_analyzer's `--latency-threshold` do): "
        f"the range {prof.get('capacity_range', ['?', '?'])[0]}–"
        f"{prof.get('capacity_range', ['?', '?'])[1]} x the runtime's closed-loop peak, both ends "
        "measured (the low end failing: a quarter of it, then a sixteenth), then geometric "
        "bisection until the passing and failing rates are within "
        f"{prof.get('capacity_resolution', 0):.0%} of each other or "
        f"{prof.get('capacity_max_steps')} steps are spent; each step is "
        f"{prof.get('capacity_warmup_s')} s of uncounted traffic, then a window of at least "
        f"{prof.get('window_s')} s and {prof.get('capacity_min_requests')} requests (at most "
        f"{prof.get('capacity_max_window_s')} s).",
        "Latency targets: " + "; ".join(f"{m}: {t}" for m, t in sorted(targets.items())) + "."
        if targets else "No latency target could be set.",
    ]
    if others:
        text.append(f"Not searched in the {prof.get('name')} profile (to keep it within its time "
                    f"budget): {', '.join(sorted(others))}; the full profile searches every model.")
    headers = ["model", "runtime", "p99 target ms", "capacity req/s", "p99 at capacity ms",
               "answered req/s there", "steps", "search", "fewest requests in a step",
               "closed-loop peak req/s"]
    return build.Section("Capacity at a latency target (server scenario)", text,
                   [build.Table(headers, rows)])


def capacity_line(results: dict, model: str, label) -> str | None:
    """One sentence for a model's own section: its runtimes by capacity."""
    caps = {k.split("@", 1)[1]: v for k, v in (results.get("capacity") or {}).items()
            if k.split("@", 1)[0] == model and v.get("status") != "not-measured"}
    if not caps:
        return None
    target = next(iter(caps.values())).get("target_ms")
    order = sorted(caps.items(), key=lambda kv: -(kv[1].get("capacity_rps") or 0.0))
    return (f"Capacity at p99 ≤ {target:g} ms (Poisson arrivals): "
            + ", ".join(f"{label(rt)} {capacity_cell(o)}" for rt, o in order) + ".")


def loadgen_section(results: dict, label) -> build.Section:
    """How the cores were shared, and the load generator's share of the CPU time per point."""
    sets = results.get("cpu_sets") or {}
    groups: dict[tuple, list[dict]] = {}
    for r in results.get("runs", []):
        g = (r.get("cpu") or {}).get("groups_pct") or {}
        if r.get("ok") and "loadgen" in g:
            key = (r["via"], r["mode"], r["model"], r["runtime"], r["users"], r.get("rate", 0.0))
            groups.setdefault(key, []).append(r)
    rows, shares = [], []
    for (via, mode, model, runtime, users, rate), runs in sorted(groups.items()):
        gen = statistics.fmean(r["cpu"]["groups_pct"]["loadgen"] for r in runs)
        busy = statistics.fmean(r["cpu"].get("busy_pct", 0.0) for r in runs)
        servers = statistics.fmean(
            sum(v for k, v in r["cpu"]["groups_pct"].items()
                if k not in ("loadgen", "ceiling-endpoint")) for r in runs)
        share = gen / busy if busy else None
        own = gen / (gen + servers) if gen + servers else None
        if own is not None and via != "ceiling":
            shares.append(own)
        point = f"{users} users" if mode == "closed" else f"{rate:g} req/s"
        rows.append([f"{via} {mode}", model, label(runtime), point, str(len(runs)), f"{gen:.0f}",
                     f"{servers:.0f}", f"{busy:.0f}", f"{own:.0%}" if own is not None else "–",
                     f"{share:.0%}" if share is not None else "–"])
    how = {"disjoint": f"Load generator and servers on disjoint CPU sets: {sets.get('note')}.",
           "shared": f"No CPU sets: {sets.get('note')}."}.get(
        sets.get("mode"), "CPU sets not recorded (a bench from before they were): the load "
                          "generator and the servers shared the machine's cores.")
    text = [how, "Per point (mean over its repeats or steps): CPU time of the load generator "
                 "(Locust's process, or this bench's own Poisson client for open-loop runs), of "
                 "the servers' process trees, and of the whole machine, in % of one core; then the "
                 "load generator's share of the bench's CPU time (load generator + servers) and "
                 "of all the CPU time used on the machine (other processes included)."]
    if shares:
        text.append(f"Outside the client-ceiling runs the load generator took "
                    f"{min(shares):.0%}–{max(shares):.0%} of the bench's CPU time "
                    f"(median {statistics.median(shares):.0%})"
                    + (": CPU the servers could not use, since they shared the cores."
                       if sets.get("mode") != "disjoint" else "."))
    return build.Section("Load generator's share of the CPU", text, [build.Table(
        ["run", "model", "runtime", "point", "runs", "load generator %", "servers %",
         "machine busy %", "load generator share of the bench", "of the machine"], rows)])
