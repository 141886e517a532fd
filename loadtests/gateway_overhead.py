"""What the gateway costs: the same requests straight to a runtime's server and through the gateway.

    python -m loadtests.gateway_overhead --model digits-cnn-torch [--runtime onnxruntime]
    python -m loadtests.gateway_overhead --model digits-cnn-keras --runtime tfserving \
        --backend-transport grpc

Starts the runtime's server on a store holding only that model (our OIP servers, or the TF
Serving stand-in with REST and gRPC ports), and the gateway in front of it, on free 127.0.0.1
ports (or uses --backend-url/--gateway-url). The gateway is always asked over OIP REST
(--encoding json|binary); it reaches TF Serving over --backend-transport (rest: JSON, grpc:
TensorProto), our OIP servers with what it received. The direct arm asks the server in its own
API: OIP REST (same body), or TF Serving's REST :predict (columnar JSON). Then, in
alternating direct/gateway phases (ABBA over --rounds), measures
  - latency at concurrency 1: --requests sequential requests after --warmup, p50/p99;
  - throughput at saturation: --concurrency connections for a --window of seconds;
and reports the p50 delta (target <= 0.3 ms) and the throughput ratio (target >= 0.8), with the
CPU each process used in each phase (client, gateway and backend share the machine's cores).
With --floor (the default; OIP runtimes only) a third arm goes through loadtests.passthrough, a
proxy made of the gateway's parts that only forwards: the share of the overhead that no gateway
logic causes. With --reference (the default) a fourth arm asks loadtests.fixed_answer, a uvicorn
endpoint that sends back the direct server's answer without doing anything: the CPU per request
of an empty Python server here. The CPU targets (gateway <= 100 us per request for JSON, <= 60
for binary tensors; our server <= 100) were set where that endpoint cost 31 us; they are checked
as multiples of it, so a slower or busier machine does not move them.
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
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import aiohttp
import numpy as np
import psutil
import uvloop

from loadtests.runner import free_port
from contract.codec import InferRequest, InferResponse, decode_tfserving_outputs, header_length
from contract.manifest import load_manifest
from contract.runtimes import RUNTIMES
from services.gateway.settings import GatewaySettings
from services.settings import REPO_ROOT, get_settings

TARGET_P50_DELTA_MS = 0.3
TARGET_RATIO = 0.8
# CPU per request at saturation, in multiples of the empty endpoint's (31 us where these were set):
REFERENCE_US = 31.0
TARGET_CPU = {"gateway/json": 100 / REFERENCE_US, "gateway/binary": 60 / REFERENCE_US,
              "backend": 100 / REFERENCE_US}
CLIENT = f"aiohttp {aiohttp.__version__} on uvloop {uvloop.__version__}, 1 process, keep-alive"
OVERHEAD_RUNTIMES = [r.name for r in RUNTIMES.values() if r.protocol in ("oip", "tfserving")]


# --- processes --------------------------------------------------------------------------------


@dataclass
class Stack:
    direct_url: str
    gateway_url: str
    pids: dict[str, int | None]
    procs: list[subprocess.Popen] = field(default_factory=list)
    passthrough_url: str | None = None
    reference_url: str | None = None

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


@dataclass
class Backend:
    """How to run the measured runtime's server and reach it."""

    argv: list[str]
    url: str
    ready_path: str
    gateway_env: dict[str, str]  # what points the gateway at it


def oip_backend(args: argparse.Namespace, store: Path, workdir: Path) -> Backend:
    port = free_port()
    rt = args.runtime.upper()
    return Backend([sys.executable, "-m", f"services.{args.runtime}", "--host", "127.0.0.1",
                    "--port", str(port), "--model-store", str(store), "--log-level", "warning"],
                   f"http://127.0.0.1:{port}", f"/v2/models/{args.model}/ready",
                   {f"{rt}_HOST": "127.0.0.1", f"{rt}_PORT": str(port)})  # fmt: skip


def standin_argv(store: Path, rest: int, grpc: int, run_dir: Path) -> list[str]:
    """The TF Serving stand-in's command line as services/supervisor/spec.py starts it."""
    return [sys.executable, "-m", "services.tfserving", "--standin", "--host", "127.0.0.1",
            "--rest-port", str(rest), "--grpc-port", str(grpc), "--model-store", str(store),
            "--run-dir", str(run_dir)]


def tfserving_backend(args: argparse.Namespace, store: Path, workdir: Path) -> Backend:
    """The stand-in on free REST and gRPC ports."""
    rest, grpc = free_port(), free_port()
    return Backend(standin_argv(store, rest, grpc, workdir / "tfserving"),
                   f"http://127.0.0.1:{rest}", f"/v1/models/{args.model}",
                   {"TFSERVING_HOST": "127.0.0.1", "TFSERVING_REST_PORT": str(rest),
                    "TFSERVING_GRPC_PORT": str(grpc),
                    "GATEWAY_TFSERVING_TRANSPORT": args.backend_transport,
                    "GATEWAY_TFSERVING_GRPC_MIN_BYTES": "0"})  # every request: the one measured  # fmt: skip


def _spawn(argv: list[str], env: dict, log) -> subprocess.Popen:
    return subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def start_stack(args: argparse.Namespace, workdir: Path) -> Stack:
    if args.backend_url and args.gateway_url:
        return Stack(args.backend_url, args.gateway_url,
                     {"backend": _pid_listening(args.backend_url),
                      "gateway": _pid_listening(args.gateway_url)})
    store = workdir / "store"  # only the measured model: quicker start, no other load
    store.mkdir()
    (store / args.model).symlink_to((args.store / args.model).resolve())
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "STACK_MODEL_STORE": str(store)}
    plan = (tfserving_backend if args.runtime == "tfserving" else oip_backend)(args, store, workdir)
    backend = _spawn(plan.argv, env, open(workdir / "backend.log", "wb"))
    stack = Stack(plan.url, "", {"backend": backend.pid}, [backend])
    try:
        _wait(plan.url + plan.ready_path, f"services.{args.runtime}", backend, timeout=180)
        start_gateway(args, stack, {**env, **plan.gateway_env}, workdir)
        if args.floor:
            start_floor(args, stack, env, workdir)
        if args.reference:
            start_reference(args, stack, env, workdir)
    except BaseException:
        stack.stop()
        raise
    return stack


def start_gateway(args: argparse.Namespace, stack: Stack, env: dict, workdir: Path) -> None:
    port = free_port()
    genv = {**env, "GATEWAY_RUNTIMES": args.runtime, "GATEWAY_DEFAULT_RUNTIME": args.runtime,
            "GATEWAY_API_KEY": "", "GATEWAY_GRPC_PORT": "0", "GATEWAY_TFS_GRPC_PORT": "0",  # REST is measured
            "GATEWAY_ACCESS_LOG": "false" if args.no_access_log else "true"}  # fmt: skip
    gateway = _spawn([sys.executable, "-m", "services.gateway", "--host", "127.0.0.1",
                      "--port", str(port)], genv, open(workdir / "gateway.log", "wb"))
    stack.procs.append(gateway)
    stack.pids["gateway"] = gateway.pid
    stack.gateway_url = f"http://127.0.0.1:{port}"
    _wait(f"{stack.gateway_url}/v2/health/ready", "services.gateway", gateway)


def start_floor(args: argparse.Namespace, stack: Stack, env: dict, workdir: Path) -> None:
    port = free_port()
    passthrough = _spawn([sys.executable, "-m", "loadtests.passthrough", "--backend",
                          stack.direct_url, "--port", str(port)], env,
                         open(workdir / "passthrough.log", "wb"))  # fmt: skip
    stack.procs.append(passthrough)
    stack.pids["passthrough"] = passthrough.pid
    stack.passthrough_url = f"http://127.0.0.1:{port}"
    _wait(f"{stack.passthrough_url}/v2/models/{args.model}/ready", "loadtests.passthrough",
          passthrough)


def start_reference(args: argparse.Namespace, stack: Stack, env: dict, workdir: Path) -> None:
    """loadtests.fixed_answer, primed with the direct server's answer to the measured request."""
    direct = targets(args, stack)[0]["direct"]
    with urllib.request.urlopen(urllib.request.Request(direct.url, direct.body, direct.headers),
                                timeout=120) as r:
        answer, hl = r.read(), r.headers.get("Inference-Header-Content-Length")
    (workdir / "answer.bin").write_bytes(answer)
    port = free_port()
    proc = _spawn([sys.executable, "-m", "loadtests.fixed_answer", "--port", str(port),
                   "--answer", str(workdir / "answer.bin"),
                   *(["--header-length", hl] if hl else [])], env,
                  open(workdir / "reference.log", "wb"))  # fmt: skip
    stack.procs.append(proc)
    stack.pids["reference"] = proc.pid
    stack.reference_url = f"http://127.0.0.1:{port}"
    _wait(stack.reference_url, "loadtests.fixed_answer", proc)


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
    deadline = t + window  # after the warm-up: a slow model's takes longer than a window
    await asyncio.gather(*(user() for _ in range(concurrency)))
    return {"requests": done, "errors": errors, "seconds": time.perf_counter() - t}


def percentiles(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs) * 1000
    return {"n": len(xs), "p50_ms": round(float(np.percentile(a, 50)), 4),
            "p90_ms": round(float(np.percentile(a, 90)), 4),
            "p99_ms": round(float(np.percentile(a, 99)), 4), "mean_ms": round(float(a.mean()), 4)}


@dataclass
class Target:
    """One arm: where to post which body, and how to read its answer into arrays."""

    url: str
    body: bytes
    headers: dict[str, str]
    decode: Callable[[bytes, Any], dict[str, np.ndarray]]


def _oip_target(url: str, arrays: dict[str, np.ndarray], binary: bool) -> Target:
    """OIP REST, encoded by contract/codec.py: JSON tensors, or binary tensors both ways."""
    body, hl = InferRequest.from_arrays(arrays, binary_output=binary).to_oip(binary=binary)
    headers = {"Content-Type": "application/json"} if hl is None else {
        "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(hl)}

    def decode(data: bytes, h: Any) -> dict[str, np.ndarray]:
        hl = h.get("Inference-Header-Content-Length")  # case-insensitive (aiohttp headers)
        return InferResponse.from_oip(data, header_length(hl)).arrays()

    return Target(url, body, headers, decode)


def _tfserving_target(url: str, arrays: dict[str, np.ndarray], signature, batch: int) -> Target:
    """TF Serving's REST :predict, columnar JSON (what the gateway sends on its REST transport)."""
    body = InferRequest.from_arrays(arrays).to_tfserving()
    return Target(url, body, {"Content-Type": "application/json"},
                  lambda data, _: decode_tfserving_outputs(data, signature, batch))


def targets(args: argparse.Namespace, stack: Stack) -> tuple[dict[str, Target], dict[str, np.ndarray]]:
    """The arms for the first `batch` reference samples (every input), and the expected outputs."""
    m = load_manifest(args.store / args.model)
    x, y, _ = m.load_reference(args.store)
    arrays = {s.name: x[s.name][: args.batch].astype(s.numpy_dtype, copy=False) for s in m.signature.inputs}
    binary = args.encoding == "binary"
    oip = f"/v2/models/{args.model}/infer"
    if args.runtime == "tfserving":
        direct = _tfserving_target(f"{stack.direct_url}/v1/models/{args.model}:predict", arrays,
                                   m.signature, args.batch)  # fmt: skip
    else:
        direct = _oip_target(stack.direct_url + oip, arrays, binary)
    out = {"direct": direct,
           "gateway": _oip_target(f"{stack.gateway_url}/v2/models/{args.model}@{args.runtime}/infer",
                                  arrays, binary)}  # fmt: skip
    if stack.passthrough_url:
        out["passthrough"] = _oip_target(stack.passthrough_url + oip, arrays, binary)
    if stack.reference_url:  # the direct request, answered by the empty endpoint
        out["reference"] = Target(stack.reference_url + "/", direct.body, direct.headers,
                                  direct.decode)
    return out, {k: v[: args.batch] for k, v in y.items()}


def check_answer(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> float:
    """Max abs error over every output of an answer against the reference."""
    err = 0.0
    for name, want in expected.items():
        a = got[name]
        if a.shape != want.shape:
            raise SystemExit(f"output {name!r}: shape {list(a.shape)}, reference {list(want.shape)}")
        diff = np.abs(a.astype(np.float64) - want.astype(np.float64))
        err = max(err, float(diff.max()) if diff.size else 0.0)
    return err


async def measure(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    arms, expected = targets(args, stack)
    meter = CpuMeter(stack.pids)
    connector = aiohttp.TCPConnector(limit=args.concurrency * 2, keepalive_timeout=3)
    result: dict[str, Any] = {"latency": {}, "throughput": {}, "cpu": []}
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        for name, t in arms.items():  # every arm answers, and answers right
            async with session.post(t.url, data=t.body, headers=t.headers) as r:
                data = await r.read()
                if r.status != 200:
                    raise SystemExit(f"{name}: {r.status} {data[:300]!r}")
                err = check_answer(t.decode(data, r.headers), expected)
            if err > 1e-4:
                raise SystemExit(f"{name}: max abs error {err} against the reference")
            result.setdefault("served_by", {})[name] = r.headers.get("X-Served-By", "-")
        lat: dict[str, list[float]] = {name: [] for name in arms}
        tput: dict[str, list[dict]] = {name: [] for name in arms}
        n, window = args.requests // args.rounds, args.window / args.rounds
        for rnd in range(args.rounds):
            order = list(arms) if rnd % 2 == 0 else list(reversed(arms))
            for name in order:
                t = arms[name]
                meter.start()
                lat[name] += await latency(session, t.url, t.body, t.headers, n, args.warmup)
                result["cpu"].append({"phase": f"latency/{name}/round{rnd}",
                                      **meter.stop(n + args.warmup)})
                p50 = percentiles(lat[name])["p50_ms"]
                print(f"  round {rnd} latency    {name:11s} p50 {p50:.3f} ms", flush=True)
            for name in order:
                t = arms[name]
                meter.start()
                got = await throughput(session, t.url, t.body, t.headers, args.concurrency, window)
                tput[name].append(got)
                result["cpu"].append({"phase": f"throughput/{name}/round{rnd}",
                                      **meter.stop(got["requests"] + args.concurrency)})
                print(f"  round {rnd} throughput {name:11s} "
                      f"{got['requests'] / got['seconds']:.0f} req/s ({got['errors']} errors)",
                      flush=True)
    for name in arms:
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
    p.add_argument("--runtime", default="onnxruntime", choices=OVERHEAD_RUNTIMES)
    p.add_argument("--store", type=Path, default=get_settings().model_store)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--encoding", default="json", choices=["json", "binary"],
                   help="OIP REST body to the gateway (and to an OIP server directly)")
    p.add_argument("--backend-transport", choices=["rest", "grpc"],
                   default=GatewaySettings().gateway_tfserving_transport,
                   help="how the gateway reaches TF Serving (GATEWAY_TFSERVING_TRANSPORT; "
                   "default: services/stack.env's), for every request whatever its size")
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
                   help="also measure loadtests.passthrough (forward-only proxy) as the floor "
                   "(OIP runtimes only)")
    p.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure loadtests.fixed_answer (an empty endpoint): the unit of "
                   "the CPU targets")
    p.add_argument("--backend-url", help="use a running runtime server (with --gateway-url)")
    p.add_argument("--gateway-url", help="use a running gateway routing to --backend-url")
    p.add_argument("--no-access-log", action="store_true", help="gateway without its access log")
    p.add_argument("--out", type=Path,
                   default=REPO_ROOT / "loadtests/reports/gateway_overhead.json")
    args = p.parse_args(argv)
    if args.runtime == "tfserving":
        args.floor = False  # the forward-only proxy speaks OIP to OIP servers
    return args


def _saturation_mean(cpu: list[dict], name: str, key: str) -> dict[str, float]:
    rows = [r[key] for r in cpu if r["phase"].startswith(f"throughput/{name}/")]
    return {k: round(float(np.mean([r[k] for r in rows])), 1) for k in rows[0]}


def summarize(args: argparse.Namespace, result: dict[str, Any], load0: tuple) -> dict[str, Any]:
    lat, tput = result["latency"], result["throughput"]
    p50_delta = round(lat["gateway"]["p50_ms"] - lat["direct"]["p50_ms"], 4)
    ratio = round(tput["gateway"]["rps"] / tput["direct"]["rps"], 3)
    pct = {n: _saturation_mean(result["cpu"], n, "cpu_percent_of_one_core") for n in lat}
    cpu = {n: _saturation_mean(result["cpu"], n, "cpu_us_per_request") for n in lat}
    units = cpu_in_reference_units(cpu, args.encoding) if "reference" in cpu else {}
    return {
        "model": args.model, "runtime": args.runtime, "batch": args.batch,
        "encoding": args.encoding, "backend_transport": backend_transport(args), "client": CLIENT, "concurrency": args.concurrency,
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
        "cpu_us_per_request_at_saturation": cpu,
        "cpu_percent_at_saturation": pct,
        "cpu_in_reference_units": units,
        # Other processes' CPU differs between the phases: the ratio measures them, not us.
        "other_load_even": abs(pct["direct"]["others"] - pct["gateway"]["others"]) <= 20,
        "targets": {"p50_delta_ms": TARGET_P50_DELTA_MS, "throughput_ratio": TARGET_RATIO},
        "pass": {"p50_delta": p50_delta <= TARGET_P50_DELTA_MS,
                 "throughput": ratio >= TARGET_RATIO,
                 **{f"cpu_{k}": v["value"] <= v["target"] for k, v in units.items()}},
    }


def cpu_in_reference_units(cpu: dict[str, dict[str, float]], encoding: str) -> dict[str, dict]:
    """The gateway's and the backend's CPU per request at saturation (each in its own arm), in
    multiples of the empty endpoint's (`unit_us`), beside their targets in the same unit."""
    unit = cpu["reference"]["reference"]
    if unit <= 0:
        return {}
    measured = {"gateway": (cpu["gateway"]["gateway"], TARGET_CPU[f"gateway/{encoding}"]),
                "backend": (cpu["direct"]["backend"], TARGET_CPU["backend"])}
    return {name: {"value": round(us / unit, 2), "target": round(target, 2), "unit_us": unit}
            for name, (us, target) in measured.items()}


def backend_transport(args: argparse.Namespace) -> str:
    """What the gateway sent the runtime: TF Serving's chosen transport, or OIP as received."""
    if args.runtime == "tfserving":
        return {"rest": "REST JSON", "grpc": "gRPC TensorProto"}[args.backend_transport]
    return f"OIP REST {args.encoding} (as received)"


def print_report(r: dict[str, Any]) -> None:
    lat, tput = r["latency"], r["throughput"]
    print(f"\n{r['model']} on {r['runtime']}, batch {r['batch']}, {r['encoding']} to the gateway, "
          f"gateway -> backend {r['backend_transport']}; client: {CLIENT}")
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
    for name, u in r["cpu_in_reference_units"].items():
        print(f"{name} CPU per request = {u['value']:.2f} x the empty endpoint's "
              f"({u['unit_us']:.0f} us here; target <= {u['target']:.2f} x)")
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
