"""Gateway configuration: services/stack.env + environment, on top of the stack's settings."""

from __future__ import annotations

from pydantic import field_validator, model_validator

from contract.runtimes import RUNTIME_OF_FORMAT
from services.settings import StackSettings

RUNTIMES: tuple[str, ...] = tuple(RUNTIME_OF_FORMAT.values())
POLICIES = ("default", "failover")


class GatewaySettings(StackSettings):
    # Backends the gateway talks to; the order is also the failover order after the default.
    gateway_runtimes: str = "onnxruntime,tflite,tfserving,torchserve"
    # Per-runtime request timeout overrides, e.g. GATEWAY_BACKEND_TIMEOUTS='{"torchserve": 30}'.
    gateway_backend_timeouts: dict[str, float] = {}
    gateway_max_connections: int = 64  # keep-alive pool per backend
    gateway_probe_interval_s: float = 2.0
    gateway_probe_timeout_s: float = 1.0
    gateway_breaker_failures: int = 3  # consecutive connection failures that open the circuit
    gateway_breaker_reset_s: float = 5.0  # open -> half-open (one trial request) after this
    gateway_access_log: bool = True

    @field_validator("gateway_policy")
    @classmethod
    def _policy(cls, v: str) -> str:
        if v not in POLICIES:
            raise ValueError(f"gateway_policy must be one of {POLICIES}, not {v!r}")
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
        return self

    @property
    def runtimes(self) -> list[str]:
        return [r.strip() for r in self.gateway_runtimes.split(",") if r.strip()]

    @property
    def torchserve_management_url(self) -> str:
        return f"http://{self.torchserve_host}:{self.torchserve_management_port}"

    def backend_timeout(self, runtime: str) -> float:
        return self.gateway_backend_timeouts.get(runtime, self.gateway_timeout_s)
