"""Process trees: measure them, stop them without leaving orphans, and check ports."""

from __future__ import annotations

import errno
import os
import signal
import socket
import time

import psutil


def alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants (empty if it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def rss(procs: list[psutil.Process]) -> int:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def from_records(records: list[list]) -> list[psutil.Process]:
    """[[pid, create_time], ...] -> the processes that still are those (pids get reused)."""
    procs = []
    for pid, created in records:
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - created) < 0.01 and alive(p):
                procs.append(p)
        except psutil.Error:
            pass
    return procs


def records(procs: list[psutil.Process]) -> list[list]:
    out = []
    for p in procs:
        try:
            out.append([p.pid, p.create_time()])
        except psutil.Error:
            pass
    return out


def group_members(pgids: set[int]) -> dict[int, list[psutil.Process]]:
    """pgid -> live processes in that group, for the given pgids."""
    out: dict[int, list[psutil.Process]] = {}
    for p in psutil.process_iter():
        try:
            pgid = os.getpgid(p.pid)
        except (ProcessLookupError, psutil.Error):
            continue
        if pgid in pgids and alive(p):
            out.setdefault(pgid, []).append(p)
    return out


def _signal(procs: list[psutil.Process], pgids: set[int], sig: int) -> list[psutil.Process]:
    """Signal the process groups that still have members (TorchServe's Java frontend and Python
    workers share the group of the process we spawned), then every process given, since some
    may have moved to a group of their own (once each). Returns everything signalled."""
    groups = group_members(pgids)
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    members = {p.pid: p for ps in groups.values() for p in ps}
    others = [p for p in procs if p.pid not in members and alive(p)]
    for p in others:
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass
    return [*members.values(), *others]


def stop(procs: list[psutil.Process], pgids: set[int], timeout: float) -> list[psutil.Process]:
    """SIGTERM the groups and processes, SIGKILL what is left after `timeout`; return survivors.

    `procs` must be snapshotted before anything dies: once a parent exits its children are
    re-parented and no longer findable through it.
    """
    left = wait_gone(_signal(procs, pgids, signal.SIGTERM), timeout)
    return wait_gone(_signal(left, pgids, signal.SIGKILL), 5.0)


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """User + system CPU time of a process tree so far (the processes still alive)."""
    total = 0.0
    for p in procs:
        try:
            c = p.cpu_times()
            total += c.user + c.system
        except psutil.Error:
            pass
    return total


def kill_group(pid: int | None) -> None:
    """SIGKILL a hung service's process group at once (a stopped or deadlocked process never
    acts on SIGTERM; SIGKILL also ends a SIGSTOPped one)."""
    if pid is None:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until none is alive; zombies count as gone (psutil.wait_procs waits for whoever
    reaps them, which for orphans is init, in its own time)."""
    deadline = time.monotonic() + timeout
    left = [p for p in procs if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    return left


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Same option as the servers (uvicorn, Java): a TIME_WAIT socket is not "in use".
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return True
            raise
    return False
