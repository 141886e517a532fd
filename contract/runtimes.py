"""The one registry of runtimes: which artifact format each serves, over which protocol, where its
settings live and how readiness is probed. The exporters, the supervisor, the gateway's backend
factory, the load tests and compose read it; adding a runtime is one entry here plus one adapter
folder under services/.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KServe:
    """How a runtime runs under KServe (deploy/kubernetes/kserve: one InferenceService per
    (model, runtime) pair whose artifact passed parity, named by isvc_name())."""

    serving_runtime: str  # the ServingRuntime an InferenceService names
    builtin: bool  # KServe ships it (a ClusterServingRuntime) rather than deploy/ rendering it
    model_format: str  # InferenceService spec.predictor.model.modelFormat.name
    protocol: str  # what the gateway speaks to the predictor (same values as Runtime.protocol)
    remote_name: str  # how the predictor knows the model: "model" (its store name) | "isvc"


@dataclass(frozen=True)
class Runtime:
    name: str  # also the service name (local mode, compose) and the `<model>@<name>` suffix
    format: str  # artifact format in manifest.json ("artifacts" key, store directory)
    protocol: str  # what the gateway speaks to it: "oip" | "tfserving" | "torchserve"
    module: str  # python -m <module> starts it
    host_key: str  # StackSettings field of its host
    port_keys: tuple[str, ...]  # StackSettings fields of its ports; the first is the inference API
    probe: str  # readiness probe kind (services/supervisor/probe.py): a real inference per model
    label: str  # for tables and reports
    parity_runner: str  # what executes the artifact in the exporter's parity check
    kserve: KServe


RUNTIMES: dict[str, Runtime] = {
    r.name: r
    for r in (
        Runtime("onnxruntime", "onnx", "oip", "services.onnxruntime", "onnxruntime_host",
                ("onnxruntime_port",), "oip", "ONNX Runtime", "onnxruntime",
                KServe("servebench-onnxruntime", False, "onnx", "oip", "model")),
        Runtime("tflite", "tflite", "oip", "services.tflite", "tflite_host",
                ("tflite_port",), "oip", "TFLite (LiteRT)", "ai-edge-litert Interpreter",
                KServe("servebench-tflite", False, "tflite", "oip", "model")),
        Runtime("tfserving", "savedmodel", "tfserving", "services.tfserving", "tfserving_host",
                ("tfserving_rest_port", "tfserving_grpc_port"), "tfserving", "TF Serving",
                "tf.saved_model.load (serving_default)",
                # KServe's own: the official tensorflow_model_server, --model_name={{.Name}}.
                KServe("kserve-tensorflow-serving", True, "tensorflow", "tfserving", "isvc")),
        Runtime("torchserve", "torchserve", "torchserve", "services.torchserve", "torchserve_host",
                ("torchserve_inference_port", "torchserve_management_port", "torchserve_metrics_port",
                 "torchserve_grpc_inference_port", "torchserve_grpc_management_port"),
                "torchserve", "TorchServe",
                "services/torchserve/handler.py in-process (TorchServe's handler code)",
                # TorchServe itself with our handler, not KServe's kserve-torchserve: its kservev2
                # envelope flattens output shapes and answers FP64 (deploy/kubernetes/README.md).
                KServe("servebench-torchserve", False, "pytorch", "torchserve", "model")),
        Runtime("aotinductor", "aotinductor", "oip", "services.aotinductor", "aotinductor_host",
                ("aotinductor_port",), "oip", "AOTInductor", "torch._inductor.aoti_load_package",
                KServe("servebench-aotinductor", False, "pytorch-aotinductor", "oip", "model")),
        Runtime("executorch", "executorch", "oip", "services.executorch", "executorch_host",
                ("executorch_port",), "oip", "ExecuTorch (XNNPACK)", "executorch.runtime (XNNPACK delegate)",
                KServe("servebench-executorch", False, "executorch", "oip", "model")),
    )
}  # fmt: skip

FORMATS: tuple[str, ...] = ("torchserve", "savedmodel", "onnx", "tflite", "aotinductor", "executorch")  # export order
RUNTIME_OF_FORMAT: dict[str, str] = {r.format: r.name for r in RUNTIMES.values()}
FORMAT_OF_RUNTIME: dict[str, str] = {r.name: r.format for r in RUNTIMES.values()}


def isvc_name(model: str, runtime: str) -> str:
    """The KServe InferenceService of one (model, runtime) pair."""
    return f"{model}-{runtime}"


def predictor_url(model: str, runtime: str, namespace: str) -> str:
    """Where KServe (raw deployment mode) serves an InferenceService's predictor in-cluster."""
    return f"http://{isvc_name(model, runtime)}-predictor.{namespace}.svc.cluster.local"


def kserve_remote_name(model: str, runtime: str) -> str:
    """The model's name on its KServe predictor (TF Serving's built-in runtime names it after
    the InferenceService)."""
    return isvc_name(model, runtime) if RUNTIMES[runtime].kserve.remote_name == "isvc" else model


def runtime(name: str) -> Runtime:
    try:
        return RUNTIMES[name]
    except KeyError:
        raise ValueError(f"unknown runtime {name!r}; runtimes: {', '.join(RUNTIMES)}") from None
