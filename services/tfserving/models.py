"""The stand-in's servables: SavedModels run the way tensorflow_model_server runs them (the
SavedModel loaded into a TensorFlow session, each signature's tensors fed and fetched through a
callable the session builds once: Session::MakeCallable), their SignatureDefs read from
saved_model.pb (exactly what TF Serving reports), requests validated against them before
TensorFlow runs, and errors carrying TF Serving's status codes and messages.

Why a session and not tf.saved_model.load + eager signature calls: that is TF Serving's execution
path, and the eager call costs more per request (measured per call, batch 1, 1 thread:
digits-cnn-keras 0.69 -> 0.43 ms, digits-mlp-torch 0.46 -> 0.21 ms, digits-transformer-keras
1.08 -> 0.47 ms; MobileNetV2 33 ms either way; outputs bit-identical)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf
from google.protobuf.json_format import MessageToDict
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow.core.protobuf import error_codes_pb2
from tensorflow.python.util import deprecation
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from contract.codec import TF_CODE_HTTP_STATUS
from services.tfserving.config import SavedModelEntry

log = logging.getLogger("tfserving-standin")
DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"


class ServingError(Exception):
    """A TF Serving error: `code` is the tensorflow.error.Code name (maps to HTTP and gRPC)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return TF_CODE_HTTP_STATUS.get(self.code, 500)


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

    def __init__(self, name: str, version: int, path: Path,
                 session_config: tf.compat.v1.ConfigProto | None = None):  # fmt: skip
        """path: the version's directory (saved_model.pb and variables/). The exporters certify
        a SavedModel through this class too, so it is judged by the code that serves it."""
        self.name, self.version, self.path = name, version, path
        saved = saved_model_pb2.SavedModel()
        saved.ParseFromString((self.path / "saved_model.pb").read_bytes())
        graphs = [g for g in saved.meta_graphs if "serve" in g.meta_info_def.tags]
        if not graphs:
            raise ValueError(f"{self.path}: no MetaGraph tagged 'serve'")
        self.signature_defs = graphs[0].signature_def
        graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=graph, config=session_config or tf.compat.v1.ConfigProto())
        # The TF1 loader is TF Serving's; its "use tf.saved_model.load" notice is for training code.
        with graph.as_default(), deprecation.silence():
            tf.compat.v1.saved_model.load(self._session, ["serve"], str(self.path))
        # (signature, input aliases, output aliases) -> the session's callable for them
        self._callables: dict[tuple, Callable[..., list[np.ndarray]]] = {}
        self._callables_lock = threading.Lock()

    def signature(self, name: str) -> meta_graph_pb2.SignatureDef:
        name = name or DEFAULT_SIGNATURE
        if name not in self.signature_defs:
            raise invalid(f'Serving signature name: "{name}" not found in signature def')
        return self.signature_defs[name]

    def _callable(self, sig: meta_graph_pb2.SignatureDef, key: tuple) -> Callable[..., list]:
        """The session's callable feeding key[1] and fetching key[2] (built once per key: building
        one prunes the graph, running it is then one C++ call)."""
        fn = self._callables.get(key)
        if fn is None:
            with self._callables_lock:
                fn = self._callables.get(key) or self._session.make_callable(
                    [sig.outputs[k].name for k in key[2]], [sig.inputs[k].name for k in key[1]])
                self._callables[key] = fn
        return fn

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
        keys = tuple(output_filter) or tuple(sig.outputs)
        aliases = tuple(sorted(inputs))
        fn = self._callable(sig, (signature_name or DEFAULT_SIGNATURE, aliases, keys))
        try:
            return dict(zip(keys, fn(*(inputs[a] for a in aliases))))
        except tf.errors.OpError as e:  # TensorFlow's status, as TF Serving returns it
            raise ServingError(error_codes_pb2.Code.Name(e.error_code), e.message) from None


@dataclass
class Registry:
    servables: dict[str, dict[int, Servable]]
    failed: dict[str, str] = field(default_factory=dict)  # model -> why it did not load

    @classmethod
    def load(cls, entries: list[SavedModelEntry],
             session_config: tf.compat.v1.ConfigProto | None = None) -> Registry:  # fmt: skip
        """Every servable that loads; one that does not is unavailable with its reason (503, as
        our OIP servers answer) and never keeps the others from being served."""
        servables: dict[str, dict[int, Servable]] = {}
        failed: dict[str, str] = {}
        for e in entries:
            log.info("loading %s version %d from %s", e.name, e.version, e.version_dir)
            try:
                servable = Servable(e.name, e.version, e.version_dir, session_config)
                servables.setdefault(e.name, {})[e.version] = servable
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

