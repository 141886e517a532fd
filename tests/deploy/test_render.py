"""The Kubernetes / KServe manifests: rendered from the example store, built with kustomize,
validated (schemas, CRDs, our rules, checkov), and broken copies that must fail."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest

from contract.runtimes import RUNTIMES, isvc_name, kserve_remote_name
from deploy.kserve import MODEL_LABEL, inference_service
from deploy.render import PRIVATE_PORTS, Source, service_ports, write
from deploy.validate import BUILDS, EXPLAINED, build, checkov_failures, validate
from services.settings import get_settings
from services.supervisor.spec import default_specs
from tests.conftest import REPO, free_port, python_env, stop_process_group, wait_for

pytestmark = pytest.mark.real_store


@pytest.fixture(scope="module")
def src(real_store) -> Source:
    return Source.load(real_store)


@pytest.fixture(scope="module")
def tree(src, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kubernetes")
    write(src, out)
    return out


@pytest.fixture(scope="module")
def builds(src, tree) -> dict[str, list[dict]]:
    return {name: build(tree, parts, src.namespace) for name, parts in BUILDS.items()}


def find(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def container(docs: list[dict], name: str) -> dict:
    return find(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]


# --- the tree validates ------------------------------------------------------------------------
def test_every_build_validates_and_checkov_flags_only_explained_checks(src, builds):
    findings = checkov_failures(builds)
    for name, docs in builds.items():
        report = validate(docs, src, name, findings[name])
        assert report.ok, f"{name}:\n" + "\n".join(report.errors)
    flagged = {c["check_id"] for found in findings.values() for c in found}
    assert flagged and flagged <= set(EXPLAINED)  # checkov ran, and found nothing unexplained


def test_builds_hold_what_each_overlay_promises(builds):
    kinds = lambda docs: {(d["kind"], d["metadata"]["name"]) for d in docs}  # noqa: E731
    small, large, kserve = builds["small"], builds["large"], builds["kserve"]
    for name in [*RUNTIMES, "gateway"]:
        assert ("Deployment", name) in kinds(small) and ("Service", name) in kinds(small)
    assert find(small, "HorizontalPodAutoscaler", "gateway")["spec"]["maxReplicas"] == 1
    for name in RUNTIMES:  # large: autoscaled, disruption-budgeted, spread, sized per replica
        assert ("HorizontalPodAutoscaler", name) in kinds(large)
        assert ("PodDisruptionBudget", name) in kinds(large)
        dep = find(large, "Deployment", name)
        assert "replicas" not in dep["spec"]  # the autoscaler owns it
        assert dep["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert find(large, "HorizontalPodAutoscaler", "gateway")["spec"]["minReplicas"] >= 2
    assert not [d for d in kserve if d["kind"] == "Deployment" and d["metadata"]["name"] in RUNTIMES]
    assert find(kserve, "ConfigMap", "servebench-stack")["data"]["GATEWAY_KSERVE_NAMESPACE"] == \
        "servebench"
    for variant in ("small+store-from-image", "small+store-from-url"):
        docs = builds[variant]
        assert ("PersistentVolumeClaim", "servebench-model-store") not in kinds(docs)
        for name in [*RUNTIMES, "gateway"]:
            pod = find(docs, "Deployment", name)["spec"]["template"]["spec"]
            assert pod["initContainers"][0]["name"] == "fetch-model-store"
            (store,) = [v for v in pod["volumes"] if v["name"] == "model-store"]
            assert "emptyDir" in store and "persistentVolumeClaim" not in store
    for doc in (d for b in builds.values() for d in b if d.get("kind") != "Namespace"):
        assert doc["metadata"].get("namespace") == "servebench", doc["metadata"]["name"]


# --- one source of truth: local mode, compose and Kubernetes agree ------------------------------
def test_names_and_ports_agree_across_local_mode_compose_and_kubernetes(src, builds):
    local = {s.name: sorted(s.ports.values())
             for s in default_specs(get_settings(), Path("/tmp"))}  # fmt: skip
    small = builds["small"]
    k8s = {d["metadata"]["name"]: sorted(p["containerPort"] for p in container(small, d["metadata"][
        "name"])["ports"]) for d in small if d["kind"] == "Deployment"}
    assert set(k8s) == set(local) == set(RUNTIMES) | {"gateway"}
    assert k8s == local
    for name in k8s:
        exposed = sorted(int(p) for p in src.compose["services"][name]["expose"])
        service = sorted(p["port"] for p in find(small, "Service", name)["spec"]["ports"])
        assert set(service) <= set(exposed) <= set(k8s[name]), name
        assert not set(service) & {src.port(key) for key in PRIVATE_PORTS}, name
    # The gateway: REST and OIP gRPC, both in its Service (gRPC marked as such) and its ingress.
    gw = {p["name"]: p for p in find(small, "Service", "gateway")["spec"]["ports"]}
    assert gw["http"]["port"] == src.port("gateway_port") == 8000
    assert gw["grpc"]["port"] == src.port("gateway_grpc_port") == 8001
    assert gw["tfs-grpc"]["port"] == src.port("gateway_tfs_grpc_port") == 8510
    assert gw["grpc"]["appProtocol"] == gw["tfs-grpc"]["appProtocol"] == "grpc"
    assert "appProtocol" not in gw["http"]
    (rule,) = find(small, "NetworkPolicy", "gateway-ingress")["spec"]["ingress"]
    assert sorted(p["port"] for p in rule["ports"]) == [8000, 8001, 8510]


def test_configuration_is_stack_env_with_compose_container_overrides(src, builds):
    data = find(builds["small"], "ConfigMap", "servebench-stack")["data"]
    for key, value in src.env.items():
        if key.endswith("_API_KEY"):
            assert key not in data  # secrets come from a Secret
        elif key not in src.compose["x-stack-env"]:
            assert data[key] == value, key
    for key, value in src.compose["x-stack-env"].items():
        assert data[key] == str(value), key
    tfs = container(builds["small"], "tfserving")
    assert tfs["args"] == src.compose["services"]["tfserving"]["command"]
    batching = find(builds["small"], "ConfigMap", "tfserving-batching")["data"]
    assert batching["batching_parameters.txt"] == (
        REPO / "services/tfserving/batching_parameters.txt").read_text()
    probe = container(builds["small"], "onnxruntime")["readinessProbe"]["exec"]["command"]
    assert probe == ["python", "-m", "services.supervisor.probe", "onnxruntime",
                     "--host", "127.0.0.1"]  # the supervisor's probe: a real inference


# --- KServe ------------------------------------------------------------------------------------
def test_one_inference_service_per_certified_pair(src, builds):
    isvcs = {d["metadata"]["name"]: d for d in builds["kserve"] if d["kind"] == "InferenceService"}
    want = {isvc_name(m, r): (m, r) for m, man in src.store.items() for r, rt in RUNTIMES.items()
            if man.passed(rt.format)}
    assert want and set(isvcs) == set(want)
    for name, (model, runtime) in want.items():
        spec = isvcs[name]["spec"]["predictor"]["model"]
        assert isvcs[name]["metadata"]["labels"][MODEL_LABEL] == model
        assert spec["runtime"] == RUNTIMES[runtime].kserve.serving_runtime
        if runtime == "tfserving":  # the base path of numbered SavedModel versions
            base = src.settings.model_store / spec["storageUri"].removeprefix(
                "pvc://servebench-model-store/")
            assert any((v / "saved_model.pb").is_file() for v in base.iterdir()), base
            assert kserve_remote_name(model, runtime) == name
        else:
            assert spec["storageUri"] == "pvc://servebench-model-store"
            assert kserve_remote_name(model, runtime) == model


def test_inference_service_names_must_be_dns_labels(src):
    with pytest.raises(ValueError, match="DNS-1035"):
        inference_service(src, "My_Model", "onnxruntime")


def _runtime_argv(builds, name: str, model: str, store: Path, port: int) -> list[str]:
    (sr,) = [d for d in builds["kserve"] if d["kind"] == "ServingRuntime"
             and d["metadata"]["name"] == RUNTIMES[name].kserve.serving_runtime]
    c = sr["spec"]["containers"][0]
    argv = [sys.executable if a == "python" else a for a in c["command"]]
    for a in c["args"]:
        a = a.replace(f"{{{{.Labels.{MODEL_LABEL}}}}}", model).replace("/mnt/models", str(store))
        argv.append({"--host=0.0.0.0": "--host=127.0.0.1"}.get(a, a))
    return [f"--port={port}" if a.startswith("--port=") else a for a in argv]


def test_serving_runtime_command_serves_exactly_its_model(builds, real_store):
    """The ServingRuntime's command line, as KServe would run it (labels substituted), starts our
    ONNX Runtime server on the mounted store with only the InferenceService's model."""
    import httpx

    port = free_port()
    argv = _runtime_argv(builds, "onnxruntime", "digits-mlp-torch", real_store, port)
    proc = subprocess.Popen(argv, cwd=REPO, env=python_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            try:
                return httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, "the ServingRuntime's server", timeout=120)
        assert httpx.get(f"{url}/v2/models/digits-mlp-torch").status_code == 200
        assert httpx.get(f"{url}/v2/models/digits-cnn-torch").status_code == 404
    finally:
        stop_process_group(proc)


def test_torchserve_serving_runtime_registers_only_its_model(builds, real_store):
    argv = _runtime_argv(builds, "torchserve", "digits-cnn-torch", real_store, free_port())
    r = subprocess.run([*argv, "--print-config"], cwd=REPO, env=python_env(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "digits-cnn-torch" in r.stdout and "digits-mlp-torch" not in r.stdout


# --- broken copies must fail --------------------------------------------------------------------
def _broken(builds) -> dict[str, tuple[list[dict], str]]:
    """name -> (a mutated copy of a build, a phrase its validation must report)."""
    out = {}

    def mutate(build: str, name: str, complaint: str, change) -> None:
        docs = copy.deepcopy(builds[build])
        change(docs)
        out[name] = (docs, complaint)

    mutate("small", "missing-probe", "no readinessProbe",
           lambda d: container(d, "onnxruntime").pop("readinessProbe"))
    mutate("small", "privileged", "privileged",
           lambda d: container(d, "torchserve")["securityContext"].update(
               privileged=True, allowPrivilegeEscalation=True))
    mutate("small", "service-port-mismatch", "differ from services/stack.env",
           lambda d: find(d, "Service", "tflite")["spec"]["ports"][0].update(port=8201))
    mutate("small", "container-port-mismatch", "differ from services/stack.env",
           lambda d: container(d, "tflite")["ports"][0].update(containerPort=8300))
    mutate("small", "unknown-field", "Additional properties",
           lambda d: find(d, "Deployment", "gateway")["spec"].update(replicaz=2))
    mutate("small", "root", "runAsNonRoot",
           lambda d: find(d, "Deployment", "tflite")["spec"]["template"]["spec"][
               "securityContext"].pop("runAsNonRoot"))
    mutate("small", "open-runtime", "other pods than the gateway",
           lambda d: find(d, "NetworkPolicy", "onnxruntime-from-gateway")["spec"]["ingress"][0]
           .pop("from"))
    mutate("small", "torchserve-management", "private port",
           lambda d: find(d, "NetworkPolicy", "torchserve-from-gateway")["spec"]["ingress"][0][
               "ports"].append({"protocol": "TCP", "port": 8081}))
    mutate("small", "no-memory-limit", "no memory limit",
           lambda d: container(d, "gateway")["resources"].pop("limits"))
    mutate("large", "hpa-target", "no Deployment",
           lambda d: find(d, "HorizontalPodAutoscaler", "tflite")["spec"]["scaleTargetRef"]
           .update(name="tflite-typo"))
    mutate("kserve", "isvc-schema", "is not of type",
           lambda d: next(x for x in d if x["kind"] == "InferenceService")["spec"]["predictor"][
               "model"].update(storageUri=5))
    mutate("kserve", "isvc-runtime", "no ServingRuntime",
           lambda d: next(x for x in d if x["kind"] == "InferenceService")["spec"]["predictor"][
               "model"].update(runtime="servebench-nope"))
    return out


def test_broken_copies_fail_validation(src, builds):
    broken = _broken(builds)
    findings = checkov_failures({name: docs for name, (docs, _) in broken.items()})
    for name, (docs, complaint) in broken.items():
        report = validate(docs, src, name, findings[name])
        assert not report.ok, f"{name}: validation passed"
        assert any(complaint in e for e in report.errors), (name, report.errors)
    # checkov on its own catches what its checks cover
    checks = lambda name: {c["check_id"] for c in findings[name]}  # noqa: E731
    assert {"CKV_K8S_16", "CKV_K8S_20"} <= checks("privileged")
    assert "CKV_K8S_9" in checks("missing-probe")


def test_service_ports_come_from_stack_env(src):
    assert service_ports(src, "onnxruntime") == [("http", src.settings.onnxruntime_port)]
    assert service_ports(src, "torchserve") == [("inference", src.settings.torchserve_inference_port)]
    assert service_ports(src, "tfserving") == [("rest", src.settings.tfserving_rest_port),
                                               ("grpc", src.settings.tfserving_grpc_port)]
