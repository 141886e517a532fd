"""What the gateway costs: the same OIP requests straight to an OIP server and through the gateway.

    python -m loadtests.gateway_overhead --model digits-cnn-torch [--runtime onnxruntime]

Starts the runtime's OIP server (services.<runtime>) on a store holding only that model, and the
gateway in front of it, on free 127.0.0.1 ports (or uses --backend-url/--gateway-url). Then, in
alternating direct/gateway phases (ABBA over --rounds), measures
  - latency at concurrency 1: --requests sequential requests after --warmup, p50/p99;
  - throughput at saturation: --concurrency connections for a --window of seconds;
and reports the p50 delta (target <= 0.5 ms) and the throughput ratio (target >= 0.9), with the
CPU each process used in each phase (client, gateway and backend share the machine's cores).
With --floor (the default) a third arm goes through loadtests.passthrough, a proxy made of the
gateway's parts that only forwards: the share of the overhead that no gateway logic causes.
Client: aiohttp on uvloop, one process, keep-alive connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import psutil
import uvloop

from loadtests.runner import free_port
from contract.codec import InferRequest, InferResponse, header_length
from contract.manifest import load_manifest
from services.settings import REPO_ROOT, get_settings

TARGET_P50_DELTA_MS = 0.5
TARGET_RATIO = 0.9
CLIENT = f"aiohttp {aiohttp.__version__} on uvloop {uvloop.__version__}, 1 process, keep-alive"


# --- processes --------------------------------------------------------------------------------


@dataclass
class Stack:
    direct_url: str
    gateway_url: str
    pids: dict[str, int | None]
    procs: list[subprocess.Popen] = field(default_factory=list)
    passthrough_url: str | None = None

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


def _wait(url: str, what: str, proc: subprocess.Popen | None, timeout: float = 120) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}; see its log")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what} not ready at {url} within {timeout} s")


def _pid_listening(url: str) -> int | None:
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    try:
        for c in psutil.net_connections("tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port:
                return c.pid
    except psutil.AccessDenied:
        pass
    return None


def start_stack(args: argparse.Namespace, workdir: Path) -> Stack:
    if args.backend_url and args.gateway_url:
        return Stack(args.backend_url, args.gateway_url,
                     {"backend": _pid_listening(args.backend_url),
                      "gateway": _pid_listening(args.gateway_url)})
    store = workdir / "store"  # only the measured model: quicker start, no other load
    store.mkdir()
    (store / args.model).symlink_to((args.store / args.model).resolve())
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "STACK_MODEL_STORE": str(store)}
    procs: list[subprocess.Popen] = []
    bport, gport = free_port(), free_port()
    backend_log = open(workdir / "backend.log", "wb")
    backend = subprocess.Popen(
        [sys.executable, "-m", f"services.{args.runtime}", "--host", "127.0.0.1",
         "--port", str(bport), "--model-store", str(store), "--log-level", "warning"],
        cwd=REPO_ROOT, env=env, stdout=backend_log, stderr=subprocess.STDOUT,
    )
    procs.append(backend)
    direct = f"http://127.0.0.1:{bport}"
    _wait(f"{direct}/v2/models/{args.model}/ready", f"services.{args.runtime}", backend)
    genv = {**env, f"{args.runtime.upper()}_HOST": "127.0.0.1",
            f"{args.runtime.upper()}_PORT": str(bport), "GATEWAY_RUNTIMES": args.runtime,
            "GATEWAY_DEFAULT_RUNTIME": args.runtime, "GATEWAY_API_KEY": "",
            "GATEWAY_GRPC_PORT": "0", "GATEWAY_TFS_GRPC_PORT": "0",  # REST is measured
            "GATEWAY_ACCESS_LOG": "false" if args.no_access_log else "true"}
    gateway_log = open(workdir / "gateway.log", "wb")
    gateway = subprocess.Popen(
        [sys.executable, "-m", "services.gateway", "--host", "127.0.0.1", "--port", str(gport)],
        cwd=REPO_ROOT, env=genv, stdout=gateway_log, stderr=subprocess.STDOUT,
    )
    procs.append(gateway)
    gw = f"http://127.0.0.1:{gport}"
    stack = Stack(direct, gw, {"backend": backend.pid, "gateway": gateway.pid}, procs)
    try:
        _wait(f"{gw}/v2/health/ready", "services.gateway", gateway)
        if args.floor:
            pport = free_port()
            passthrough = subprocess.Popen(
                [sys.executable, "-m", "loadtests.passthrough", "--backend", direct,
                 "--port", str(pport)],
                cwd=REPO_ROOT, env=env, stdout=gateway_log, stderr=subprocess.STDOUT,
            )
            procs.append(passthrough)
            stack.pids["passthrough"] = passthrough.pid
            stack.passthrough_url = f"http://127.0.0.1:{pport}"
            _wait(f"{stack.passthrough_url}/v2/models/{args.model}/ready",
                  "loadtests.passthrough", passthrough)
    except BaseException:
        stack.stop()
        raise
    return stack


# --- CPU accounting ---------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds used by each of our processes, and by everything else, during a phase."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.procs = {"client": psutil.Process()}
        for name, pid in pids.items():
            if pid is not None:
                self.procs[name] = psutil.Process(pid)

    def _snap(self) -> dict[str, float]:
        snap = {}
        for name, p in self.procs.items():
            t = p.cpu_times()
            snap[name] = t.user + t.system
        total = psutil.cpu_times()
        snap["_busy"] = sum(total) - total.idle - getattr(total, "iowait", 0.0)
        return snap

    def start(self) -> None:
        self._t0, self._s0 = time.perf_counter(), self._snap()

    def stop(self, requests: int) -> dict[str, Any]:
        s1, wall = self._snap(), time.perf_counter() - self._t0
        used = {k: s1[k] - self._s0[k] for k in s1 if not k.startswith("_")}
        others = max(0.0, s1["_busy"] - self._s0["_busy"] - sum(used.values()))
        pct = {k: round(100 * v / wall, 1) for k, v in used.items()}
        pct["others"] = round(100 * others / wall, 1)
        return {"wall_s": round(wall, 3), "requests": requests, "cpu_percent_of_one_core": pct,
                "cpu_us_per_request": {k: round(1e6 * v / requests, 1) for k, v in used.items()}}


# --- load ---------------------------------------------------------------------------------------


async def post(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict) -> bytes:
    async with session.post(url, data=body, headers=headers) as r:
        data = await r.read()
        if r.status != 200:
            raise RuntimeError(f"{url}: {r.status} {data[:200]!r}")
        return data


async def latency(session, url, body, headers, n: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        await post(session, url, body, headers)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await post(session, url, body, headers)
        out.append(time.perf_counter() - t)
    return out


async def throughput(session, url, body, headers, concurrency: int, window: float) -> dict:
    done = errors = 0
    deadline = time.perf_counter() + window

    async def user() -> None:
        nonlocal done, errors
        while time.perf_counter() < deadline:
            try:
                await post(session, url, body, headers)
                done += 1
            except Exception:
                errors += 1

    await asyncio.gather(*(post(session, url, body, headers) for _ in range(concurrency)))  # warm
    t = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(concurrency)))
    return {"requests": done, "errors": errors, "seconds": time.perf_counter() - t}


def percentiles(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs) * 1000
    return {"n": len(xs), "p50_ms": round(float(np.percentile(a, 50)), 4),
            "p90_ms": round(float(np.percentile(a, 90)), 4),
            "p99_ms": round(float(np.percentile(a, 99)), 4), "mean_ms": round(float(a.mean()), 4)}


def request_body(args: argparse.Namespace) -> tuple[bytes, dict, dict[str, np.ndarray]]:
    """(body, headers, expected outputs) for the first `batch` reference samples, every input,
    encoded by contract/codec.py: JSON tensors, or binary tensors both ways."""
    m = load_manifest(args.store / args.model)
    x, y, _ = m.load_reference(args.store)
    arrays = {s.name: x[s.name][: args.batch].astype(s.numpy_dtype, copy=False) for s in m.signature.inputs}
    binary = args.encoding == "binary"
    body, hl = InferRequest.from_arrays(arrays, binary_output=binary).to_oip(binary=binary)
    headers = {"Content-Type": "application/json"} if hl is None else {
        "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(hl)}
    return body, headers, {k: v[: args.batch] for k, v in y.items()}


def check_answer(data: bytes, headers: Any, expected: dict[str, np.ndarray]) -> float:
    """Max abs error over every output of an OIP answer (JSON or binary) against the reference."""
    hl = headers.get("Inference-Header-Content-Length")  # case-insensitive (aiohttp headers)
    got = InferResponse.from_oip(data, header_length(hl)).arrays()
    err = 0.0
    for name, want in expected.items():
        a = got[name]
        if a.shape != want.shape:
            raise SystemExit(f"output {name!r}: shape {list(a.shape)}, reference {list(want.shape)}")
        diff = np.abs(a.astype(np.float64) - want.astype(np.float64))
        err = max(err, float(diff.max()) if diff.size else 0.0)
    return err


async def measure(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    body, headers, expected = request_body(args)
    urls = {"direct": f"{stack.direct_url}/v2/models/{args.model}/infer",
            "gateway": f"{stack.gateway_url}/v2/models/{args.model}@{args.runtime}/infer"}
    if stack.passthrough_url:
        urls["passthrough"] = f"{stack.passthrough_url}/v2/models/{args.model}/infer"
    meter = CpuMeter(stack.pids)
    connector = aiohttp.TCPConnector(limit=args.concurrency * 2, keepalive_timeout=3)
    result: dict[str, Any] = {"latency": {}, "throughput": {}, "cpu": []}
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        for name, url in urls.items():  # both answer, and answer right
            async with session.post(url, data=body, headers=headers) as r:
                err = check_answer(await r.read(), r.headers, expected)
            if err > 1e-4:
                raise SystemExit(f"{name}: max abs error {err} against the reference")
            result.setdefault("served_by", {})[name] = r.headers.get("X-Served-By", "-")
        lat: dict[str, list[float]] = {name: [] for name in urls}
        tput: dict[str, list[dict]] = {name: [] for name in urls}
        n, window = args.requests // args.rounds, args.window / args.rounds
        for rnd in range(args.rounds):
            order = list(urls) if rnd % 2 == 0 else list(reversed(urls))
            for name in order:
                meter.start()
                lat[name] += await latency(session, urls[name], body, headers, n, args.warmup)
                result["cpu"].append({"phase": f"latency/{name}/round{rnd}",
                                      **meter.stop(n + args.warmup)})
                p50 = percentiles(lat[name])["p50_ms"]
                print(f"  round {rnd} latency    {name:11s} p50 {p50:.3f} ms", flush=True)
            for name in order:
                meter.start()
                t = await throughput(session, urls[name], body, headers, args.concurrency, window)
                tput[name].append(t)
                result["cpu"].append({"phase": f"throughput/{name}/round{rnd}",
                                      **meter.stop(t["requests"] + args.concurrency)})
                print(f"  round {rnd} throughput {name:11s} {t['requests'] / t['seconds']:.0f} req/s"
                      f" ({t['errors']} errors)", flush=True)
    for name in urls:
        result["latency"][name] = percentiles(lat[name])
        reqs = sum(t["requests"] for t in tput[name])
        secs = sum(t["seconds"] for t in tput[name])
        errors = sum(t["errors"] for t in tput[name])
        result["throughput"][name] = {"requests": reqs, "errors": errors,
                                      "seconds": round(secs, 3), "rps": round(reqs / secs, 1)}
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtests.gateway_overhead", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="digits-cnn-torch")
    p.add_argument("--runtime", default="onnxruntime", choices=["onnxruntime", "tflite"])
    p.add_argument("--store", type=Path, default=get_settings().model_store)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--encoding", default="json", choices=["json", "binary"])
    p.add_argument("--requests", type=int, default=2000,
                   help="sequential requests per target, split over the rounds")
    p.add_argument("--warmup", type=int, default=100, help="per latency phase")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--window", type=float, default=10.0,
                   help="seconds at saturation per target, split over the rounds")
    p.add_argument("--rounds", type=int, default=4,
                   help="alternating direct/gateway rounds (ABBA): finer interleaving evens out "
                   "other load on the machine")
    p.add_argument("--floor", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure loadtests.passthrough (forward-only proxy) as the floor")
    p.add_argument("--backend-url", help="use a running OIP server (with --gateway-url)")
    p.add_argument("--gateway-url", help="use a running gateway routing to --backend-url")
    p.add_argument("--no-access-log", action="store_true", help="gateway without its access log")
    p.add_argument("--out", type=Path,
                   default=REPO_ROOT / "loadtests/reports/gateway_overhead.json")
    return p.parse_args(argv)


def _saturation_mean(cpu: list[dict], name: str, key: str) -> dict[str, float]:
    rows = [r[key] for r in cpu if r["phase"].startswith(f"throughput/{name}/")]
    return {k: round(float(np.mean([r[k] for r in rows])), 1) for k in rows[0]}


def summarize(args: argparse.Namespace, result: dict[str, Any], load0: tuple) -> dict[str, Any]:
    lat, tput = result["latency"], result["throughput"]
    p50_delta = round(lat["gateway"]["p50_ms"] - lat["direct"]["p50_ms"], 4)
    ratio = round(tput["gateway"]["rps"] / tput["direct"]["rps"], 3)
    pct = {n: _saturation_mean(result["cpu"], n, "cpu_percent_of_one_core") for n in lat}
    return {
        "model": args.model, "runtime": args.runtime, "batch": args.batch,
        "encoding": args.encoding, "client": CLIENT, "concurrency": args.concurrency,
        "latency_requests_per_target": args.requests, "saturation_s_per_target": args.window,
        "rounds": args.rounds, "access_log": not args.no_access_log,
        "machine": {"cpus": psutil.cpu_count(), "python": platform.python_version(),
                    "loadavg_before": [round(x, 2) for x in load0]},
        **result,
        "p50_delta_ms": p50_delta,
        "p99_delta_ms": round(lat["gateway"]["p99_ms"] - lat["direct"]["p99_ms"], 4),
        "throughput_ratio": ratio,
        **({"passthrough_p50_delta_ms":
            round(lat["passthrough"]["p50_ms"] - lat["direct"]["p50_ms"], 4),
            "passthrough_throughput_ratio":
            round(tput["passthrough"]["rps"] / tput["direct"]["rps"], 3)}
           if "passthrough" in lat else {}),
        "cpu_us_per_request_at_saturation": {
            n: _saturation_mean(result["cpu"], n, "cpu_us_per_request") for n in lat},
        "cpu_percent_at_saturation": pct,
        # Other processes' CPU differs between the phases: the ratio measures them, not us.
        "other_load_even": abs(pct["direct"]["others"] - pct["gateway"]["others"]) <= 20,
        "targets": {"p50_delta_ms": TARGET_P50_DELTA_MS, "throughput_ratio": TARGET_RATIO},
        "pass": {"p50_delta": p50_delta <= TARGET_P50_DELTA_MS,
                 "throughput": ratio >= TARGET_RATIO},
    }


def print_report(r: dict[str, Any]) -> None:
    lat, tput = r["latency"], r["throughput"]
    print(f"\n{r['model']} on {r['runtime']}, batch {r['batch']}, {r['encoding']}; "
          f"client: {CLIENT}")
    print(f"{'':12s} {'p50 ms':>8s} {'p99 ms':>8s} {'req/s':>8s}")
    for n in lat:
        print(f"{n:12s} {lat[n]['p50_ms']:8.3f} {lat[n]['p99_ms']:8.3f} {tput[n]['rps']:8.0f}")
    print(f"p50 delta {r['p50_delta_ms']:.3f} ms (target <= {TARGET_P50_DELTA_MS}), "
          f"p99 delta {r['p99_delta_ms']:.3f} ms, throughput ratio {r['throughput_ratio']:.3f} "
          f"(target >= {TARGET_RATIO})")
    if "passthrough_throughput_ratio" in r:
        print(f"floor (forward-only proxy of the same parts): p50 delta "
              f"{r['passthrough_p50_delta_ms']:.3f} ms, throughput ratio "
              f"{r['passthrough_throughput_ratio']:.3f}")
    for n in lat:
        print(f"at saturation, {n:11s}: CPU us/request {r['cpu_us_per_request_at_saturation'][n]}, "
              f"% of one core {r['cpu_percent_at_saturation'][n]}")
    if not r["other_load_even"]:
        print("WARNING: other processes loaded the machine unevenly during the saturation "
              "phases (see 'others'): the throughput ratio is not trustworthy; rerun on a quiet "
              "machine")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gateway-overhead-") as tmp:
        print(f"starting services.{args.runtime} and services.gateway for {args.model}", flush=True)
        stack = start_stack(args, Path(tmp))
        try:
            load0 = os.getloadavg()
            result = uvloop.run(measure(args, stack))
        finally:
            stack.stop()
    report = summarize(args, result, load0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
