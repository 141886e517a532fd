"""The gateway refuses to be published beyond loopback without an API key.

compose publishes the gateway's REST and gRPC ports (8000, 8001, 8510) on
${GATEWAY_PUBLISH_ADDRESS:-127.0.0.1} and passes the same address into the container, where the
gateway itself binds 0.0.0.0 (its private network): only the published address says who can reach
it. The check runs before either listener starts, so a refusal keeps both closed. Unset (local
mode, Kubernetes), nothing is checked.
"""

from __future__ import annotations

import ipaddress

PUBLISH_ENV = "GATEWAY_PUBLISH_ADDRESS"


def is_loopback(address: str) -> bool:
    host = address.strip().removeprefix("[").removesuffix("]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def exposure_error(publish_address: str, api_key: str) -> str | None:
    """One line saying what is wrong and what to set, or None when the gateway may start."""
    if not publish_address.strip() or api_key or is_loopback(publish_address):
        return None
    return (f"gateway: refusing to start: {PUBLISH_ENV}={publish_address} publishes it beyond "
            "loopback and GATEWAY_API_KEY is empty (anyone who can reach it could use it); "
            f"set GATEWAY_API_KEY (compose: in services/stack.env), or {PUBLISH_ENV}=127.0.0.1")
