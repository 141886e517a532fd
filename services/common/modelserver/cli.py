"""The command line shared by `python -m services.onnxruntime` and `python -m services.tflite`."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from pathlib import Path

from services.settings import UnknownModels, get_settings

log = logging.getLogger("services.modelserver")


def main(platform: str, runtime: str, argv: list[str] | None = None) -> int:
    """platform: "onnxruntime" | "tflite" (names its settings); runtime: "module:ModelRuntime
    subclass", imported only after OMP_NUM_THREADS is set."""
    settings = get_settings()
    parser = argparse.ArgumentParser(
        prog=f"python -m services.{platform}",
        description=f"Open Inference Protocol v2 REST server for the {platform} artifacts of a "
        "model store.",
    )
    parser.add_argument("--host", default=settings.stack_bind_host)
    parser.add_argument("--port", type=int, default=getattr(settings, f"{platform}_port"))
    parser.add_argument("--model-store", type=Path, default=settings.model_store)
    parser.add_argument("--models", default=settings.stack_models, metavar="NAME[,NAME...]",
                        help="serve only these models of the store (default: all; STACK_MODELS)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    args = parser.parse_args(argv)

    os.environ["OMP_NUM_THREADS"] = str(settings.omp_num_threads)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import uvicorn

    from services.common.modelserver.app import ModelServer, create_app
    from services.common.modelserver.runtime import load_models

    module, _, cls_name = runtime.partition(":")
    runtime_cls = getattr(importlib.import_module(module), cls_name)
    try:
        models, failed = load_models(runtime_cls, args.model_store, settings, args.models)
    except UnknownModels as e:
        sys.exit(f"{parser.prog}: --models: {e}")
    if not models:
        log.warning("no %s models in %s", runtime_cls.artifact_format, args.model_store)
    server = ModelServer(platform, runtime_cls.library_version(), models, failed, settings)
    config = uvicorn.Config(
        create_app(server),
        host=args.host,
        port=args.port,
        loop="uvloop",
        ws="none",
        lifespan="on",
        workers=1,
        access_log=False,
        server_header=False,
        log_level=args.log_level,
        timeout_graceful_shutdown=30,
        **settings.uvicorn_bounds(),  # header/body deadlines, keep-alive, connection cap
    )
    log.info(
        "%s: serving %d model(s) from %s on http://%s:%d (OIP v2 REST; batch_max_size=%d, "
        "batch_max_delay_ms=%g, OMP_NUM_THREADS=%s)",
        platform, len(models), args.model_store, args.host, args.port, settings.batch_max_size,
        settings.batch_max_delay_ms, os.environ["OMP_NUM_THREADS"],
    )
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal to the handler
    # that was installed before it started; a no-op there makes a graceful stop exit with 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    uvicorn.Server(config).run()
    return 0
