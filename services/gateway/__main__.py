"""python -m services.gateway [--host H] [--port P] [--grpc-port G] [--tfs-grpc-port T]"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import uvicorn
from pydantic import ValidationError
from pydantic_settings import SettingsError

from services.gateway.app import create_app
from services.gateway.exposure import PUBLISH_ENV, exposure_error
from services.gateway.settings import GatewaySettings


def load_settings() -> GatewaySettings:
    """The settings, or exit with one line per problem (no pydantic dump on the terminal)."""
    try:
        return GatewaySettings()
    except ValidationError as e:
        problems = [f"{'.'.join(map(str, err['loc'])) or 'settings'}: {err['msg']}"
                    for err in e.errors()]
    except SettingsError as e:  # a value that is not the JSON its field needs
        cause = f" ({e.__cause__})" if e.__cause__ else ""
        problems = [f"{e}{cause}: set it to JSON, e.g. '{{}}' for none"]
    print("gateway settings (services/stack.env or the environment):\n  "
          + "\n  ".join(problems), file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    settings = load_settings()
    if error := exposure_error(os.environ.get(PUBLISH_ENV, ""), settings.gateway_api_key):
        print(error, file=sys.stderr)
        raise SystemExit(2)
    p = argparse.ArgumentParser(prog="python -m services.gateway", description=__doc__)
    p.add_argument("--host", default=settings.stack_bind_host)
    p.add_argument("--port", type=int, default=settings.gateway_port)
    p.add_argument("--grpc-port", type=int, default=settings.gateway_grpc_port,
                   help="OIP gRPC port on the same host (0: no gRPC)")
    p.add_argument("--tfs-grpc-port", type=int, default=settings.gateway_tfs_grpc_port,
                   help="TF Serving gRPC port on the same host (0: none)")
    args = p.parse_args(argv)
    settings = settings.model_copy(update={"gateway_grpc_port": args.grpc_port,
                                           "gateway_tfs_grpc_port": args.tfs_grpc_port})
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_app(settings, grpc_host=args.host),
        host=args.host,
        port=args.port,
        loop="uvloop",
        workers=1,
        access_log=False,  # the gateway writes its own JSON access log
        proxy_headers=False,  # nothing in front of it rewrites client addresses
        server_header=False,
        log_level="warning",
        **settings.uvicorn_bounds(),  # header/body deadlines, keep-alive, connection cap
    )


if __name__ == "__main__":
    main()
