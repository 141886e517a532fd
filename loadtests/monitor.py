"""What the machine does while a run goes: server processes, CPU per group, RSS, environment.

Service processes come from the supervisor's state file (.run/state.json, read defensively: its
format belongs to the supervisor) and from whoever listens on the stack's ports; each counts with
its descendants (TorchServe's Java frontend forks Python workers).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import threading
import time
from collections import deque
from pathlib import Path

import psutil

from contract.runtimes import RUNTIMES
from services.settings import REPO_ROOT, StackSettings

STATE_FILE: Path | None = None  # None: <$STACK_RUN_DIR or .run>/state.json, as the supervisor


def state_file() -> Path:
    return STATE_FILE or Path(os.environ.get("STACK_RUN_DIR") or REPO_ROOT / ".run") / "state.json"
PACKAGES = ("torch", "tensorflow", "keras", "onnxruntime", "ai-edge-litert", "torchserve",
            "torch-model-archiver", "onnx", "locust", "numpy", "fastapi", "uvicorn")
_STARTUP_KEYS = ("startup_s", "startup_seconds", "ready_after_s", "ready_s", "startup_time_s",
                 "start_seconds")


def service_ports(s: StackSettings) -> dict[int, str]:
    """Which service listens on each port of the stack: the gateway's REST port and every port of
    every registered runtime."""
    return {s.gateway_port: "gateway",
            **{getattr(s, key): r.name for r in RUNTIMES.values() for key in r.port_keys}}


def read_state(path: Path | None = None) -> dict[str, dict]:
    """{service: {"pids": set, "startup_s": float|None}} from the supervisor's state file;
    {} if it is absent or unreadable."""
    try:
        doc = json.loads(Path(path or state_file()).read_text())
    except (OSError, ValueError):
        return {}
    entries = doc.get("services", doc) if isinstance(doc, dict) else doc
    if isinstance(entries, list):
        entries = {e.get("name"): e for e in entries if isinstance(e, dict) and e.get("name")}
    if not isinstance(entries, dict):
        return {}
    out = {}
    for name, e in entries.items():
        if not isinstance(e, dict):
            continue
        pids = {e["pid"]} if isinstance(e.get("pid"), int) else set()
        for rec in e.get("tree") or ():  # [[pid, create_time], ...] of the process group
            if isinstance(rec, list) and rec and isinstance(rec[0], int):
                pids.add(rec[0])
        startup = next((e[k] for k in _STARTUP_KEYS if isinstance(e.get(k), (int, float))), None)
        t0, t1 = e.get("spawned_at", e.get("started_at")), e.get("ready_at")
        if startup is None and isinstance(t0, (int, float)) and isinstance(t1, (int, float)):
            startup = t1 - t0
        out[str(name)] = {"pids": pids, "startup_s": startup}
    return out


def discover_services(settings: StackSettings,
                      state_path: Path | None = None) -> dict[str, set[int]]:
    """{service: root pids} from the state file and the listening ports."""
    found: dict[str, set[int]] = {}
    for name, e in read_state(state_path).items():
        found.setdefault(name, set()).update(p for p in e["pids"] if psutil.pid_exists(p))
    ports = service_ports(settings)
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        conns = []
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.pid and c.laddr and c.laddr.port in ports:
            found.setdefault(ports[c.laddr.port], set()).add(c.pid)
    return found


def _tree(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            p = psutil.Process(pid)
            out.add(pid)
            out.update(c.pid for c in p.children(recursive=True))
        except psutil.Error:
            pass
    return out


def _busy_seconds() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)


class CpuSampler:
    """Samples cumulative CPU seconds per group (and the machine's total) every `interval` seconds
    in a thread; window() turns two samples into % of one core per group, the rest being 'other'."""

    def __init__(self, groups: dict[str, set[int]], interval: float = 0.5, keep: int = 240):
        self.groups = {k: set(v) for k, v in groups.items()}
        self.flat: set[str] = set()  # groups counted without their descendants
        self.interval = interval
        self.samples: deque = deque(maxlen=keep)
        self.rss_peak_mb: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._procs: dict[int, psutil.Process] = {}

    def set_group(self, name: str, pids: set[int], tree: bool = True) -> None:
        """tree=False for the bench's own process, whose children belong to other groups
        (the Locust subprocess, the ceiling endpoint)."""
        with self._lock:
            self.groups[name] = set(pids)
            (self.flat.discard if tree else self.flat.add)(name)

    def drop_group(self, name: str) -> None:
        with self._lock:
            self.groups.pop(name, None)

    def _proc(self, pid: int) -> psutil.Process:
        if pid not in self._procs:
            self._procs[pid] = psutil.Process(pid)
        return self._procs[pid]

    def sample(self) -> tuple[float, float, dict[int, tuple[str, float]]]:
        with self._lock:
            groups = {k: set(v) if k in self.flat else _tree(v) for k, v in self.groups.items()}
        per_pid: dict[int, tuple[str, float]] = {}
        rss: dict[str, float] = {}
        for name, pids in groups.items():
            for pid in pids:
                try:
                    p = self._proc(pid)
                    with p.oneshot():
                        ct = p.cpu_times()
                        mem = p.memory_info().rss
                except psutil.Error:
                    self._procs.pop(pid, None)
                    continue
                per_pid[pid] = (name, ct.user + ct.system)
                rss[name] = rss.get(name, 0.0) + mem / 2**20
        for name, mb in rss.items():
            self.rss_peak_mb[name] = max(self.rss_peak_mb.get(name, 0.0), mb)
        return time.time(), _busy_seconds(), per_pid

    def _loop(self):
        while not self._stop.is_set():
            self.samples.append(self.sample())
            self._stop.wait(self.interval)

    def start(self) -> "CpuSampler":
        self.samples.append(self.sample())
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def window(self, t0: float, t1: float) -> dict:
        """CPU use between wall times t0 and t1, in % of one core, from the samples nearest them."""
        snaps = list(self.samples)
        if len(snaps) < 2 or t1 <= t0:
            return {}
        a = min(snaps, key=lambda s: abs(s[0] - t0))
        b = min(snaps, key=lambda s: abs(s[0] - t1))
        wall = b[0] - a[0]
        if wall <= 0:
            return {}
        groups: dict[str, float] = {}
        for pid, (name, cpu_b) in b[2].items():
            if pid in a[2]:
                groups[name] = groups.get(name, 0.0) + max(0.0, cpu_b - a[2][pid][1])
        busy = b[1] - a[1]
        pct = {k: round(100 * v / wall, 1) for k, v in groups.items()}
        return {
            "wall_s": round(wall, 2),
            "busy_pct": round(100 * busy / wall, 1),
            "groups_pct": pct,
            "other_pct": round(max(0.0, 100 * (busy - sum(groups.values())) / wall), 1),
        }


def rss_mb(pids: set[int]) -> float:
    total = 0
    for pid in _tree(pids):
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            pass
    return round(total / 2**20, 1)


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(settings: StackSettings) -> dict:
    tfs = shutil.which("tensorflow_model_server")
    tfs_version = None
    if tfs:
        try:
            out = subprocess.run([tfs, "--version"], capture_output=True, text=True, timeout=10)
            tfs_version = (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            tfs_version = "unknown"
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in PACKAGES},
        "tensorflow_model_server": tfs_version,
        "settings": {
            k: v for k, v in settings.model_dump(mode="json").items() if k != "gateway_api_key"
        },
    }
