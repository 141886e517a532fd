"""The local-mode supervisor, driven through its CLI with small dummy HTTP services.

Each dummy spawns two sleeping grandchildren, one in its own group and one in a session of its
own, like TorchServe's Java frontend and Python workers, so "no process left behind" is tested
on whole trees. The full stack (real runtimes) is tested elsewhere.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import psutil
import pytest

from services.settings import StackSettings
from services.supervisor import proc, spec
from services.supervisor.probe import NotReady, Probe
from tests.conftest import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent

DUMMY = """
import http.server, subprocess, sys, time
port, delay = int(sys.argv[1]), float(sys.argv[2])
sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
subprocess.Popen(sleeper)                          # same process group
subprocess.Popen(sleeper, start_new_session=True)  # escaped to a session of its own
time.sleep(delay)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        print("request", self.path, flush=True)

http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""
DELAY = 0.5  # before a dummy listens


class Stack:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.run_dir = tmp / "run"
        self.script = tmp / "dummy.py"
        self.script.write_text(DUMMY)

    def service(self, name: str, port: int | None = None, after=(), argv=None, module=None):
        port = port or free_port()
        url = f"http://127.0.0.1:{port}"
        return {"name": name, "argv": argv or [sys.executable, str(self.script), str(port),
                                               str(DELAY)],
                "host": "127.0.0.1", "ports": {f"{name.upper()}_PORT": port}, "url": url,
                "probe": {"kind": "http", "url": f"{url}/ready"}, "after": list(after),
                "module": module}

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "services.supervisor", "--run-dir", str(self.run_dir), *args]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)

    def up(self, services: list[dict], *args: str) -> subprocess.CompletedProcess:
        spec_file = self.tmp / "services.json"
        spec_file.write_text(json.dumps(services))
        return self.cli("up", "--spec-file", str(spec_file), "--timeout", "60", *args)

    def state(self) -> dict:
        return json.loads((self.run_dir / "state.json").read_text())

    def trees_complete(self) -> bool:
        """Every running dummy's tree, grandchildren included, is in the state file."""
        return all(len(s["tree"]) == 3 for s in self.state()["services"].values() if s["pid"])

    def all_pids(self) -> list[psutil.Process]:
        st = self.state()
        records = [r for s in st["services"].values() for r in s["tree"]]
        daemon = psutil.Process(st["supervisor"]["pid"]) if st["supervisor"]["pid"] else None
        return proc.from_records(records) + ([daemon] if daemon else [])


@pytest.fixture
def stack(tmp_path):
    st = Stack(tmp_path)
    yield st
    if (st.run_dir / "state.json").exists():
        left = [p for p in st.all_pids() if proc.alive(p)]
        st.cli("down")
        proc.stop(left, set(), timeout=5)  # only matters if `down` itself is broken


def gone(processes: list[psutil.Process]) -> bool:
    return not any(proc.alive(p) for p in processes)


# --- up / status / logs ------------------------------------------------------------------------
def test_up_waits_for_readiness_then_returns(stack):
    a, b = stack.service("alpha"), stack.service("beta")
    gw = stack.service("gw", after=["alpha", "beta"])
    r = stack.up([a, b, gw])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all 3 services ready" in r.stdout
    state = stack.state()
    for svc in (a, b, gw):
        s = state["services"][svc["name"]]
        assert s["status"] == "ready" and s["pid"]
        assert s["startup_s"] >= DELAY  # spawn -> first successful probe
        assert svc["url"] in r.stdout and str(s["pid"]) in r.stdout
        # It really serves (and `up` returned while it keeps running, detached).
        with socket.create_connection(("127.0.0.1", svc["ports"][f"{svc['name'].upper()}_PORT"])):
            pass
    # The dependent service started only after its dependencies answered.
    assert state["services"]["gw"]["spawned_at"] >= max(
        state["services"][n]["ready_at"] for n in ("alpha", "beta"))
    wait_for(lambda: all(s["rss_bytes"] > 0 for s in stack.state()["services"].values()),
             what="RSS samples")

    status = stack.cli("status")
    assert status.returncode == 0
    assert all(n in status.stdout for n in ("alpha", "beta", "gw", "START-UP S", "RSS MB"))
    assert json.loads(stack.cli("status", "--json").stdout)["services"].keys() == {
        "alpha", "beta", "gw"}

    again = stack.up([a, b, gw])
    assert again.returncode == 0 and "already running" in again.stdout

    logs = stack.cli("logs", "--tail", "50")
    assert logs.returncode == 0
    assert any(line.startswith("alpha") and "| request /ready" in line
               for line in logs.stdout.splitlines())
    assert "supervisor |" in logs.stdout


def test_busy_port_is_a_clear_error_and_starts_nothing(stack):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = stack.up([stack.service("alpha"), stack.service("beta", port=port)])
    assert r.returncode == 2
    assert f"port {port}" in r.stderr and "beta" in r.stderr and "BETA_PORT" in r.stderr
    assert "nothing was started" in r.stderr
    assert not (stack.run_dir / "state.json").exists()
    assert not any(str(stack.script) in " ".join(p.info["cmdline"] or [])
                   for p in psutil.process_iter(["cmdline"]))


def test_missing_module_is_skipped_loudly(stack):
    ghost = stack.service("ghost", module="services.no_such_runtime")
    r = stack.up([stack.service("alpha"), ghost])
    assert r.returncode == 0, r.stderr
    assert "WARNING" in r.stderr and "services.no_such_runtime" in r.stderr and "ghost" in r.stderr
    assert list(stack.state()["services"]) == ["alpha"]


# --- supervision -------------------------------------------------------------------------------
def test_killed_child_is_restarted_and_ready_again(stack):
    r = stack.up([stack.service("alpha"), stack.service("beta")])
    assert r.returncode == 0, r.stderr
    wait_for(stack.trees_complete, what="process trees in the state file")
    before = stack.state()["services"]["alpha"]
    old_tree = proc.from_records(before["tree"])
    assert len(old_tree) == 3

    os.kill(before["pid"], signal.SIGKILL)

    def restarted():
        s = stack.state()["services"]["alpha"]
        return s if s["pid"] not in (None, before["pid"]) and s["status"] == "ready" else None

    after = wait_for(restarted, what="alpha restarted and ready")
    assert after["restarts"] == 1
    assert "-9" in after["last_exit"]["why"]
    # The dead child's grandchildren (its group and the one in its own session) went with it.
    wait_for(lambda: gone(old_tree), timeout=15, what="the old tree to be gone")
    assert stack.state()["services"]["beta"]["restarts"] == 0
    assert "restarting" in (stack.run_dir / "logs" / "supervisor.log").read_text()


def test_hung_child_is_killed_and_restarted(stack):
    """Alive but not answering (SIGSTOP): the liveness watchdog kills the group, and the service
    is restarted like after a crash."""
    r = stack.up([stack.service("alpha"), stack.service("beta")])
    assert r.returncode == 0, r.stderr
    wait_for(stack.trees_complete, what="process trees in the state file")
    before = stack.state()["services"]["alpha"]
    old_tree = proc.from_records(before["tree"])

    os.kill(before["pid"], signal.SIGSTOP)

    def restarted():
        s = stack.state()["services"]["alpha"]
        return s if s["pid"] not in (None, before["pid"]) and s["status"] == "ready" else None

    after = wait_for(restarted, timeout=30, what="alpha killed as hung, restarted and ready")
    assert after["hung_kills"] == 1 and after["restarts"] == 1
    assert "-9" in after["last_exit"]["why"]
    wait_for(lambda: gone(old_tree), timeout=15, what="the hung tree to be gone")
    assert stack.state()["services"]["beta"]["hung_kills"] == 0
    assert "liveness checks in a row" in (stack.run_dir / "logs" / "supervisor.log").read_text()


def test_crash_loop_is_bounded_and_reported(stack):
    crasher = stack.service("crasher", argv=[sys.executable, "-c",
                                             "import sys; print('boom', flush=True); sys.exit(3)"])
    r = stack.up([crasher], "--max-restarts", "1")
    assert r.returncode == 1
    assert "failed: crasher" in r.stderr and "boom" in r.stderr  # status + log tail
    s = stack.state()["services"]["crasher"]
    assert s["status"] == "failed" and s["restarts"] == 1 and s["pid"] is None


# --- down --------------------------------------------------------------------------------------
def test_down_leaves_no_process_behind(stack):
    r = stack.up([stack.service("alpha"), stack.service("beta")], "--sequential")
    assert r.returncode == 0, r.stderr
    services = stack.state()["services"]
    assert services["beta"]["spawned_at"] >= services["alpha"]["ready_at"]  # one at a time
    wait_for(stack.trees_complete, what="process trees in the state file")
    everything = stack.all_pids()
    assert len(everything) == 2 * 3 + 1  # two trees of three, and the daemon

    r = stack.cli("down")
    assert r.returncode == 0, r.stderr
    assert "no process left" in r.stdout
    assert gone(everything), [p.pid for p in everything if proc.alive(p)]
    assert all(s["status"] == "stopped" for s in stack.state()["services"].values())
    assert stack.cli("status").returncode == 3
    assert stack.cli("down").returncode == 0  # idempotent


def test_down_cleans_up_after_a_dead_supervisor(stack):
    r = stack.up([stack.service("alpha")])
    assert r.returncode == 0, r.stderr
    wait_for(stack.trees_complete, what="process trees in the state file")
    everything = stack.all_pids()
    daemon = stack.state()["supervisor"]["pid"]
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: not proc.alive(psutil.Process(daemon)) if psutil.pid_exists(daemon) else True,
             what="the supervisor to die")

    r = stack.cli("down")
    assert r.returncode == 0, r.stderr
    assert "leftover" in r.stderr
    assert gone(everything)


# --- the stack's own service list --------------------------------------------------------------
def test_default_specs_follow_the_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("ONNXRUNTIME_PORT", "18100")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    settings = StackSettings()
    specs = spec.default_specs(settings, tmp_path)
    assert [s.name for s in specs] == list(spec.DEFAULT_SERVICES)
    by = {s.name: s for s in specs}
    assert by["gateway"].after == ["onnxruntime", "tflite", "tfserving", "torchserve", "aotinductor",
                                   "executorch"]
    assert by["onnxruntime"].ports == {"ONNXRUNTIME_PORT": 18100}
    assert by["onnxruntime"].argv[-4:] == ["--port", "18100", "--model-store",
                                           str(settings.model_store)]
    assert by["onnxruntime"].probe["url"] == "http://127.0.0.1:18100"
    assert by["tfserving"].ports == {"TFSERVING_REST_PORT": settings.tfserving_rest_port,
                                     "TFSERVING_GRPC_PORT": settings.tfserving_grpc_port}
    assert by["gateway"].ports == {"GATEWAY_PORT": settings.gateway_port,
                                   "GATEWAY_GRPC_PORT": settings.gateway_grpc_port,
                                   "GATEWAY_TFS_GRPC_PORT": settings.gateway_tfs_grpc_port}
    assert by["gateway"].argv[-4:-2] == ["--tfs-grpc-port", str(settings.gateway_tfs_grpc_port)]
    assert by["gateway"].argv[-2:] == ["--grpc-port", str(settings.gateway_grpc_port)]
    assert by["torchserve"].probe["kind"] == "torchserve"
    assert by["torchserve"].env["TMPDIR"].startswith(str(tmp_path))
    for s in specs:
        assert s.module == f"services.{s.name}"
        assert s.env["OMP_NUM_THREADS"] == "1" and s.env["ONNXRUNTIME_PORT"] == "18100"
        assert s.env["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)
    assert spec.select(specs, ["gateway", "tflite"]) == [by["tflite"], by["gateway"]]
    with pytest.raises(ValueError, match="nope"):
        spec.select(specs, ["nope"])
    seq = spec.sequential(spec.default_specs(settings, tmp_path))
    assert seq[1].after == ["onnxruntime"]
    monkeypatch.setenv("GATEWAY_GRPC_PORT", "0")  # no gRPC front end: no port to check or free
    monkeypatch.setenv("GATEWAY_TFS_GRPC_PORT", "0")
    (gateway,) = spec.select(spec.default_specs(StackSettings(), tmp_path), ["gateway"])
    assert gateway.ports == {"GATEWAY_PORT": settings.gateway_port}


# --- probes: real inference requests, built from the manifest ----------------------------------
def _fake_store(store: Path) -> None:
    from contract.manifest import (Artifact, Manifest, Parity, Signature, Source,
                                   TensorSpec, save_reference)

    two_inputs = Signature(
        inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 4]),
                TensorSpec(name="ids", datatype="INT64", shape=[-1, -1], role="token_ids",
                           value_range=(0, 100))],
        outputs=[TensorSpec(name="logits", datatype="FP32", shape=[-1, 2]),
                 TensorSpec(name="pooled", datatype="FP32", shape=[-1, 3])])
    for name, fmt, ok in [("good", "onnx", True), ("unchecked", "onnx", False),
                          ("good", "savedmodel", True), ("good", "torchserve", True)]:
        path = store / name / "manifest.json"
        m = (Manifest.model_validate_json(path.read_text()) if path.exists() else Manifest(
            name=name,
            source=Source(framework="pytorch", framework_version="0", architecture="mlp",
                          weights="trained"),
            signature=two_inputs))
        m.artifacts[fmt] = Artifact(
            format=fmt, version=1, path=f"{fmt}/1", bytes=1, sha256="0", route="test",
            converters={}, export_seconds=0.0,
            parity=Parity(ok=ok, runtime="test", batch_sizes=[1], tolerance=1e-5))
        # float64 on disk: the probe sends each input in its manifest datatype.
        m.reference = save_reference(
            store / name,
            {"input": np.arange(12, dtype=np.float64).reshape(3, 4),
             "ids": np.arange(15, dtype=np.float64).reshape(3, 5)},
            {"logits": np.zeros((3, 2), np.float32), "pooled": np.zeros((3, 3), np.float32)}, None)
        m.save(store / name)


class _Recorder(http.server.BaseHTTPRequestHandler):
    calls: list[tuple[str, str, object]] = []
    status = 200

    def _answer(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.calls.append(("GET", self.path, None))
        if self.path.startswith("/models/"):  # TorchServe management API
            self._answer(200, [{"workers": [{"status": "READY"}]}])
        else:
            self._answer(self.status, {"ready": True})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.append(("POST", self.path, body))
        self._answer(self.status, {"outputs": [[0.0, 1.0]]} if self.status == 200
                     else {"error": "loading"})

    def log_message(self, *args):
        pass


@pytest.fixture
def recorder():
    _Recorder.calls, _Recorder.status = [], 200
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_probes_send_one_real_inference_per_model(tmp_path, recorder):
    _fake_store(tmp_path)
    oip_inputs = [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0, 1, 2, 3]},
                  {"name": "ids", "shape": [1, 5], "datatype": "INT64", "data": [0, 1, 2, 3, 4]}]

    Probe({"kind": "oip", "url": recorder, "format": "onnx", "store": str(tmp_path)})()
    # Only the model whose onnx artifact passed parity; the first row of its reference batch.
    assert _Recorder.calls == [("POST", "/v2/models/good/infer", {"inputs": oip_inputs})]

    _Recorder.calls = []
    Probe({"kind": "tfserving", "url": recorder, "format": "savedmodel",
           "store": str(tmp_path)})()
    assert _Recorder.calls == [("POST", "/v1/models/good:predict",
                                {"inputs": {"input": [[0.0, 1.0, 2.0, 3.0]],
                                            "ids": [[0, 1, 2, 3, 4]]}})]

    _Recorder.calls = []
    Probe({"kind": "torchserve", "url": recorder, "format": "torchserve",
           "store": str(tmp_path), "management_url": recorder})()
    assert ("POST", "/predictions/good", {"inputs": oip_inputs}) in _Recorder.calls

    _Recorder.status = 503
    with pytest.raises(NotReady, match="model good: HTTP 503"):
        Probe({"kind": "oip", "url": recorder, "format": "onnx", "store": str(tmp_path)})()


def test_probe_asks_only_the_models_the_server_serves(tmp_path, recorder):
    """STACK_MODELS limits our OIP servers and TorchServe, so it limits their probes: a probe
    asking for a model the server does not serve gets 404 and the service never turns ready."""
    from services.settings import StackSettings

    _fake_store(tmp_path)
    conf = {"kind": "oip", "url": recorder, "format": "onnx", "store": str(tmp_path)}
    Probe({**conf, "models": "good"})()
    assert [path for _, path, _ in _Recorder.calls] == ["/v2/models/good/infer"]
    _Recorder.calls = []
    Probe({**conf, "models": "other"})()  # nothing of it passed here: health only
    assert _Recorder.calls == [("GET", "/v2/health/ready", None)]

    specs = spec.default_specs(StackSettings(stack_models="good"), tmp_path)
    models = {s.name: s.probe.get("models") for s in specs}
    assert models["onnxruntime"] == models["tflite"] == models["torchserve"] == "good"
    assert models["tfserving"] is None  # the stand-in serves the whole store


def test_probe_without_models_falls_back_to_health(tmp_path, recorder):
    p = Probe({"kind": "oip", "url": recorder, "format": "tflite", "store": str(tmp_path)})
    p()
    assert _Recorder.calls == [("GET", "/v2/health/ready", None)]
    assert "health only" in p.note
    with pytest.raises(NotReady, match="refused"):
        Probe({"kind": "http", "url": f"http://127.0.0.1:{free_port()}/"})(timeout=2)


def test_a_busy_process_is_not_taken_for_a_hung_one():
    """A missed liveness check counts only if the process tree used no CPU meanwhile: a server
    parsing a huge body is busy (CPU advances), a SIGSTOPped or deadlocked one is not."""
    from services.supervisor.daemon import busy

    assert busy(10.0, 10.4, interval=0.5 + 1.0)  # 0.4 s of CPU over the miss: working
    assert not busy(10.0, 10.0, interval=1.5)  # stopped: no CPU at all
    assert not busy(10.0, 10.05, interval=1.5)  # a trickle (its timers) is not work


def test_backoff_doubles_only_in_a_crash_loop(tmp_path):
    """A service that served for a while and was killed restarts after the base back-off; the
    wait doubles per exit in a row of processes that never became stable."""
    from services.supervisor.daemon import Daemon, Policy
    from services.supervisor.state import RunDir

    s = spec.ServiceSpec(name="alpha", argv=["true"], host="127.0.0.1", ports={}, url="",
                         probe={"kind": "http", "url": "http://127.0.0.1:1/"})
    daemon = Daemon(RunDir(tmp_path), [s], Policy(backoff_base=0.5, stable_after=10.0,
                                                   max_restarts=10, restart_window=600.0))
    child = daemon.children["alpha"]

    def exit_after(ran: float, ready: bool) -> float:
        now = child.spawned + ran
        child.status = "ready" if ready else "starting"
        daemon._exited(child, now, "killed")
        delay = child.next_start - now
        child.spawned = now + delay
        return delay

    child.spawned = 100.0
    assert exit_after(60.0, ready=True) == 0.5  # served a minute, killed: no penalty
    assert exit_after(1.0, ready=False) == 1.0  # died while starting: a loop begins
    assert exit_after(2.0, ready=True) == 2.0  # ready, but not for stable_after
    assert exit_after(30.0, ready=True) == 0.5  # stable again: the loop is over
    assert exit_after(30.0, ready=True) == 0.5  # repeated kills of a stable service
