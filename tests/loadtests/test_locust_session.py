"""One Locust process for many runs (loadtests/locust_session.py): each run starts from nothing
(users, connections, statistics, event listeners), and a dead or hung session costs one run, not
the bench."""

import csv
import json
import os
import signal
import time

from loadtests import runner
from loadtests.locust_session import EXIT_TIMEOUT, LocustSession
from loadtests.scenarios import RunSpec
from services.settings import REPO_ROOT
from tests.loadtests.fakes import FakeOIPServer

SPEC = RunSpec("gateway", "closed", "digits-cnn-torch", "onnxruntime", 2, 1)


def window_count(out_dir, record) -> int:
    rows = csv.DictReader(open(out_dir / record["csv"]))
    return int(next(r for r in rows if r["Name"] == "Aggregated")["Request Count"])


def test_runs_in_one_session_each_count_only_their_own_window(store, tmp_path):
    with FakeOIPServer(store, "digits-cnn-torch") as srv, \
            LocustSession(runner.child_env(), REPO_ROOT) as session:
        records, pids, listeners = [], set(), []
        for rep, users in ((1, 2), (2, 1), (3, 3)):
            spec = RunSpec(SPEC.via, SPEC.mode, SPEC.model, SPEC.runtime, users, rep)
            records.append(runner.run_locust(spec, host=srv.url, store=store, warmup=0.3,
                                             window=1.0, out_dir=tmp_path, session=session))
            pids.add(session.pid)
            listeners.append(session.last["request_listeners"])
    assert len(pids) == 1  # one process served the three runs
    assert listeners[0] == listeners[1] == listeners[2]  # no runner's listeners left behind
    for r in records:
        assert r["ok"] and r["failures"] == 0 and r["requests"] > 10
        # Locust's own statistics were fresh for each run: they agree with this run's window,
        # not with the total of the runs so far.
        assert abs(window_count(tmp_path, r) - r["requests"]) <= 4
    assert records[1]["users"] == 1 and records[2]["users"] == 3  # each run spawned its own users


def test_a_killed_session_is_replaced_and_a_hung_run_times_out(store, tmp_path):
    with FakeOIPServer(store, "digits-cnn-torch") as srv, \
            LocustSession(runner.child_env(), REPO_ROOT) as session:
        first = session.pid
        os.kill(first, signal.SIGKILL)
        r = runner.run_locust(SPEC, host=srv.url, store=store, warmup=0.2, window=0.8,
                              out_dir=tmp_path, session=session)
        assert r["ok"] and session.pid != first  # a new process took the run
        # A window that cannot close within the run's bound: the run stops at the bound with
        # timeout's exit code, and the same session takes the next run.
        args = ["--headless", "-u", "1", "-r", "1", "--host", srv.url, "--target-model",
                SPEC.model, "--target-runtime", SPEC.runtime, "--model-store", str(store),
                "--window", "30", "--result-json", str(tmp_path / "never.json")]
        alive = session.pid
        started = time.monotonic()
        assert session.run(args, tmp_path / "hung.log", timeout=1.5) == EXIT_TIMEOUT
        assert time.monotonic() - started < 6
        assert json.loads((tmp_path / "never.json").read_text())["window_s"] < 2  # cut short
        r = runner.run_locust(SPEC, host=srv.url, store=store, warmup=0.2, window=0.8,
                              out_dir=tmp_path / "after", session=session)
        assert r["ok"] and session.pid == alive
