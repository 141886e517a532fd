"""The TF Serving stand-in: TF Serving's REST and gRPC APIs over TensorFlow sessions (the
SavedModel loader + one callable per signature, as tensorflow_model_server runs them), for machines
without tensorflow_model_server. It names itself "tfserving-standin" in every response."""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import uvicorn

from services.settings import StackSettings
from services.tfserving.config import savedmodel_entries

log = logging.getLogger("tfserving-standin")


def session_config(settings: StackSettings):
    """TensorFlow's thread pools, as tensorflow_model_server's --tensorflow_intra_op_parallelism /
    --tensorflow_inter_op_parallelism set them: the first session creates them for the process."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=settings.runtime_intra_op_threads,
        inter_op_parallelism_threads=settings.runtime_inter_op_threads,
    )


async def serve(
    store: Path, host: str, rest_port: int, grpc_port: int | None, settings: StackSettings
) -> None:
    config = session_config(settings)
    import tensorflow as tf

    from services.common.heap import freeze_startup_heap
    from services.tfserving import grpc_service, rest
    from services.tfserving.models import Registry
    from services.tfserving.predictor import Predictor

    entries = savedmodel_entries(store)
    log.warning(
        "TF Serving STAND-IN (tensorflow_model_server not on PATH): TF Serving's REST%s API over "
        "TensorFlow %s sessions, %d model(s) from %s",
        " and gRPC" if grpc_port else "", tf.__version__, len(entries), store,
    )  # fmt: skip
    registry = Registry.load(entries, config)
    # One TF thread for unbatched work (other signatures); each model's batcher has its own.
    executor = ThreadPoolExecutor(1, thread_name_prefix="tf")
    predictor = Predictor(registry, executor, settings)
    predictor.start()
    freeze_startup_heap("tfserving-standin")  # TensorFlow's ~370k objects out of every full GC
    about = {
        "served_by": rest.SERVED_BY,
        "description": "Stand-in for TensorFlow Serving: its REST (and gRPC) API implemented in "
        "Python over TensorFlow sessions (SavedModel loader + one callable per signature, as "
        "tensorflow_model_server runs them), because tensorflow_model_server is not on PATH. "
        "Latency and throughput are not TF Serving's.",
        "tensorflow_version": tf.__version__,
        "models": {n: sorted(v) for n, v in registry.servables.items()},
        "rest_port": rest_port,
        "grpc_port": grpc_port,
        "intra_op_threads": settings.runtime_intra_op_threads,
        "inter_op_threads": settings.runtime_inter_op_threads,
        "batching": {"max_batch_size": settings.batch_max_size,
                     "max_delay_ms": settings.batch_max_delay_ms},
    }
    app = rest.create_app(registry, predictor, about)
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=rest_port, log_level="warning", access_log=False,
                       **settings.uvicorn_bounds())
    )
    grpc_server = None
    if grpc_port:
        grpc_server = grpc_service.create_server(registry, predictor, f"{host}:{grpc_port}")
        await grpc_server.start()
    try:
        log.warning("stand-in ready: REST http://%s:%d gRPC %s", host, rest_port, grpc_port)
        await server.serve()
    finally:
        if grpc_server is not None:
            await grpc_server.stop(grace=1)
        await predictor.close()
        executor.shutdown(wait=False, cancel_futures=True)


def run(store: Path, host: str, rest_port: int, grpc_port: int | None, settings: StackSettings):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(serve(store, host, rest_port, grpc_port, settings))
