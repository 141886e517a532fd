"""The bench: headless Locust runs, one per measured point, against a running stack.

Order: stack check -> preflight of every target -> client ceiling per model -> closed-loop sweeps
(gateway, then direct for the overhead models) -> open-loop runs at a rate derived from the sweep ->
capacity at a latency target (server scenario) -> results.json -> report. Closed-loop runs share one
Locust process (loadtests/locust_session.py: a fresh Locust environment, users, connections and
statistics per run, without paying Locust's ~2 s start-up per run); the locustfile resets stats
after the warm-up and quits after a fixed window. Open-loop runs (fixed rate and capacity steps)
are Poisson arrivals from loadtests/openloop.py, in this process. A sampler thread here records
CPU of load generator, servers and the rest of the machine.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import httpx

from loadtests import (adaptive, affinity, capacity, edge, monitor, openloop, payloads,
                       server_metrics, standin_overhead)
from loadtests.locust_session import EXIT_TIMEOUT, LocustSession
from loadtests.scenarios import Profile, RunSpec, closed_plan, estimate_seconds, open_plan
from contract.manifest import Manifest, load_store, served_name
from contract.runtimes import RUNTIMES
from services.settings import REPO_ROOT, StackSettings

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
REPORTS_DIR = Path(__file__).with_name("reports")
NOISY_OTHER_PCT = 20.0  # other processes above this (% of one core) make a run suspect
SAFETY_S = 20  # a run's bound beyond warm-up + window, in case its window never closes


class BenchError(RuntimeError):
    """A condition that stops the bench, with a message meant for the person running it."""


def say(msg: str) -> None:
    print(msg, flush=True)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


def gateway_url(settings: StackSettings) -> str:
    return f"http://{settings.gateway_host}:{settings.gateway_port}"


def shadow_report(settings: StackSettings) -> list[dict] | None:
    """The gateway's shadow traffic totals (GET /v2/shadow) after the bench: live parity between
    runtimes on the bench's own requests; None when the gateway does not say (or is not ours:
    anything but a list of pair records)."""
    try:
        r = httpx.get(gateway_url(settings) + "/v2/shadow", timeout=3.0,
                      headers=payloads.auth_headers(settings))
        doc = r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    keys = {"model", "primary", "shadow", "compared", "failed", "skipped", "rows",
            "top1_disagreement_rate", "max_abs_error"}
    if isinstance(doc, list) and all(isinstance(p, dict) and keys <= p.keys() for p in doc):
        return doc
    return None


def check_models(models: tuple[str, ...], store: Path) -> None:
    """Models the user named (--models / MODELS=) must be in the store, the source of truth for
    what the stack serves: a typo fails here, before a bench that would skip it and measure
    nothing (a profile's own models may be absent from a store; those are skipped with a note)."""
    known = load_store(store)
    unknown = [m for m in models if m not in known]
    if unknown:
        raise BenchError(
            f"not in the model store {store}: {', '.join(unknown)}. The store has: "
            f"{', '.join(sorted(known)) or 'no models'}. Check the name, or export the model "
            "first (`make export` for the examples, `python -m exporters export ...` for your "
            "own; see README.md)."
        )


def check_stack(settings: StackSettings) -> str | None:
    """Raises if the gateway does not answer; returns why it is not ready, if it is not (the
    preflight then finds out which targets are missing)."""
    url = gateway_url(settings) + "/v2/health/ready"
    try:
        r = httpx.get(url, timeout=3.0)
    except httpx.HTTPError as e:
        raise BenchError(
            f"the stack is not up: GET {url} failed ({type(e).__name__}). "
            "Start it with `make up` and run the bench again."
        ) from None
    if r.status_code != 200:
        return f"GET {url} answered {r.status_code} {r.text[:200]}"
    return None


def detect_tfserving(settings: StackSettings, model: str | None) -> dict:
    """Real TF Serving or the local stand-in (which names itself in X-Served-By and status JSON)."""
    url = f"http://{settings.tfserving_host}:{settings.tfserving_rest_port}/v1/models/{model or ''}"
    try:
        r = httpx.get(url, timeout=5.0)
    except httpx.HTTPError as e:
        return {"kind": "unknown", "detail": f"GET {url} failed ({type(e).__name__})"}
    served_by = r.headers.get("x-served-by", "")
    try:
        body_served_by = r.json().get("served_by", "")
    except ValueError:
        body_served_by = ""
    if "standin" in served_by or "standin" in str(body_served_by):
        return {"kind": "stand-in", "detail": f"X-Served-By: {served_by or body_served_by}"}
    if r.status_code == 200:
        return {"kind": "real", "detail": "status answered without a stand-in marker"}
    return {"kind": "unknown", "detail": f"GET {url} answered {r.status_code}"}


def preflight(target: payloads.Target, manifest: Manifest, store: Path,
              settings: StackSettings, encoding: str = "auto") -> str | None:
    """One checked request in the bench's encoding; None if the target answers correctly, else
    why not."""
    p = payloads.build_payload(target, manifest, store, samples=1, encoding=encoding)
    base = gateway_url(settings) if target.via != "direct" else payloads.base_url(target, settings)
    headers = {"Content-Type": "application/json", **payloads.auth_headers(settings),
               **p.headers(0)}
    try:
        r = httpx.post(base + target.path, content=p.bodies[0], headers=headers, timeout=60.0)
    except httpx.HTTPError as e:
        return f"{type(e).__name__}: {e}"
    problem = payloads.check_response(p, 0, r.status_code, r.content, r.headers.get("x-served-by"),
                                      payloads.header_len(r.headers))
    return f"{problem}: {r.text[:200]}" if problem else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"ceiling endpoint exited with code {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise BenchError(f"ceiling endpoint did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_locust(spec: RunSpec, *, host: str, store: Path, warmup: float, window: float,
               out_dir: Path, sampler: monitor.CpuSampler | None = None, samples: int = 0,
               encoding: str = "auto", session: LocustSession | None = None) -> dict:
    """One headless Locust run of one point; returns its record (figures of the window only).
    `session` is the bench's Locust process (loadtests/locust_session.py); without one, the run
    gets a process of its own."""
    if session is None:
        with LocustSession(child_env(), REPO_ROOT) as own:
            return run_locust(spec, host=host, store=store, warmup=warmup, window=window,
                              out_dir=out_dir, sampler=sampler, samples=samples,
                              encoding=encoding, session=own)
    raw = out_dir / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rid = spec.run_id
    result_path = raw / f"{rid}.json"
    result_path.unlink(missing_ok=True)
    args = [
        "--headless", "-u", str(spec.users), "-r", str(spec.users), "--host", host,
        "--target-model", spec.model, "--target-runtime", spec.runtime, "--via", spec.via,
        "--model-store", str(store), "--rate", str(spec.rate), "--samples", str(samples),
        "--encoding", encoding, "--csv", str(raw / rid),
        "--warmup", str(warmup), "--window", str(window), "--result-json", str(result_path),
    ]
    log_path = raw / f"{rid}.log"
    if sampler:
        sampler.set_group("loadgen", {os.getpid(), session.pid}, tree=False)
    code = session.run(args, log_path, timeout=warmup + window + SAFETY_S)
    record = {"id": rid, **asdict(spec), "exit_code": code,
              "log": str(log_path.relative_to(out_dir)),
              "csv": str((raw / f"{rid}_window_stats.csv").relative_to(out_dir))}
    if not result_path.exists():
        tail = log_path.read_text(errors="replace")[-600:] if log_path.exists() else ""
        return {**record, "ok": False, "error": f"no result (exit code {code}): {tail}"}
    result = json.loads(result_path.read_text())
    if code == EXIT_TIMEOUT:  # the window was cut at the run's bound: not the figures asked for
        return {**record, **result, "ok": False,
                "error": f"the window did not close within {warmup + window + SAFETY_S:g} s"}
    cpu = sampler.window(result["window_start"], result["window_end"]) if sampler else {}
    ok = result["requests"] > 0 and result["failures"] < result["requests"]
    return {**record, **result, "ok": ok, "cpu": cpu,
            "noisy": cpu.get("other_pct", 0.0) > NOISY_OTHER_PCT}


def run_open(spec: RunSpec, *, host: str, store: Path, manifest: Manifest, warmup: float,
             window: float, out_dir: Path, settings: StackSettings,
             sampler: monitor.CpuSampler | None = None, timeout_s: float = 10.0,
             encoding: str = "auto") -> dict:
    """One open-loop run of one point (Poisson arrivals at spec.rate, this process sending);
    returns its record, shaped like run_locust's."""
    raw = out_dir / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    target = payloads.Target(spec.via, spec.model, spec.runtime)
    payload = payloads.build_payload(target, manifest, store, encoding=encoding)
    if sampler:
        sampler.set_group("loadgen", {os.getpid()}, tree=False)
    record = {"id": spec.run_id, **asdict(spec), "exit_code": None, "encoding": payload.encoding}
    try:
        result = openloop.run_open(payload, openloop.encode_bodies(payload), host,
                                   spec.rate, warmup, window, timeout_s=timeout_s,
                                   headers=payloads.auth_headers(settings))
    except (OSError, ValueError) as e:
        return {**record, "ok": False, "error": f"{type(e).__name__}: {e}"}
    (raw / f"{spec.run_id}.json").write_text(json.dumps(result, indent=1) + "\n")
    cpu = sampler.window(result["window_start"], result["window_end"]) if sampler else {}
    ok = result["requests"] > 0 and result["failures"] < result["requests"]
    return {**record, **result, "ok": ok, "cpu": cpu,
            "noisy": cpu.get("other_pct", 0.0) > NOISY_OTHER_PCT}


def with_server_time(spec: RunSpec, settings: StackSettings, run) -> dict:
    """run() with the runtime's own histograms scraped around it: the record's "server_time" is
    what the run added ({histogram: [sum s, count]}, server_metrics), None where not measured."""
    rt, _, variant = spec.runtime.partition(":")
    url = server_metrics.metrics_url(rt, settings) if rt in RUNTIMES else None
    name = served_name(spec.model, variant or None)
    before = server_metrics.scrape(url, name)
    record = run()
    return {**record, "server_time": server_metrics.delta(before, server_metrics.scrape(url, name))}


def capacity_phase(profile: Profile, live: list[tuple[str, str]], runs: list[dict], execute,
                   run_step) -> dict[str, dict]:
    """The capacity search of every (model, runtime) of profile.capacity_models, from the closed
    sweep's figures; {"model@runtime": search outcome (capacity.search) + how the target was set}.
    run_step(spec, window_s) measures one step through execute()."""
    out = {}
    for model, runtime in live:
        if model not in profile.capacity_models:
            continue
        key = f"{model}@{runtime}"
        target_ms, basis = capacity.latency_target(
            capacity.single_stream_p50(runs, model), profile.capacity_target_factor,
            profile.capacity_floor_ms, profile.capacity_target_ms(model))
        peak = capacity.closed_peak(runs, model, runtime)
        if target_ms is None or not peak:
            out[key] = {"status": "not-measured", "capacity_rps": None,
                        "why": basis if target_ms is None else "no closed-loop throughput"}
            continue
        lo, hi = capacity.search_range(peak, *profile.capacity_range)
        spec = capacity.SearchSpec(lo, hi, target_ms, profile.capacity_resolution,
                                   profile.capacity_max_steps)

        def measure(rate: float, step: int) -> dict:
            window = capacity.step_window(rate, profile.window_s, profile.capacity_min_requests,
                                          profile.capacity_max_window_s)
            s = RunSpec("gateway", "capacity", model, runtime, 0, step, rate)
            return execute(s, lambda: run_step(s, window, timeout_s=max(2.0, 20 * target_ms / 1e3)))

        out[key] = {**capacity.search(measure, spec), "target_basis": basis,
                    "closed_peak_rps": round(peak, 1)}
        say(f"          capacity {key}: {out[key]['status']}, "
            f"{out[key]['capacity_rps']} req/s at p99 <= {target_ms:g} ms")
    return out


def measure_ceiling(model: str, users: int, repeat: int, *, store: Path, profile: Profile,
                    out_dir: Path, sampler: monitor.CpuSampler | None,
                    encoding: str = "auto", session: LocustSession | None = None) -> dict:
    port = free_port()
    cmd = [sys.executable, "-m", "loadtests.ceiling", "--model", model, "--port", str(port),
           "--model-store", str(store)]
    proc = subprocess.Popen(cmd, env=child_env(), cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        wait_port(port, proc)
        if sampler:
            sampler.set_group("ceiling-endpoint", {proc.pid})
        spec = RunSpec("ceiling", "closed", model, "ceiling", users, repeat)
        return run_locust(spec, host=f"http://127.0.0.1:{port}", store=store,
                          warmup=profile.warmup_s, window=profile.window_s, out_dir=out_dir,
                          sampler=sampler, samples=1, encoding=encoding, session=session)
    finally:
        stop(proc)
        if sampler:
            sampler.drop_group("ceiling-endpoint")


def open_rates(runs: list[dict], profile: Profile) -> dict[str, float]:
    """Offered rate per model: open_fraction of the slowest runtime's closed-loop peak, so every
    runtime of a model gets the same load and all of them can sustain it."""
    rates = {}
    for model in profile.open_models:
        peaks: dict[str, list[float]] = {}
        for r in runs:
            key = (r.get("via"), r.get("mode"), r.get("model"))
            if key == ("gateway", "closed", model) and r.get("ok"):
                peaks.setdefault((r["runtime"], r["users"]), []).append(r["rps"])
        by_runtime: dict[str, float] = {}
        for (runtime, _u), values in peaks.items():
            by_runtime[runtime] = max(by_runtime.get(runtime, 0.0), sum(values) / len(values))
        if by_runtime:
            rates[model] = float(f"{profile.open_fraction * min(by_runtime.values()):.2g}")
    return rates


def payload_classes(models: list[str], manifests: dict[str, Manifest]) -> dict[str, list[str]]:
    """Models grouped by request/response size (the client's work depends on nothing else):
    {representative model: every model of that size}; one ceiling run serves a whole group."""
    groups: dict[tuple, list[str]] = {}
    for m in models:
        sig = manifests[m].signature
        key = tuple(math.prod(abs(d) for d in t.shape[1:]) for t in sig.inputs + sig.outputs)
        groups.setdefault(key, []).append(m)
    return {same[0]: same for same in groups.values()}


def describe(r: dict, ceilings: dict[str, float]) -> str:
    if not r.get("ok"):
        return f"FAILED: {r.get('error') or r.get('failure_reasons')}"
    lat = r["latency_ms"]
    frac = r["rps"] / ceilings[r["model"]] if ceilings.get(r["model"]) else None
    cpu = r.get("cpu") or {}
    g = cpu.get("groups_pct", {})
    servers = sum(v for k, v in g.items() if k not in ("loadgen", "ceiling-endpoint"))
    text = (f"{r['rps']:8.1f} req/s" + (f" ({frac:.2f} of ceiling)" if frac else "")
            + f"  p50 {lat['p50']:.2f} p99 {lat['p99']:.2f} ms"
            + f"  fail {r['failures']}/{r['requests']}"
            + f"  | cpu% loadgen {g.get('loadgen', 0):.0f} servers {servers:.0f}"
            + f" other {cpu.get('other_pct', 0):.0f}")
    return text + ("  [NOISY: other processes busy]" if r.get("noisy") else "")


def models_info(manifests: dict[str, Manifest]) -> dict:
    return {
        name: {
            "framework": m.source.framework,
            "architecture": m.source.architecture,
            "weights": m.source.weights,
            "artifacts": {
                fmt: {"bytes": a.bytes, "parity_ok": a.parity.ok, "route": a.route,
                      "parity_max_abs_error": a.parity.max_abs_error,
                      "parity_error": a.parity.error}
                for fmt, a in m.artifacts.items()
            },
            # Formats the exporter could not produce, and why: the report's ranking says why a
            # runtime did not serve the model instead of dropping its row.
            "failed": {fmt: f.error for fmt, f in m.failed.items()},
        }
        for name, m in manifests.items()
    }


def preflight_all(profile: Profile, settings: StackSettings, encoding: str = "auto"
                  ) -> tuple[dict[str, Manifest], list[tuple[str, str]], list[dict]]:
    """(manifests, live (model, runtime) targets, skipped targets with the reason)."""
    store = settings.model_store
    targets, manifests, notes = payloads.resolve_targets(
        store, list(profile.models), list(profile.runtimes), "gateway")
    skipped = [{"via": "gateway", "model": None, "runtime": None, "reason": n} for n in notes]
    live = []
    for t in targets:
        vias = ["gateway"] + (["direct"] if t.model in profile.direct_models else [])
        for via in vias:
            problem = preflight(payloads.Target(via, t.model, t.runtime), manifests[t.model],
                                store, settings, encoding)
            if problem:
                say(f"skip {via} {t.model}@{t.runtime}: {problem}")
                skipped.append({"via": via, "model": t.model, "runtime": t.runtime,
                                "reason": problem})
            elif via == "gateway":
                live.append((t.model, t.runtime))
    return manifests, live, skipped


def bench(profile: Profile, settings: StackSettings, out_dir: Path | None = None,
          encoding: str = "auto") -> Path:
    """Run the whole bench with tensors sent in `encoding` (payloads.ENCODINGS); returns the
    results.json path."""
    payloads.wire_encoding(encoding, payloads.Target("gateway", "", ""), 0)  # a typo stops here
    not_ready = check_stack(settings)
    if not_ready:
        say(f"warning: the gateway is not fully ready ({not_ready}); measuring what answers")
    store = settings.model_store
    out_dir = out_dir or REPORTS_DIR / datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc)

    manifests, live, skipped = preflight_all(profile, settings, encoding)
    if not live:
        raise BenchError("no (model, runtime) target answered its preflight request; see above")

    models = sorted({m for m, _ in live})
    bad = {(s["via"], s["model"], s["runtime"]) for s in skipped}
    closed = [s for s in closed_plan(profile, live) if (s.via, s.model, s.runtime) not in bad]
    n_open = profile.repeats * sum(m in profile.open_models for m, _ in live)
    n_ceiling = len(payload_classes(models, manifests))
    n_capacity = sum(m in profile.capacity_models for m, _ in live)
    n_runs = len(closed) + n_open + n_ceiling
    total = n_runs + n_capacity * profile.capacity_max_steps
    say(f"bench profile {profile.name}: {len(live)} targets, {total} runs (at most) of "
        f"{profile.warmup_s:g} s warm-up + {profile.window_s:g} s window, "
        f"~{estimate_seconds(profile, n_runs, n_capacity, len(models)) / 60:.1f} min; "
        f"output {out_dir}")

    tfserving = detect_tfserving(settings, next((m for m, r in live if r == "tfserving"), None))
    say(f"TF Serving: {tfserving['kind']} ({tfserving['detail']})")
    services = monitor.discover_services(settings)
    state = monitor.read_state()
    idle_rss = {name: monitor.rss_mb(pids) for name, pids in services.items()}
    cpu_sets = affinity.apply(affinity.plan(affinity.available_cpus()), services)
    say(f"CPU sets: {cpu_sets['note']}")
    sampler = monitor.CpuSampler(services).start()
    session = LocustSession(child_env(), REPO_ROOT)  # one Locust process for every closed-loop run

    runs: list[dict] = []
    ceilings: dict[str, float] = {}
    ceiling_of: dict[str, str] = {}  # model -> the model whose payload measured its ceiling
    n = 0

    def execute(spec: RunSpec, fn) -> dict:
        nonlocal n
        n += 1
        reps = {"ceiling": 1}.get(spec.via, max(profile.repeats, spec.repeat))
        reps = profile.capacity_max_steps if spec.mode == "capacity" else reps
        word = "step" if spec.mode == "capacity" else "rep"
        say(f"[{n:3d}/{total}] {spec.label} {word} {spec.repeat}/{reps} ...")
        r = fn()
        say(f"          {describe(r, ceilings)}")
        runs.append(r)
        return r

    try:
        users = max(profile.users)
        for model, same in payload_classes(models, manifests).items():
            spec = RunSpec("ceiling", "closed", model, "ceiling", users, 1)
            r = execute(spec, lambda: measure_ceiling(model, users, 1, store=store,
                                                      profile=profile, out_dir=out_dir,
                                                      sampler=sampler, encoding=encoding,
                                                      session=session))
            ceiling_of.update({m: model for m in same})
            if r.get("ok"):
                ceilings.update({m: r["rps"] for m in same})
        def closed_run(spec: RunSpec) -> dict:
            host = payloads.base_url(payloads.Target(spec.via, spec.model, spec.runtime), settings)
            return execute(spec, lambda: with_server_time(spec, settings, lambda: run_locust(
                spec, host=host, store=store, warmup=profile.warmup_s, window=profile.window_s,
                out_dir=out_dir, sampler=sampler, encoding=encoding, session=session)))

        for spec in closed:
            closed_run(spec)
        extra = adaptive.repeat_until_decided(profile, runs, closed_run)
        say(f"adaptive repeats: {extra['extra_runs']} more runs ({extra['stopped']})")
        rates = open_rates(runs, profile)

        def open_run(spec: RunSpec, window: float, timeout_s: float = 10.0) -> dict:
            return run_open(spec, host=gateway_url(settings), store=store,
                            manifest=manifests[spec.model], warmup=profile.capacity_warmup_s
                            if spec.mode == "capacity" else profile.warmup_s, window=window,
                            out_dir=out_dir, settings=settings, sampler=sampler,
                            timeout_s=timeout_s, encoding=encoding)

        for spec in open_plan(profile, live, rates):
            execute(spec, lambda: open_run(spec, profile.window_s))
        capacities = capacity_phase(profile, live, runs, execute, open_run)
    finally:
        session.close()
        sampler.stop()
        affinity.restore(cpu_sets)

    for r in runs:
        if r.get("ok") and ceilings.get(r["model"]):
            r["ceiling_fraction"] = r["rps"] / ceilings[r["model"]]
    if any("standin" in k for r in runs if r.get("runtime") == "tfserving"
           for k in (r.get("served_by") or {})):
        tfserving = {"kind": "stand-in", "detail": "X-Served-By: tfserving-standin in responses"}

    standin = None
    if tfserving["kind"] == "stand-in" and any(rt == "tfserving" for _, rt in live):
        # The SavedModels TensorFlow users bring (a Keras source); each takes a few seconds.
        keras = [m for m, rt in live if rt == "tfserving" and manifests[m].source.framework != "pytorch"]
        if keras:
            say(f"TF Serving stand-in vs TensorFlow in-process: {', '.join(keras)} ...")
            standin = standin_overhead.run_attached(store, keras, out_dir / "standin_overhead.json")

    edge_doc = None
    in_store = [m for m in profile.models if m in manifests]
    if profile.edge and in_store:  # every certified in-process artifact (~20-60 s)
        say(f"edge: every certified in-process artifact of {', '.join(in_store)} ...")
        edge_doc = edge.run_attached(store, in_store, out_dir / "edge.json")
        say(f"          edge: {edge_doc.get('error') or str(edge_doc.get('seconds')) + ' s'}")

    results = {
        "schema": 1,
        "profile": profile.to_dict(),
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": monitor.environment(settings),
        "tfserving": tfserving,
        "encoding": encoding,  # requested; each run records the wire encoding it used
        "gateway_not_ready": not_ready,
        "services": {
            name: {
                "pids": sorted(pids),
                "rss_mb_idle": idle_rss.get(name),
                "rss_mb_peak": round(sampler.rss_peak_mb.get(name, 0.0), 1) or None,
                "startup_s": state.get(name, {}).get("startup_s"),
            }
            for name, pids in sorted(services.items())
        },
        "state_file": str(monitor.state_file()) if state else None,
        "models": models_info({m: manifests[m] for m in sorted(manifests) if m in profile.models}),
        "ceilings": ceilings,
        "ceiling_of": ceiling_of,
        "open_rates": rates,
        "capacity": capacities,
        capacity.RESULTS_KEY: {k: rec for k, v in capacities.items()
                               if (rec := capacity.planned_record(v))},
        "cpu_sets": affinity.public(cpu_sets),
        "adaptive": extra,
        "skipped": skipped,
        "shadow": shadow_report(settings),
        "standin_overhead": standin,
        "edge": edge_doc,
        "runs": runs,
    }
    path = out_dir / "results.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    return path
