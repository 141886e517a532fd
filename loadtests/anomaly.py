"""The open-loop anomaly, measured: why a fixed request rate gives several times the latency of one
user sending back to back, while the servers are far from busy.

One model through the gateway to one runtime (default digits-cnn-torch@onnxruntime) on a stack of
its own (free loopback ports, only that model in the store):
1. Single stream: one request at a time, back to back, for `--single-s`: the service time S of
   the whole path (client -> gateway -> runtime -> back), its mean and squared coefficient of
   variation Cs^2.
2. Open loop at fractions rho of that single stream's rate 1/E[S], with Poisson arrivals and with
   evenly spaced ones (openloop.py, latency from each request's scheduled send time), the
   gateway's and the runtime's own mean latency beside the client's (their /metrics before and
   after each run), and the runtime's mean batch size.
3. Kingman's approximation for a single-server queue, mean latency
   E[W] = E[S] + rho / (1 - rho) * (Ca^2 + Cs^2) / 2 * E[S], Ca^2 = 1 (Poisson) or 0 (even),
   beside every open-loop mean: the path is not one server (two processes, two cores, batching),
   so the formula is the yardstick, not a fit.
4. The idle-CPU experiment: the lowest rate again while two `nice 19` busy loops keep the VM's
   vCPUs from idling, against the same rate without them (interleaved, `--idle-pairs` times).

`python -m loadtests.anomaly` prints the tables and writes loadtests/reports/anomaly-<time>.json;
loadtests/README.md ("The open-loop anomaly") quotes a run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import uvloop

from contract.manifest import load_manifest
from loadtests import openloop, payloads, server_metrics, stackrun
from services.settings import get_settings

FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.85)
SPIN = "import os\nos.nice(19)\nwhile True:\n    pass\n"


def kingman_ms(s_mean_ms: float, cs2: float, rho: float, ca2: float) -> float | None:
    """Kingman's (G/G/1) approximation of the mean latency, ms; None at or beyond saturation."""
    if rho >= 1:
        return None
    return s_mean_ms * (1 + rho / (1 - rho) * (ca2 + cs2) / 2)


class Probe:
    """Traffic to one target and the servers' own view of it."""

    def __init__(self, stack: stackrun.Stack, model: str, runtime: str):
        manifest = load_manifest(stack.store / model)
        self.model = model
        target = payloads.Target("gateway", model, runtime)
        self.payload = payloads.build_payload(target, manifest, stack.store)
        self.bodies = openloop.encode_bodies(self.payload, manifest, stack.store)
        self.base = stack.gateway_url
        s = get_settings()
        port = stack.env.get(f"{runtime.upper()}_PORT", str(getattr(s, f"{runtime}_port", 0)))
        self.metrics = {"gateway": f"{self.base}/metrics",
                        "runtime": f"http://127.0.0.1:{port}/metrics"}

    def _loop(self) -> openloop.OpenLoop:
        return openloop.OpenLoop(self.payload, self.bodies, self.base, {})

    def scrape(self) -> dict[str, dict | None]:
        return {k: server_metrics.scrape(u, self.model) for k, u in self.metrics.items()}

    @staticmethod
    def server_means(before: dict, after: dict) -> dict:
        """The gateway's and the runtime's own mean latency (ms) and mean batch between scrapes."""
        g = server_metrics.delta(before["gateway"], after["gateway"])
        r = server_metrics.delta(before["runtime"], after["runtime"])
        return {"gateway_mean_ms": server_metrics.mean(g, "gateway", 1000.0),
                "runtime_mean_ms": server_metrics.mean(r, "request", 1000.0),
                "inference_mean_ms": server_metrics.mean(r, "inference", 1000.0),
                "mean_batch": server_metrics.mean(r, "batch_size")}

    def single_stream(self, seconds: float) -> np.ndarray:
        """Latencies (ms) of requests sent one at a time, back to back, for `seconds`."""
        loop = self._loop()

        async def go() -> list:
            out: list = []
            try:
                end, i = loop.clock() + seconds, 0
                while loop.clock() < end:
                    now = loop.clock()
                    await loop.one(i, now, 0.0, out, Counter())
                    i += 1
            finally:
                await loop.pool.close()
            return out

        records = uvloop.run(go())
        if bad := [r[2] for r in records if r[2]]:
            raise RuntimeError(f"single stream: {len(bad)} failed requests, first: {bad[0]}")
        return np.asarray([r[1] for r in records]) * 1000.0

    def open(self, rate: float, arrivals: str, warmup_s: float, window_s: float) -> dict:
        before = self.scrape()
        run = openloop.run_open(self.payload, self.bodies, self.base, rate, warmup_s, window_s,
                                arrivals=arrivals)
        return {**run, **self.server_means(before, self.scrape())}


@contextlib.contextmanager
def spinners(n: int = 2):
    """n lowest-priority busy loops: the vCPUs never idle, the servers still win every slice."""
    procs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def measure(probe: Probe, args: argparse.Namespace) -> dict:
    probe.single_stream(1.0)  # warm-up: connections, first-call paths
    before = probe.scrape()
    lat = probe.single_stream(args.single_s)
    s_mean, cs2 = float(lat.mean()), float(lat.var() / lat.mean() ** 2)
    single = {"requests": int(lat.size), "p50_ms": float(np.percentile(lat, 50)),
              "p99_ms": float(np.percentile(lat, 99)), "mean_ms": s_mean, "cs2": cs2,
              "rate": 1000.0 / s_mean, **probe.server_means(before, probe.scrape())}
    rows = []
    for frac in args.fractions:
        rate = round(frac * single["rate"], 1)
        for arrivals, ca2 in (("poisson", 1.0), ("constant", 0.0)):
            run = probe.open(rate, arrivals, args.warmup_s, args.window_s)
            rows.append({"rho": frac, "rate": rate, "arrivals": arrivals,
                         "kingman_mean_ms": kingman_ms(s_mean, cs2, frac, ca2), **run})
    idle = []
    rate = round(min(args.fractions) * single["rate"], 1)
    for _ in range(args.idle_pairs):
        plain = probe.open(rate, "poisson", args.warmup_s, args.window_s)
        with spinners():
            busy = probe.open(rate, "poisson", args.warmup_s, args.window_s)
        idle.append({"rate": rate, "idle_vcpus": plain, "spinning_vcpus": busy})
    return {"single_stream": single, "open": rows, "idle_cpu": idle}


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def render(doc: dict) -> str:
    s = doc["single_stream"]
    head = (f"{doc['target']}, single stream: {s['requests']} requests, p50 {s['p50_ms']:.2f} ms, "
            f"p99 {s['p99_ms']:.2f} ms, mean E[S] {s['mean_ms']:.2f} ms, Cs^2 {s['cs2']:.2f}, "
            f"rate 1/E[S] {s['rate']:.0f} req/s; gateway mean {_ms(s['gateway_mean_ms'])} ms, "
            f"runtime mean {_ms(s['runtime_mean_ms'])} ms, mean batch {_ms(s['mean_batch'])}")
    rows = [[f"{r['rho']:g}", f"{r['rate']:g}", r["arrivals"], _ms(r["latency_ms"].get("p50")),
             _ms(r["latency_ms"].get("mean")), _ms(r["kingman_mean_ms"]),
             _ms(r["latency_ms"].get("p99")), _ms(r["gateway_mean_ms"]), _ms(r["runtime_mean_ms"]),
             _ms(r["mean_batch"]), _ms(r["send_lag_p99_ms"])] for r in doc["open"]]
    table = stackrun.table(rows, ["rho", "req/s", "arrivals", "client p50", "client mean",
                                  "Kingman mean", "client p99", "gateway mean", "runtime mean",
                                  "mean batch", "send lag p99"])
    idle = stackrun.table(
        [[f"{p['rate']:g}", _ms(p["idle_vcpus"]["latency_ms"].get("p50")),
          _ms(p["spinning_vcpus"]["latency_ms"].get("p50")),
          _ms(p["idle_vcpus"]["latency_ms"].get("p99")),
          _ms(p["spinning_vcpus"]["latency_ms"].get("p99"))] for p in doc["idle_cpu"]],
        ["req/s", "p50 idle vCPUs", "p50 spinning", "p99 idle vCPUs", "p99 spinning"])
    return f"{head}\n\n{table}\n\nidle-CPU experiment (Poisson):\n{idle}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtests.anomaly", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="digits-cnn-torch")
    p.add_argument("--runtime", default="onnxruntime")
    p.add_argument("--fractions", type=lambda t: tuple(float(x) for x in t.split(",")),
                   default=FRACTIONS, help="offered rates as fractions of 1/E[S]")
    p.add_argument("--single-s", type=float, default=4.0)
    p.add_argument("--warmup-s", type=float, default=0.5)
    p.add_argument("--window-s", type=float, default=4.0)
    p.add_argument("--idle-pairs", type=int, default=2)
    p.add_argument("--store", default=str(get_settings().model_store))
    p.add_argument("--attach", action="store_true", help="use the running `make up` stack")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="stack setting for the own stack, e.g. BATCH_MAX_DELAY_MS=0 (repeatable)")
    args = p.parse_args(argv)
    if bad := [e for e in args.env if "=" not in e]:
        p.error(f"--env takes KEY=VALUE, got {', '.join(bad)}")
    if any(not 0 < f < 1 for f in args.fractions):
        p.error("--fractions must lie in (0, 1): at 1/E[S] a single server saturates")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ctx = (contextlib.nullcontext(stackrun.attached_stack()) if args.attach
           else stackrun.own_stack(Path(args.store), [args.model],
                                   dict(e.split("=", 1) for e in args.env)))
    with ctx as stack:
        probe = Probe(stack, args.model, args.runtime)
        started = time.time()
        doc = {"target": f"{args.model}@{args.runtime}", "machine": stackrun.machine(),
               "env": args.env,
               **measure(probe, args), "seconds": round(time.time() - started, 1)}
    print(render(doc))
    print(f"written: {stackrun.write_report('anomaly', doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
