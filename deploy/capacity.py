"""Capacity plan from a bench: how many replicas of each runtime, and of the gateway, serve a
request rate within a latency target.

    python -m deploy.capacity --results loadtests/reports/<time>/results.json \
        --rate 1000 --latency-ms 50 [--models m1,m2] [--runtimes r1,r2] [--headroom 0.7] [--json]

Per (model, runtime) the per-replica capacity is, in order of preference:
1. results["capacity_at_latency_target"]["<model>@<runtime>"] = {"rps", "latency_ms",
   "percentile"} when a bench records it (the capacity search, loadtests/capacity.py) and its
   latency target is at most ours;
2. else the closed-loop throughput through the gateway at the highest concurrency whose p99 (the
   median of the point's repeats, like the report) stays within the target.
replicas = ceil(rate / (per-replica capacity x headroom)); resources per replica come from
deploy.sizing.container_resources(runtime, "large"). ASSUMPTIONS lists what this takes for granted;
it is printed with every plan.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

import typer

from deploy import sizing

DEFAULT_HEADROOM = 0.7
PERCENTILES = ("p99", "p95", "p50")  # the first one a run records is the one planned on
CAPACITY_KEY = "capacity_at_latency_target"

ASSUMPTIONS = (
    "Per-replica throughput is what one replica sustained on the bench machine: closed-loop "
    "Locust users through the gateway, the point with the highest concurrency whose {pct} stays "
    "within the target (median of the point's repeats; runs with failures excluded).",
    "That machine's client, gateway and every runtime shared {cores} cores, so a replica had less "
    "than a core of its own: the per-replica throughput is a lower bound and the replica counts "
    "an upper bound.",
    "Scaling is linear per core: N replicas of one core each serve N times one replica (no shared "
    "bottleneck: load balancer, network and storage are assumed not to limit).",
    "Single-model replicas: each row is one runtime serving one model, taking the whole rate; "
    "memory figures are those of the runtime with the 8 example models loaded (an upper bound "
    "for one model; TorchServe runs one worker per model).",
    "Headroom {headroom:g}: replicas run at most at {headroom:.0%} of measured capacity, since "
    "latency grows steeply near saturation (queueing), and the rest absorbs a replica lost or "
    "rolling, and the autoscaler's reaction time.",
    "Gateway replicas per row: rate x CPU per request / ({gw_cores:g} core per replica x "
    "headroom). The CPU per request is the gateway's own (its process tree's CPU time / requests) "
    "in the bench's runs of that model and runtime at the planned point, else deploy.sizing's "
    "figure for the model, else that of digits-cnn-torch (loadtests/gateway_overhead.py). It "
    "grows with the payload: JSON bodies are decoded, validated and re-encoded.",
    "CPU and memory per replica: deploy.sizing.container_resources(runtime, \"large\"): one core "
    "per replica, memory request = steady RSS, limit = peak RSS x {mem_headroom:g}.",
)


class PlanError(ValueError):
    """A plan that cannot be made, with a message for the person asking."""


@dataclass
class Point:
    users: int
    rps: float
    latency_ms: float
    repeats: int


def replica_resources(service: str) -> dict:
    """One "large" replica of a service: CPU request (millicores), memory request and limit (Mi)."""
    request, limit = sizing.memory_mi(service)
    return {"cpu_m": sizing.cpu_m(service, "large"), "memory_request_mi": request,
            "memory_limit_mi": limit}


@dataclass
class Row:
    model: str
    runtime: str
    source: str = ""  # where the per-replica capacity comes from
    per_replica_rps: float | None = None
    point: Point | None = None
    replicas: int | None = None
    runtime_cpu_us_per_request: float | None = None  # informative: the runtime's own CPU cost
    gateway_cpu_us_per_request: float | None = None
    gateway_source: str | None = None
    gateway_replicas: int | None = None
    problem: str | None = None  # why no replica count (the target is not met)

    @property
    def target(self) -> str:
        return f"{self.model}@{self.runtime}"

    def totals(self) -> dict:
        """CPU (millicores) and memory (Mi) of the runtime's and the gateway's replicas."""
        if self.replicas is None:
            return {}
        rt, gw = replica_resources(self.runtime), replica_resources("gateway")
        return {k: self.replicas * rt[k] + self.gateway_replicas * gw[k] for k in rt}


@dataclass
class Plan:
    rate: float
    latency_ms: float
    headroom: float
    percentile: str
    results: dict  # provenance of the results file
    rows: list[Row] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        rows = [{**asdict(r), "target": r.target,
                 "per_replica": replica_resources(r.runtime), "totals": r.totals()}
                for r in self.rows]
        return {"rate": self.rate, "latency_ms": self.latency_ms, "headroom": self.headroom,
                "percentile": self.percentile, "results": self.results, "rows": rows,
                "gateway_per_replica": replica_resources("gateway"),
                "assumptions": self.assumptions}


# --- reading a bench --------------------------------------------------------------------------


def load_results(path: Path) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PlanError(f"no results file at {path}: run `python -m loadtests bench` "
                        "(see loadtests/README.md) and pass its results.json") from None
    except ValueError as e:
        raise PlanError(f"{path} is not JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("runs"), list):
        raise PlanError(f"{path} is not a bench's results.json (no 'runs' list)")
    return doc


def closed_runs(results: dict) -> list[dict]:
    """Successful closed-loop runs through the gateway, without failures."""
    return [r for r in results["runs"]
            if r.get("via") == "gateway" and r.get("mode") == "closed" and r.get("ok")
            and not r.get("failures") and r.get("rps", 0) > 0 and r.get("latency_ms")]


def percentile_of(results: dict) -> str:
    """The highest latency percentile every closed run records (p99 from loadtests' locustfile)."""
    runs = closed_runs(results)
    for pct in PERCENTILES:
        if runs and all(pct in r["latency_ms"] for r in runs):
            return pct
    raise PlanError("the results hold no closed-loop gateway run with latency percentiles "
                    f"({', '.join(PERCENTILES)})")


def points(results: dict, model: str, runtime: str, pct: str) -> list[Point]:
    """The target's points by concurrency: median throughput and median latency of the repeats."""
    by_users: dict[int, list[dict]] = {}
    for r in closed_runs(results):
        if (r["model"], r["runtime"]) == (model, runtime):
            by_users.setdefault(r["users"], []).append(r)
    return [Point(u, statistics.median(r["rps"] for r in rs),
                  statistics.median(r["latency_ms"][pct] for r in rs), len(rs))
            for u, rs in sorted(by_users.items())]


def recorded_capacity(results: dict, model: str, runtime: str, latency_ms: float) -> dict | None:
    """The bench's own capacity-at-latency-target figure, if it has one that is valid here."""
    entry = (results.get(CAPACITY_KEY) or {}).get(f"{model}@{runtime}")
    if isinstance(entry, dict) and entry.get("rps") and entry.get("latency_ms") is not None \
            and entry["latency_ms"] <= latency_ms:
        return entry
    return None


def cpu_us_per_request(results: dict, model: str, group: str, runtime: str,
                       users: int | None) -> float | None:
    """Median CPU microseconds per request of a process group (a service's tree) over the runs of
    (model, runtime) at `users` (all of the target's runs if None)."""
    values = []
    for r in closed_runs(results):
        if (r["model"], r["runtime"]) != (model, runtime) or users not in (None, r["users"]):
            continue
        pct = ((r.get("cpu") or {}).get("groups_pct") or {}).get(group)
        if pct is not None:
            values.append(pct / 100 * 1e6 / r["rps"])
    return round(statistics.median(values), 1) if values else None


def provenance(results: dict, path: Path) -> dict:
    runs = closed_runs(results)
    other = [r["cpu"]["other_pct"] for r in runs
             if (r.get("cpu") or {}).get("other_pct") is not None]
    env = results.get("environment") or {}
    return {
        "path": str(path),
        "profile": (results.get("profile") or {}).get("name"),
        "started": results.get("started"),
        "finished": results.get("finished"),
        "cores": env.get("cores"),
        "cpu_model": env.get("cpu_model"),
        "tfserving": (results.get("tfserving") or {}).get("kind"),
        "closed_runs": len(runs),
        "noisy_runs": sum(bool(r.get("noisy")) for r in runs),
        "other_processes_pct_of_core_median": round(statistics.median(other), 1) if other else None,
    }


# --- planning ---------------------------------------------------------------------------------


def _users(n: int) -> str:
    return f"{n} user{'s' if n != 1 else ''}"


def plan_row(results: dict, model: str, runtime: str, *, rate: float, latency_ms: float,
             headroom: float, pct: str) -> Row:
    recorded = recorded_capacity(results, model, runtime, latency_ms)
    pts = points(results, model, runtime, pct)
    row = Row(model, runtime)
    if recorded:
        row.source = (f"{CAPACITY_KEY}: {recorded['rps']:.1f} req/s at "
                      f"{recorded.get('percentile', 'p99')} <= {recorded['latency_ms']:g} ms")
        row.per_replica_rps = float(recorded["rps"])
    else:
        within = [p for p in pts if p.latency_ms <= latency_ms]
        if not within:
            best = min(pts, key=lambda p: p.latency_ms)
            row.problem = (f"no measured point meets {pct} <= {latency_ms:g} ms for {row.target}; "
                           f"the lowest {pct} measured was {best.latency_ms:.1f} ms at "
                           f"{best.rps:.1f} req/s ({_users(best.users)})")
            return row
        row.point = max(within, key=lambda p: p.users)
        row.per_replica_rps = row.point.rps
        row.source = (f"closed loop, {_users(row.point.users)}: {row.point.rps:.1f} req/s, "
                      f"{pct} {row.point.latency_ms:.1f} ms")
    users = row.point.users if row.point else None
    row.runtime_cpu_us_per_request = cpu_us_per_request(results, model, runtime, runtime, users)
    row.gateway_cpu_us_per_request, row.gateway_source = gateway_cpu_us(results, model, runtime,
                                                                        users)
    row.replicas = math.ceil(rate / (row.per_replica_rps * headroom))
    gateway_cores = sizing.cpu_m("gateway", "large") / 1000
    row.gateway_replicas = math.ceil(rate * row.gateway_cpu_us_per_request / 1e6
                                     / (gateway_cores * headroom))
    return row


def gateway_cpu_us(results: dict, model: str, runtime: str, users: int | None) -> tuple[float, str]:
    """The gateway's CPU per request in front of (model, runtime), and where the figure is from."""
    measured = cpu_us_per_request(results, model, "gateway", runtime, users)
    if measured is not None:
        return measured, "the bench (at the planned point)"
    known = sizing.SERVICES["gateway"]["cpu_us_per_request"]
    if model in known:
        return known[model], "deploy.sizing (measured for this model)"
    ref = sizing.GATEWAY_REFERENCE_MODEL
    return known[ref], f"deploy.sizing ({ref}, loadtests/gateway_overhead.py: small payloads)"


def make_plan(path: Path, *, rate: float, latency_ms: float, headroom: float = DEFAULT_HEADROOM,
              models: list[str] | None = None, runtimes: list[str] | None = None) -> Plan:
    if rate <= 0 or latency_ms <= 0:
        raise PlanError("--rate and --latency-ms must be positive")
    if not 0 < headroom <= 1:
        raise PlanError(f"--headroom must be in (0, 1], got {headroom:g}")
    results = load_results(path)
    pct = percentile_of(results)
    measured = sorted({(r["model"], r["runtime"]) for r in closed_runs(results)})
    have_models = sorted({m for m, _ in measured})
    for m in models or ():
        if m not in have_models:
            raise PlanError(f"model {m!r} is not in {path}: it measured {', '.join(have_models)}")
    have_runtimes = sorted({rt for _, rt in measured})
    for rt in runtimes or ():
        if rt not in have_runtimes:
            raise PlanError(f"runtime {rt!r} is not in {path}: it measured "
                            f"{', '.join(have_runtimes)}")
    targets = [(m, rt) for m, rt in measured
               if (not models or m in models) and (not runtimes or rt in runtimes)]
    if not targets:
        raise PlanError(f"{path} has no closed-loop run of the models and runtimes asked for")
    order = {m: i for i, m in enumerate(models or have_models)}
    targets.sort(key=lambda t: (order[t[0]], sizing.RUNTIMES.index(t[1])
                                if t[1] in sizing.RUNTIMES else 99))
    rows = [plan_row(results, m, rt, rate=rate, latency_ms=latency_ms, headroom=headroom, pct=pct)
            for m, rt in targets]
    prov = provenance(results, path)
    assumptions = [a.format(pct=pct, cores=prov["cores"] or "?", headroom=headroom,
                            gw_cores=sizing.cpu_m("gateway", "large") / 1000,
                            mem_headroom=sizing.MEMORY_HEADROOM) for a in ASSUMPTIONS]
    return Plan(rate, latency_ms, headroom, pct, prov, rows, assumptions)


# --- output -----------------------------------------------------------------------------------


def _cpu(m: int) -> str:
    return f"{m / 1000:g}"


def _gib(mi: int) -> str:
    return f"{mi / 1024:.1f}Gi"


def _mem(res: dict) -> str:
    return f"{res['memory_request_mi']}/{res['memory_limit_mi']}Mi"


def render(plan: Plan) -> str:
    p = plan.results
    out = [f"Capacity plan: {plan.rate:g} req/s of one model at {plan.percentile} <= "
           f"{plan.latency_ms:g} ms, headroom {plan.headroom:g}",
           f"from {p['path']} (profile {p['profile']}, {p['started']}; {p['cores']} cores; "
           f"TF Serving {p['tfserving']}; other processes: median "
           f"{p['other_processes_pct_of_core_median']}% of a core, {p['noisy_runs']}/"
           f"{p['closed_runs']} runs noisy)", ""]
    cols = ("model@runtime", "users", plan.percentile + " ms", "req/s/replica", "replicas",
            "cpu/replica", "mem req/limit", "gw us/req", "gw replicas", "total cpu",
            "total mem req")
    table = []
    for r in plan.rows:
        if r.replicas is None:
            continue
        res, t = replica_resources(r.runtime), r.totals()
        table.append((r.target, str(r.point.users) if r.point else "-",
                      f"{r.point.latency_ms:.1f}" if r.point else "-",
                      f"{r.per_replica_rps:.1f}", str(r.replicas), _cpu(res["cpu_m"]), _mem(res),
                      f"{r.gateway_cpu_us_per_request:g}", str(r.gateway_replicas),
                      _cpu(t["cpu_m"]), _gib(t["memory_request_mi"])))
    widths = [max([len(c)] + [len(row[i]) for row in table]) for i, c in enumerate(cols)]
    out += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                      for i, (c, w) in enumerate(zip(row, widths)))
            for row in (cols, *table)]
    gw = replica_resources("gateway")
    out += ["", f"gateway replica: {_cpu(gw['cpu_m'])} CPU, memory {_mem(gw)} (request/limit); "
            "totals = runtime replicas + gateway replicas (CPU and memory requests)"]
    out += [f"{r.target}: capacity from {r.source}; gateway CPU from {r.gateway_source}"
            for r in plan.rows if r.replicas is not None]
    out += [f"not feasible: {r.problem}" for r in plan.rows if r.problem]
    out += ["", "Assumptions:", *(f"- {a}" for a in plan.assumptions)]
    return "\n".join(out) + "\n"


app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@app.command()
def main(
    results: Path = typer.Option(..., help="a bench's results.json (python -m loadtests bench)"),
    rate: float = typer.Option(..., help="target request rate (req/s) of one model"),
    latency_ms: float = typer.Option(..., help="latency target (ms) at the recorded percentile"),
    models: str = typer.Option(None, help="comma-separated models (default: every one measured)"),
    runtimes: str = typer.Option(None, help="comma-separated runtimes (default: every one)"),
    headroom: float = typer.Option(DEFAULT_HEADROOM, help="fraction of measured capacity used"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
):
    """Replicas of each (model, runtime) and of the gateway for a request rate within a latency
    target, from a bench's results.json. Exit 1 if no row meets the target, 2 on bad input."""
    try:
        plan = make_plan(results, rate=rate, latency_ms=latency_ms, headroom=headroom,
                         models=_csv(models), runtimes=_csv(runtimes))
    except PlanError as e:
        typer.echo(f"capacity: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(plan.to_dict(), indent=1) if as_json else render(plan), nl=not as_json)
    if not any(r.replicas for r in plan.rows):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
