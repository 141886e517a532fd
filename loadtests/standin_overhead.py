"""How far the TF Serving stand-in is from TensorFlow itself: the same SavedModel called in-process
(the session callable the stand-in runs: tf.compat.v1 Session + make_callable on serving_default)
against the stand-in over TF Serving REST JSON and over gRPC PredictionService (TensorProto),
one request at a time, batch 1:

    python -m loadtests.standin_overhead [--models digits-cnn-keras,mobilenetv2-keras]
                                         [--attach] [--requests 300] [--json out.json]

Without --attach it starts a stand-in of its own on free loopback ports (over only the measured
models); with --attach it measures the one `make up` runs (ports from stack settings). The
stand-in's overhead per request is the median of its per-round difference to the in-process
call, with a 95% interval: what a real tensorflow_model_server (C++) could at best remove. Runs in a process of its own (it imports
TensorFlow), so the bench calls it as a subprocess."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from contract.codec import InferRequest
from contract.manifest import load_manifest
from services.settings import REPO_ROOT, StackSettings

DEFAULT_MODELS = ("digits-cnn-keras", "mobilenetv2-keras")
SLOW_MS = 20  # above this per call, fewer requests are timed (MobileNetV2 ~35 ms)


def _stats(times_s: list[float]) -> dict[str, float | int]:
    ms = np.asarray(times_s) * 1000
    return {"n": len(times_s), **{f"p{q}": round(float(np.percentile(ms, q)), 3) for q in (50, 95, 99)}}


def _first_sample(store: Path, model: str) -> dict[str, np.ndarray]:
    x, _, _ = load_manifest(store / model).load_reference(store)
    return {k: v[:1] for k, v in x.items()}


def in_process_call(store: Path, model: str, sample: dict[str, np.ndarray]) -> Callable[[], object]:
    """The stand-in's own Servable (same session config), called directly."""
    from services.tfserving.config import savedmodel_entries
    from services.tfserving.models import DEFAULT_SIGNATURE, Servable
    from services.tfserving.standin import session_config

    entry = next(e for e in savedmodel_entries(store) if e.name == model)
    servable = Servable(entry.name, entry.version, entry.version_dir, session_config(StackSettings()))
    return lambda: servable.run(DEFAULT_SIGNATURE, sample)


def rest_call(client, url: str, model: str, sample: dict[str, np.ndarray]) -> Callable[[], object]:
    body = InferRequest.from_arrays(sample).to_tfserving()

    def call():
        r = client.post(f"{url}/v1/models/{model}:predict", content=body)
        if r.status_code != 200:
            raise RuntimeError(f"stand-in REST {r.status_code}: {r.text[:200]}")

    return call


def grpc_call(stub, model: str, sample: dict[str, np.ndarray]) -> Callable[[], object]:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for k, v in sample.items():
        request.inputs[k].CopyFrom(tf.make_tensor_proto(v))
    return lambda: stub.Predict(request, timeout=60)


def paired_cost(arm_s: list[float], base_s: list[float], level: float = 0.95) -> dict:
    """What an arm costs over the base per request, paired by round (both timed back to back in
    each round, so the machine's drift cancels): the median of the per-round differences, ms, and
    its distribution-free interval (order statistics of the differences, binomial ranks: no
    assumption on the shape of latency distributions). An interval that spans 0 is no
    measurable cost; one below 0 means the base arm itself ran slower (loadtests/README.md)."""
    from scipy.stats import binom

    d = np.sort((np.asarray(arm_s) - np.asarray(base_s)) * 1000)
    n = len(d)
    j = max(int(binom.ppf((1 - level) / 2, n, 0.5)), 1)  # rank of the lower bound, 1-based
    return {"median_ms": round(float(np.median(d)), 3),
            "interval_ms": [round(float(d[j - 1]), 3), round(float(d[n - j]), 3)]}


def cost_text(row: dict, arm: str) -> str:
    """'+3.11 [+2.90 to +3.30]'; 'none measurable (-0.40 [-1.20 to +0.30])' when the interval
    spans 0; 'in-process slower (-8.04 [-9.81 to -5.92])' when it lies below 0."""
    c = row[f"overhead_{arm}_ms"]
    lo, hi = row.get(f"overhead_{arm}_interval_ms") or (None, None)
    if lo is None:  # a result from before the paired interval
        return f"{c:+.2f}"
    text = f"{c:+.2f} [{lo:+.2f} to {hi:+.2f}]"
    return text if lo > 0 else f"in-process slower ({text})" if hi < 0 else f"none measurable ({text})"


def interleaved(arms: dict[str, Callable[[], object]], requests: int) -> dict[str, list[float]]:
    """Each arm timed once per round, rounds repeated: drift of a shared machine (other processes,
    CPU frequency) then hits every arm alike, so their difference holds though each figure
    moves. Fewer rounds when a call takes over SLOW_MS."""
    first = {}
    for name, call in arms.items():  # warm-up (graph pruning, connections), then one timing
        for _ in range(3):
            call()
        t0 = time.perf_counter()
        call()
        first[name] = time.perf_counter() - t0
    slow = max(first.values()) * 1000 > SLOW_MS
    rounds = max(40, requests // 5) if slow else requests
    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(rounds):
        for name, call in arms.items():
            t0 = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t0)
    return times


def _own_standin(store: Path, models: list[str], workdir: Path) -> tuple[subprocess.Popen, str, str]:
    from loadtests.gateway_overhead import _wait, standin_argv
    from loadtests.runner import free_port

    own = workdir / "store"
    own.mkdir()
    for m in models:
        (own / m).symlink_to((store / m).resolve())
    rest, grpc_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "STACK_MODEL_STORE": str(own)}
    log = open(workdir / "standin.log", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(standin_argv(own, rest, grpc_port, workdir / "run"), cwd=REPO_ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{rest}"
    try:
        for m in models:
            _wait(f"{url}/v1/models/{m}", "the TF Serving stand-in", proc)
    except BaseException:
        proc.kill()
        raise
    return proc, url, f"127.0.0.1:{grpc_port}"


def measure(store: Path, models: list[str], url: str, grpc_target: str, requests: int) -> list[dict]:
    import grpc
    import httpx
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    rows = []
    with httpx.Client(timeout=60, headers={"Content-Type": "application/json"}) as client, \
            grpc.insecure_channel(grpc_target) as channel:  # fmt: skip
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for model in models:
            sample = _first_sample(store, model)
            times = interleaved({"in_process": in_process_call(store, model, sample),
                                 "rest_json": rest_call(client, url, model, sample),
                                 "grpc": grpc_call(stub, model, sample)}, requests)  # fmt: skip
            row = {"model": model, "batch": 1, **{arm: _stats(t) for arm, t in times.items()},
                   "request_bytes_json": len(InferRequest.from_arrays(sample).to_tfserving())}
            for arm in ("rest_json", "grpc"):
                cost = paired_cost(times[arm], times["in_process"])
                row[f"overhead_{arm}_ms"] = cost["median_ms"]
                row[f"overhead_{arm}_interval_ms"] = cost["interval_ms"]
            rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    head = ("| model | in-process p50 / p99 ms | stand-in REST JSON p50 / p95 / p99 ms | stand-in gRPC "
            "p50 / p95 / p99 ms | cost per request REST / gRPC ms (paired by round, 95% interval) |\n"
            "|---|---|---|---|---|\n")
    fmt = lambda s: " / ".join(f"{s[k]:.2f}" for k in s if k != "n")  # noqa: E731
    return head + "".join(
        f"| {r['model']} | {r['in_process']['p50']:.2f} / {r['in_process']['p99']:.2f} | {fmt(r['rest_json'])} | "
        f"{fmt(r['grpc'])} | {cost_text(r, 'rest_json')} / {cost_text(r, 'grpc')} |\n"
        for r in rows)  # fmt: skip


def run_attached(store: Path, models: list[str], out: Path, requests: int = 200) -> dict:
    """For the bench: this tool in a process of its own against the running stack's stand-in;
    {"rows": [...]} or {"error": why}."""
    argv = [sys.executable, "-m", "loadtests.standin_overhead", "--attach", "--store", str(store),
            "--models", ",".join(models), "--requests", str(requests), "--json", str(out)]
    try:
        p = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return {"error": "took over 300 s"}
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]}
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(DEFAULT_MODELS))
    p.add_argument("--store", type=Path, default=Path(os.environ.get("STACK_MODEL_STORE", REPO_ROOT / "model_store")))
    p.add_argument("--attach", action="store_true", help="measure the stand-in `make up` runs")
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--json", type=Path, help="write the rows here")
    args = p.parse_args(argv)
    # As the stand-in sets it (services/tfserving/__main__.py), before TensorFlow loads: an OpenMP
    # pool of its own per process would make the in-process arm a different configuration.
    os.environ["OMP_NUM_THREADS"] = str(StackSettings().omp_num_threads)
    models = [m for m in args.models.split(",") if m]
    missing = [m for m in models if not (args.store / m / "savedmodel").is_dir()]
    if missing:
        print(f"no SavedModel in {args.store} for {', '.join(missing)} (run `make export`)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="standin-overhead-") as tmp:
        proc = None
        if args.attach:
            s = StackSettings()
            url, grpc_target = f"http://{s.tfserving_host}:{s.tfserving_rest_port}", f"{s.tfserving_host}:{s.tfserving_grpc_port}"
        else:
            proc, url, grpc_target = _own_standin(args.store, models, Path(tmp))
        try:
            rows = measure(args.store, models, url, grpc_target, args.requests)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "attached": args.attach}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
