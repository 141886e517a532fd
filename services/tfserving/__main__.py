"""python -m services.tfserving: exec tensorflow_model_server if it is on PATH, else run the
stand-in (TF Serving's REST + gRPC API over TensorFlow sessions)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from services.settings import REPO_ROOT, get_settings
from services.tfserving.config import batching_parameters_text, write_models_config


def real_server_command(binary: str, a: argparse.Namespace, run_dir: Path) -> list[str]:
    s = get_settings()
    config = write_models_config(a.model_store, run_dir / "models.config", str(a.model_store))
    batching = run_dir / "batching_parameters.txt"
    batching.write_text(batching_parameters_text(s))
    return [
        binary,
        f"--port={a.grpc_port}",
        f"--rest_api_port={a.rest_port}",
        f"--model_config_file={config}",
        "--enable_batching",
        f"--batching_parameters_file={batching}",
        f"--tensorflow_intra_op_parallelism={s.runtime_intra_op_threads}",
        f"--tensorflow_inter_op_parallelism={s.runtime_inter_op_threads}",
    ]


def main(argv: list[str] | None = None) -> None:
    s = get_settings()
    p = argparse.ArgumentParser(prog="python -m services.tfserving", description=__doc__)
    p.add_argument(
        "--host", default=s.stack_bind_host,
        help="bind address (stand-in only: tensorflow_model_server listens on all interfaces)",
    )  # fmt: skip
    p.add_argument("--rest-port", type=int, default=s.tfserving_rest_port)
    p.add_argument("--grpc-port", type=int, default=s.tfserving_grpc_port, help="0 = no gRPC")
    p.add_argument("--model-store", type=Path, default=s.model_store)
    p.add_argument("--run-dir", type=Path, default=REPO_ROOT / ".run" / "tfserving")
    p.add_argument("--standin", action="store_true", help="run the stand-in even if the real "
                   "server is on PATH")  # fmt: skip
    a = p.parse_args(argv)
    a.model_store = a.model_store.resolve()
    os.environ["OMP_NUM_THREADS"] = str(s.omp_num_threads)

    binary = shutil.which("tensorflow_model_server")
    if binary and not a.standin:
        run_dir = a.run_dir.resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        cmd = real_server_command(binary, a, run_dir)
        print("tfserving: exec", " ".join(cmd), flush=True)
        os.execv(binary, cmd)

    # TF Serving runs SavedModels without Keras, and so does the stand-in: keeping `import
    # tensorflow` from loading Keras 3 (which it does eagerly, and with it scikit-learn and
    # SciPy) cuts ~3 s of the ~7 s import, most of a restart (measured: 7.2 -> 4.1 s idle).
    # Only this process is affected: it is the stand-in's own.
    if "keras" not in sys.modules:
        sys.modules["keras"] = None  # type: ignore[assignment]  # import keras -> ImportError
    from services.tfserving.standin import run

    run(a.model_store, a.host, a.rest_port, a.grpc_port or None, s)


if __name__ == "__main__":
    main()
