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
import sys
from pathlib import Path

from loadtests.lineproc import LineProcess

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
        self.child: LineProcess | None = None
        self.last: dict = {}  # the session's last reply

    @property
    def pid(self) -> int:
        return self._ensure().proc.pid

    def _ensure(self) -> LineProcess:
        if self.child is None or self.child.proc.poll() is not None:
            self.child = LineProcess([sys.executable, "-m", "loadtests.locust_session"],
                                     env=self.env, cwd=self.cwd, marker=REPLY)
        return self.child

    def run(self, args: list[str], log: Path, timeout: float) -> int | None:
        """Exit code of one run (0 = done), None if the session did not answer in time (it is
        then stopped; the next run starts a new one). A session found dead (killed between runs)
        is replaced once for this run."""
        job = {"args": args, "log": str(log), "timeout": timeout}
        for attempt in (1, 2):
            try:
                child = self._ensure()
                child.send(job)
            except OSError:  # dead and reaped-or-not: the pipe is closed
                self.close(kill=True)
                continue
            try:  # + start-up of a new session, payload build
                reply = child.answer(timeout + 30)
            except TimeoutError:  # hung: no second chance, the bound is spent
                self.close(kill=True)
                return None
            if reply is not None:
                self.last = reply
                return int(reply["exit_code"])
            self.close(kill=True)  # it died during the run: a new one takes it, once
        return None

    def close(self, kill: bool = False) -> None:
        if self.child is not None:
            self.child.stop(kill=kill)
            self.child = None

    def __enter__(self) -> "LocustSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    serve()
