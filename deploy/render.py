"""Render the stack as Kubernetes manifests from the one configuration.

Sources, and nothing else: services/stack.env (ports, threads, batching, gateway settings), the
runtime registry (contract/runtimes.py), compose.yaml (images, the TF Serving command line, the
readiness probes, the container-side overrides of stack.env), the Dockerfiles (the user each image
runs as), deploy/sizing.py (measured memory and CPU) and the model store (what KServe serves, the
volume size). So names, ports, thread and batching settings cannot drift from `make up` and compose.

Output (kustomize; `kubectl apply -k deploy/kubernetes/overlays/<name>`):
  base/        namespace, configuration, model-store volume, gateway, network policies
  runtimes/    one Deployment + Service per runtime of the registry
  overlays/    small (one node), large (autoscaled), kserve (the gateway in front of KServe)
  kserve/      ServingRuntimes and one InferenceService per certified (model, runtime) pair
  components/  store-from-image, store-from-url: the model store copied by an init container
  loadtest/    distributed Locust (master + workers Jobs) against the gateway
"""

from __future__ import annotations

import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values

from contract.manifest import Manifest, load_store
from contract.runtimes import RUNTIMES
from deploy import objects as k
from deploy.sizing import container_resources
from services.settings import REPO_ROOT, STACK_ENV, StackSettings

COMPOSE_FILE = REPO_ROOT / "compose.yaml"
OUT = REPO_ROOT / "deploy" / "kubernetes"
GENERATED = ("base", "runtimes", "overlays", "kserve", "components", "loadtest")
STORE_PVC = "servebench-model-store"
STACK_CONFIG = "servebench-stack"
GATEWAY_SECRET = "servebench-gateway"  # optional: key "api-key" -> GATEWAY_API_KEY
STORE_MOUNT = "/models"
# Ports that stay inside the pod: TorchServe binds all but its inference API to loopback
# (services/torchserve/config.py), and no Service or NetworkPolicy opens them.
PRIVATE_PORTS = {"torchserve_management_port", "torchserve_metrics_port",
                 "torchserve_grpc_inference_port", "torchserve_grpc_management_port"}
# The gateway's ports: REST, OIP gRPC and TF Serving gRPC (GATEWAY_GRPC_PORT=0,
# GATEWAY_TFS_GRPC_PORT=0 turn them off: no port then).
GATEWAY_PORT_KEYS = ("gateway_port", "gateway_grpc_port", "gateway_tfs_grpc_port")
# The official TF Serving image defines no user (it would run as root): run it as our images' user.
IMAGE_USER = {"tfserving": (10001, 10001)}
# What a live (not ready) process answers, per protocol; TF Serving has no health endpoint.
LIVENESS_PATH = {"oip": "/v2/health/live", "torchserve": "/ping"}
TMP_SIZE = {"torchserve": "2Gi"}  # TorchServe unpacks every .mar into its TMPDIR


@dataclass
class Source:
    """Everything the manifests are rendered from."""

    env: dict[str, str]  # services/stack.env as written
    settings: StackSettings
    compose: dict[str, Any]  # compose.yaml as written (before interpolation)
    store: dict[str, Manifest]
    store_bytes: int
    namespace: str

    @classmethod
    def load(cls, store: Path, namespace: str = "servebench") -> Source:
        env = {key: v or "" for key, v in dotenv_values(STACK_ENV).items()}
        store = Path(store)
        size = sum(p.stat().st_size for p in store.rglob("*") if p.is_file()) if store.is_dir() else 0
        return cls(env, StackSettings(_env_file=STACK_ENV), yaml.safe_load(COMPOSE_FILE.read_text()),
                   load_store(store), size, namespace)

    def port(self, key: str) -> int:
        return int(getattr(self.settings, key))

    def image(self, service: str) -> str:
        return self.compose["services"][service]["image"]

    def user(self, service: str) -> tuple[int, int]:
        if service in IMAGE_USER:
            return IMAGE_USER[service]
        dockerfile = REPO_ROOT / self.compose["services"][service]["build"]["dockerfile"]
        m = re.search(r"^USER\s+(\d+):(\d+)", dockerfile.read_text(), re.MULTILINE)
        if not m:
            raise ValueError(f"{dockerfile}: no numeric USER uid:gid; the pods run as non-root")
        return int(m[1]), int(m[2])

    def healthcheck(self, service: str) -> tuple[list[str], dict[str, int]]:
        """compose's healthcheck of a service: the command (compose's $$ unescaped) and its
        timings in seconds."""
        hc = {**self.compose["x-healthcheck"], **self.compose["services"][service]["healthcheck"]}
        test = hc["test"]
        if test[0] != "CMD":
            raise ValueError(f"compose.yaml: {service}: healthcheck must be an exec form (CMD)")
        timings = {key: _seconds(hc[key]) for key in ("interval", "timeout", "start_period")}
        return [part.replace("$$", "$") for part in test[1:]], timings


def _seconds(value: str) -> int:
    m = re.fullmatch(r"(\d+)(s|m)", str(value))
    if not m:
        raise ValueError(f"compose.yaml: duration {value!r}: expected e.g. 30s or 5m")
    return int(m[1]) * (60 if m[2] == "m" else 1)


def port_name(service: str, key: str) -> str:
    """IANA service name of a port: onnxruntime_port -> http, tfserving_grpc_port -> grpc."""
    return key.removesuffix("_port").removeprefix(service).strip("_").replace("_", "-") or "http"


def port_keys(src: Source, service: str) -> list[str]:
    """The settings keys of every port a service's container listens on."""
    keys = RUNTIMES[service].port_keys if service in RUNTIMES else GATEWAY_PORT_KEYS
    return [key for key in keys if src.port(key)]


def service_ports(src: Source, service: str) -> list[tuple[str, int]]:
    return [(port_name(service, key), src.port(key)) for key in port_keys(src, service)
            if key not in PRIVATE_PORTS]


# --- configuration and storage -------------------------------------------------------------------
def config_objects(src: Source) -> list[k.Obj]:
    # stack.env + compose's container-side overrides (bind 0.0.0.0, store at /models, hosts =
    # service names): what every compose service sees. Secrets stay out of the ConfigMap.
    data = {key: v for key, v in src.env.items() if not key.endswith("_API_KEY")}
    data.update({key: str(v) for key, v in src.compose["x-stack-env"].items()})
    batching = (REPO_ROOT / "services" / "tfserving" / "batching_parameters.txt").read_text()
    # ReadOnlyMany: every pod mounts the same store; sized from the store with room to grow.
    gib = max(1, math.ceil(2 * src.store_bytes / 2**30))
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": k.meta(STACK_CONFIG, "config"),
         "data": data},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": k.meta("tfserving-batching", "config"),
         "data": {"batching_parameters.txt": batching}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": k.meta(STORE_PVC, "store"),
         "spec": {"accessModes": ["ReadOnlyMany"],
                  "resources": {"requests": {"storage": f"{gib}Gi"}}}},
    ]  # fmt: skip


# --- workloads -----------------------------------------------------------------------------------
def _container(src: Source, service: str, liveness: k.Obj) -> k.Obj:
    command, t = src.healthcheck(service)
    c: k.Obj = {
        "name": service,
        "image": src.image(service),
        "imagePullPolicy": "IfNotPresent",
        "envFrom": [{"configMapRef": {"name": STACK_CONFIG}}],
        "ports": [{"name": port_name(service, key), "containerPort": src.port(key), "protocol": "TCP"}
                  for key in port_keys(src, service)],
        # The supervisor's probe: a real inference per model (compose's healthcheck). The start-up
        # probe polls it fast while the models load, the readiness probe rarely after.
        "startupProbe": k.exec_probe(command, period=5, timeout=t["timeout"],
                                     failures=t["start_period"] // 5),
        "readinessProbe": k.exec_probe(command, period=t["interval"], timeout=t["timeout"],
                                       failures=3),
        "livenessProbe": liveness,
        "resources": container_resources(service, "small"),
        "securityContext": k.container_security(),
        "volumeMounts": [{"name": "model-store", "mountPath": STORE_MOUNT, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }  # fmt: skip
    compose = src.compose["services"][service]
    if "entrypoint" in compose:  # an image we do not build (TF Serving): its command line
        c["command"] = list(compose["entrypoint"])
        c["args"] = [str(a) for a in compose.get("command", [])]
    return c


def _pod(src: Source, service: str, container: k.Obj, extra_volumes: list[k.Obj] = ()) -> k.Obj:
    uid, gid = src.user(service)
    return {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,  # no *_PORT variables that would shadow stack.env's
        "securityContext": k.pod_security(uid, gid),
        "terminationGracePeriodSeconds": 30,
        "containers": [container],
        # model-store first: the store-from-* components replace it by name.
        "volumes": [{"name": "model-store",
                     "persistentVolumeClaim": {"claimName": STORE_PVC, "readOnly": True}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE.get(service, "256Mi")}},
                    *extra_volumes],
    }


def runtime_objects(src: Source, name: str) -> list[k.Obj]:
    rt = RUNTIMES[name]
    ports = service_ports(src, name)
    first = ports[0][0]
    path = LIVENESS_PATH.get(rt.protocol)
    liveness = k.http_probe(path, first) if path else k.tcp_probe(first)
    container = _container(src, name, liveness)
    extra = []
    if name == "tfserving":  # compose bind-mounts the batching parameters at /config
        container["volumeMounts"].append({"name": "batching", "mountPath": "/config",
                                          "readOnly": True})
        extra.append({"name": "batching", "configMap": {"name": "tfserving-batching"}})
    pod = _pod(src, name, container, extra)
    return [k.deployment(name, "runtime", pod), k.service(name, "runtime", ports)]


def gateway_objects(src: Source, hpa_max: int = 3) -> list[k.Obj]:
    ports = service_ports(src, "gateway")
    container = _container(src, "gateway", k.http_probe("/v2/health/live", ports[0][0]))
    container["env"] = [{"name": "GATEWAY_API_KEY", "valueFrom": {"secretKeyRef": {
        "name": GATEWAY_SECRET, "key": "api-key", "optional": True}}}]
    pod = _pod(src, "gateway", container)
    return [k.deployment("gateway", "gateway", pod, replicas=None),
            k.service("gateway", "gateway", ports),
            k.hpa("gateway", "gateway", 1, hpa_max, 70),
            k.pdb("gateway", "gateway")]


# --- network: only the gateway reaches the runtimes ----------------------------------------------
DNS_EGRESS = {"to": [{"namespaceSelector": {"matchLabels": {
                  "kubernetes.io/metadata.name": "kube-system"}},
                      "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
              "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}  # fmt: skip
PART_OF = {"app.kubernetes.io/part-of": k.PART_OF}


def network_policies(src: Source, runtimes: list[str]) -> list[k.Obj]:
    gw = k.selector("gateway")
    out = [
        k.network_policy("default-deny", {}, ingress=[], egress=[]),
        k.network_policy("allow-dns", {"matchLabels": PART_OF}, egress=[DNS_EGRESS]),
        # The gateway's API is the way in, from anywhere (an ingress controller, other namespaces).
        k.network_policy("gateway-ingress", {"matchLabels": gw}, ingress=[{"ports": [
            {"protocol": "TCP", "port": p} for _, p in service_ports(src, "gateway")]}]),
        k.network_policy("gateway-to-runtimes", {"matchLabels": gw}, egress=[
            k.to_pods(k.selector(r), [p for _, p in service_ports(src, r)]) for r in runtimes]),
    ]
    for r in runtimes:
        out.append(k.network_policy(f"{r}-from-gateway", {"matchLabels": k.selector(r)},
                                    ingress=[k.from_pods(gw, [p for _, p in service_ports(src, r)])]))
    return out


# --- the tree ------------------------------------------------------------------------------------
def base_tree(src: Source) -> dict[str, Any]:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": src.namespace, "labels": {
            **PART_OF, "pod-security.kubernetes.io/enforce": "restricted"}}}
    return {
        "base/namespace.yaml": [namespace],
        "base/config.yaml": config_objects(src),
        "base/gateway.yaml": gateway_objects(src),
        "base/network-policies.yaml": network_policies(src, list(RUNTIMES)),
        "base/kustomization.yaml": k.kustomization(
            ["namespace.yaml", "config.yaml", "gateway.yaml", "network-policies.yaml"],
            namespace=src.namespace),
        **{f"runtimes/{name}.yaml": runtime_objects(src, name) for name in RUNTIMES},
        "runtimes/kustomization.yaml": k.kustomization([f"{name}.yaml" for name in RUNTIMES],
                                                       namespace=src.namespace),
    }


def render(src: Source) -> dict[str, Any]:
    """Every file of the tree: relative path -> object, list of objects (a multi-document
    file) or text."""
    from deploy import kserve, loadtest, overlays  # the parts that build on this module

    return {**base_tree(src), **overlays.tree(src), **kserve.tree(src), **loadtest.tree(src)}


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # a shared probe command is written out twice
        return True


def dump(obj: Any) -> str:
    if isinstance(obj, str):
        return obj
    docs = obj if isinstance(obj, list) else [obj]
    return "---\n".join(yaml.dump(d, Dumper=_Dumper, sort_keys=False, width=100) for d in docs)


HEADER = "# Rendered by `make k8s` (deploy/render.py) from services/stack.env, compose.yaml and the\n" \
         "# model store. Do not edit: change the sources and render again.\n"


def write(src: Source, out: Path = OUT) -> list[Path]:
    files = render(src)
    for part in GENERATED:  # a model or runtime removed from the sources disappears here too
        shutil.rmtree(out / part, ignore_errors=True)
    written = []
    for rel, obj in sorted(files.items()):
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        text = dump(obj)
        path.write_text(text if rel.endswith(".Dockerfile") else HEADER + text)
        written.append(path)
    return written
