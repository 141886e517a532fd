"""The stand-in's servables: SavedModels loaded with TensorFlow's own loader, their SignatureDefs
read from saved_model.pb (exactly what TF Serving reports), requests validated against them before
TensorFlow runs, and errors carrying TF Serving's status codes and messages."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
from google.protobuf.json_format import MessageToDict
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from services.tfserving.config import SavedModelEntry

log = logging.getLogger("tfserving-standin")
DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
HTTP_STATUS = {"INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "UNAVAILABLE": 503, "INTERNAL": 500}


class ServingError(Exception):
    """A TF Serving error: `code` is the tensorflow.error.Code name (maps to HTTP and gRPC)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)


def invalid(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)


def proto_json(message) -> dict:
    """Protobuf -> JSON the way TF Serving prints it (proto field names, defaults included)."""
    return MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def numpy_dtype(info: meta_graph_pb2.TensorInfo) -> np.dtype:
    return np.dtype(tf.dtypes.as_dtype(info.dtype).as_numpy_dtype)


def _shape_ok(info: meta_graph_pb2.TensorInfo, shape: tuple[int, ...]) -> bool:
    if info.tensor_shape.unknown_rank:
        return True
    dims = [d.size for d in info.tensor_shape.dim]
    return len(dims) == len(shape) and all(d in (-1, s) for d, s in zip(dims, shape))


def _shape_str(info: meta_graph_pb2.TensorInfo) -> str:
    if info.tensor_shape.unknown_rank:
        return "<unknown>"
    return "[" + ",".join(str(d.size) for d in info.tensor_shape.dim) + "]"


class Servable:
    """One version of one model."""

    def __init__(self, entry: SavedModelEntry):
        self.name, self.version, self.path = entry.name, entry.version, entry.version_dir
        saved = saved_model_pb2.SavedModel()
        saved.ParseFromString((self.path / "saved_model.pb").read_bytes())
        graphs = [g for g in saved.meta_graphs if "serve" in g.meta_info_def.tags]
        if not graphs:
            raise ValueError(f"{self.path}: no MetaGraph tagged 'serve'")
        self.signature_defs = graphs[0].signature_def
        self._loaded = tf.saved_model.load(str(self.path), tags=["serve"])
        self._functions = self._loaded.signatures

    def signature(self, name: str) -> meta_graph_pb2.SignatureDef:
        name = name or DEFAULT_SIGNATURE
        if name not in self.signature_defs or name not in self._functions:
            raise invalid(f'Serving signature name: "{name}" not found in signature def')
        return self.signature_defs[name]

    def input_dtypes(self, signature_name: str) -> dict[str, np.dtype]:
        return {k: numpy_dtype(v) for k, v in self.signature(signature_name).inputs.items()}

    def validate(self, signature_name: str, inputs: dict[str, np.ndarray]) -> None:
        sig = self.signature(signature_name)
        expected = set(sig.inputs)
        for alias in inputs:
            if alias not in expected:
                raise invalid(
                    f"input tensor alias not found in signature: {alias}. Inputs expected to be "
                    f"in the set {{{','.join(sorted(expected))}}}."
                )
        missing = expected - set(inputs)
        if missing:
            raise invalid(
                f"Request inputs do not match required inputs for model `{self.name}`. "
                f"Missing but required: {{{','.join(sorted(missing))}}}."
            )
        batch = set()
        for alias, arr in inputs.items():
            info = sig.inputs[alias]
            if arr.dtype != numpy_dtype(info):
                raise invalid(
                    f"input {alias!r}: dtype {arr.dtype} given, "
                    f"{tf.dtypes.as_dtype(info.dtype).name} expected"
                )
            if not _shape_ok(info, arr.shape):
                raise invalid(
                    f"input {alias!r}: shape [{','.join(map(str, arr.shape))}] given, "
                    f"{_shape_str(info)} expected (-1 = any size)"
                )
            if arr.ndim:
                batch.add(arr.shape[0])
        if len(batch) > 1:
            raise invalid(f"inputs have different batch sizes {sorted(batch)}")

    def run(
        self, signature_name: str, inputs: dict[str, np.ndarray], output_filter=()
    ) -> dict[str, np.ndarray]:
        """Validated inputs -> outputs (signature order, optionally filtered). Blocking: call it
        from a worker thread."""
        sig = self.signature(signature_name)
        for alias in output_filter:
            if alias not in sig.outputs:
                raise invalid(f"output tensor alias not found in signature: {alias}")
        fn = self._functions[signature_name or DEFAULT_SIGNATURE]
        result = fn(**{k: tf.constant(v) for k, v in inputs.items()})
        keys = list(output_filter) or list(sig.outputs)
        return {k: result[k].numpy() for k in keys}


@dataclass
class Registry:
    servables: dict[str, dict[int, Servable]]
    failed: dict[str, str] = field(default_factory=dict)  # model -> why it did not load

    @classmethod
    def load(cls, entries: list[SavedModelEntry]) -> Registry:
        """Every servable that loads; one that does not is unavailable with its reason (503, as
        our OIP servers answer) and never keeps the others from being served."""
        servables: dict[str, dict[int, Servable]] = {}
        failed: dict[str, str] = {}
        for e in entries:
            log.info("loading %s version %d from %s", e.name, e.version, e.version_dir)
            try:
                servables.setdefault(e.name, {})[e.version] = Servable(e)
            except Exception as err:  # noqa: BLE001 - reported per model
                failed[e.name] = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
                log.error("model %s failed to load: %s", e.name, failed[e.name])
                if not servables[e.name]:
                    del servables[e.name]
        return cls(servables, failed)

    def get(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        if label is not None:
            raise invalid(f"Unrecognized servable version label: {label}")
        if name in self.failed and name not in self.servables:
            raise ServingError("UNAVAILABLE", f"model {name} failed to load: {self.failed[name]}")
        versions = self.servables.get(name, {})
        if version is None:
            if versions:
                return versions[max(versions)]
            raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({name})")
        if version not in versions:
            raise ServingError(
                "NOT_FOUND", f"Servable not found for request: Specific({name}, {version})"
            )
        return versions[version]

    def status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> get_model_status_pb2.GetModelStatusResponse:
        if label is not None:
            raise invalid(f"Unrecognized servable version label: {label}")
        versions = self.servables.get(name)
        if not versions and name in self.failed:
            raise ServingError("UNAVAILABLE", f"model {name} failed to load: {self.failed[name]}")
        if not versions:
            raise ServingError("NOT_FOUND", f"Could not find any versions of model {name}")
        if version is not None and version not in versions:
            raise ServingError("NOT_FOUND", f"Could not find version {version} of model {name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for v in sorted(versions, reverse=True):
            if version is None or v == version:
                s = response.model_version_status.add(version=v)
                s.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
                s.status.SetInParent()  # error_code OK, printed as TF Serving does
        return response

    def metadata(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        servable = self.get(name, version, label)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for k, v in servable.signature_defs.items():
            sig_map.signature_def[k].CopyFrom(v)
        response.metadata["signature_def"].Pack(sig_map)
        return response


def metadata_json(response: get_model_metadata_pb2.GetModelMetadataResponse) -> dict:
    """TF Serving's REST metadata body: model_spec plus the unpacked SignatureDefMap."""
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(sig_map)
    return {
        "model_spec": proto_json(response.model_spec),
        "metadata": {"signature_def": proto_json(sig_map)},
    }


def model_spec(servable: Servable, signature_name: str) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=servable.name)
    spec.signature_name = signature_name or DEFAULT_SIGNATURE
    spec.version.value = servable.version
    return spec

