"""The garbage collector after start-up: every object loaded so far (TensorFlow's, torch's,
onnxruntime's Python side, the models) moved out of the collector's reach.

Why: CPython's full (generation 2) collection walks every tracked object. A server that imported
TensorFlow tracks ~370k of them, and a request decoded from JSON allocates one list or float per
value (150k for one MobileNetV2 image), which triggers collections - measured on the TF Serving
stand-in's JSON decode of one MobileNetV2 request: p50 35 ms, p95 341 ms, max 402 ms with the
collector as it is; p95 60 ms after gc.freeze() (loadtests/README.md, "stand-in overhead").
Frozen objects are never collected, which is what start-up objects are meant to be anyway."""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def freeze_startup_heap(what: str) -> int:
    """Collect once, then freeze what survives; returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("%s: %d start-up objects frozen out of garbage collection", what, frozen)
    return frozen
