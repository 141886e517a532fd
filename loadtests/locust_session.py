"""One Locust process for a whole bench: runs one after another, each a fresh Locust environment.

A `locust --headless` process per run costs ~2 s of start-up and exit beyond its warm-up and window
on this machine (importing locust + gevent alone: 1.2 s with bytecode), i.e. as much as the window
of a quick-profile run. Here the process imports Locust and the locustfile once and then, per run,
builds a new Environment and LocalRunner from the same command line a subprocess would get (Locust
used as a library, as its docs describe), so each run still starts with new users, new
connections and new statistics; only the interpreter is shared.

Protocol (used by LocustSession below, the parent side):
  stdin:  one JSON object per run: {"args": [locust CLI args], "log": path, "timeout": seconds}
  stdout: one line per run: REPLY + JSON {"exit_code": int, "request_listeners": int}; a run's
          own output goes to its log.
End of stdin ends the session.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import subprocess
import sys
import time
from pathlib import Path

REPLY = "locust-session:"
EXIT_TIMEOUT = 124  # a run whose window never closed (like timeout(1))


def serve() -> None:  # the child: never imported by the parent (importing locust patches gevent)
    from locust import events
    from locust.argument_parser import get_parser

    from loadtests import locustfile

    parser = get_parser()  # fires init_command_line_parser: the locustfile's options are added
    reply_to = sys.stdout
    for line in sys.stdin:
        job = json.loads(line)
        with open(job["log"], "w") as log, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):
            handler = logging.StreamHandler(log)
            logging.getLogger().addHandler(handler)
            try:
                code, listeners = run_one(parser.parse_args(job["args"]), job["timeout"], events,
                                          locustfile.ModelUser)
            except Exception as e:  # noqa: BLE001 - reported to the parent, which records it
                print(f"locust session: run failed: {type(e).__name__}: {e}")
                code, listeners = 1, 0
            finally:
                logging.getLogger().removeHandler(handler)
        reply = {"exit_code": code, "request_listeners": listeners}
        reply_to.write(REPLY + json.dumps(reply) + "\n")
        reply_to.flush()


def fresh_events(registered):
    """A new Events holding the listeners the locustfile registered on `registered` (Locust's
    global one): a runner adds its own listeners to its environment's events, so runs sharing one
    Events would pile up every past runner's statistics listeners."""
    from locust.event import EventHook, Events

    events = Events()
    for name, hook in vars(registered).items():
        if isinstance(hook, EventHook):
            getattr(events, name)._handlers = list(hook._handlers)
    return events


def run_one(opts, timeout: float, registered, user_class) -> tuple[int, int]:
    import gevent
    from locust.env import Environment
    from locust.stats import PERCENTILES_TO_REPORT, StatsCSVFileWriter

    events = fresh_events(registered)
    env = Environment(user_classes=[user_class], events=events, host=opts.host,
                      parsed_options=opts)
    runner = env.create_local_runner()
    events.init.fire(environment=env, runner=runner, web_ui=None)
    csv_files = None
    if opts.csv_prefix:  # Locust's own --csv files, as its main writes them (per-second history)
        csv_files = StatsCSVFileWriter(env, PERCENTILES_TO_REPORT, opts.csv_prefix,
                                       opts.stats_history_enabled)
        writer = gevent.spawn(csv_files.stats_writer)
    runner.start(opts.num_users, spawn_rate=opts.spawn_rate)
    # The locustfile's window quits the runner when it closes; the timeout is the -t bound.
    finished = runner.greenlet.join(timeout=timeout)
    if not finished:
        runner.quit()
    if csv_files is not None:
        writer.kill()
        csv_files.close_files()
    code = (env.process_exit_code or 0) if finished else EXIT_TIMEOUT
    return code, len(events.request._handlers)  # constant from run to run (fresh_events)


class LocustSession:
    """The parent's handle on a session process; run() is one Locust run, restarting the process
    if the previous one died or hung."""

    def __init__(self, env: dict[str, str], cwd: Path):
        self.env, self.cwd = env, cwd
        self.proc: subprocess.Popen | None = None
        self.buffer = b""
        self.last: dict = {}  # the session's last reply

    @property
    def pid(self) -> int:
        return self._ensure().pid

    def _ensure(self) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "loadtests.locust_session"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=self.env, cwd=self.cwd)
            self.buffer = b""
        return self.proc

    def run(self, args: list[str], log: Path, timeout: float) -> int | None:
        """Exit code of one run (0 = done), None if the session did not answer in time (it is
        then stopped; the next run starts a new one). A session found dead (killed between runs)
        is replaced once for this run."""
        job = (json.dumps({"args": args, "log": str(log), "timeout": timeout}) + "\n").encode()
        for attempt in (1, 2):
            try:
                proc = self._send(job)
            except OSError:  # dead and reaped-or-not: the pipe is closed
                self.close(kill=True)
                continue
            reply = self._reply(proc, deadline=time.monotonic() + timeout + 30)
            if reply is not None:
                self.last = reply
                return int(reply["exit_code"])
            died = proc.poll() is not None
            self.close(kill=True)
            if not died:  # hung: no second chance, the bound is spent
                return None
        return None

    def _reply(self, proc: subprocess.Popen, deadline: float) -> dict | None:
        """The session's reply line; None at the deadline or when the process dies first."""
        while (left := deadline - time.monotonic()) > 0:
            line, sep, rest = self.buffer.partition(b"\n")
            if sep:
                self.buffer = rest
                if line.startswith(REPLY.encode()):
                    return json.loads(line[len(REPLY):])
                continue  # a stray line of a library, printed outside any run's log
            ready, _, _ = select.select([proc.stdout], [], [], left)
            chunk = os.read(proc.stdout.fileno(), 65536) if ready else b""
            if not chunk:
                if ready:  # end of file: the process is gone (or going)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=10)
                return None
            self.buffer += chunk
        return None

    def _send(self, job: bytes) -> subprocess.Popen:
        proc = self._ensure()
        proc.stdin.write(job)
        proc.stdin.flush()
        return proc

    def close(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            if kill:
                self.proc.kill()
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc = None

    def __enter__(self) -> "LocustSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    serve()
