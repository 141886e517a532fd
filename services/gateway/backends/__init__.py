"""Backend clients, one per protocol of the runtime registry (contract/runtimes.py);
make_backends builds the configured set."""

from __future__ import annotations

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


def make_backends(settings: GatewaySettings) -> dict[str, Backend]:
    backends: dict[str, Backend] = {}
    for rt in settings.runtimes:
        protocol = RUNTIMES[rt].protocol
        extra = {"management_url": settings.torchserve_management_url} if protocol == "torchserve" else {}
        backends[rt] = BACKEND_OF_PROTOCOL[protocol](
            rt,
            settings.runtime_url(rt),
            timeout=settings.backend_timeout(rt),
            connect_timeout=settings.gateway_connect_timeout_s,
            max_connections=settings.gateway_max_connections,
            probe_timeout=settings.gateway_probe_timeout_s,
            **extra,
        )
    return backends
