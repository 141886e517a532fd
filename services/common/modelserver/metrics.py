"""Prometheus metrics of one model server (served on GET /metrics)."""

from __future__ import annotations

import time
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)
# Requests for models that do not exist share one label value (no unbounded label cardinality).
UNKNOWN_MODEL = "_unknown"


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(collector)
        self.requests = Counter(
            "modelserver_requests", "Inference requests by model and HTTP status code.",
            ["model", "code"], registry=r,
        )
        self.latency = Histogram(
            "modelserver_request_duration_seconds",
            "Inference request latency in the server, body read to response built.",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "modelserver_batch_size", "Samples per batch run by the runtime.",
            ["model"], buckets=BATCH_BUCKETS, registry=r,
        )
        self.inference = Histogram(
            "modelserver_inference_duration_seconds", "Runtime time per batch.",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )
        # Where the server's time goes besides inference: turning the request body into arrays
        # (parse + validate + convert) and the outputs into the response body. For a large
        # tensor sent as JSON this can exceed the inference itself (loadtests/README.md).
        self.codec = Histogram(
            "modelserver_codec_duration_seconds",
            "Codec time per request: stage=decode (body -> arrays), encode (arrays -> body).",
            ["model", "stage"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge(
            "modelserver_queue_depth", "Requests waiting to be batched.", ["model"], registry=r,
        )
        self.in_flight = Gauge(
            "modelserver_inflight_requests", "Inference requests being handled.", registry=r,
        )
        self.info = Gauge(
            "modelserver_model_info", "Loaded models (value 1).",
            ["model", "version", "platform"], registry=r,
        )

    @contextmanager
    def codec_timer(self, model: str, stage: str):
        """Observe the block's duration as the codec `stage` (decode | encode) of `model`; a
        block that raises (a bad request) is not observed, like the request latency."""
        t0 = time.perf_counter()
        yield
        self.codec.labels(model, stage).observe(time.perf_counter() - t0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
