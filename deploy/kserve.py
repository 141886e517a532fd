"""KServe: ServingRuntimes for our own servers and one InferenceService per (model, runtime) pair
whose artifact passed its parity check, generated from the store's manifests.

- ONNX Runtime, TFLite, AOTInductor and ExecuTorch: our OIP v2 servers (the same images as compose)
  as ServingRuntimes; each InferenceService mounts the whole store (pvc://, no copy) and serves
  its one model (`--models`).
- SavedModels: KServe's built-in `kserve-tensorflow-serving` (the official tensorflow_model_server;
  it names the model after the InferenceService: contract.runtimes.kserve_remote_name).
- TorchServe: TorchServe itself with our handler as a ServingRuntime, not KServe's built-in
  `kserve-torchserve`, whose kservev2 envelope flattens output shapes and answers FP64 (measured
  with TorchServe 0.12 here), which breaks N-output models.
The gateway reaches the predictors at contract.runtimes.predictor_url (overlays/kserve sets
GATEWAY_KSERVE_NAMESPACE); RawDeployment mode, so no Knative or Istio is needed.
"""

from __future__ import annotations

import re
from typing import Any

from contract.runtimes import RUNTIMES, isvc_name
from deploy import objects as k
from deploy.render import STACK_CONFIG, STORE_PVC, Source, service_ports
from deploy.sizing import container_resources
from services.tfserving.config import savedmodel_entries

MODEL_LABEL = "servebenchModel"  # ServingRuntime args read it: {{.Labels.servebenchModel}}
KSERVE_TFSERVING_REST_PORT = 8080  # config/runtimes/kserve-tensorflow-serving.yaml, --rest_api_port
ISVC = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
ISVC_MAX = 63 - len("-predictor")  # the predictor Service's name is a DNS-1035 label


def serving_runtime(src: Source, name: str) -> k.Obj:
    rt = RUNTIMES[name]
    port_key = rt.port_keys[0]
    args = ["--model-store=/mnt/models", f"--models={{{{.Labels.{MODEL_LABEL}}}}}"]
    if rt.protocol == "oip":
        args = ["--host=0.0.0.0", f"--port={src.port(port_key)}", *args]
    else:  # TorchServe: its run dir must be writable, the root filesystem is not
        args = ["--run-dir=/tmp/torchserve", *args]
    uid, gid = src.user(name)
    first = service_ports(src, name)[0][0]
    spec: k.Obj = {
        "supportedModelFormats": [{"name": rt.kserve.model_format, "version": "1",
                                   "autoSelect": False}],
        "containers": [{
            "name": "kserve-container",
            "image": src.image(name),
            "command": ["python", "-m", rt.module],
            "args": args,
            "envFrom": [{"configMapRef": {"name": STACK_CONFIG}}],
            "ports": [{"name": first, "containerPort": src.port(port_key), "protocol": "TCP"}],
            "readinessProbe": k.http_probe("/v2/health/ready" if rt.protocol == "oip" else "/ping",
                                           first),
            "resources": container_resources(name, "small"),
            "securityContext": {**k.container_security(), "runAsNonRoot": True,
                                "runAsUser": uid, "runAsGroup": gid},
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        }],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}],
    }
    if rt.kserve.protocol == "oip":
        spec["protocolVersions"] = ["v2"]
    return {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "ServingRuntime",
            "metadata": k.meta(rt.kserve.serving_runtime, "kserve"), "spec": spec}


def _storage_uri(src: Source, model: str, runtime: str) -> str:
    if runtime == "tfserving":  # TF Serving's base path: the directory of numbered versions
        rel = {e.name: e.rel_base for e in savedmodel_entries(src.settings.model_store)}[model]
        return f"pvc://{STORE_PVC}/{rel}"
    return f"pvc://{STORE_PVC}"


def inference_service(src: Source, model: str, runtime: str) -> k.Obj:
    rt = RUNTIMES[runtime]
    name = isvc_name(model, runtime)
    if not ISVC.fullmatch(name) or len(name) > ISVC_MAX:
        raise ValueError(
            f"model {model!r}: InferenceService name {name!r} must be a DNS-1035 label of at most "
            f"{ISVC_MAX} characters (lower-case letters, digits, '-'); rename the model in the store")
    uid, gid = src.user(runtime)
    predictor: k.Obj = {
        "minReplicas": 1, "maxReplicas": 4,
        "automountServiceAccountToken": False,
        "securityContext": k.pod_security(uid, gid),
        "model": {
            "modelFormat": {"name": rt.kserve.model_format},
            "runtime": rt.kserve.serving_runtime,
            "protocolVersion": "v2" if rt.kserve.protocol == "oip" else "v1",
            "storageUri": _storage_uri(src, model, runtime),
            "resources": container_resources(runtime, "small"),
        },
    }
    if runtime == "tfserving":  # KServe's runtime keeps the image's threads: set ours
        predictor["model"]["args"] = [a for a in src.compose["services"]["tfserving"]["command"]
                                      if a.startswith("--tensorflow_")]
    meta = k.meta(name, "kserve")
    meta["labels"][MODEL_LABEL] = model
    meta["annotations"] = {"serving.kserve.io/deploymentMode": "RawDeployment"}
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": meta, "spec": {"predictor": predictor}}


def predictor_ports(src: Source) -> list[int]:
    ours = [src.port(r.port_keys[0]) for r in RUNTIMES.values() if not r.kserve.builtin]
    return sorted({*ours, KSERVE_TFSERVING_REST_PORT})


def tree(src: Source) -> dict[str, Any]:
    pairs = [(m, r) for m, manifest in sorted(src.store.items()) for r, rt in RUNTIMES.items()
             if manifest.passed(rt.format)]
    predictors = {"matchExpressions": [{"key": "serving.kserve.io/inferenceservice",
                                        "operator": "Exists"}]}
    gw = k.selector("gateway")
    ports = predictor_ports(src)
    policies = [
        k.network_policy("predictors-from-gateway", predictors,
                         ingress=[k.from_pods(gw, ports)]),
        k.network_policy("gateway-to-predictors", {"matchLabels": gw}, egress=[{
            "to": [{"podSelector": predictors}],
            "ports": [{"protocol": "TCP", "port": p} for p in ports]}]),
    ]
    runtimes = [serving_runtime(src, r) for r, rt in RUNTIMES.items() if not rt.kserve.builtin]
    return {
        "kserve/serving-runtimes.yaml": runtimes,
        "kserve/inference-services.yaml": [inference_service(src, m, r) for m, r in pairs],
        "kserve/network-policies.yaml": policies,
        "kserve/kustomization.yaml": k.kustomization(
            ["serving-runtimes.yaml", "inference-services.yaml", "network-policies.yaml"],
            namespace=src.namespace),
    }

