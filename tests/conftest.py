"""Fixtures shared by every test package: the example model store and free ports."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = (
    "digits-mlp-torch", "digits-mlp-keras", "digits-cnn-torch", "digits-cnn-keras",
    "mobilenetv2-torch", "mobilenetv2-keras", "digits-transformer-torch", "digits-transformer-keras",
)  # fmt: skip


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (all sockets held open together, so no port repeats)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for(predicate, what: str = "condition", timeout: float = 30.0, interval: float = 0.05):
    """Poll until predicate() is truthy and return its value (bounded; not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def stop_process_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM a server's whole process group, SIGKILL it if it has not exited within timeout."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def python_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def real_store() -> Path:
    """The store of the examples that `make export` builds (built here if it is missing);
    $SERVEBENCH_STORE names one built elsewhere (a git worktree sharing its main checkout's)."""
    store = Path(os.environ.get("SERVEBENCH_STORE") or REPO / "model_store")
    if not all((store / m / "manifest.json").exists() for m in EXAMPLES):
        subprocess.run([sys.executable, "-m", "exporters", "examples", "--store", str(store)],
                       cwd=REPO, env=python_env(), check=True)  # fmt: skip
    return store


@contextlib.contextmanager
def running_stack(store: Path, run_dir: Path):
    """`make up` on free loopback ports in a private run dir over `store`: every runtime + the
    gateway, each having answered a real inference; `make down` afterwards, checked."""
    from contract.runtimes import RUNTIMES
    from loadtests.stackrun import PORT_VARS  # the gateway's ports and each registered runtime's

    ports = dict(zip(PORT_VARS, free_ports(len(PORT_VARS))))
    env = python_env(STACK_RUN_DIR=str(run_dir), STACK_MODEL_STORE=str(store),
                     **{k: str(v) for k, v in ports.items()})  # fmt: skip
    sup = [sys.executable, "-m", "services.supervisor"]
    up = subprocess.run([*sup, "up", "--timeout", "420"], cwd=REPO, env=env, capture_output=True, text=True, timeout=480)
    try:
        assert up.returncode == 0, f"make up failed:\n{up.stdout}\n{up.stderr}"
        url = lambda var: f"http://127.0.0.1:{ports[var]}"  # noqa: E731
        yield {
            "gateway_url": url("GATEWAY_PORT"),
            "gateway_grpc": f"127.0.0.1:{ports['GATEWAY_GRPC_PORT']}",  # OIP gRPC
            "gateway_tfs_grpc": f"127.0.0.1:{ports['GATEWAY_TFS_GRPC_PORT']}",  # TF Serving gRPC
            "store": store,
            "run_dir": run_dir,
            "env": env,
            "up_output": up.stdout,
            # Each runtime's own inference API: its registry entry's first port.
            "runtimes": {name: url(rt.port_keys[0].upper()) for name, rt in RUNTIMES.items()},
        }
    finally:
        pids = _stack_pids(run_dir)
        down = subprocess.run([*sup, "down"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    import psutil

    left = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not left, f"`make down` left processes behind: {left}"


@pytest.fixture(scope="session")
def real_stack(real_store, tmp_path_factory):
    """The stack over the example store."""
    with running_stack(real_store, tmp_path_factory.mktemp("stack-run")) as stack:
        yield stack


def _stack_pids(run_dir: Path) -> list[int]:
    import json

    try:
        state = json.loads((run_dir / "state.json").read_text())
    except (FileNotFoundError, ValueError):
        return []
    pids = [state.get("supervisor", {}).get("pid")]
    for s in state.get("services", {}).values():
        pids += [r[0] for r in s.get("tree", [])]
    return [p for p in pids if p]


def pytest_collection_modifyitems(session, config, items):
    """Schemathesis first: CPython 3.11 can leave its AST recursion counter off after a
    RecursionError raised deep in C code earlier in the session, and schemathesis compiles code
    with ast ("SystemError: AST constructor recursion depth mismatch", seen in a full CI run, never
    in isolation). A fresh interpreter state is what it gets in isolation."""
    items.sort(key=lambda item: "test_schemathesis" not in item.nodeid)


AOTI_EXAMPLES = ("digits-cnn-torch", "digits-transformer-torch")  # the smallest image and token models


@pytest.fixture(scope="session")
def aoti_export(tmp_path_factory):
    """The CNN and the int64-token transformer exported to AOTInductor packages only (compiling
    is the slow part: once per session), into a fresh store with a fresh compile cache.
    (sources by name, {name: manifest}, store, cache dir)."""
    from exporters.examples.build import sources
    from exporters.pipeline import export_model
    from exporters.targets import aotinductor

    root = tmp_path_factory.mktemp("aoti")
    store, cache = root / "store", root / "cache"
    mp = pytest.MonkeyPatch()
    mp.setenv(aotinductor.CACHE_ENV, str(cache))
    srcs = {s.name: s for s in sources(AOTI_EXAMPLES)}
    manifests = {name: export_model(src, store, ("aotinductor",))[0] for name, src in srcs.items()}
    yield srcs, manifests, store, cache
    mp.undo()
