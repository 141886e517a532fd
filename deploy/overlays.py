"""The kustomize overlays and components on top of base/ and runtimes/.

  overlays/small   one node: every service once, the gateway not autoscaled (the node is the limit)
  overlays/large   autoscaled: the gateway 2-20 replicas, every runtime 2-10, each behind a
                   PodDisruptionBudget, spread across nodes, resources sized per replica
  overlays/kserve  the gateway (and base) in front of KServe's InferenceServices (kserve/)
  components/store-from-image, components/store-from-url
                   replace the model-store volume by an emptyDir an init container fills
"""

from __future__ import annotations

from typing import Any

import yaml

from contract.runtimes import RUNTIMES
from deploy import objects as k
from deploy.sizing import container_resources

RUNTIME_HPA = (2, 10)  # large: replicas per runtime
GATEWAY_HPA = {"small": (1, 1), "large": (2, 20)}
STORE_IMAGE = "servebench/model-store:0.1.0"  # deploy/model-store.Dockerfile
FETCH_IMAGE = "busybox:1.37.0"


def _patch(obj: dict, target: dict | None = None) -> dict:
    return {"patch": yaml.safe_dump(obj, sort_keys=False), **({"target": target} if target else {})}


def _hpa_patch(name: str, lo: int, hi: int) -> dict:
    return _patch({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                   "metadata": {"name": name}, "spec": {"minReplicas": lo, "maxReplicas": hi}})


def _pod_patch(name: str, pod: dict) -> dict:
    return _patch({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                   "spec": {"template": {"spec": pod}}})


def _large_pod(name: str) -> dict:
    """Per replica: the large sizes, and replicas spread over nodes (a node loss takes one)."""
    return {"containers": [{"name": name, "resources": container_resources(name, "large")}],
            "topologySpreadConstraints": [{
                "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": k.selector(name)}}]}


def _large(src) -> dict[str, Any]:
    autoscaling = []
    for name in RUNTIMES:
        autoscaling += [k.hpa(name, "runtime", *RUNTIME_HPA, 70), k.pdb(name, "runtime")]
    patches = [_hpa_patch("gateway", *GATEWAY_HPA["large"]),
               # The HorizontalPodAutoscalers own the runtimes' replica counts.
               {"patch": yaml.safe_dump([{"op": "remove", "path": "/spec/replicas"}]),
                "target": {"kind": "Deployment", "labelSelector": "app.kubernetes.io/component=runtime"}},
               *(_pod_patch(n, _large_pod(n)) for n in [*RUNTIMES, "gateway"])]  # fmt: skip
    return {
        "overlays/large/autoscaling.yaml": autoscaling,
        "overlays/large/kustomization.yaml": k.kustomization(
            ["../../base", "../../runtimes", "autoscaling.yaml"], namespace=src.namespace,
            patches=patches),
    }


def _store_component(init: dict, extra: dict | None = None) -> dict:
    """A component whose init container fills the model-store volume (an emptyDir) instead of
    the PersistentVolumeClaim."""
    init = {**init, "volumeMounts": [{"name": "model-store", "mountPath": "/models"}],
            "securityContext": k.container_security(),
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                          "limits": {"memory": "256Mi"}}}
    pod = {"volumes": [{"name": "model-store", "persistentVolumeClaim": None,
                        "emptyDir": {"sizeLimit": "8Gi"}}],
           "initContainers": [init]}
    deployments = {"kind": "Deployment", "labelSelector": f"app.kubernetes.io/part-of={k.PART_OF}"}
    return {
        "apiVersion": "kustomize.config.k8s.io/v1alpha1", "kind": "Component",
        **(extra or {}),
        "patches": [
            _pod_patch("any", pod) | {"target": deployments},
            _patch({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": "servebench-model-store"}, "$patch": "delete"}),
        ],
    }


def _components() -> dict[str, Any]:
    url_config = {"configMapGenerator": [{
        "name": "servebench-model-store-url", "options": {"disableNameSuffixHash": True},
        # A .tar.gz of model_store/ (tar -C model_store -czf store.tar.gz .); set yours.
        "literals": ["MODEL_STORE_URL=https://storage.example.com/servebench/model_store.tar.gz"]}]}
    url_egress = k.network_policy(
        "model-store-download", {"matchLabels": {"app.kubernetes.io/part-of": k.PART_OF}},
        egress=[{"ports": [{"protocol": "TCP", "port": 443}]}])
    return {
        "components/store-from-image/kustomization.yaml": _store_component(
            {"name": "fetch-model-store", "image": STORE_IMAGE, "imagePullPolicy": "IfNotPresent",
             "command": ["cp", "-a", "/store/.", "/models/"]}),
        "components/store-from-url/egress.yaml": url_egress,
        "components/store-from-url/kustomization.yaml": _store_component(
            {"name": "fetch-model-store", "image": FETCH_IMAGE, "imagePullPolicy": "IfNotPresent",
             "command": ["sh", "-c", 'wget -q -O - "$MODEL_STORE_URL" | tar -xzf - -C /models'],
             "env": [{"name": "MODEL_STORE_URL", "valueFrom": {"configMapKeyRef": {
                 "name": "servebench-model-store-url", "key": "MODEL_STORE_URL"}}}]},
            {**url_config, "resources": ["egress.yaml"]}),
    }


def tree(src) -> dict[str, Any]:
    kserve_gateway = _patch({"apiVersion": "v1", "kind": "ConfigMap",
                             "metadata": {"name": "servebench-stack"},
                             "data": {"GATEWAY_KSERVE_NAMESPACE": src.namespace}})
    return {
        "overlays/small/kustomization.yaml": k.kustomization(
            ["../../base", "../../runtimes"], namespace=src.namespace,
            patches=[_hpa_patch("gateway", *GATEWAY_HPA["small"])]),
        **_large(src),
        "overlays/kserve/kustomization.yaml": k.kustomization(
            ["../../base", "../../kserve"], namespace=src.namespace, patches=[kserve_gateway]),
        **_components(),
    }
