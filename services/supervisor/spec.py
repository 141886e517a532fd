"""What the supervisor runs: a list of plain-data service specs (JSON-serialisable).

default_specs() derives the services of the stack from StackSettings; tests (or anyone) can
pass their own list as a JSON file instead (`up --spec-file`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from contract.runtimes import RUNTIMES
from services.settings import REPO_ROOT, StackSettings

DEFAULT_SERVICES = (*RUNTIMES, "gateway")  # every runtime of the registry, then the gateway


@dataclass
class ServiceSpec:
    name: str
    argv: list[str]
    host: str  # the address the service binds: checked for busy ports before anything starts
    ports: dict[str, int]  # settings variable -> port, e.g. {"ONNXRUNTIME_PORT": 8100}
    url: str  # base URL shown in the table
    probe: dict  # readiness probe, see services.supervisor.probe
    module: str | None = None  # python module that must exist, else `up` skips the service
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    after: list[str] = field(default_factory=list)  # start once these are ready (or failed)

    @classmethod
    def from_dict(cls, d: dict) -> ServiceSpec:
        return cls(**d)


def child_env(s: StackSettings) -> dict[str, str]:
    """Environment shared by every child: thread counts, ports and paths from the settings."""
    threads = str(s.omp_num_threads)
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
        "STACK_MODEL_STORE": str(s.model_store),
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "NUMEXPR_NUM_THREADS": threads,
        "TF_NUM_INTRAOP_THREADS": str(s.runtime_intra_op_threads),
        "TF_NUM_INTEROP_THREADS": str(s.runtime_inter_op_threads),
        "RUNTIME_INTRA_OP_THREADS": str(s.runtime_intra_op_threads),
        "RUNTIME_INTER_OP_THREADS": str(s.runtime_inter_op_threads),
    }
    for key, value in s.model_dump().items():
        if key.endswith("_port") or key.endswith("_host"):
            env[key.upper()] = str(value)
    return env


def _setting(s: StackSettings, var: str, default: int) -> int:
    """A port StackSettings may not declare (yet): setting, else environment, else default."""
    value = getattr(s, var.lower(), None)
    return int(value if value is not None else os.environ.get(var, default))


def default_specs(s: StackSettings, run_dir: Path) -> list[ServiceSpec]:
    py, store, bind = sys.executable, str(s.model_store), s.stack_bind_host

    def oip(name: str, fmt: str) -> ServiceSpec:
        host, port = getattr(s, f"{name}_host"), getattr(s, f"{name}_port")
        url = f"http://{host}:{port}"
        return ServiceSpec(
            name=name,
            module=f"services.{name}",
            argv=[py, "-m", f"services.{name}", "--host", bind, "--port", str(port),
                  "--model-store", store],
            host=bind,
            ports={f"{name.upper()}_PORT": port},
            url=url,
            probe={"kind": "oip", "url": url, "format": fmt, "store": store,
                   "models": s.stack_models},
        )

    tfs_url = f"http://{s.tfserving_host}:{s.tfserving_rest_port}"
    ts_url = f"http://{s.torchserve_host}:{s.torchserve_inference_port}"
    ts_dir = run_dir / "torchserve"
    ts_mgmt = f"http://127.0.0.1:{s.torchserve_management_port}"  # TorchServe binds it to loopback
    # TorchServe's gRPC ports: nothing else uses them, but they must be free too.
    ts_grpc = {var: _setting(s, var, default) for var, default in [
        ("TORCHSERVE_GRPC_INFERENCE_PORT", 7070), ("TORCHSERVE_GRPC_MANAGEMENT_PORT", 7071)]}
    gw_url = f"http://{s.gateway_host}:{s.gateway_port}"
    backends = [
        # Our OIP servers: one per registry entry (contract/runtimes.py), one adapter folder each.
        *(oip(r.name, r.format) for r in RUNTIMES.values() if r.protocol == "oip"),
        ServiceSpec(
            name="tfserving",
            module="services.tfserving",
            argv=[py, "-m", "services.tfserving", "--host", bind,
                  "--rest-port", str(s.tfserving_rest_port),
                  "--grpc-port", str(s.tfserving_grpc_port), "--model-store", store,
                  "--run-dir", str(run_dir / "tfserving")],
            host=bind,
            ports={"TFSERVING_REST_PORT": s.tfserving_rest_port,
                   "TFSERVING_GRPC_PORT": s.tfserving_grpc_port},
            url=tfs_url,
            probe={"kind": "tfserving", "url": tfs_url, "format": "savedmodel", "store": store},
        ),
        ServiceSpec(
            name="torchserve",
            module="services.torchserve",
            argv=[py, "-m", "services.torchserve",
                  "--inference-port", str(s.torchserve_inference_port),
                  "--management-port", str(s.torchserve_management_port),
                  "--metrics-port", str(s.torchserve_metrics_port),
                  "--grpc-inference-port", str(ts_grpc["TORCHSERVE_GRPC_INFERENCE_PORT"]),
                  "--grpc-management-port", str(ts_grpc["TORCHSERVE_GRPC_MANAGEMENT_PORT"]),
                  "--model-store", store, "--run-dir", str(ts_dir)],
            host=bind,
            ports={"TORCHSERVE_INFERENCE_PORT": s.torchserve_inference_port,
                   "TORCHSERVE_MANAGEMENT_PORT": s.torchserve_management_port,
                   "TORCHSERVE_METRICS_PORT": s.torchserve_metrics_port, **ts_grpc},
            url=ts_url,
            probe={"kind": "torchserve", "url": ts_url, "format": "torchserve", "store": store,
                   "management_url": ts_mgmt, "models": s.stack_models},
            # TorchServe keeps its pid file in $TMPDIR and writes ./logs: give it its own of both.
            env={"TMPDIR": str(ts_dir / "tmp")},
            cwd=str(ts_dir),
        ),
    ]
    backends.sort(key=lambda b: list(RUNTIMES).index(b.name))  # registry order, as DEFAULT_SERVICES
    gateway = ServiceSpec(
        name="gateway",
        module="services.gateway",
        argv=[py, "-m", "services.gateway", "--host", bind, "--port", str(s.gateway_port),
              "--tfs-grpc-port", str(s.gateway_tfs_grpc_port),
              "--grpc-port", str(s.gateway_grpc_port)],
        host=bind,
        # REST, OIP gRPC and TF Serving gRPC unless GATEWAY_GRPC_PORT / GATEWAY_TFS_GRPC_PORT=0
        ports={"GATEWAY_PORT": s.gateway_port,
               **({"GATEWAY_GRPC_PORT": s.gateway_grpc_port} if s.gateway_grpc_port else {}),
               **({"GATEWAY_TFS_GRPC_PORT": s.gateway_tfs_grpc_port}
                  if s.gateway_tfs_grpc_port else {})},
        url=gw_url,
        probe={"kind": "http", "url": f"{gw_url}/v2/health/ready"},
        after=[b.name for b in backends],
    )
    shared = child_env(s)
    specs = [*backends, gateway]
    for spec in specs:
        spec.env = {**shared, **spec.env}
    return specs


def select(specs: list[ServiceSpec], names: list[str] | None) -> list[ServiceSpec]:
    """Keep the named services (in spec order); unknown names are an error."""
    if not names:
        return specs
    known = {s.name for s in specs}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown service(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return [s for s in specs if s.name in names]


def module_missing(spec: ServiceSpec) -> bool:
    if not spec.module:
        return False
    try:
        return importlib.util.find_spec(spec.module) is None
    except ModuleNotFoundError:
        return True


def sequential(specs: list[ServiceSpec]) -> list[ServiceSpec]:
    """Each service waits for the previous one: uncontended start-up times on a small machine."""
    for prev, spec in zip(specs, specs[1:]):
        spec.after = sorted({*spec.after, prev.name})
    return specs


def save(specs: list[ServiceSpec], path: Path) -> None:
    path.write_text(json.dumps([asdict(s) for s in specs], indent=2) + "\n")


def load(path: Path) -> list[ServiceSpec]:
    return [ServiceSpec.from_dict(d) for d in json.loads(Path(path).read_text())]
