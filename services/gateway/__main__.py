"""python -m services.gateway [--host H] [--port P]"""

from __future__ import annotations

import argparse
import logging

import uvicorn

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings


def main(argv: list[str] | None = None) -> None:
    settings = GatewaySettings()
    p = argparse.ArgumentParser(prog="python -m services.gateway", description=__doc__)
    p.add_argument("--host", default=settings.stack_bind_host)
    p.add_argument("--port", type=int, default=settings.gateway_port)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        workers=1,
        access_log=False,  # the gateway writes its own JSON access log
        proxy_headers=False,  # nothing in front of it rewrites client addresses
        server_header=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
