"""Locust users for every (model, runtime), through the gateway or direct to the runtime.

    locust -f loadtests/locustfile.py --target-model digits-cnn-torch --target-runtime tflite \
        --via gateway|direct|ceiling [--rate R] [--host URL]

Each user is bound to one target (round robin over models x runtimes) and posts pre-encoded
reference samples (every input; variable sequence lengths where the model has a dynamic dimension),
checking every response (every output's shape and datatype, predicted class); a wrong answer is a
Locust failure. --rate paces a fixed total rate over all users (open loop); 0 is closed loop. The
bench uses Locust for closed loops only: paced Locust users arrive in bursts (loadtests/README.md),
so its open-loop runs are Poisson arrivals from loadtests/openloop.py.
Direct targets go to the runtimes' own ports from services/settings.py (--host applies to the
gateway and the ceiling endpoint only).

The bench adds --warmup/--window/--result-json: stats are reset `warmup` seconds after spawning
completes, the run quits `window` seconds later, and precise (sub-millisecond) latency percentiles,
failure reasons and X-Served-By counts of the window are written to the result file.
"""

from __future__ import annotations

import csv
import itertools
import json
import random
import time
from collections import Counter
from pathlib import Path

import gevent
import numpy as np
from locust import FastHttpUser, constant_throughput, events, task
from locust.exception import StopUser
from locust.runners import MasterRunner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from loadtests import payloads
from services.settings import StackSettings

_settings = StackSettings()
_state: dict = {"payloads": [], "recorder": None}


@events.init_command_line_parser.add_listener
def _add_arguments(parser):
    parser.add_argument("--target-model", default="", env_var="LOCUST_TARGET_MODEL",
                        help="comma-separated models (default: every model in the store)")
    parser.add_argument("--target-runtime", default="", env_var="LOCUST_TARGET_RUNTIME",
                        help="comma-separated runtimes (default: every runtime with an artifact)")
    parser.add_argument("--via", default="gateway", choices=list(payloads.VIAS),
                        env_var="LOCUST_VIA", help="through the gateway, or direct to the runtime")
    parser.add_argument("--rate", type=float, default=0.0, env_var="LOCUST_RATE",
                        help="open loop: total requests/s shared by all users (0 = closed loop)")
    parser.add_argument("--model-store", default="", env_var="LOCUST_MODEL_STORE",
                        help="model store (default: STACK_MODEL_STORE from services/stack.env)")
    parser.add_argument("--encoding", default="auto", choices=list(payloads.ENCODINGS),
                        env_var="LOCUST_ENCODING",
                        help="tensor encoding: auto (binary above 64 KB of JSON), json, binary")
    parser.add_argument("--samples", type=int, default=0, include_in_web_ui=False,
                        help="use only the first N reference samples (0 = all)")
    parser.add_argument("--warmup", type=float, default=0.0, include_in_web_ui=False)
    parser.add_argument("--window", type=float, default=0.0, include_in_web_ui=False)
    parser.add_argument("--result-json", default="", include_in_web_ui=False)


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@events.test_start.add_listener
def _build_payloads(environment, **_kw):
    if isinstance(environment.runner, MasterRunner):  # workers send the requests
        return
    opts = environment.parsed_options
    store = Path(opts.model_store) if opts.model_store else _settings.model_store
    targets, manifests, notes = payloads.resolve_targets(
        store, _split(opts.target_model), _split(opts.target_runtime), opts.via
    )
    for note in notes:
        print(f"loadtests: skipped {note}")
    _state["payloads"] = []
    if not targets:
        print(f"loadtests: no target to load in {store} (see the notes above)")
        environment.process_exit_code = 2
        gevent.spawn(environment.runner.quit)
        return
    _state["payloads"] = [
        payloads.build_payload(t, manifests[t.model], store, opts.samples, opts.encoding)
        for t in targets
    ]
    _state["user_ids"] = itertools.count()
    # A fresh recorder per run: the bench runs many in one process (loadtests/locust_session.py).
    _state["recorder"] = (Recorder(Path(opts.result_json), opts.warmup, opts.window)
                          if opts.result_json else None)


class ModelUser(FastHttpUser):
    host = f"http://{_settings.gateway_host}:{_settings.gateway_port}"
    network_timeout = 30.0
    connection_timeout = 5.0

    def wait_time(self) -> float:
        rate = self.environment.parsed_options.rate
        if rate <= 0:
            return 0.0
        users = max(1, self.environment.runner.target_user_count or 1)
        return constant_throughput(rate / users)(self)

    def on_start(self):
        if not _state["payloads"]:
            raise StopUser()
        uid = next(_state["user_ids"])
        self.payload = _state["payloads"][uid % len(_state["payloads"])]
        self.cursor = uid % len(self.payload.bodies)
        target = self.payload.target
        base = self.host if target.via != "direct" else payloads.base_url(target, _settings)
        self.url = base.rstrip("/") + target.path
        common = {"Content-Type": "application/json", **payloads.auth_headers(_settings)}
        self.headers = [{**common, **self.payload.headers(k)}
                        for k in range(len(self.payload.bodies))]  # fmt: skip
        rate = self.environment.parsed_options.rate
        if rate > 0:  # spread the users' phases so paced requests do not arrive in bursts
            users = max(1, self.environment.runner.target_user_count or 1)
            gevent.sleep(random.uniform(0, users / rate))

    def on_stop(self):
        # Close this user's connections now, not when it is garbage-collected: the bench runs
        # many runs in one process (loadtests/locust_session.py) and the servers bound theirs.
        self.client.client.close()

    @task
    def infer(self):
        i = self.cursor
        self.cursor = (i + 1) % len(self.payload.bodies)
        with self.client.post(self.url, data=self.payload.bodies[i], headers=self.headers[i],
                              name=self.payload.target.name, catch_response=True) as resp:
            served_by = resp.headers.get("x-served-by") if resp.headers else None
            problem = payloads.check_response(self.payload, i, resp.status_code, resp.content,
                                              served_by, payloads.header_len(resp.headers))
            if problem:
                resp.failure(problem)
            else:
                resp.success()
        if (rec := _state["recorder"]) and rec.open:
            rec.served_by[served_by or "-"] += 1


class Recorder:
    """Measurement window of one bench run: warm-up excluded, fixed length, exact latencies."""

    def __init__(self, path: Path, warmup: float, window: float):
        self.path, self.warmup, self.window = path, warmup, window
        self.open = False
        self.written = False
        self.start = self.end = 0.0
        self.latencies: list[float] = []
        self.failures: Counter[str] = Counter()
        self.served_by: Counter[str] = Counter()

    def begin(self, environment):
        environment.runner.stats.reset_all()
        self.latencies.clear()
        self.failures.clear()
        self.served_by.clear()
        self.start, self.open = time.time(), True
        if self.window > 0:
            gevent.spawn_later(self.window, self.finish, environment, True)

    def on_request(self, response_time, exception=None, **_kw):
        if self.open:
            self.latencies.append(response_time)
            if exception is not None:
                self.failures[str(exception)[:120]] += 1

    def finish(self, environment, quit_after: bool = False):
        if self.written:
            return
        self.open, self.end, self.written = False, time.time(), True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.summary(environment), indent=1) + "\n")
        # Locust's --csv files are rewritten once a second, so they can miss the window's end;
        # these two are written at the moment the window closes.
        stats = StatsCSV(environment, PERCENTILES_TO_REPORT)
        for suffix, write in (("stats", stats.requests_csv), ("failures", stats.failures_csv)):
            with open(self.path.with_name(f"{self.path.stem}_window_{suffix}.csv"), "w") as f:
                write(csv.writer(f))
        if quit_after:
            environment.runner.quit()

    def summary(self, environment) -> dict:
        lat = np.asarray(self.latencies, dtype=np.float64)
        window = max(self.end - self.start, 1e-9)
        pct = {}
        if lat.size:
            for q in (50, 90, 95, 99):
                pct[f"p{q}"] = float(np.percentile(lat, q))
            pct.update(mean=float(lat.mean()), min=float(lat.min()), max=float(lat.max()))
        failures = sum(self.failures.values())
        return {
            "window_start": self.start,
            "window_end": self.end,
            "window_s": window if self.start else 0.0,
            "users": environment.runner.user_count,
            "requests": int(lat.size),
            "failures": failures,
            "failure_reasons": dict(self.failures),
            "rps": lat.size / window if self.start else 0.0,
            "latency_ms": pct,
            "served_by": dict(self.served_by),
            "encoding": ",".join(sorted({p.encoding for p in _state["payloads"]})),
        }


@events.spawning_complete.add_listener
def _start_warmup(user_count, **_kw):
    rec = _state["recorder"]
    if rec and not rec.open and not rec.written:
        gevent.spawn_later(rec.warmup, rec.begin, _environment["env"])


@events.request.add_listener
def _on_request(response_time, exception=None, **kw):
    if rec := _state["recorder"]:
        rec.on_request(response_time, exception)


@events.test_stopping.add_listener
def _stop(environment, **_kw):
    if rec := _state["recorder"]:
        rec.finish(environment)


_environment: dict = {}


@events.init.add_listener
def _keep_environment(environment, **_kw):
    _environment["env"] = environment
