"""python -m services.torchserve: write config.properties into the run dir, then exec TorchServe's
Java frontend in the foreground (the supervisor owns it directly)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from services.settings import REPO_ROOT, UnknownModels, get_settings
from services.torchserve.config import LOOPBACK, Ports, environment, java_command, render_config


def main(argv: list[str] | None = None) -> None:
    s = get_settings()
    p = argparse.ArgumentParser(prog="python -m services.torchserve", description=__doc__)
    p.add_argument("--inference-port", type=int, default=s.torchserve_inference_port)
    p.add_argument("--management-port", type=int, default=s.torchserve_management_port)
    p.add_argument("--metrics-port", type=int, default=s.torchserve_metrics_port)
    p.add_argument("--grpc-inference-port", type=int, default=7070)
    p.add_argument("--grpc-management-port", type=int, default=7071)
    p.add_argument("--model-store", type=Path, default=s.model_store,
                   help="the store; TorchServe serves <store>/torchserve/*.mar")  # fmt: skip
    p.add_argument("--models", default=s.stack_models, metavar="NAME[,NAME...]",
                   help="register only these models' .mar files (default: all; STACK_MODELS)")
    p.add_argument("--run-dir", type=Path, default=REPO_ROOT / ".run" / "torchserve")
    p.add_argument("--print-config", action="store_true", help="print config.properties, exit")
    a = p.parse_args(argv)

    mar_dir = (a.model_store / "torchserve").resolve()
    run_dir = a.run_dir.resolve()
    ports = Ports(a.inference_port, a.management_port, a.metrics_port,
                  a.grpc_inference_port, a.grpc_management_port)  # fmt: skip
    # STACK_BIND_HOST (0.0.0.0 in the container) opens the inference API only.
    bind = s.stack_bind_host or LOOPBACK
    if not mar_dir.is_dir():
        sys.exit(f"no TorchServe model store at {mar_dir} (run `make export`)")
    try:
        config = render_config(ports, mar_dir, s, bind_host=bind, wanted=a.models)
    except UnknownModels as e:
        sys.exit(f"{p.prog}: --models: {e}")
    if a.print_config:
        print(config, end="")
        return
    for d in (run_dir, run_dir / "logs", run_dir / "tmp"):
        d.mkdir(parents=True, exist_ok=True)
    config_file = run_dir / "config.properties"
    config_file.write_text(config)
    cmd = java_command(config_file, mar_dir, run_dir)
    print(
        f"torchserve: inference {bind}:{ports.inference}, management {LOOPBACK}:"
        f"{ports.management}, models from {mar_dir}, logs in {run_dir / 'logs'}",
        flush=True,
    )
    os.chdir(run_dir)
    os.execvpe(cmd[0], cmd, environment(run_dir, s))


if __name__ == "__main__":
    main()
