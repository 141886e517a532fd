"""A trivial endpoint for the client ceiling: a raw ASGI app under uvicorn (uvloop, httptools) that
drains the request and returns one fixed OIP response, the source model's outputs for reference
sample 0 (encoded by contract/codec.py). Locust runs against it with --via ceiling --samples 1, so the client does exactly the work
of a real run (send the same body, parse, check) while the server does almost none.

    python -m loadtests.ceiling --model digits-cnn-torch [--port 8090] [--model-store DIR]
"""

from __future__ import annotations

from pathlib import Path

import typer
import uvicorn

from contract.codec import InferResponse
from contract.manifest import load_manifest
from loadtests.payloads import reference_samples
from services.settings import get_settings


def response_body(store: Path, model: str) -> bytes:
    """The OIP answer to reference sample 0 (every output, as the source model gave it)."""
    manifest = load_manifest(Path(store) / model)
    (sample,) = reference_samples(manifest, store, 1)
    outputs = {s.name: sample.outputs[s.name].astype(s.numpy_dtype, copy=False)
               for s in manifest.signature.outputs}  # fmt: skip
    return InferResponse.from_arrays(model, outputs).to_oip()[0]


def make_app(body: bytes):
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-served-by", b"ceiling"),
    ]

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def main(
    model: str = typer.Option(..., help="model whose reference sample 0 output is returned"),
    host: str = "127.0.0.1",
    port: int = 8090,
    model_store: Path = typer.Option(None, help="default: STACK_MODEL_STORE"),
):
    store = model_store or get_settings().model_store
    app = make_app(response_body(store, model))
    uvicorn.run(app, host=host, port=port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False, lifespan="on")


if __name__ == "__main__":
    typer.run(main)
