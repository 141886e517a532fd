"""python -m services.supervisor up|down|status|logs"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections import deque

import psutil

from services.settings import REPO_ROOT, get_settings
from services.supervisor import logs, proc, spec
from services.supervisor.state import RunDir

DAEMON_MODULE = "services.supervisor.daemon"


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def daemon_pid(state: dict | None) -> int | None:
    """The supervisor daemon's pid if it is still running (and still is our daemon)."""
    pid = ((state or {}).get("supervisor") or {}).get("pid")
    if not pid:
        return None
    try:
        p = psutil.Process(pid)
        return pid if proc.alive(p) and DAEMON_MODULE in " ".join(p.cmdline()) else None
    except psutil.Error:
        return None


def recorded(state: dict | None) -> list[psutil.Process]:
    """Processes of the recorded service trees that still exist."""
    services = (state or {}).get("services", {}).values()
    return proc.from_records([r for s in services for r in s.get("tree", [])])


def table(state: dict) -> str:
    rows = [("SERVICE", "STATUS", "URL", "PID", "START-UP S", "RSS MB", "RESTARTS")]
    for name, s in state.get("services", {}).items():
        startup, rss = s.get("startup_s"), s.get("rss_bytes")
        rows.append((
            name, s["status"], s["url"], str(s.get("pid") or "-"),
            f"{startup:.1f}" if startup is not None else "-",
            f"{rss / 2**20:.0f}" if rss else "-",
            str(s.get("restarts", 0)),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _tail(path, n: int = 20) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(deque(f, maxlen=n))
    except FileNotFoundError:
        return "(no log)\n"


# --- up ----------------------------------------------------------------------------------------
def _specs(args: argparse.Namespace, rd: RunDir) -> list[spec.ServiceSpec]:
    specs = (spec.load(args.spec_file) if args.spec_file
             else spec.default_specs(get_settings(), rd.root))
    names = args.services or os.environ.get("STACK_SERVICES")
    wanted = [n.strip() for n in names.split(",") if n.strip()] if names else None
    specs = spec.select(specs, wanted)
    kept = []
    for s in specs:
        if spec.module_missing(s):
            _err(f"\n*** WARNING: module {s.module} not found: {s.name} will NOT be started ***\n")
        else:
            kept.append(s)
    return spec.sequential(kept) if args.sequential else kept


def _busy_ports(specs: list[spec.ServiceSpec]) -> list[str]:
    problems, owner = [], {}
    for s in specs:
        for var, port in s.ports.items():
            if port in owner:
                problems.append(f"port {port} is configured twice: {owner[port]}, {s.name} {var}")
                continue
            owner[port] = f"{s.name} {var}"
            if proc.port_in_use(s.host, port):
                problems.append(f"port {port} on {s.host} is already in use; {s.name} needs it "
                                f"({var}). Free it (ss -ltnp 'sport = :{port}') or set {var}.")
    return problems


def _rotate_logs(rd: RunDir, names: list[str]) -> None:
    rd.logs.mkdir(parents=True, exist_ok=True)
    for path in [rd.daemon_log, *(rd.log(n) for n in names)]:
        if path.exists():
            path.replace(path.with_name(path.name + ".1"))


def cmd_up(args: argparse.Namespace, rd: RunDir) -> int:
    state = rd.read_state()
    if daemon_pid(state):
        print(f"already running (supervisor pid {state['supervisor']['pid']}); "
              "`down` first to restart\n" + table(state))
        return 0 if all(s["status"] == "ready" for s in state["services"].values()) else 1
    if left := recorded(state):
        _err(f"processes of the previous run are still alive: {[p.pid for p in left]}; "
             "run `down` first")
        return 1
    try:
        specs = _specs(args, rd)
    except ValueError as e:
        _err(str(e))
        return 2
    if not specs:
        _err("nothing to start")
        return 2
    if problems := _busy_ports(specs):
        _err("cannot start, nothing was started:\n  " + "\n  ".join(problems))
        return 2

    rd.root.mkdir(parents=True, exist_ok=True)
    _rotate_logs(rd, [s.name for s in specs])
    spec.save(specs, rd.specs)
    rd.state.unlink(missing_ok=True)
    policy = {"stop_timeout": args.stop_timeout, "max_restarts": args.max_restarts}
    with open(rd.daemon_log, "ab") as out:
        daemon = subprocess.Popen(
            [sys.executable, "-m", DAEMON_MODULE, "--run-dir", str(rd.root),
             "--policy", json.dumps(policy)],
            cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # detached: survives this command and the terminal
        )
    print(f"supervisor pid {daemon.pid}; logs in {rd.logs}", flush=True)
    return _wait_ready(rd, daemon, [s.name for s in specs], args.timeout)


def _progress(s: dict) -> str:
    if s["status"] == "starting":
        return f"pid {s['pid']}"
    if s["status"] == "ready":
        note = f"; {s['probe_note']}" if s.get("probe_note") else ""
        return f"in {s['startup_s']:.1f} s{note}"
    if s["status"] in ("restarting", "failed"):
        return (s.get("last_exit") or {}).get("why", "")
    return ""


def _wait_ready(rd: RunDir, daemon: subprocess.Popen, names: list[str], timeout: float) -> int:
    t0 = time.monotonic()
    seen: dict[str, str] = {}
    last_note = t0
    state: dict = {}
    while True:
        if daemon.poll() is not None:
            _err(f"the supervisor exited with code {daemon.returncode}:\n{_tail(rd.daemon_log)}")
            return 1
        state = rd.read_state() or state
        services = state.get("services", {})
        for name, s in services.items():
            if seen.get(name) != s["status"]:
                seen[name] = s["status"]
                print(f"  {name:<12} {s['status']} {_progress(s)}".rstrip(), flush=True)
        pending = [n for n in names if services.get(n, {}).get("status") != "ready"]
        failed = [n for n in names if services.get(n, {}).get("status") == "failed"]
        elapsed = time.monotonic() - t0
        if not pending:
            print(f"all {len(names)} services ready in {elapsed:.1f} s\n\n{table(state)}")
            return 0
        if failed or elapsed > timeout:
            why = f"failed: {', '.join(failed)}" if failed else f"not ready after {timeout:.0f} s"
            _err(f"\n{why}\n\n{table(state)}\n")
            for n in failed or pending:
                s = services.get(n, {})
                _err(f"--- {n}: {s.get('probe_error') or ''}\n{_tail(rd.log(n))}")
            _err("the supervisor keeps running: `make logs`, `make down`")
            return 1
        if time.monotonic() - last_note >= 15:
            last_note = time.monotonic()
            notes = [f"{n} ({services.get(n, {}).get('probe_error') or 'waiting'})"
                     for n in pending]
            print(f"  ... {elapsed:.0f} s, waiting for: " + "; ".join(notes), flush=True)
        time.sleep(0.25)


# --- down / status / logs ----------------------------------------------------------------------
def cmd_down(args: argparse.Namespace, rd: RunDir) -> int:
    state = rd.read_state()
    if state is None:
        print("nothing to stop")
        return 0
    before = recorded(state)  # snapshot first: the daemon clears it while stopping
    leaders = {s["pid"] for s in state["services"].values() if s.get("pid")}
    pid = daemon_pid(state)
    if pid:
        print(f"stopping supervisor {pid} and {', '.join(state['services'])}", flush=True)
        try:
            daemon = psutil.Process(pid)
            daemon.send_signal(signal.SIGTERM)
            if proc.wait_gone([daemon], args.timeout + 15):
                _err(f"supervisor {pid} did not stop in time: killing it")
                daemon.kill()
        except psutil.NoSuchProcess:
            pass
    left = [p for p in before if proc.alive(p)]
    if left:  # the daemon was gone or failed: stop what it left behind ourselves
        _err(f"stopping leftover processes {[p.pid for p in left]}")
        left = proc.stop(left, {p.pid for p in left if p.pid in leaders}, args.timeout)
    state = rd.read_state() or state
    if state["supervisor"].get("pid"):  # the daemon did not get to write its final state
        state["supervisor"]["pid"] = None
        for s in state["services"].values():
            s.update(status="stopped", pid=None, tree=[])
        rd.write_state(state)
    if left:
        _err(f"still alive: {[p.pid for p in left]}")
        return 1
    print("stopped; no process left")
    return 0


def cmd_status(args: argparse.Namespace, rd: RunDir) -> int:
    state = rd.read_state()
    if state is None:
        print("not running (no state file)")
        return 3
    if args.json:
        print(json.dumps(state, indent=2))
        return 0
    pid = daemon_pid(state)
    print(f"supervisor {'pid ' + str(pid) if pid else 'not running'}\n{table(state)}")
    return 0 if pid else 3


def cmd_logs(args: argparse.Namespace, rd: RunDir) -> int:
    state = rd.read_state() or {}
    names = list(state.get("services", {})) or sorted(
        p.stem for p in rd.logs.glob("*.log") if p.stem != "supervisor")
    if args.services:
        names = args.services
    files = {n: rd.log(n) for n in names}
    if not args.services:
        files["supervisor"] = rd.daemon_log
    try:
        logs.show(files, args.follow, args.tail)
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m services.supervisor",
                                 description="Local mode: the stack as supervised processes.")
    ap.add_argument("--run-dir", help="default: $STACK_RUN_DIR or .run/ at the repo root")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start everything detached; wait for real inferences")
    up.add_argument("--services", help="comma-separated subset (default: $STACK_SERVICES or all: "
                    f"{','.join(spec.DEFAULT_SERVICES)})")
    up.add_argument("--spec-file", help="JSON list of service specs instead of the stack's")
    up.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for readiness")
    up.add_argument("--sequential", action="store_true",
                    help="start one service at a time: uncontended start-up times")
    up.add_argument("--stop-timeout", type=float, default=10.0)
    up.add_argument("--max-restarts", type=int, default=5, help="per minute, per service")
    down = sub.add_parser("down", help="stop everything; check no process is left")
    down.add_argument("--timeout", type=float, default=10.0, help="SIGTERM -> SIGKILL seconds")
    status = sub.add_parser("status", help="what serves where (exit 3 if not running)")
    status.add_argument("--json", action="store_true", help="the raw state file")
    lg = sub.add_parser("logs", help="service logs, prefixed")
    lg.add_argument("-f", "--follow", action="store_true")
    lg.add_argument("--tail", type=int, help="last N lines of each log")
    lg.add_argument("services", nargs="*")
    args = ap.parse_args(argv)
    rd = RunDir.resolve(args.run_dir)
    return {"up": cmd_up, "down": cmd_down, "status": cmd_status, "logs": cmd_logs}[args.cmd](
        args, rd)
