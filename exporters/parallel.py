"""Run independent per-model jobs in worker processes, reporting them as a sequential run would.

`python -m exporters examples` builds, exports, certifies and quantizes each example model on its
own: nothing is shared between models but the store, where each model is committed whole under its
own name (exporters/store.py). Most of that work is single-threaded (Python, converters, g++), so
two processes keep two cores busy (measured: README "Exporters").

Workers are fresh interpreters (spawn: TensorFlow and torch do not survive a fork) with one thread
per runtime, set by the caller's `setup`, and inductor compiling in-process, so that N workers use
N cores and no more. Jobs start in a fixed order (the longest first) and their log lines are
printed job by job in that order, live for the first unfinished job: the progress is the same at
any number of workers, never two models' lines interleaved."""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import queue
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterator

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass
class Outcome:
    """What one job sends back."""

    name: str
    result: Any = None
    error: str | None = None  # the job could not start (e.g. a source that cannot be built)


class _ToParent(logging.Handler):
    """A worker's log lines, formatted as the parent's console handler would, sent to the parent
    tagged with the job's name; (name, None) ends a job's lines."""

    def __init__(self, lines: multiprocessing.Queue) -> None:
        super().__init__()
        self.queue, self.job = lines, ""
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.queue.put((self.job, self.format(record)))


_to_parent: _ToParent | None = None


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the process that started it dies (a test's timeout, a kill):
    a worker busy with a long export does not look at the pool's queues and would export on as an
    orphan (seen: two workers still running 43 minutes after their parent was killed)."""
    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # libc's, already loaded
    except (OSError, AttributeError):  # not Linux: the pool's own shutdown is all there is
        pass
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _start_worker(setup: Callable[[], None], lines: multiprocessing.Queue, progress: str) -> None:
    global _to_parent
    _die_with_parent()
    # Inductor would otherwise start a pool of compile processes per worker (one per core).
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    setup()
    _to_parent = _ToParent(lines)
    # Only the progress logger goes to the parent. Libraries' records stay on the worker's stderr,
    # which the exporters capture into each route's log while a converter runs, as in one process.
    logger = logging.getLogger(progress)
    logger.handlers[:], logger.propagate = [_to_parent], False


def _run_in_worker(job: Callable[[str], Outcome], name: str) -> Outcome:
    assert _to_parent is not None, "_start_worker did not run"
    _to_parent.job = name
    try:
        return job(name)
    finally:
        _to_parent.queue.put((name, None))


def start_order(names: list[str], cost: dict[str, float] | None = None) -> list[str]:
    """The costly jobs first (cost: seconds, e.g. measured), so that no worker is left alone with a
    long one at the end; ties keep the order given."""
    return sorted(names, key=lambda n: -(cost or {}).get(n, 0.0))


def run(names: list[str], job: Callable[[str], Outcome], workers: int, setup: Callable[[], None],
        echo: Callable[[str], None], cost: dict[str, float] | None = None,
        progress: str = "exporters") -> Iterator[Outcome]:  # fmt: skip
    """job(name) for every name in `workers` processes, started and yielded in start_order(). The
    lines of the `progress` logger are echoed job by job: the first unfinished job's as they come,
    the others' when their turn comes, so the progress reads as a sequential run's. job and setup
    must be picklable (module-level functions, functools.partial). Stopping the iteration cancels the jobs not started and waits
    for the running ones (each commits its own model whole, or nothing)."""
    order = start_order(names, cost)
    ctx = multiprocessing.get_context("spawn")
    lines: multiprocessing.Queue = ctx.Queue()
    held: dict[str, list[str]] = {n: [] for n in order}
    ended: set[str] = set()
    start = {"initializer": _start_worker, "initargs": (setup, lines, progress)}
    with ProcessPoolExecutor(workers, mp_context=ctx, **start) as pool:
        futures: dict[str, Future] = {n: pool.submit(_run_in_worker, job, n) for n in order}
        try:
            for name in order:
                for line in held.pop(name):
                    echo(line)
                while name not in ended:
                    try:
                        who, line = lines.get(timeout=0.5)
                    except queue.Empty:
                        if futures[name].done() and futures[name].exception() is not None:
                            raise futures[name].exception()  # the worker died before its last line
                        continue
                    if line is None:
                        ended.add(who)
                    elif who == name:
                        echo(line)
                    else:
                        held[who].append(line)
                yield futures[name].result()
        finally:
            for f in futures.values():
                f.cancel()
