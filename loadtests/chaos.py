"""Fault benchmark (`make chaos`): kill -9 and SIGSTOP each runtime under load, and count what the
clients lose and how long the runtime takes to serve again.

    python -m loadtests.chaos [--model digits-cnn-torch] [--clients 8] [--faults all]
                              [--runtimes onnxruntime,tflite,tfserving,torchserve] [--attach]

Per runtime, a stack of its own (`python -m services.supervisor up` on free ports, a private run
dir, a store of the one model) whose gateway routes the bare model name to that runtime
(GATEWAY_DEFAULT_RUNTIME), so the bare-name traffic is the traffic the fault hits and the gateway's
failover is what saves it. With --attach the running `make up` stack is used as it is (bare
traffic then goes wherever its policy sends it: see "bare served by" in the JSON).

Load: --clients closed-loop clients on the bare name plus one on `<model>@<runtime>` (pinned),
OIP JSON through the gateway, each request with a --timeout; after a failed request a client
pauses 50 ms (a fast 503 would otherwise be counted thousands of times). A poller sends
`<model>@<runtime>` every 0.2 s from the fault on: recovery = seconds from the fault until the
first of those polls is answered 2xx.

Faults, each after --steady seconds of load and followed by --after seconds of load:
  kill9         SIGKILL of the runtime's main process (the supervisor restarts it)
  sigstop       SIGSTOP of it (hung: the supervisor's liveness watchdog kills and restarts it;
                SIGCONT at the end if it is still stopped)
  stall         SIGSTOP for --stall-s seconds, then SIGCONT (a pause shorter than the watchdog's
                ~2 s window, which it must not kill)
  kill9-worker  TorchServe only: SIGKILL of one Python worker (`model_service_worker`) of the
                Java frontend (TorchServe restarts it itself)
Between faults: the runtime is ready in the state file and answers pinned and bare requests again.

Targets (issue 12): bare-name traffic loses nothing to a kill -9 (at most the requests in flight
at that moment without the gateway's retry) and nothing to a SIGSTOP after its first 2 s; the
runtime serves again within 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil
import uvloop

from loadtests import stackrun
from loadtests.payloads import auth_headers
from services.settings import get_settings

FAULTS = ("kill9", "sigstop", "stall", "kill9-worker")
GRACE_S = 2.0  # a SIGSTOP may cost what is sent in its first 2 s
RECOVERY_TARGET_S = 10.0
ERROR_PAUSE_S = 0.05
POLL_INTERVAL_S = 0.2
WORKER_MARK = "model_service_worker"


# --- pure: results, classification, verdict, table -----------------------------------------------


@dataclass(frozen=True)
class Result:
    stream: str  # bare | pinned | poll
    start: float  # time.monotonic()
    end: float
    code: str  # HTTP status ("200", "503") or a transport error ("timeout", "refused", ...)
    served_by: str | None = None
    detail: str | None = None  # the start of a failed answer's body (the gateway's reason)

    @property
    def ok(self) -> bool:
        return self.code.startswith("2")


def classify(results: list[Result], t_fault: float, grace: float = GRACE_S) -> dict:
    """What the fault cost. Counted: requests that ended at or after the fault (those in flight
    at the fault included); "first" = sent before fault + grace, "after" = sent later."""
    bare = [r for r in results if r.stream == "bare"]
    steady = [r for r in bare if r.end < t_fault]
    hit = [r for r in bare if r.end >= t_fault]
    lost_first = Counter(r.code for r in hit if not r.ok and r.start < t_fault + grace)
    lost_after = Counter(r.code for r in hit if not r.ok and r.start >= t_fault + grace)
    pinned = [r for r in results if r.stream == "pinned" and r.end >= t_fault]
    polls = sorted((r for r in results if r.stream == "poll" and r.ok and r.start >= t_fault),
                   key=lambda r: r.end)
    return {
        "steady_ok": sum(r.ok for r in steady),
        "steady_lost": dict(Counter(r.code for r in steady if not r.ok)),
        "steady_served_by": dict(Counter(r.served_by for r in steady if r.ok)),
        "in_flight_at_fault": sum(1 for r in hit if r.start < t_fault),
        "bare_ok": sum(r.ok for r in hit),
        "bare_lost_first": dict(lost_first),
        "bare_lost_after": dict(lost_after),
        "bare_served_by": dict(Counter(r.served_by for r in hit if r.ok)),
        "bare_max_s": round(max((r.end - r.start for r in hit), default=0.0), 2),
        "pinned_ok": sum(r.ok for r in pinned),
        "pinned_lost": dict(Counter(r.code for r in pinned if not r.ok)),
        "recovery_s": round(polls[0].end - t_fault, 2) if polls else None,
        "examples": examples(bare + pinned, t_fault),
    }


def examples(results: list[Result], t_fault: float) -> dict[str, str]:
    """One failed answer's body per stream and code, from the fault on (what the gateway said)."""
    out: dict[str, str] = {}
    for r in results:
        if not r.ok and r.end >= t_fault and r.detail:
            out.setdefault(f"{r.stream} {r.code}", r.detail)
    return out


def verdict(fault: str, s: dict, recovery_target: float = RECOVERY_TARGET_S) -> tuple[bool, str]:
    """(met, why) against the issue's targets for this kind of fault."""
    first, after = sum(s["bare_lost_first"].values()), sum(s["bare_lost_after"].values())
    problems = []
    if fault in ("kill9", "kill9-worker") and first + after:
        bound = "<=" if first + after <= s["in_flight_at_fault"] else ">"
        problems.append(f"{first + after} bare lost ({bound} {s['in_flight_at_fault']} in flight)")
    if fault in ("sigstop", "stall") and after:
        problems.append(f"{after} bare lost after {GRACE_S:g} s")
    if s.get("killed_by_watchdog"):
        problems.append("a pause shorter than the watchdog's window was killed as a hang")
    rec = s["recovery_s"]
    if rec is None:
        problems.append("never served again")
    elif rec > recovery_target:
        problems.append(f"recovery {rec:g} s > {recovery_target:g} s")
    return not problems, "; ".join(problems)


HEADER = ["fault", "runtime", "bare ok", "bare lost first 2 s", "bare lost after", "in flight",
          "bare max s", "pinned ok", "pinned lost", "recovery s", "target met"]


def render(rows: list[dict]) -> str:
    out = []
    for r in rows:
        s = r["summary"]
        out.append([r["fault"], r["runtime"], s["bare_ok"], stackrun.codes_text(s["bare_lost_first"]),
                    stackrun.codes_text(s["bare_lost_after"]), s["in_flight_at_fault"],
                    s.get("bare_max_s"), s["pinned_ok"], stackrun.codes_text(s["pinned_lost"]),
                    "never" if s["recovery_s"] is None else f"{s['recovery_s']:.2f}",
                    "yes" if r["met"] else f"no: {r['why']}"])
    return stackrun.table(out, HEADER)


def phases(fault_at: float, recovery_s: float | None, svc: dict) -> dict | None:
    """Where a restart's recovery went (wall clock, from the supervisor's state): until the
    supervisor saw the process gone or killed it, its restart back-off, the start-up until its
    readiness probe passed, and the rest (the gateway noticing: probe, circuit breaker)."""
    exit_at = (svc.get("last_exit") or {}).get("at")
    spawned, ready = svc.get("spawned_at"), svc.get("ready_at")
    if None in (exit_at, spawned, ready, recovery_s) or exit_at < fault_at:
        return None  # not restarted by the supervisor for this fault
    return {"detect_s": round(exit_at - fault_at, 2), "backoff_s": round(spawned - exit_at, 2),
            "startup_s": round(ready - spawned, 2),
            "gateway_s": round(fault_at + recovery_s - ready, 2)}


def render_phases(rows: list[dict]) -> str:
    out = [[r["fault"], r["runtime"], r["summary"]["recovery_s"], *r["phases"].values()]
           for r in rows if r.get("phases")]
    return stackrun.table(out, ["fault", "runtime", "recovery s", "= detect s", "+ backoff s",
                                "+ start-up s", "+ gateway s"])


def plan(runtimes: list[str], faults: list[str]) -> list[tuple[str, str]]:
    """(runtime, fault) pairs in order; kill9-worker applies to TorchServe only."""
    return [(rt, f) for rt in runtimes for f in faults if f != "kill9-worker" or rt == "torchserve"]


# --- processes --------------------------------------------------------------------------------


def main_process(stack: stackrun.Stack, runtime: str) -> psutil.Process:
    pid = stack.services().get(runtime, {}).get("pid")
    if not pid:
        raise RuntimeError(f"{runtime}: no pid in {stack.run_dir / 'state.json'}")
    return psutil.Process(pid)


def torchserve_worker(main: psutil.Process) -> psutil.Process:
    for p in main.children(recursive=True):
        try:
            if any(WORKER_MARK in part for part in p.cmdline()):
                return p
        except psutil.Error:
            continue
    raise RuntimeError(f"no {WORKER_MARK} process under TorchServe pid {main.pid}")


def resume_if_stopped(p: psutil.Process) -> bool:
    """SIGCONT a process we stopped, if it is still that process and still stopped."""
    try:
        if p.is_running() and p.status() == psutil.STATUS_STOPPED:
            p.send_signal(signal.SIGCONT)
            return True
    except psutil.Error:
        pass
    return False


# --- load ------------------------------------------------------------------------------------


class Load:
    def __init__(self, session: aiohttp.ClientSession, gateway: str, model: str, runtime: str,
                 bodies: list[bytes], timeout: float):
        self.session, self.bodies = session, bodies
        self.bare_url = f"{gateway}/v2/models/{model}/infer"
        self.pinned_url = f"{gateway}/v2/models/{model}@{runtime}/infer"
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.headers = {"Content-Type": "application/json", **auth_headers(get_settings())}
        self.results: list[Result] = []

    async def post(self, stream: str, url: str, body: bytes, timeout=None) -> Result:
        t = time.monotonic()
        try:
            async with self.session.post(url, data=body, headers=self.headers,
                                         timeout=timeout or self.timeout) as r:
                data = await r.read()
                code, served = str(r.status), r.headers.get("X-Served-By")
                detail = None if r.status < 300 else data[:300].decode(errors="replace")
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            code, served, detail = stackrun.error_code(e), None, None
        res = Result(stream, t, time.monotonic(), code, served, detail)
        self.results.append(res)
        return res

    async def client(self, stream: str, stop: asyncio.Event) -> None:
        url = self.bare_url if stream == "bare" else self.pinned_url
        i = random.randrange(len(self.bodies))
        while not stop.is_set():
            i = (i + 1) % len(self.bodies)
            if not (await self.post(stream, url, self.bodies[i])).ok:
                await asyncio.sleep(ERROR_PAUSE_S)

    async def poll_until_served(self, t_fault: float, limit: float) -> None:
        """A pinned request every POLL_INTERVAL_S (not waiting for the previous one: a stopped
        backend holds it) until one succeeds or `limit` seconds after the fault."""
        pending: set[asyncio.Task] = set()
        done = asyncio.Event()

        async def one() -> None:
            if (await self.post("poll", self.pinned_url, self.bodies[0])).ok:
                done.set()

        try:
            while not done.is_set() and time.monotonic() - t_fault < limit:
                if len(pending) < 100:
                    task = asyncio.create_task(one())
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                with_timeout = asyncio.wait_for(done.wait(), POLL_INTERVAL_S)
                try:
                    await with_timeout
                except asyncio.TimeoutError:
                    pass
        finally:
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


async def wait_healthy(load: Load, stack: stackrun.Stack, runtime: str, expect_bare: str | None,
                       limit: float = 90.0) -> float:
    """Until every service is ready in the state file, a pinned request succeeds and (when the
    gateway routes the bare name to this runtime) a bare one is served by it. Returns seconds."""
    t0 = time.monotonic()
    short = aiohttp.ClientTimeout(total=5)
    while time.monotonic() - t0 < limit:
        ready = all(s.get("status") == "ready" for s in stack.services().values())
        if ready and (await load.post("check", load.pinned_url, load.bodies[0], short)).ok:
            bare = await load.post("check", load.bare_url, load.bodies[0], short)
            # (the TF Serving stand-in signs its answers `tfserving-standin`)
            if bare.ok and (expect_bare is None or (bare.served_by or "").startswith(expect_bare)):
                return time.monotonic() - t0
        await asyncio.sleep(0.25)
    raise RuntimeError(f"{runtime} not healthy again within {limit:.0f} s: "
                       f"{ {n: s.get('status') for n, s in stack.services().items()} }")


async def run_fault(load: Load, stack: stackrun.Stack, runtime: str, fault: str,
                    args: argparse.Namespace) -> dict:
    load.results = []
    main = main_process(stack, runtime)
    victim = torchserve_worker(main) if fault == "kill9-worker" else main
    stop = asyncio.Event()
    clients = [asyncio.create_task(load.client("bare", stop)) for _ in range(args.clients)]
    clients.append(asyncio.create_task(load.client("pinned", stop)))
    await asyncio.sleep(args.steady)
    t_fault, wall = time.monotonic(), time.time()
    victim.send_signal(signal.SIGSTOP if fault in ("sigstop", "stall") else signal.SIGKILL)
    poller = asyncio.create_task(load.poll_until_served(t_fault, args.recovery_limit))
    resumed = False
    if fault == "stall":
        await asyncio.sleep(args.stall_s)
        resumed = resume_if_stopped(victim)
        await asyncio.sleep(max(0.0, args.after - args.stall_s))
    else:
        await asyncio.sleep(args.after)
    stop.set()
    await asyncio.gather(*clients)
    if fault == "sigstop":
        resumed = resume_if_stopped(victim)  # the watchdog did not kill it: let it go on
    await poller
    summary = classify(load.results, t_fault)
    if fault == "stall":  # still stopped at SIGCONT time, or killed by the watchdog meanwhile
        summary["killed_by_watchdog"] = not resumed
    met, why = verdict(fault, summary)
    healthy_s = await wait_healthy(load, stack, runtime, args.expect_bare and runtime)
    svc = stack.services().get(runtime, {})
    return {
        "runtime": runtime, "fault": fault, "victim_pid": victim.pid, "main_pid": main.pid,
        "fault_at": wall, "summary": summary, "met": met, "why": why,
        "sigcont_sent": resumed, "healthy_again_after_s": round(healthy_s, 2),
        "supervisor": {k: svc.get(k) for k in ("pid", "restarts", "hung_kills", "last_exit",
                                               "spawned_at", "ready_at", "startup_s")},
        "phases": phases(wall, summary["recovery_s"], svc),
    }


async def run_runtime(stack: stackrun.Stack, runtime: str, faults: list[str],
                      args: argparse.Namespace, rows: list[dict]) -> None:
    bodies = stackrun.bodies(stack.store, args.model)
    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=conn) as session:
        load = Load(session, stack.gateway_url, args.model, runtime, bodies, args.timeout)
        await wait_healthy(load, stack, runtime, args.expect_bare and runtime)
        for fault in faults:
            stackrun.say(f"--- {runtime}: {fault} ({args.clients} bare clients + 1 pinned, "
                         f"{args.steady:g} s steady, {args.after:g} s after)")
            row = await run_fault(load, stack, runtime, fault, args)
            rows.append(row)
            stackrun.say(render([row]).splitlines()[-1])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtests.chaos", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="digits-cnn-torch")
    p.add_argument("--clients", type=int, default=8, help="closed-loop clients on the bare name")
    p.add_argument("--faults", default="all", help=f"all or some of {','.join(FAULTS)}")
    p.add_argument("--runtimes", default=",".join(stackrun.RUNTIMES))
    p.add_argument("--steady", type=float, default=5.0, help="seconds of load before a fault")
    p.add_argument("--after", type=float, default=20.0, help="seconds of load after a fault")
    p.add_argument("--stall-s", type=float, default=1.0, help="SIGSTOP length of `stall`")
    p.add_argument("--timeout", type=float, default=15.0, help="client timeout per request (s)")
    p.add_argument("--recovery-limit", type=float, default=60.0,
                   help="stop polling for recovery this long after a fault")
    p.add_argument("--store", type=Path, default=get_settings().model_store)
    p.add_argument("--attach", action="store_true",
                   help="use the running `make up` stack instead of starting one per runtime")
    args = p.parse_args(argv)
    args.fault_list = list(FAULTS) if args.faults == "all" else args.faults.split(",")
    args.runtime_list = args.runtimes.split(",")
    bad = [f for f in args.fault_list if f not in FAULTS] + [
        r for r in args.runtime_list if r not in stackrun.RUNTIMES]
    if bad:
        p.error(f"unknown fault or runtime: {', '.join(bad)}")
    args.expect_bare = not args.attach  # our own stacks route the bare name to the runtime
    return args


async def run_all(args: argparse.Namespace, rows: list[dict], errors: list[str]) -> None:
    """Every runtime's faults; a runtime that breaks the run (not healthy again, no process to
    fault) is recorded in `errors` and the next runtime goes on."""
    for rt in args.runtime_list:
        faults = [f for _, f in plan([rt], args.fault_list)]
        try:
            if args.attach:
                await run_runtime(stackrun.attached_stack(), rt, faults, args, rows)
                continue
            with stackrun.own_stack(args.store, [args.model], {"GATEWAY_DEFAULT_RUNTIME": rt}) as stack:
                await run_runtime(stack, rt, faults, args, rows)
        except (RuntimeError, psutil.Error) as e:
            errors.append(f"{rt}: {e}")
            stackrun.say(f"*** {rt}: {e}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    before = stackrun.machine()
    t0 = time.monotonic()
    rows: list[dict] = []
    errors: list[str] = []
    try:
        uvloop.run(run_all(args, rows, errors))
    except KeyboardInterrupt:
        errors.append("interrupted")
    doc = {"model": args.model, "clients": args.clients, "steady_s": args.steady,
           "after_s": args.after, "stall_s": args.stall_s, "grace_s": GRACE_S,
           "recovery_target_s": RECOVERY_TARGET_S, "attach": args.attach,
           "machine_before": before, "machine_after": stackrun.machine(),
           "seconds": round(time.monotonic() - t0, 1), "errors": errors, "faults": rows}
    path = stackrun.write_report("chaos", doc)
    print(f"\n{args.model}, {args.clients} bare clients + 1 pinned; lost = non-2xx or transport "
          f"error (by code); recovery = fault -> first 2xx of a pinned poll")
    print(render(rows))
    if any(r.get("phases") for r in rows):
        print("\nrestarts by the supervisor: where the recovery time went (state file)")
        print(render_phases(rows))
    print(f"\n{sum(r['met'] for r in rows)}/{len(rows)} faults met the targets in "
          f"{doc['seconds']:.0f} s; {doc['machine_after']['uptime']}\nwritten {path}")
    if errors:
        print("not measured: " + "; ".join(errors), file=sys.stderr)
        return 2
    return 0 if all(r["met"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
