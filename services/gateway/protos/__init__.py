"""TF Serving's gRPC messages and services without tensorflow.

tensorflow-serving-api's *_pb2 modules import tensorflow.core.framework.*_pb2, which imports the
whole tensorflow package (4 s, 600 MB; the gateway's image has no TF). tfserving.binpb is a
FileDescriptorSet of tensorflow_serving/apis/{predict,model,get_model_metadata,get_model_status,
model_service,prediction_service}.proto and their transitive dependencies, taken from the
installed modules by `python -m services.gateway.protos.build` (dev time, tensorflow installed).
load() adds them to protobuf's default pool (a file tensorflow already added with the same bytes
is left as it is) and returns the message classes by full name.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

DESCRIPTOR_SET = Path(__file__).with_name("tfserving.binpb")
# The API files the gateway serves; their dependencies come with them.
API_FILES = tuple(f"tensorflow_serving/apis/{n}.proto" for n in (
    "predict", "model", "get_model_metadata", "get_model_status", "model_service",
    "prediction_service"))  # fmt: skip
# protobuf's own well-known types (Any, wrappers) are not in the set: the installed protobuf
# registers its own copies (imported above), whatever its version.
WELL_KNOWN = "google/protobuf/"
WELL_KNOWN_MODULES = (any_pb2, wrappers_pb2)


def _add(pool: descriptor_pool.DescriptorPool, fd: descriptor_pb2.FileDescriptorProto) -> None:
    try:
        existing = pool.FindFileByName(fd.name)
    except KeyError:
        pool.Add(fd)
        return
    if existing.serialized_pb != fd.SerializeToString():
        raise RuntimeError(f"{fd.name} is already in protobuf's pool with other contents "
                           "(another tensorflow version?); rebuild services/gateway/protos")


@cache
def load() -> dict[str, Any]:
    """Message classes by full name ("tensorflow.serving.PredictRequest", ...)."""
    fds = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())
    pool = descriptor_pool.Default()
    for fd in fds.file:  # dependencies first (build.py writes them in that order)
        _add(pool, fd)
    classes: dict[str, Any] = {}

    def walk(desc: Any) -> None:
        classes[desc.full_name] = message_factory.GetMessageClass(desc)
        for nested in desc.nested_types:
            walk(nested)

    for fd in fds.file:
        for desc in pool.FindFileByName(fd.name).message_types_by_name.values():
            walk(desc)
    return classes
