"""Backend clients, one per protocol of the runtime registry (contract/runtimes.py);
make_backends builds the configured set."""

from __future__ import annotations

from typing import Mapping

from contract.manifest import Manifest
from contract.runtimes import RUNTIMES
from services.gateway.backends.base import Backend
from services.gateway.backends.oip import OIPBackend
from services.gateway.backends.tfserving import TFServingBackend
from services.gateway.backends.torchserve import TorchServeBackend
from services.gateway.settings import GatewaySettings

__all__ = ["Backend", "OIPBackend", "TFServingBackend", "TorchServeBackend", "make_backends"]

BACKEND_OF_PROTOCOL: dict[str, type[Backend]] = {
    "oip": OIPBackend,
    "tfserving": TFServingBackend,
    "torchserve": TorchServeBackend,
}


def make_backends(settings: GatewaySettings, store: Mapping[str, Manifest]) -> dict[str, Backend]:
    """One backend per configured runtime. It reaches the runtime's own server, which serves
    every model under its store name; or, under KServe, each routable model (artifact passed
    parity: what deploy/ renders an InferenceService for) at its own predictor, under the name
    the predictor knows it by (settings.predictor)."""
    backends: dict[str, Backend] = {}
    for rt in settings.runtimes:
        protocol = settings.protocol(rt)
        extra = _protocol_settings(settings, protocol)
        url: str | None = settings.runtime_url(rt)
        predictors = None
        if settings.kserve:
            url, fmt = None, RUNTIMES[rt].format
            predictors = {m.name: settings.predictor(m.name, rt)
                          for m in store.values() if m.passed(fmt)}  # fmt: skip
        backends[rt] = BACKEND_OF_PROTOCOL[protocol](
            rt,
            url,
            predictors=predictors,
            timeout=settings.backend_timeout(rt),
            connect_timeout=settings.gateway_connect_timeout_s,
            max_connections=settings.gateway_max_connections,
            probe_timeout=settings.gateway_probe_timeout_s,
            **extra,
        )
    return backends


def _protocol_settings(settings: GatewaySettings, protocol: str) -> dict[str, object]:
    """What one protocol's backend needs beyond the common settings."""
    if protocol == "torchserve":
        return {"management_url": settings.torchserve_management_url}
    if protocol == "tfserving":  # gRPC messages up to what our servers take as a body
        return {"grpc_target": settings.tfserving_grpc_target,
                "grpc_min_bytes": settings.gateway_tfserving_grpc_min_bytes,
                "max_message_bytes": settings.server_max_body_bytes}
    return {}
