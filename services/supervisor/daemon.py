"""The detached supervisor: owns the children, probes, restarts, keeps the state file current."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass

import psutil

from services.settings import REPO_ROOT
from services.supervisor import proc
from services.supervisor.probe import NotReady, Probe, live
from services.supervisor.spec import ServiceSpec
from services.supervisor.state import RunDir

log = logging.getLogger("supervisor")


@dataclass
class Policy:
    stop_timeout: float = 10.0  # SIGTERM -> SIGKILL
    max_restarts: int = 5  # per restart_window; then the service is marked failed
    restart_window: float = 60.0
    backoff_base: float = 0.25  # doubles per exit in a crash loop (see _exited), up to backoff_max
    backoff_max: float = 30.0
    stable_after: float = 10.0  # ready this long: its next exit is not part of a crash loop
    dep_timeout: float = 300.0  # start a service anyway once its dependencies took this long
    probe_timeout: float = 30.0  # per request: first inferences can be slow
    # Once ready: a service that does not answer HTTP within live_timeout for live_failures
    # checks in a row (live_interval apart) is hung (SIGSTOP, deadlock): killed and restarted.
    # Detected within 2 x (interval + timeout) = 2 s; a busy server is spared (see busy()).
    live_interval: float = 0.25
    live_timeout: float = 0.75
    live_failures: int = 2


def busy(cpu_before: float, cpu_now: float, interval: float) -> bool:
    """Whether a process tree that missed a liveness check kept working meanwhile (at least a
    tenth of a core over the check's interval)."""
    return cpu_now - cpu_before >= 0.1 * interval


class Child:
    def __init__(self, spec: ServiceSpec):
        self.spec = spec
        self.popen: subprocess.Popen | None = None
        self.status = "waiting"
        self.generation = 0  # spawn count; a probe thread only reports for its own generation
        self.first_spawn: float | None = None
        self.spawned = 0.0  # monotonic
        self.next_start = 0.0
        self.exits: deque[float] = deque()
        self.quick_exits = 0  # exits in a row before `stable_after` of readiness (back-off)
        self.snapshot: list[psutil.Process] = []  # the process tree, refreshed while it runs
        # Every key exists from the start: the probe thread only ever replaces values, so the
        # main thread can copy the dict while it runs.
        self.info: dict = dict.fromkeys(["spawned_at", "ready_at", "startup_s", "probe_error",
                                         "probe_note", "last_exit"])
        self.info.update(restarts=0, rss_bytes=0, rss_peak_bytes=0, hung_kills=0)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None


class Daemon:
    def __init__(self, rd: RunDir, specs: list[ServiceSpec], policy: Policy):
        self.rd, self.policy = rd, policy
        self.children = {s.name: Child(s) for s in specs}
        self.stopping = threading.Event()
        self.dirty = True
        self.started_at = time.time()

    # --- lifecycle -------------------------------------------------------------------------
    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        log.info("supervisor %d: %s", os.getpid(), ", ".join(self.children))
        last_sample = last_write = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            for child in self.children.values():
                self._reap(child, now)
                self._maybe_start(child, now)
            if now - last_sample >= 1.0:
                self._sample()
                last_sample = now
            if self.dirty or now - last_write >= 2.0:
                self._write_state()
                last_write, self.dirty = now, False
            self.stopping.wait(0.2)
        return self._shutdown()

    def _shutdown(self) -> int:
        log.info("stopping %s", ", ".join(c.spec.name for c in self.children.values() if c.popen))
        self._sample()
        running = [c for c in self.children.values() if c.popen]
        procs = [p for c in running for p in c.snapshot]
        left = proc.stop(procs, {c.pid for c in running}, self.policy.stop_timeout)
        for c in running:
            try:  # reap: a dying multi-threaded process (Java) is a zombie a moment before that
                c.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            c.info["last_exit"] = {"why": f"stopped, exit code {c.popen.returncode}",
                                   "at": time.time()}
            c.popen, c.snapshot = None, []
        for c in self.children.values():
            c.status = "failed" if c.status == "failed" else "stopped"
        if left:
            log.error("still alive after SIGKILL: %s", [p.pid for p in left])
        self._write_state(stopped=True)
        log.info("stopped")
        return 1 if left else 0

    # --- children --------------------------------------------------------------------------
    def _deps_ok(self, child: Child, now: float) -> bool:
        for name in child.spec.after:
            dep = self.children.get(name)
            if dep is None or dep.status in ("ready", "failed"):
                continue
            if dep.first_spawn is not None and now - dep.first_spawn > self.policy.dep_timeout:
                continue
            return False
        return True

    def _maybe_start(self, child: Child, now: float) -> None:
        if child.popen or child.status not in ("waiting", "restarting") or now < child.next_start:
            return
        if child.generation == 0 and not self._deps_ok(child, now):
            return
        spec = child.spec
        cwd = spec.cwd or str(REPO_ROOT)
        os.makedirs(cwd, exist_ok=True)
        if "TMPDIR" in spec.env:
            os.makedirs(spec.env["TMPDIR"], exist_ok=True)
        child.generation += 1
        if child.generation > 1:
            child.info["restarts"] += 1
        with open(self.rd.log(spec.name), "ab") as out:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            out.write(f"--- {stamp} supervisor: start #{child.generation}: "
                      f"{' '.join(spec.argv)}\n".encode())
            out.flush()
            try:
                child.popen = subprocess.Popen(
                    spec.argv, cwd=cwd, env={**os.environ, **spec.env},
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: stopped as a whole
                )
            except OSError as e:
                out.write(f"--- supervisor: cannot start: {e}\n".encode())
                log.error("%s: cannot start: %s", spec.name, e)
                self._exited(child, now, f"spawn failed: {e}")
                return
        child.spawned = now
        child.first_spawn = child.first_spawn or now
        child.status = "starting"
        child.snapshot = proc.tree(child.pid)
        child.info.update(spawned_at=time.time(), ready_at=None, startup_s=None, probe_error=None,
                          probe_note=None)
        log.info("%s: started pid %d (#%d)", spec.name, child.pid, child.generation)
        threading.Thread(target=self._probe_loop, args=(child, child.generation), daemon=True,
                         name=f"probe-{spec.name}").start()
        self.dirty = True

    def _probe_loop(self, child: Child, generation: int) -> None:
        probe = Probe(child.spec.probe)
        while not self.stopping.is_set():
            if child.generation != generation or child.status != "starting":
                return
            try:
                probe(self.policy.probe_timeout)
            except NotReady as e:
                child.info["probe_error"] = str(e)
            except Exception as e:  # a broken store or manifest: keep trying, but say why
                child.info["probe_error"] = f"probe failed: {e!r}"
            else:
                if child.generation == generation and child.status == "starting":
                    elapsed = time.monotonic() - child.spawned
                    child.info.update(ready_at=time.time(), startup_s=round(elapsed, 3),
                                      probe_error=None, probe_note=probe.note or None)
                    child.status = "ready"
                    log.info("%s: ready after %.1f s%s", child.spec.name, elapsed,
                             f" ({probe.note})" if probe.note else "")
                    self.dirty = True
                    self._live_loop(child, generation)
                return
            self.dirty = True
            self.stopping.wait(0.5)

    def _live_loop(self, child: Child, generation: int) -> None:
        """Watch a ready service: alive but not answering -> SIGKILL its process group; the main
        loop then reaps it and restarts it like any crash."""
        failures = 0
        while not self.stopping.wait(self.policy.live_interval):
            if child.generation != generation or child.popen is None:
                return
            # CPU over the check itself, not since the last answer: a server stopped right after
            # a busy spell would otherwise look busy for one more check (~1.5 s more to detect).
            cpu = proc.cpu_seconds(child.snapshot)
            try:
                live(child.spec.probe, self.policy.live_timeout)
                failures = 0
                continue
            except NotReady as e:
                # Busy, not hung: a server parsing a huge body holds its event loop past the
                # timeout but burns CPU; a stopped or deadlocked one does not.
                now_cpu = proc.cpu_seconds(child.snapshot)
                failures = 0 if busy(cpu, now_cpu, self.policy.live_timeout) else failures + 1
                child.info["probe_error"] = f"liveness {failures}/{self.policy.live_failures}: {e}"
                self.dirty = True
            if failures >= self.policy.live_failures and child.generation == generation:
                log.error("%s: no answer to %d liveness checks in a row: killing pid %s to "
                          "restart it", child.spec.name, failures, child.pid)
                child.info["hung_kills"] += 1
                proc.kill_group(child.pid)
                return

    def _reap(self, child: Child, now: float) -> None:
        if child.popen is None or child.popen.poll() is None:
            return
        code = child.popen.returncode
        # Whatever the dead process left behind (e.g. TorchServe workers) goes with it.
        left = proc.stop(child.snapshot, {child.pid}, self.policy.stop_timeout)
        if left:
            log.error("%s: could not stop leftovers %s", child.spec.name, [p.pid for p in left])
        child.popen, child.snapshot = None, []
        self._exited(child, now, f"exit code {code}")

    def _exited(self, child: Child, now: float, why: str) -> None:
        child.info["last_exit"] = {"why": why, "at": time.time(),
                                   "after_s": round(now - child.spawned, 3)}
        child.exits.append(now)
        while child.exits and now - child.exits[0] > self.policy.restart_window:
            child.exits.popleft()
        self.dirty = True
        name, n = child.spec.name, len(child.exits)
        if n > self.policy.max_restarts:
            child.status = "failed"
            log.error("%s: %s; %d crashes within %.0f s: giving up (see %s)", name, why, n,
                      self.policy.restart_window, self.rd.log(name))
            return
        # Back-off is for crash loops: a process that had served for `stable_after` seconds and
        # then died (a kill, an OOM, a hang) restarts after backoff_base; the wait doubles only
        # for exits in a row of processes that never got that far.
        if child.status == "ready" and now - child.spawned >= self.policy.stable_after:
            child.quick_exits = 0
        child.quick_exits += 1
        delay = self.policy.backoff_base * 2 ** (child.quick_exits - 1)
        delay = min(self.policy.backoff_max, delay)
        child.status, child.next_start = "restarting", now + delay
        log.warning("%s: %s; restarting in %.1f s (crash %d within %.0f s)", name, why, delay, n,
                    self.policy.restart_window)

    def _sample(self) -> None:
        for child in self.children.values():
            if child.popen is None:
                continue
            current = proc.tree(child.pid)
            seen = {p.pid for p in current}
            # Keep re-parented descendants of earlier snapshots: they still belong to this service.
            child.snapshot = current + [p for p in child.snapshot
                                        if p.pid not in seen and proc.alive(p)]
            rss = proc.rss(child.snapshot)
            child.info["rss_bytes"] = rss
            child.info["rss_peak_bytes"] = max(rss, child.info["rss_peak_bytes"])

    def _write_state(self, stopped: bool = False) -> None:
        services = {}
        for name, c in self.children.items():
            services[name] = {
                "status": c.status,
                "pid": c.pid,
                "url": c.spec.url,
                "ports": c.spec.ports,
                "log": str(self.rd.log(name)),
                "tree": proc.records(c.snapshot),
                **c.info,
            }
        self.rd.write_state({
            "supervisor": {"pid": None if stopped else os.getpid(), "started_at": self.started_at,
                           "stopped_at": time.time() if stopped else None},
            "services": services,
        })


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import sys

    from services.supervisor.spec import load

    ap = argparse.ArgumentParser(prog="python -m services.supervisor.daemon",
                                 description="Started by `up`; not meant to be run by hand.")
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--policy", default="{}", help="JSON object of Policy fields")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    rd = RunDir.resolve(args.run_dir)
    return Daemon(rd, load(rd.specs), Policy(**json.loads(args.policy))).run()


if __name__ == "__main__":
    raise SystemExit(main())
