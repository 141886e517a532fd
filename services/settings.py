"""Typed view of services/stack.env, the one configuration of local mode and compose."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Iterable

from pydantic_settings import BaseSettings, SettingsConfigDict

from contract.runtimes import RUNTIMES

STACK_ENV = Path(__file__).with_name("stack.env")
REPO_ROOT = Path(__file__).resolve().parent.parent


class StackSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=STACK_ENV, extra="ignore", case_sensitive=False)

    stack_model_store: Path = Path("model_store")
    stack_bind_host: str = "127.0.0.1"
    # Serve only these models (NAME[,NAME...]; empty: all): our OIP servers and TorchServe, as
    # their --models option. Under KServe each InferenceService serves one model of the store.
    stack_models: str = ""

    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    gateway_grpc_port: int = 8001  # OIP gRPC (Triton's convention); 0: no gRPC front end
    # TF Serving gRPC (PredictionService, ModelService). Not TF Serving's 8500: locally the TF
    # Serving stand-in has that one (TFSERVING_GRPC_PORT) on the same host. 0: off.
    gateway_tfs_grpc_port: int = 8510
    onnxruntime_host: str = "127.0.0.1"
    onnxruntime_port: int = 8100
    tflite_host: str = "127.0.0.1"
    tflite_port: int = 8200
    tfserving_host: str = "127.0.0.1"
    tfserving_grpc_port: int = 8500
    tfserving_rest_port: int = 8501
    torchserve_host: str = "127.0.0.1"
    torchserve_inference_port: int = 8080
    torchserve_management_port: int = 8081
    torchserve_metrics_port: int = 8082
    torchserve_grpc_inference_port: int = 7070
    torchserve_grpc_management_port: int = 7071
    aotinductor_host: str = "127.0.0.1"
    aotinductor_port: int = 8300
    executorch_host: str = "127.0.0.1"
    executorch_port: int = 8400

    omp_num_threads: int = 1
    runtime_intra_op_threads: int = 1
    runtime_inter_op_threads: int = 1

    batch_max_size: int = 8
    batch_max_delay_ms: float = 2.0
    batch_inline_below_ms: float = 0.5  # expected run time under which a batch runs on the loop
    run_max_batch: int = 32  # samples per model run: larger requests run in slices (memory bound)

    torchserve_workers: int = 1
    torchserve_batch_size: int = 1
    torchserve_max_batch_delay_ms: int = 5

    # Bounds of every HTTP server we run (services/common/http_bounds.py).
    http_header_timeout_s: float = 10.0  # connection opened / request begun -> headers complete
    http_body_timeout_s: float = 10.0  # headers -> whole body
    http_keepalive_timeout_s: float = 5.0  # idle between requests
    http_max_connections: int = 512  # concurrent connections per server; beyond: 503
    server_max_body_bytes: int = 96 * 1024 * 1024  # model servers: 3 x the gateway's (stack.env)
    max_batch_size: int = 256  # samples per request (a model's fixed batch dimension may be less)

    gateway_timeout_s: float = 10.0
    gateway_connect_timeout_s: float = 1.0
    gateway_max_payload_bytes: int = 32 * 1024 * 1024
    gateway_policy: str = "failover"
    gateway_default_runtime: str = "onnxruntime"
    gateway_api_key: str = ""

    def runtime_url(self, runtime: str) -> str:
        """Base URL of a runtime's own inference API (its registry entry's first port: TF
        Serving's REST port, TorchServe's inference port)."""
        r = RUNTIMES[runtime]
        return f"http://{getattr(self, r.host_key)}:{getattr(self, r.port_keys[0])}"

    def uvicorn_bounds(self) -> dict:
        from services.common.http_bounds import uvicorn_config

        return uvicorn_config(header_timeout=self.http_header_timeout_s,
                              keepalive_timeout=self.http_keepalive_timeout_s,
                              max_connections=self.http_max_connections)

    @property
    def model_store(self) -> Path:
        p = self.stack_model_store
        return p if p.is_absolute() else REPO_ROOT / p


class UnknownModels(ValueError):
    """--models / STACK_MODELS names a model the server cannot serve."""


def select_models(wanted: str, available: Iterable[str], where: str) -> list[str]:
    """The models a server serves: those `wanted` names (NAME[,NAME...], the --models /
    STACK_MODELS format), or every available one when it is empty. `where` completes the error
    ("among the onnx artifacts of /models"). Raises UnknownModels naming the unknown ones and the
    available ones."""
    available = list(available)
    names = list(dict.fromkeys(n.strip() for n in wanted.split(",") if n.strip()))
    if not names:
        return available
    unknown = [n for n in names if n not in available]
    if unknown:
        have = ", ".join(sorted(available)) or "none"
        raise UnknownModels(f"no model {', '.join(unknown)} {where}; available: {have}")
    return names


@lru_cache
def get_settings() -> StackSettings:
    return StackSettings()
