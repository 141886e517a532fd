"""The floor of any Python HTTP server here: an endpoint that reads the request and sends back a
fixed answer, on the same uvicorn (uvloop + httptools) our model servers and the gateway run on.

    python -m loadtests.fixed_answer --answer answer.bin --port 8009 [--header-length N]

loadtests.gateway_overhead (`--reference`) records the model server's real answer to its request
into --answer and measures this beside the others: the CPU per request a server costs here
before it does any work, so the other figures can be read as multiples of it on a machine of
any speed. A measuring instrument, not a service: never expose it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import uvicorn


class FixedAnswer:
    def __init__(self, body: bytes, header_length: int | None) -> None:
        self.start = {"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json" if header_length is None
             else b"application/octet-stream"),
            (b"content-length", str(len(body)).encode()),
            *([] if header_length is None
              else [(b"inference-header-content-length", str(header_length).encode())]),
        ]}  # fmt: skip
        self.body = {"type": "http.response.body", "body": body}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # no lifespan work
        more = True
        while more:  # read the whole request, as a server must
            more = (await receive()).get("more_body", False)
        await send(self.start)
        await send(self.body)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtests.fixed_answer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--answer", type=Path, required=True, help="the response body to send")
    p.add_argument("--header-length", type=int, help="for a binary-extension answer")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    app = FixedAnswer(args.answer.read_bytes(), args.header_length)
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                lifespan="off", access_log=False, server_header=False, log_level="warning")


if __name__ == "__main__":
    main()
