"""Backend clients, one per protocol; make_backends builds the configured set."""

from __future__ import annotations

from services.gateway.backends.base import Backend
from services.gateway.backends.oip import OIPBackend
from services.gateway.backends.tfserving import TFServingBackend
from services.gateway.backends.torchserve import TorchServeBackend
from services.gateway.settings import GatewaySettings

__all__ = ["Backend", "OIPBackend", "TFServingBackend", "TorchServeBackend", "make_backends"]


def make_backends(settings: GatewaySettings) -> dict[str, Backend]:
    backends: dict[str, Backend] = {}
    for rt in settings.runtimes:
        common = dict(
            timeout=settings.backend_timeout(rt),
            connect_timeout=settings.gateway_connect_timeout_s,
            max_connections=settings.gateway_max_connections,
            probe_timeout=settings.gateway_probe_timeout_s,
        )
        url = settings.runtime_url(rt)
        if rt == "tfserving":
            backends[rt] = TFServingBackend(rt, url, **common)
        elif rt == "torchserve":
            backends[rt] = TorchServeBackend(
                rt, url, management_url=settings.torchserve_management_url, **common
            )
        else:
            backends[rt] = OIPBackend(rt, url, **common)
    return backends
