"""python -m loadtests.healthcheck: the HEALTHCHECK of the Locust image (loadtests/Dockerfile).

Healthy when this container's Locust answers in the role it runs: a master listens for its
workers (LOCUST_MASTER_BIND_PORT, 5557), a worker holds a connection to its master
(LOCUST_MASTER_PORT, 5557), a standalone Locust serves its web UI (LOCUST_WEB_PORT, 8089). A Locust
process that is alive but lost its master, or never bound its port, is unhealthy. Exit 0 or 1 with
one line, as Docker expects.
"""

from __future__ import annotations

import os
import sys

import psutil


def _port(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def role(connections: list) -> str | None:
    """Which role these TCP connections (psutil.net_connections) show Locust answering in."""
    listening = {c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN}
    if _port("LOCUST_MASTER_BIND_PORT", 5557) in listening:
        return "master"
    master = _port("LOCUST_MASTER_PORT", 5557)
    if any(c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port == master
           for c in connections):  # fmt: skip
        return "worker"
    if _port("LOCUST_WEB_PORT", 8089) in listening:
        return "web UI"
    return None


def main() -> int:
    found = role(psutil.net_connections("tcp"))
    if found is None:
        print("unhealthy: no Locust master port, master connection or web UI", file=sys.stderr)
        return 1
    print(f"healthy: Locust {found}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
