"""The floor of the gateway overhead: a proxy that does nothing but forward.

    python -m loadtests.passthrough --backend http://127.0.0.1:8100 --port 8009

Same parts as the gateway (uvicorn with uvloop + httptools, a raw ASGI app, the gateway's own
HTTPPool to the backend) and none of its work: no routing, validation, protocol conversion,
metrics, access log or auth; the body and the two OIP headers go through untouched. What it
costs per request is what any Python gateway built from these parts costs on this machine, so
loadtests.gateway_overhead measures it beside the gateway (`--floor`). A measuring instrument,
not a service: never expose it.
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import urlsplit

import uvicorn

from services.gateway.backends.http import HTTPPool

FORWARDED = (b"content-type", b"inference-header-content-length")
RETURNED = ("content-type", "inference-header-content-length")


class Passthrough:
    def __init__(self, backend: str) -> None:
        u = urlsplit(backend)
        self.pool = HTTPPool(u.hostname or "127.0.0.1", u.port or 80, max_connections=64,
                             connect_timeout=5.0)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await self.lifespan(receive, send)
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {k.decode(): v.decode() for k, v in scope["headers"] if k in FORWARDED}
        status, got, data = await self.pool.request(scope["method"], scope["path"], body, headers)
        out = [(k.encode(), got[k].encode()) for k in RETURNED if k in got]
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": data})

    async def lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":  # the pool binds to the loop on first use
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtests.passthrough", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", required=True, help="base URL of the OIP server to forward to")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    uvicorn.run(Passthrough(args.backend), host="127.0.0.1", port=args.port, loop="uvloop",
                http="httptools", access_log=False, server_header=False, log_level="warning")


if __name__ == "__main__":
    main()
