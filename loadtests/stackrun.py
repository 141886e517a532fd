"""Shared by loadtests.chaos and loadtests.soak: a stack of their own (or the running one), request
bodies, the supervisor's state file, a plain-text table and the JSON report.

Own stack: `python -m services.supervisor up` (what `make up` runs) on free loopback ports, in a
private run dir, over a private store holding only the models the benchmark sends (symlinks into
the real store: quicker start-up and restarts, no idle models in memory); `down` always follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np

from loadtests import payloads
from loadtests.runner import free_port
from contract.manifest import load_manifest
from contract.runtimes import RUNTIMES as REGISTRY
from services.settings import REPO_ROOT, get_settings
from services.supervisor.state import RunDir

REPORTS = REPO_ROOT / "loadtests" / "reports"
RUNTIMES = tuple(REGISTRY)  # chaos and soak default to every registered runtime
# Every port a stack listens on: the gateway's three and each registered runtime's (a fixed list
# here once missed the gateway's gRPC ports, and an own stack collided with `make up`'s).
PORT_VARS = ("GATEWAY_PORT", "GATEWAY_GRPC_PORT", "GATEWAY_TFS_GRPC_PORT",
             *(key.upper() for r in REGISTRY.values() for key in r.port_keys))
SUPERVISOR = [sys.executable, "-m", "services.supervisor"]


def say(msg: str) -> None:
    print(msg, flush=True)


@dataclass
class Stack:
    gateway_url: str
    run_dir: Path
    store: Path
    env: dict[str, str] = field(default_factory=dict)
    own: bool = False

    def state(self) -> dict:
        return RunDir(self.run_dir).read_state() or {}

    def services(self) -> dict[str, dict]:
        return self.state().get("services", {})


def _free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (the kernel hands out ephemeral ports in turn)."""
    ports: list[int] = []
    while len(ports) < n:
        if (port := free_port()) not in ports:
            ports.append(port)
    return ports


def private_store(src: Path, models: list[str], dest: Path) -> Path:
    """A store of `models` only: one symlink per model directory of `src`, and TorchServe's and
    TF Serving's views of it (what `make export` writes beside the models)."""
    from exporters.store import refresh_runtime_views

    dest.mkdir(parents=True, exist_ok=True)
    for m in models:
        if not (src / m / "manifest.json").exists():
            raise SystemExit(f"{m}: not in the model store {src} (make export)")
        (dest / m).symlink_to((src / m).resolve())
    refresh_runtime_views(dest)
    return dest


@contextlib.contextmanager
def own_stack(src_store: Path, models: list[str], extra_env: dict[str, str] | None = None,
              timeout: float = 300.0):
    """`make up` on free ports over a private store and run dir; `make down` on the way out
    (exceptions and Ctrl-C included)."""
    with tempfile.TemporaryDirectory(prefix="servebench-") as tmp:
        run_dir, store = Path(tmp) / "run", private_store(src_store, models, Path(tmp) / "store")
        ports = dict(zip(PORT_VARS, _free_ports(len(PORT_VARS))))
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "STACK_RUN_DIR": str(run_dir),
               "STACK_MODEL_STORE": str(store), **{k: str(v) for k, v in ports.items()},
               **(extra_env or {})}
        stack = Stack(f"http://127.0.0.1:{ports['GATEWAY_PORT']}", run_dir, store, env, own=True)
        say(f"starting the stack ({', '.join(models)}) in {run_dir}"
            + (f" with {' '.join(f'{k}={v}' for k, v in (extra_env or {}).items())}"
               if extra_env else ""))
        t0 = time.monotonic()
        try:
            up = subprocess.run([*SUPERVISOR, "up", "--timeout", str(timeout)], cwd=REPO_ROOT,
                                env=env, capture_output=True, text=True, timeout=timeout + 60)
            if up.returncode != 0:
                raise RuntimeError(f"stack did not start:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}")
            say(f"stack ready in {time.monotonic() - t0:.1f} s")
            yield stack
        finally:
            down = subprocess.run([*SUPERVISOR, "down"], cwd=REPO_ROOT, env=env,
                                  capture_output=True, text=True, timeout=120)
            say(f"stack stopped ({down.stdout.strip().splitlines()[-1] if down.stdout.strip() else down.stderr.strip()})")


def attached_stack() -> Stack:
    """The running `make up` stack (ports from stack.env / the environment)."""
    s = get_settings()
    return Stack(f"http://{s.gateway_host}:{s.gateway_port}", RunDir.resolve(None).root,
                 Path(s.model_store))


def bodies(store: Path, model: str, samples: int = 8) -> list[bytes]:
    """OIP JSON bodies (batch 1) of the model's first reference samples (loadtests.payloads)."""
    target = payloads.Target("gateway", model, "onnxruntime")
    return payloads.build_payload(target, load_manifest(store / model), store, samples,
                                  encoding="json").bodies


def error_code(exc: BaseException) -> str:
    """A transport failure as a short code for the tables."""
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "refused"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "disconnected"
    if isinstance(exc, aiohttp.ClientOSError):
        return "reset"
    return type(exc).__name__


def percentile_ms(latencies_s: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(latencies_s) * 1000, q)), 2) if latencies_s else None


def table(rows: list[list], header: list[str]) -> str:
    """Plain-text table, columns left-aligned and padded to their widest cell."""
    cells = [[str(c) for c in header]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def codes_text(counts: dict[str, int]) -> str:
    """{"503": 4, "timeout": 1} -> "503:4 timeout:1"; empty -> "0"."""
    return " ".join(f"{k}:{v}" for k, v in sorted(counts.items())) or "0"


def machine() -> dict:
    load = [round(x, 2) for x in os.getloadavg()]
    return {"cpus": os.cpu_count(), "loadavg": load,
            "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}


def write_report(kind: str, doc: dict) -> Path:
    REPORTS.mkdir(parents=True, exist_ok=True)
    path = REPORTS / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return path
