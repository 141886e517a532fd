"""Validate the rendered tree as far as a machine without a cluster can:

1. kustomize builds every overlay (and each store component on top of small) with kubectl 1.36;
2. every object validates against the Kubernetes 1.36 OpenAPI schemas (kubernetes-validate, strict:
   unknown fields are errors) and the KServe resources against KServe v0.20.0's CRD schemas
   (deploy/schemas/, vendored from kserve/kserve's config/crd/full);
3. our own rules: probes, hardening, resources, Service ports that exist on their pods and equal
   services/stack.env, HPAs and PDBs that find their Deployment, NetworkPolicies that let only
   the gateway reach a runtime and nobody TorchServe's management and metrics ports;
4. checkov's Kubernetes checks: every failed check must be one of EXPLAINED, with the reason.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import kubernetes_validate
import yaml

from contract.runtimes import RUNTIMES
from deploy import tools
from deploy.render import OUT, PRIVATE_PORTS, Source, port_keys, service_ports

K8S_VERSION = "1.36.0"
SCHEMAS = Path(__file__).with_name("schemas")
CRD_SCHEMAS = {("serving.kserve.io/v1beta1", "InferenceService"):
               "kserve-v0.20.0-inferenceservice-v1beta1.json.gz",
               ("serving.kserve.io/v1alpha1", "ServingRuntime"):
               "kserve-v0.20.0-servingruntime-v1alpha1.json.gz"}  # fmt: skip
BUILTIN_SERVING_RUNTIMES = {r.kserve.serving_runtime for r in RUNTIMES.values() if r.kserve.builtin}
# What kustomize builds and validate checks: overlay -> components added on top of it.
BUILDS = {"small": ("overlays/small",), "large": ("overlays/large",),
          "kserve": ("overlays/kserve",), "small+loadtest": ("overlays/small", "loadtest"),
          "small+store-from-image": ("overlays/small", "components/store-from-image"),
          "small+store-from-url": ("overlays/small", "components/store-from-url")}
# checkov checks that fail on purpose, and why (deploy/kubernetes/README.md repeats them).
EXPLAINED = {
    "CKV_K8S_11": "no CPU limits: a CFS quota throttles latency-sensitive servers in bursts; the CPU "
                  "request guarantees the share (deploy/sizing.py)",
    "CKV_K8S_43": "images by tag, not digest: the images are built by the user (docker compose "
                  "build); pin digests in an overlay once they are pushed",
    "CKV_K8S_15": "imagePullPolicy IfNotPresent: tags are versioned and never rebuilt in place; "
                  "Always would break images loaded into a local cluster (kind load)",
    "CKV_K8S_35": "the gateway's API key comes from a Secret as an environment variable: the "
                  "gateway reads GATEWAY_API_KEY (pydantic-settings), not a file",
}


@dataclass
class Report:
    name: str
    objects: int = 0
    errors: list[str] = field(default_factory=list)
    explained: dict[str, str] = field(default_factory=dict)  # check id -> resources

    @property
    def ok(self) -> bool:
        return not self.errors


def build(out: Path, parts: tuple[str, ...], namespace: str) -> list[dict]:
    """kustomize build of an overlay, or of several trees and components together (the way a
    user's own overlay would combine them)."""
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        target = out / parts[0]
        if len(parts) > 1:
            k = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                 "namespace": namespace,
                 "resources": [f"../{p}" for p in parts if not p.startswith("components/")],
                 "components": [f"../{p}" for p in parts if p.startswith("components/")]}
            (Path(tmp) / "kustomization.yaml").write_text(yaml.safe_dump(k))
            target = Path(tmp)
        r = subprocess.run([str(tools.kubectl()), "kustomize", str(target)], capture_output=True,
                           text=True)
    if r.returncode != 0:
        raise tools.ToolError(f"kustomize build of {'+'.join(parts)} failed: {r.stderr.strip()}")
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def _name(doc: dict) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


@lru_cache
def _crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    doc = json.loads(gzip.decompress((SCHEMAS / CRD_SCHEMAS[(api_version, kind)]).read_bytes()))
    return jsonschema.Draft7Validator(doc["openAPIV3Schema"])


def schema_errors(docs: Iterable[dict]) -> list[str]:
    errors = []
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in CRD_SCHEMAS:
            for e in _crd_validator(*key).iter_errors(doc):
                where = "/".join(map(str, e.absolute_path))
                errors.append(f"{_name(doc)}: {e.message} (at {where})")
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = "/".join(map(str, e.path))
            errors.append(f"{_name(doc)}: {e.message} (at {where})")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{_name(doc)}: no Kubernetes {K8S_VERSION} schema: {e}")
    return errors


# --- our rules -----------------------------------------------------------------------------------
def _pod_specs(doc: dict) -> list[tuple[dict, bool, bool]]:
    """(pod spec, is a long-running workload, has pod-level fields) of a workload document. A
    ServingRuntime has containers only; its InferenceServices carry the pod-level fields."""
    kind = doc.get("kind")
    if kind in ("Deployment", "Job"):
        return [(doc["spec"]["template"]["spec"], kind == "Deployment", True)]
    if kind == "ServingRuntime":
        return [(doc["spec"], False, False)]
    if kind == "InferenceService":
        return [({**doc["spec"]["predictor"], "containers": []}, False, True)]
    return []


def _container_errors(where: str, c: dict, pod: dict, long_running: bool) -> list[str]:
    errors = []
    sc = c.get("securityContext") or {}
    if sc.get("privileged"):
        errors.append(f"{where}: privileged")
    if sc.get("allowPrivilegeEscalation") is not False:
        errors.append(f"{where}: allowPrivilegeEscalation must be false")
    if sc.get("readOnlyRootFilesystem") is not True:
        errors.append(f"{where}: the root filesystem must be read-only")
    if "ALL" not in (sc.get("capabilities") or {}).get("drop", []):
        errors.append(f"{where}: capabilities must drop ALL")
    if not (sc.get("runAsNonRoot") or (pod.get("securityContext") or {}).get("runAsNonRoot")):
        errors.append(f"{where}: runAsNonRoot is not set")
    res = c.get("resources") or {}
    for kind, key in (("requests", "cpu"), ("requests", "memory"), ("limits", "memory")):
        if key not in res.get(kind, {}):
            errors.append(f"{where}: no {key} {kind[:-1]}")
    if long_running:
        for probe in ("readinessProbe", "livenessProbe"):
            if probe not in c:
                errors.append(f"{where}: no {probe}")
    return errors


def workload_errors(docs: list[dict]) -> list[str]:
    errors = []
    for doc in docs:
        for pod, long_running, pod_level in _pod_specs(doc):
            if pod_level and pod.get("automountServiceAccountToken") is not False:
                errors.append(f"{_name(doc)}: automountServiceAccountToken must be false")
            for flag in ("hostNetwork", "hostPID", "hostIPC"):
                if pod.get(flag):
                    errors.append(f"{_name(doc)}: {flag}")
            for c in [*pod.get("initContainers", []), *pod.get("containers", [])]:
                errors += _container_errors(f"{_name(doc)} container {c['name']}", c, pod,
                                            long_running and c in pod.get("containers", []))
    return errors


def _matches(selector: dict, labels: dict) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        present = expr["key"] in labels
        if expr["operator"] == "Exists" and not present:
            return False
        if expr["operator"] == "In" and labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def _pods(docs: list[dict]) -> list[tuple[dict, dict, dict]]:
    """(workload doc, pod labels, pod spec) of the Deployments and Jobs."""
    return [(d, d["spec"]["template"]["metadata"]["labels"], d["spec"]["template"]["spec"])
            for d in docs if d.get("kind") in ("Deployment", "Job")]


def port_errors(docs: list[dict], src: Source) -> list[str]:
    errors = []
    pods = _pods(docs)
    for svc in (d for d in docs if d.get("kind") == "Service"):
        name = svc["metadata"]["name"]
        selected = [spec for _, labels, spec in pods if _matches(
            {"matchLabels": svc["spec"]["selector"]}, labels)]
        if not selected:
            errors.append(f"Service/{name}: its selector matches no pod")
        for p in svc["spec"]["ports"]:
            for spec in selected:
                ports = {cp.get("name"): cp["containerPort"] for c in spec["containers"]
                         for cp in c.get("ports", [])}
                target = p["targetPort"]
                if (target not in ports) if isinstance(target, str) else (
                        target not in ports.values()):
                    errors.append(f"Service/{name}: targetPort {target} is no port of its pods")
        if name in RUNTIMES or name == "gateway":
            got = [(p["name"], p["port"]) for p in svc["spec"]["ports"]]
            if got != service_ports(src, name):
                errors.append(f"Service/{name}: ports {got} differ from services/stack.env "
                              f"{service_ports(src, name)}")
    for dep, labels, spec in pods:
        name = dep["metadata"]["name"]
        if name not in RUNTIMES and name != "gateway":
            continue
        want = sorted(src.port(key) for key in port_keys(src, name))
        got = sorted(cp["containerPort"] for c in spec["containers"] for cp in c.get("ports", []))
        if got != want:
            errors.append(f"Deployment/{name}: container ports {got} differ from services/stack.env "
                          f"{want}")
    return errors


def reference_errors(docs: list[dict]) -> list[str]:
    errors = []
    deployments = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Deployment"}
    runtimes = {d["metadata"]["name"] for d in docs if d.get("kind") == "ServingRuntime"}
    for d in docs:
        kind = d.get("kind")
        if kind == "HorizontalPodAutoscaler" and d["spec"]["scaleTargetRef"]["name"] not in deployments:
            errors.append(f"{_name(d)}: no Deployment {d['spec']['scaleTargetRef']['name']}")
        if kind == "PodDisruptionBudget" and not any(
                _matches(d["spec"]["selector"], x["spec"]["template"]["metadata"]["labels"])
                for x in deployments.values()):
            errors.append(f"{_name(d)}: its selector matches no Deployment")
        if kind == "InferenceService":
            rt = d["spec"]["predictor"]["model"]["runtime"]
            if rt not in runtimes | BUILTIN_SERVING_RUNTIMES:
                errors.append(f"{_name(d)}: no ServingRuntime {rt}")
    return errors


def network_errors(docs: list[dict], src: Source) -> list[str]:
    errors = []
    policies = [d for d in docs if d.get("kind") == "NetworkPolicy"]
    if not policies:
        return errors  # the loadtest tree only adds policies to an overlay's
    if not any(p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")
               and "Ingress" in p["spec"]["policyTypes"] for p in policies):
        errors.append("no default-deny ingress NetworkPolicy")
    gateway = {"app.kubernetes.io/name": "gateway"}
    private = {src.port(key) for key in PRIVATE_PORTS}
    for dep, labels, _ in _pods(docs):
        if dep["metadata"]["name"] not in RUNTIMES:
            continue
        for pol in policies:
            if not _matches(pol["spec"]["podSelector"], labels):
                continue
            for rule in pol["spec"].get("ingress", []):
                sources = rule.get("from")
                if not sources or any(s != {"podSelector": {"matchLabels": gateway}}
                                      for s in sources):
                    errors.append(f"NetworkPolicy/{pol['metadata']['name']}: lets other pods than "
                                  f"the gateway reach {_name(dep)}")
                if any(p.get("port") in private for p in rule.get("ports", [])):
                    errors.append(f"NetworkPolicy/{pol['metadata']['name']}: opens a private port "
                                  f"(TorchServe management or metrics) of {_name(dep)}")
    return errors


# --- checkov -------------------------------------------------------------------------------------
def checkov_failures(builds: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """checkov's failed Kubernetes checks per build (one checkov run over all of them: it takes
    seconds to start)."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, docs in builds.items():
            (Path(tmp) / f"{name}.yaml").write_text(
                "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs))
        r = subprocess.run([str(tools.checkov()), "-d", tmp, "--framework", "kubernetes",
                            "--output", "json", "--quiet", "--compact", "--skip-download"],
                           capture_output=True, text=True)
    if r.returncode not in (0, 1) or not r.stdout.strip():
        raise tools.ToolError(f"checkov failed (exit {r.returncode}): {r.stderr.strip()[-500:]}")
    result = json.loads(r.stdout)
    out: dict[str, list[dict]] = {name: [] for name in builds}
    for rep in result if isinstance(result, list) else [result]:
        for c in rep.get("results", {}).get("failed_checks", []) if isinstance(rep, dict) else []:
            out[Path(c["file_path"]).stem].append(c)
    return out


def validate(docs: list[dict], src: Source, name: str,
             checkov: list[dict] | None = None) -> Report:  # fmt: skip
    report = Report(name, len(docs))
    report.errors += schema_errors(docs)
    report.errors += workload_errors(docs)
    report.errors += port_errors(docs, src)
    report.errors += reference_errors(docs)
    report.errors += network_errors(docs, src)
    for c in checkov or []:
        cid, resource = c["check_id"], c.get("resource", "?")
        if cid in EXPLAINED:
            report.explained[cid] = ", ".join(filter(None, [report.explained.get(cid), resource]))
        else:
            report.errors.append(f"checkov {cid} ({c.get('check_name')}): {resource}")
    return report


def validate_tree(src: Source, out: Path = OUT, *, checkov: bool = True) -> list[Report]:
    builds, failed = {}, []
    for name, parts in BUILDS.items():
        try:
            builds[name] = build(out, parts, src.namespace)
        except tools.ToolError as e:
            failed.append(Report(name, errors=[str(e)]))
    findings = checkov_failures(builds) if checkov and builds else {}
    return failed + [validate(docs, src, name, findings.get(name)) for name, docs in builds.items()]


def load(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]
