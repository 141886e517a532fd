"""A trivial endpoint for the client ceiling: a raw ASGI app under uvicorn (uvloop, httptools) that
drains the request and returns one fixed OIP response, the source model's output for reference
sample 0. Locust runs against it with --via ceiling --samples 1, so the client does exactly the work
of a real run (send the same body, parse, check) while the server does almost none.

    python -m loadtests.ceiling --model digits-cnn-torch [--port 8090] [--model-store DIR]
"""

from __future__ import annotations

from pathlib import Path

import orjson
import typer
import uvicorn

from model_store.manifest import load_manifest
from services.common.codecs import encode_json_tensor
from services.settings import get_settings


def response_body(store: Path, model: str) -> bytes:
    manifest = load_manifest(Path(store) / model)
    _inputs, outputs, _labels = manifest.load_reference(store)
    name = manifest.signature.outputs[0].name
    dtype = manifest.signature.outputs[0].numpy_dtype
    tensor = encode_json_tensor(name, outputs[:1].astype(dtype))
    return orjson.dumps({"model_name": model, "outputs": [tensor]})


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
