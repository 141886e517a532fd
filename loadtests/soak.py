"""Paced soak (`make soak DURATION=600`): open-loop traffic at a fixed rate for a long while, and
what drifts: errors, latency per minute, memory per service.

    python -m loadtests.soak --duration 600 [--rate 300] [--models a,b] [--pinned-share 0.5]
                             [--arrivals poisson|constant] [--attach]

A stack of its own (`python -m services.supervisor up` on free ports, a private run dir, a store
of the soaked models), or the running `make up` stack with --attach. Requests leave on a schedule
(Poisson arrivals at --rate by default, or evenly spaced), whatever the answers do: latency is
measured from the scheduled send time, so a stall shows as latency rather than as fewer requests.
Each request is OIP JSON (batch 1, the model's reference samples) through the gateway for a model
drawn from --models: the bare name, or with probability --pinned-share `<model>@<runtime>` for a
runtime drawn from --runtimes, so every runtime's memory is exercised (the bare name goes to the
gateway's default runtime). --warmup seconds of the same traffic come first and are not counted;
RSS per service (its process tree, from the supervisor's state file) is read after the warm-up and
at the end, and once per interval.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import numpy as np
import uvloop

from loadtests import monitor, stackrun
from loadtests.openloop import arrival_offsets
from loadtests.payloads import auth_headers
from services.settings import get_settings

DEFAULT_MODELS = "digits-cnn-torch,digits-cnn-keras,digits-mlp-torch,digits-mlp-keras"
MAX_IN_FLIGHT = 2000  # beyond: the request is not sent and counted as "client-overload"


# --- pure: pacing, targets, summaries -----------------------------------------------------------


def pick_targets(n: int, models: list[str], runtimes: list[str], pinned_share: float,
                 rng: np.random.Generator) -> list[str]:
    """n model names to request: `model` or, with probability pinned_share, `model@runtime`."""
    m = rng.integers(len(models), size=n)
    pinned = rng.random(n) < pinned_share if runtimes else np.zeros(n, bool)
    r = rng.integers(max(1, len(runtimes)), size=n)
    return [f"{models[i]}@{runtimes[j]}" if p else models[i] for i, p, j in zip(m, pinned, r)]


def per_interval(records: list[tuple], interval: float, duration: float) -> list[dict]:
    """records (scheduled offset s, latency s, code, ...) -> one row per interval of the schedule."""
    rows = []
    for k in range(int(np.ceil(duration / interval))):
        lo, hi = k * interval, min((k + 1) * interval, duration)
        rs = [r for r in records if lo <= r[0] < hi]
        ok = [r[1] for r in rs if r[2].startswith("2")]
        lats = [r[1] for r in rs if r[2] != "client-overload"]
        rows.append({
            "interval": k + 1, "from_s": lo, "to_s": hi, "requests": len(rs),
            "rate": round(len(rs) / (hi - lo), 1) if hi > lo else 0.0, "ok": len(ok),
            "non_2xx": dict(Counter(r[2] for r in rs if not r[2].startswith("2"))),
            "p50_ms": stackrun.percentile_ms(lats, 50), "p99_ms": stackrun.percentile_ms(lats, 99),
        })
    return rows


def per_target(records: list[tuple]) -> list[dict]:
    """records (offset, latency s, code, target) -> requests, non-2xx, p50/p99 per target."""
    by: dict[str, list[tuple]] = {}
    for r in records:
        by.setdefault(r[3], []).append(r)
    return [{"target": t, "requests": len(rs),
             "non_2xx": dict(Counter(r[2] for r in rs if not r[2].startswith("2"))),
             "p50_ms": stackrun.percentile_ms([r[1] for r in rs], 50),
             "p99_ms": stackrun.percentile_ms([r[1] for r in rs], 99)} for t, rs in sorted(by.items())]


def rss_growth(start: dict[str, float], end: dict[str, float]) -> dict[str, dict]:
    """Per service: RSS MB after the warm-up and at the end, growth in %."""
    out = {}
    for name in sorted(set(start) | set(end)):
        a, b = start.get(name), end.get(name)
        pct = round(100 * (b - a) / a, 1) if a and b is not None else None
        out[name] = {"start_mb": a, "end_mb": b, "growth_pct": pct}
    return out


def render_intervals(rows: list[dict], interval: float) -> str:
    unit = "minute" if interval == 60 else f"{interval:g} s"
    return stackrun.table(
        [[r["interval"], r["requests"], r["rate"], r["ok"], stackrun.codes_text(r["non_2xx"]),
          r["p50_ms"], r["p99_ms"]] for r in rows],
        [unit, "requests", "req/s", "2xx", "non-2xx", "p50 ms", "p99 ms"])


def render_rss(growth: dict[str, dict], restarts: dict[str, int]) -> str:
    return stackrun.table(
        [[n, g["start_mb"], g["end_mb"], "-" if g["growth_pct"] is None else f"{g['growth_pct']:+.1f}",
          restarts.get(n, 0)] for n, g in growth.items()],
        ["service", "RSS start MB", "RSS end MB", "growth %", "restarts"])


# --- the run ---------------------------------------------------------------------------------


def rss_now(stack: stackrun.Stack) -> dict[str, float]:
    return {n: monitor.rss_mb(e["pids"])
            for n, e in monitor.read_state(stack.run_dir / "state.json").items()}


def restarts_now(stack: stackrun.Stack) -> dict[str, int]:
    return {n: s.get("restarts", 0) for n, s in stack.services().items()}


class Soak:
    def __init__(self, session: aiohttp.ClientSession, stack: stackrun.Stack, models: list[str],
                 timeout: float):
        self.session, self.stack = session, stack
        self.bodies = {m: stackrun.bodies(stack.store, m) for m in models}
        self.headers = {"Content-Type": "application/json", **auth_headers(get_settings())}
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def one(self, name: str, body: bytes, due: float, off: float, out: list) -> None:
        try:
            async with self.session.post(f"{self.stack.gateway_url}/v2/models/{name}/infer",
                                         data=body, headers=self.headers,
                                         timeout=self.timeout) as r:
                await r.read()
                code = str(r.status)
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            code = stackrun.error_code(e)
        out.append((off, time.monotonic() - due, code, name))

    async def run(self, offsets: np.ndarray, names: list[str], out: list, on_tick=None,
                  tick: float = 60.0) -> None:
        """Send names[i] at offsets[i] (s from now); on_tick() every `tick` s of the schedule."""
        pending: set[asyncio.Task] = set()
        t0 = time.monotonic()
        next_tick = tick
        for i, (off, name) in enumerate(zip(offsets, names)):
            due = t0 + off
            if off >= next_tick and on_tick:
                on_tick(next_tick)
                next_tick += tick
            while (delay := due - time.monotonic()) > 0:  # uvloop's timers may wake early
                await asyncio.sleep(delay)
            if len(pending) >= MAX_IN_FLIGHT:
                out.append((float(off), 0.0, "client-overload", name))
                continue
            model = name.split("@")[0]
            body = self.bodies[model][i % len(self.bodies[model])]
            task = asyncio.create_task(self.one(name, body, due, float(off), out))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)


async def soak(stack: stackrun.Stack, args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(args.seed)
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:
        s = Soak(session, stack, args.model_list, args.timeout)
        if args.warmup > 0:
            stackrun.say(f"warm-up: {args.warmup:g} s at {args.rate:g} req/s")
            offs = arrival_offsets(args.rate, args.warmup, args.arrivals, rng)
            await s.run(offs, pick_targets(len(offs), args.model_list, args.runtime_list,
                                           args.pinned_share, rng), [])
        rss0, restarts0 = rss_now(stack), restarts_now(stack)
        samples = [{"at_s": 0.0, "rss_mb": rss0}]
        records: list[tuple] = []
        offs = arrival_offsets(args.rate, args.duration, args.arrivals, rng)
        names = pick_targets(len(offs), args.model_list, args.runtime_list, args.pinned_share, rng)
        stackrun.say(f"soak: {len(offs)} requests over {args.duration:g} s "
                     f"({args.arrivals} arrivals at {args.rate:g} req/s)")

        def tick(at: float) -> None:
            samples.append({"at_s": at, "rss_mb": rss_now(stack)})
            row = per_interval([r for r in records if at - args.interval <= r[0] < at],
                               args.interval, at)[-1]
            stackrun.say(f"  {at:5.0f} s: {row['requests']} requests, non-2xx "
                         f"{stackrun.codes_text(row['non_2xx'])}, p50 {row['p50_ms']} ms, "
                         f"p99 {row['p99_ms']} ms (answered so far)")

        t0 = time.monotonic()
        await s.run(offs, names, records, tick, args.interval)
        elapsed = time.monotonic() - t0
        rss1, restarts1 = rss_now(stack), restarts_now(stack)
        samples.append({"at_s": round(elapsed, 1), "rss_mb": rss1})
    return {
        "records": records, "elapsed_s": round(elapsed, 1), "rss_samples": samples,
        "rss": rss_growth(rss0, rss1),
        "restarts": {n: restarts1.get(n, 0) - restarts0.get(n, 0) for n in restarts1},
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtests.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=600.0, help="seconds measured")
    p.add_argument("--rate", type=float, default=300.0, help="requests/s sent")
    p.add_argument("--arrivals", default="poisson", choices=["poisson", "constant"])
    p.add_argument("--models", default=DEFAULT_MODELS)
    p.add_argument("--runtimes", default=",".join(stackrun.RUNTIMES),
                   help="runtimes of the pinned share (empty: bare names only)")
    p.add_argument("--pinned-share", type=float, default=0.5)
    p.add_argument("--interval", type=float, default=60.0, help="seconds per table row")
    p.add_argument("--warmup", type=float, default=15.0, help="seconds of traffic not counted")
    p.add_argument("--timeout", type=float, default=15.0, help="client timeout per request (s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--store", default=str(get_settings().model_store))
    p.add_argument("--attach", action="store_true", help="use the running `make up` stack")
    args = p.parse_args(argv)
    args.model_list = [m for m in args.models.split(",") if m]
    args.runtime_list = [r for r in args.runtimes.split(",") if r]
    if bad := [r for r in args.runtime_list if r not in stackrun.RUNTIMES]:
        p.error(f"unknown runtime: {', '.join(bad)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    before = stackrun.machine()

    async def go() -> dict:
        if args.attach:
            return await soak(stackrun.attached_stack(), args)
        with stackrun.own_stack(Path(args.store), args.model_list) as stack:
            return await soak(stack, args)

    try:
        r = uvloop.run(go())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 2
    records = r.pop("records")
    rows = per_interval(records, args.interval, args.duration)
    r["targets"] = per_target(records)
    doc = {"duration_s": args.duration, "rate": args.rate, "arrivals": args.arrivals,
           "models": args.model_list, "pinned_runtimes": args.runtime_list,
           "pinned_share": args.pinned_share, "warmup_s": args.warmup, "attach": args.attach,
           "machine_before": before, "machine_after": stackrun.machine(), "intervals": rows, **r}
    path = stackrun.write_report("soak", doc)
    total = sum(x["requests"] for x in rows)
    bad = Counter()
    for x in rows:
        bad.update(x["non_2xx"])
    print(f"\nsoak: {args.rate:g} req/s {args.arrivals}, {args.duration:g} s, "
          f"{', '.join(args.model_list)}; pinned share {args.pinned_share:g} over "
          f"{', '.join(args.runtime_list) or '-'}; latency from the scheduled send time")
    print(render_intervals(rows, args.interval))
    print(f"\n{total} requests, non-2xx {stackrun.codes_text(dict(bad))} "
          f"({100 * sum(bad.values()) / max(1, total):.3f}%); sending took {r['elapsed_s']:g} s\n")
    print(stackrun.table([[t["target"], t["requests"], stackrun.codes_text(t["non_2xx"]),
                           t["p50_ms"], t["p99_ms"]] for t in r["targets"]],
                         ["target", "requests", "non-2xx", "p50 ms", "p99 ms"]) + "\n")
    print(render_rss(r["rss"], r["restarts"]))
    print(f"\n{doc['machine_after']['uptime']}\nwritten {path}")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
