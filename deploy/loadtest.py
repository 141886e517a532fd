"""Distributed Locust in the cluster: a master Job (headless, prints and keeps its stats) and a
workers Job, the same image, command lines and LOCUST_* defaults as compose's loadtest profile.

  kubectl apply -k deploy/kubernetes/loadtest       # after an overlay is up
  kubectl -n servebench logs -f job/locust-master   # the stats table; the Job ends with the run
"""

from __future__ import annotations

import re
from typing import Any

from deploy import objects as k
from deploy.render import STACK_CONFIG, STORE_MOUNT, STORE_PVC, Source
from deploy.sizing import container_resources

MASTER_PORT = 5557
WORKERS = "LOCUST_WORKERS"


def _default(value: Any) -> str:
    """compose's `${VAR:-default}` -> default; anything else as is."""
    m = re.fullmatch(r"\$\{\w+:-([^}]*)\}", str(value))
    return m[1] if m else str(value)


def _env(compose: dict) -> list[dict]:
    env = compose.get("environment", {})
    return [{"name": key, "value": _default(v)} for key, v in env.items() if key.startswith("LOCUST_")]


def _job(src: Source, name: str, *, parallelism: int) -> k.Obj:
    compose = src.compose["services"][name]
    uid, gid = src.user(name)
    env = _env(compose)
    for e in env:
        if e["value"].startswith("loadtests/reports/"):  # the image's reports dir is read-only
            e["value"] = e["value"].replace("loadtests/reports/", "/reports/", 1)
    container = {
        "name": name, "image": compose["image"], "imagePullPolicy": "IfNotPresent",
        "command": [str(c) for c in compose["command"]],
        "envFrom": [{"configMapRef": {"name": STACK_CONFIG}}], "env": env,
        "ports": [{"name": "master", "containerPort": MASTER_PORT, "protocol": "TCP"}]
        if name == "locust-master" else [],
        "resources": container_resources("locust", "small"),
        "securityContext": k.container_security(),
        "volumeMounts": [{"name": "model-store", "mountPath": STORE_MOUNT, "readOnly": True},
                         {"name": "reports", "mountPath": "/reports"},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }  # fmt: skip
    pod = {
        "restartPolicy": "Never", "automountServiceAccountToken": False,
        "enableServiceLinks": False, "securityContext": k.pod_security(uid, gid),
        "containers": [container],
        "volumes": [{"name": "model-store",
                     "persistentVolumeClaim": {"claimName": STORE_PVC, "readOnly": True}},
                    {"name": "reports", "emptyDir": {"sizeLimit": "256Mi"}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
    }  # fmt: skip
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": k.meta(name, "loadtest"),
            "spec": {"parallelism": parallelism, "completions": parallelism, "backoffLimit": 0,
                     "activeDeadlineSeconds": 3600, "ttlSecondsAfterFinished": 86400,
                     "template": {"metadata": {"labels": k.labels(name, "loadtest")},
                                  "spec": pod}}}


def tree(src: Source) -> dict[str, Any]:
    workers = int(_default(src.compose["services"]["locust-master"]["environment"][
        "LOCUST_EXPECT_WORKERS"]))
    master, worker = k.selector("locust-master"), k.selector("locust-worker")
    gateway_port = src.port("gateway_port")
    locust = {"matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "In",
                                    "values": ["locust-master", "locust-worker"]}]}
    policies = [
        k.network_policy("locust-master-from-workers", {"matchLabels": master},
                         ingress=[k.from_pods(worker, [MASTER_PORT])]),
        k.network_policy("locust-egress", locust, egress=[
            k.to_pods(k.selector("gateway"), [gateway_port]), k.to_pods(master, [MASTER_PORT])]),
    ]
    master_service = k.service("locust-master", "loadtest", [("master", MASTER_PORT)])
    return {
        "loadtest/locust.yaml": [master_service, _job(src, "locust-master", parallelism=1),
                                 _job(src, "locust-worker", parallelism=workers), *policies],
        "loadtest/kustomization.yaml": k.kustomization(["locust.yaml"], namespace=src.namespace),
    }
