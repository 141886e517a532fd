"""Gateway configuration: services/stack.env + environment, on top of the stack's settings."""

from __future__ import annotations

import json
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import field_validator, model_validator
from pydantic_settings import NoDecode

from contract.runtimes import RUNTIME_OF_FORMAT, isvc_name, kserve_remote_name, predictor_url
from contract.runtimes import RUNTIMES as REGISTRY
from services.settings import StackSettings

RUNTIMES: tuple[str, ...] = tuple(RUNTIME_OF_FORMAT.values())
POLICIES = ("default", "failover")
TFSERVING_TRANSPORTS = ("rest", "grpc")


class GatewaySettings(StackSettings):
    # Backends the gateway talks to; the order is also the failover order after the default.
    gateway_runtimes: str = ",".join(REGISTRY)
    # Per-runtime request timeout overrides, e.g. GATEWAY_BACKEND_TIMEOUTS='{"torchserve": 30}'.
    gateway_backend_timeouts: dict[str, float] = {}
    gateway_max_connections: int = 64  # keep-alive pool per backend
    # A liveness probe of every backend every interval; probe_failures misses in a row (no
    # answer within probe_timeout) open its circuit: a hung backend is out within ~1.5-2 s.
    gateway_probe_interval_s: float = 0.5
    gateway_probe_timeout_s: float = 0.75
    gateway_probe_failures: int = 2
    gateway_breaker_failures: int = 3  # consecutive connection failures that open the circuit
    gateway_breaker_reset_s: float = 5.0  # open -> half-open (one trial request) after this
    gateway_access_log: bool = True
    # KServe: the namespace of the InferenceServices (one per (model, runtime) pair); each model is
    # then reached at its own predictor. Empty: the stack's own runtimes (runtime_url).
    gateway_kserve_namespace: str = ""
    # The predictor's base URL under KServe, with {isvc} {model} {runtime} {namespace}. Empty:
    # KServe's raw-deployment Service, contract.runtimes.predictor_url
    # (http://{isvc}-predictor.{namespace}.svc.cluster.local).
    gateway_kserve_url_template: str = ""
    # Shadow traffic (shadow.py), per model or "*": {"<model>": {"fraction": 0.1, "runtime":
    # "tflite"}}; runtime optional (default: the first other parity-passed runtime). {} or empty
    # = off. NoDecode: the validator below reads the JSON itself, so an empty value means off.
    gateway_shadow: Annotated[dict[str, dict[str, float | str]], NoDecode] = {}
    gateway_shadow_max_in_flight: int = 4  # shadow requests at once; beyond: skipped, counted
    # How the gateway sends inferences to TF Serving: "grpc" (PredictionService on
    # TFSERVING_GRPC_PORT, tensors as raw bytes) or "rest" (JSON on TFSERVING_REST_PORT). gRPC
    # measured cheaper (services/gateway/README.md, "Backend transports"). Requests that came
    # through the TF Serving REST API, health and metadata use REST either way, and so does
    # KServe (its TF Serving predictors expose REST only).
    gateway_tfserving_transport: str = "grpc"
    # With grpc: requests whose input tensors are smaller go over REST. Measured on the stand-in,
    # gRPC's fixed cost per call (grpc.aio on both sides) exceeds the JSON it saves below ~1-2 KiB
    # (one digit, 256 B: REST cheaper; 32 digits, 8 KiB: gRPC / 3.5 CPU; README.md). 0: every
    # request over gRPC (the real tensorflow_model_server, C++, may well want that: re-measure).
    gateway_tfserving_grpc_min_bytes: int = 2048

    @field_validator("gateway_policy")
    @classmethod
    def _policy(cls, v: str) -> str:
        if v not in POLICIES:
            raise ValueError(f"gateway_policy must be one of {POLICIES}, not {v!r}")
        return v

    @field_validator("gateway_shadow", mode="before")
    @classmethod
    def _shadow_json(cls, v: object) -> object:
        if not isinstance(v, str):
            return v
        if not v.strip():
            return {}
        try:
            return json.loads(v)
        except ValueError as e:
            raise ValueError(f"gateway_shadow is not JSON ({e}); expected e.g. "
                             '{"*": {"fraction": 0.01}} or empty for off') from None

    @field_validator("gateway_tfserving_transport")
    @classmethod
    def _tfs_transport(cls, v: str) -> str:
        if v not in TFSERVING_TRANSPORTS:
            raise ValueError(f"gateway_tfserving_transport must be one of {TFSERVING_TRANSPORTS}, "
                             f"not {v!r}")
        return v

    @field_validator("gateway_kserve_url_template")
    @classmethod
    def _template(cls, v: str) -> str:
        if not v:
            return v
        try:
            url = urlsplit(v.format(isvc="m-r", model="m", runtime="r", namespace="ns"))
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"gateway_kserve_url_template {v!r}: {type(e).__name__} {e} "
                             "(placeholders: {isvc} {model} {runtime} {namespace})") from None
        if url.scheme != "http" or not url.hostname or url.path not in ("", "/") or url.query:
            raise ValueError(f"gateway_kserve_url_template {v!r} must give http://host[:port]")
        return v

    @model_validator(mode="after")
    def _runtimes(self) -> "GatewaySettings":
        unknown = set(self.runtimes) - set(RUNTIMES)
        if unknown:
            raise ValueError(f"gateway_runtimes: unknown {sorted(unknown)}; known: {RUNTIMES}")
        if self.gateway_default_runtime not in self.runtimes:
            raise ValueError(
                f"gateway_default_runtime {self.gateway_default_runtime!r} is not in "
                f"gateway_runtimes {self.runtimes}"
            )
        if "tfserving" in self.runtimes and self.tfserving_grpc_target \
                and not self.tfserving_grpc_port:
            raise ValueError("gateway_tfserving_transport 'grpc' needs TFSERVING_GRPC_PORT (it is "
                             "0: TF Serving without gRPC); or set GATEWAY_TFSERVING_TRANSPORT=rest")
        for model, rule in self.gateway_shadow.items():
            fraction, runtime = rule.get("fraction", 0.0), rule.get("runtime")
            if set(rule) - {"fraction", "runtime"} or not isinstance(fraction, (int, float)) \
                    or not 0.0 <= fraction <= 1.0:
                raise ValueError(f"gateway_shadow[{model!r}] = {rule}: expected "
                                 '{"fraction": 0..1, "runtime": "<runtime>" (optional)}')
            if runtime is not None and runtime not in self.runtimes:
                raise ValueError(f"gateway_shadow[{model!r}]: runtime {runtime!r} is not in "
                                 f"gateway_runtimes {self.runtimes}")
        return self

    @property
    def runtimes(self) -> list[str]:
        return [r.strip() for r in self.gateway_runtimes.split(",") if r.strip()]

    @property
    def kserve(self) -> bool:
        return bool(self.gateway_kserve_namespace)

    @property
    def tfserving_grpc_target(self) -> str | None:
        """host:port of TF Serving's gRPC API when inferences go there, else None (REST)."""
        if self.kserve or self.gateway_tfserving_transport != "grpc":
            return None
        return f"{self.tfserving_host}:{self.tfserving_grpc_port}"

    @property
    def torchserve_management_url(self) -> str:
        """Empty under KServe: each predictor keeps TorchServe's management API on its pod's
        loopback (services/torchserve/config.py), so readiness is a real inference."""
        if self.kserve:
            return ""
        return f"http://{self.torchserve_host}:{self.torchserve_management_port}"

    def protocol(self, runtime: str) -> str:
        """What the gateway speaks to a runtime: its own server's, or its KServe predictors'."""
        r = REGISTRY[runtime]
        return r.kserve.protocol if self.kserve else r.protocol

    def predictor(self, model: str, runtime: str) -> tuple[str, str]:
        """Under KServe: (base URL of the (model, runtime) InferenceService's predictor, the
        model's name there)."""
        ns, template = self.gateway_kserve_namespace, self.gateway_kserve_url_template
        if template:
            url = template.format(isvc=isvc_name(model, runtime), model=model, runtime=runtime,
                                  namespace=ns)  # fmt: skip
        else:
            url = predictor_url(model, runtime, ns)
        return url, kserve_remote_name(model, runtime)

    def backend_timeout(self, runtime: str) -> float:
        return self.gateway_backend_timeouts.get(runtime, self.gateway_timeout_s)
