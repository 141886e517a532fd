"""Fixtures of the gateway tests: a tiny store, fake backends, gateways as subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from tests.gateway.fakes import FakeBackend, make_store
from tests.conftest import free_port, free_ports

REPO = Path(__file__).resolve().parents[2]


class GatewayProcess:
    def __init__(self, env: dict[str, str], log: Path, api_key: str = "") -> None:
        self.port, self.grpc_port, self.tfs_grpc_port = free_ports(3)
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"  # OIP gRPC (tritonclient.grpc's form)
        self.tfs_grpc_url = f"127.0.0.1:{self.tfs_grpc_port}"  # TF Serving gRPC
        self.log = log
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        full = {**os.environ, "PYTHONPATH": str(REPO), "GATEWAY_API_KEY": api_key, **env}
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.gateway", "--host", "127.0.0.1",
             "--port", str(self.port), "--grpc-port", str(self.grpc_port),
             "--tfs-grpc-port", str(self.tfs_grpc_port)],
            cwd=REPO, env=full, stdout=self._out, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/v2/health/live", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("gateway did not start within 30 s")

    def client(self, timeout: float = 10) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout)

    def wait_ready(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while httpx.get(f"{self.url}/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "gateway not ready"
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


def backend_env(store: Path, onnxruntime: int, tflite: int, tfserving: int, torchserve: int,
                **gateway: str) -> dict[str, str]:
    env = {
        "STACK_MODEL_STORE": str(store),
        "ONNXRUNTIME_HOST": "127.0.0.1", "ONNXRUNTIME_PORT": str(onnxruntime),
        "TFLITE_HOST": "127.0.0.1", "TFLITE_PORT": str(tflite),
        "TFSERVING_HOST": "127.0.0.1", "TFSERVING_REST_PORT": str(tfserving),
        "GATEWAY_TFSERVING_TRANSPORT": "rest",  # the fake speaks TF Serving's REST API only
        "TORCHSERVE_HOST": "127.0.0.1", "TORCHSERVE_INFERENCE_PORT": str(torchserve),
        "TORCHSERVE_MANAGEMENT_PORT": str(torchserve),  # the fake serves both APIs
        "GATEWAY_POLICY": "failover", "GATEWAY_DEFAULT_RUNTIME": "onnxruntime",
        "GATEWAY_RUNTIMES": "onnxruntime,tflite,tfserving,torchserve",
        "GATEWAY_BACKEND_TIMEOUTS": "{}",
        "GATEWAY_MAX_PAYLOAD_BYTES": str(16 * 1024 * 1024),
        "GATEWAY_PROBE_INTERVAL_S": "0.5",
    }
    env.update({k.upper(): v for k, v in gateway.items()})
    return env


def _ports(fakes: dict[str, FakeBackend]) -> list[int]:
    return [fakes[r].port for r in ("onnxruntime", "tflite", "tfserving", "torchserve")]


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="session")
def fakes() -> Iterator[dict[str, FakeBackend]]:
    f = {
        "onnxruntime": FakeBackend("oip").start(),
        "tflite": FakeBackend("oip").start(),
        "tfserving": FakeBackend("tfserving", served_by="tfserving-standin").start(),
        "torchserve": FakeBackend("torchserve").start(),
    }
    yield f
    for b in f.values():
        b.stop()


@pytest.fixture(scope="session")
def gateway(store: Path, fakes: dict[str, FakeBackend],
            tmp_path_factory) -> Iterator[GatewayProcess]:
    """All four fake backends healthy, failover policy, default onnxruntime, no API key."""
    env = backend_env(store, *_ports(fakes))
    g = GatewayProcess(env, tmp_path_factory.mktemp("gw") / "gateway.log")
    g.wait_ready()
    yield g
    g.stop()


@pytest.fixture(scope="session")
def strict_gateway(store: Path, fakes: dict[str, FakeBackend],
                   tmp_path_factory) -> Iterator[GatewayProcess]:
    """API key "s3cret" and a 4 KiB payload limit."""
    env = backend_env(store, *_ports(fakes), gateway_max_payload_bytes="4096")
    g = GatewayProcess(env, tmp_path_factory.mktemp("gw") / "gateway.log", api_key="s3cret")
    g.wait_ready()
    yield g
    g.stop()


@pytest.fixture(scope="session")
def broken_gateway(store: Path, tmp_path_factory) -> Iterator[tuple[GatewayProcess, dict]]:
    """onnxruntime: closed port; tflite: accepts, never answers (0.5 s timeout); tfserving: 500s;
    torchserve: healthy. Failover order onnxruntime -> torchserve -> tflite -> tfserving."""
    hang, err, ok = FakeBackend("oip"), FakeBackend("tfserving"), FakeBackend("torchserve")
    hang.mode, err.mode = "hang", "error"
    for b in (hang, err, ok):
        b.start()
    env = backend_env(store, free_port(), hang.port, err.port, ok.port,
                      gateway_runtimes="onnxruntime,torchserve,tflite,tfserving",
                      gateway_backend_timeouts='{"tflite": 0.5}',
                      gateway_breaker_failures="1000")
    g = GatewayProcess(env, tmp_path_factory.mktemp("gw") / "gateway.log")
    yield g, {"tflite": hang, "tfserving": err, "torchserve": ok}
    g.stop()
    for b in (hang, err, ok):
        b.stop()
