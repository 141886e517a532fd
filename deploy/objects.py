"""Kubernetes objects as plain dicts: the few shapes the renderer needs, hardened by default.

Every pod runs non-root with a read-only root filesystem, no privilege escalation, every capability
dropped, the runtime's default seccomp profile and no service-account token (nothing here talks to
the Kubernetes API).
"""

from __future__ import annotations

from typing import Any

PART_OF = "servebench"
Obj = dict[str, Any]


def labels(name: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/component": component,
            "app.kubernetes.io/part-of": PART_OF}


def selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name}


def meta(name: str, component: str, **extra: Any) -> Obj:
    return {"name": name, "labels": labels(name, component), **extra}


def container_security() -> Obj:
    return {"allowPrivilegeEscalation": False, "privileged": False,
            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def pod_security(uid: int, gid: int) -> Obj:
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": gid, "fsGroup": gid,
            "seccompProfile": {"type": "RuntimeDefault"}}


def exec_probe(command: list[str], *, period: int, timeout: int, failures: int) -> Obj:
    return {"exec": {"command": command}, "periodSeconds": period, "timeoutSeconds": timeout,
            "failureThreshold": failures}


def http_probe(path: str, port: str, *, period: int = 10, timeout: int = 5,
               failures: int = 3) -> Obj:  # fmt: skip
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period,
            "timeoutSeconds": timeout, "failureThreshold": failures}


def tcp_probe(port: str, *, period: int = 10, timeout: int = 5, failures: int = 3) -> Obj:
    return {"tcpSocket": {"port": port}, "periodSeconds": period, "timeoutSeconds": timeout,
            "failureThreshold": failures}


def deployment(name: str, component: str, pod: Obj, replicas: int | None = 1) -> Obj:
    spec: Obj = {
        "selector": {"matchLabels": selector(name)},
        # Surge one pod before stopping one: capacity never drops during a rollout.
        "strategy": {"type": "RollingUpdate",
                     "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": {"metadata": {"labels": labels(name, component)}, "spec": pod},
    }
    if replicas is not None:  # None: an HorizontalPodAutoscaler owns the count
        spec = {"replicas": replicas, **spec}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(name, component),
            "spec": spec}


def service_port(name: str, port: int) -> Obj:
    """A Service port; one named grpc or *-grpc says so in appProtocol (HTTP/2 for meshes and
    gateways)."""
    out: Obj = {"name": name, "port": port, "targetPort": name, "protocol": "TCP"}
    if name == "grpc" or name.endswith("-grpc"):
        out["appProtocol"] = "grpc"
    return out


def service(name: str, component: str, ports: list[tuple[str, int]]) -> Obj:
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(name, component),
            "spec": {"type": "ClusterIP", "selector": selector(name),
                     "ports": [service_port(n, p) for n, p in ports]}}


def hpa(name: str, component: str, lo: int, hi: int, cpu_percent: int) -> Obj:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": meta(name, component),
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": name},
                     "minReplicas": lo, "maxReplicas": hi,
                     "metrics": [{"type": "Resource", "resource": {
                         "name": "cpu",
                         "target": {"type": "Utilization", "averageUtilization": cpu_percent}}}]}}


def pdb(name: str, component: str) -> Obj:
    # maxUnavailable (not minAvailable) so that a single replica never blocks a node drain.
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": meta(name, component),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(name)}}}


def network_policy(name: str, pods: Obj, *, ingress: list[Obj] | None = None,
                   egress: list[Obj] | None = None) -> Obj:  # fmt: skip
    """A policy over the pods matched by `pods`; a None direction is left to other policies."""
    spec: Obj = {"podSelector": pods, "policyTypes": []}
    if ingress is not None:
        spec["policyTypes"].append("Ingress")
        spec["ingress"] = ingress
    if egress is not None:
        spec["policyTypes"].append("Egress")
        spec["egress"] = egress
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": PART_OF}},
            "spec": spec}


def from_pods(match: dict[str, str], ports: list[int]) -> Obj:
    """An ingress rule (or, as `to`, an egress rule) to/from the pods with these labels."""
    return {"from": [{"podSelector": {"matchLabels": match}}],
            "ports": [{"protocol": "TCP", "port": p} for p in ports]}


def to_pods(match: dict[str, str], ports: list[int]) -> Obj:
    return {"to": [{"podSelector": {"matchLabels": match}}],
            "ports": [{"protocol": "TCP", "port": p} for p in ports]}


def kustomization(resources: list[str], **extra: Any) -> Obj:
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            **extra, "resources": resources}
