"""CPU sets of the load generator and the servers during a bench.

With enough cores (MIN_CPUS_TO_SPLIT) the bench pins itself (the load generator: this process and
the Locust subprocesses it starts, which inherit the set) to the last quarter of the CPUs it may use
and every server thread (each service's process tree, /proc/<pid>/task) to the rest, so that the
client never takes a core from a runtime; the servers' own sets are put back afterwards. With fewer
cores, as on the 2-core development machine, nothing is pinned: the report says the cores were
shared and gives the load generator's share of the CPU time in every run (the sampler's figures).
"""

from __future__ import annotations

import os
from pathlib import Path

from loadtests.monitor import _tree  # a process and its descendants

MIN_CPUS_TO_SPLIT = 4


def available_cpus() -> set[int]:
    return set(os.sched_getaffinity(0))


def plan(cpus: set[int]) -> tuple[set[int], set[int]] | None:
    """(load generator CPUs, server CPUs), disjoint; None when there are too few to split."""
    ordered = sorted(cpus)
    if len(ordered) < MIN_CPUS_TO_SPLIT:
        return None
    n_gen = max(1, len(ordered) // 4)
    return set(ordered[-n_gen:]), set(ordered[:-n_gen])


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(Path("/proc") / str(pid) / "task")]
    except OSError:
        return [pid]


def apply(split: tuple[set[int], set[int]] | None, services: dict[str, set[int]]) -> dict:
    """Pin as planned; returns what was done (and what restore() needs)."""
    cpus = sorted(available_cpus())
    if split is None:
        return {"mode": "shared", "cpus": cpus, "saved": {},
                "note": f"{len(cpus)} CPUs shared by the load generator and the servers (fewer "
                        f"than {MIN_CPUS_TO_SPLIT}: not split); the load generator's share of CPU "
                        "time is reported per run"}
    gen, servers = split
    saved: dict[int, list[int]] = {0: sorted(os.sched_getaffinity(0))}
    failed = []
    for tid in (t for pid in _tree(set().union(*services.values())) for t in _threads(pid)):
        try:
            saved[tid] = sorted(os.sched_getaffinity(tid))
            os.sched_setaffinity(tid, servers)
        except OSError as e:  # a thread that ended, or a process not ours
            saved.pop(tid, None)
            failed.append(f"{tid}: {e.strerror}")
    os.sched_setaffinity(0, gen)
    note = (f"load generator on CPUs {sorted(gen)}, servers on CPUs {sorted(servers)} "
            f"({len(saved) - 1} server threads pinned")
    note += f"; {len(failed)} could not be: {', '.join(failed[:5])})" if failed else ")"
    return {"mode": "disjoint", "cpus": cpus, "loadgen_cpus": sorted(gen),
            "server_cpus": sorted(servers), "saved": saved, "note": note}


def restore(done: dict) -> None:
    """Put back the CPU sets apply() changed (the bench's own last)."""
    saved = dict(done.get("saved") or {})
    own = saved.pop(0, None)
    for tid, cpus in saved.items():
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            pass  # the thread has ended
    if own:
        os.sched_setaffinity(0, own)


def public(done: dict) -> dict:
    """The record for results.json (without the saved sets)."""
    return {k: v for k, v in done.items() if k != "saved"}
