"""Writing into model_store without ever leaving it half-written: every model is exported into a
hidden staging directory and moved into place whole; store-level files are rewritten by rename."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from contract.manifest import load_store

TORCHSERVE_DIR = "torchserve"  # TorchServe's --model-store: <model>.mar copies
TFSERVING_DIR = "tfserving"  # TF Serving's models.config, for the container (paths under /models)
CONTAINER_STORE = "/models"


def staging_dir(store: Path, name: str) -> Path:
    path = Path(store) / f".staging-{name}-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def commit(staging: Path, store: Path, name: str) -> Path:
    """Replace store/<name> with the staging directory in two renames."""
    final = Path(store) / name
    trash = Path(store) / f".trash-{name}-{os.getpid()}"
    if final.exists():
        final.rename(trash)
    staging.rename(final)
    shutil.rmtree(trash, ignore_errors=True)
    return final


def replace_dir(tmp: Path, final: Path) -> None:
    trash = final.with_name(f".trash-{final.name}-{os.getpid()}")
    if final.exists():
        final.rename(trash)
    tmp.rename(final)
    shutil.rmtree(trash, ignore_errors=True)


def refresh_runtime_views(store: Path) -> None:
    """Rebuild TorchServe's model-store directory and TF Serving's models.config from the manifests
    (parity-passed artifacts only)."""
    from services.tfserving.config import write_models_config

    store = Path(store)
    manifests = load_store(store)
    tmp = store / f".{TORCHSERVE_DIR}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for m in manifests.values():
        if m.passed("torchserve"):
            os.link(m.artifact_path(store, "torchserve"), tmp / f"{m.name}.mar")
    replace_dir(tmp, store / TORCHSERVE_DIR)
    tmp = store / f".{TFSERVING_DIR}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write_models_config(store, tmp / "models.config", CONTAINER_STORE)
    replace_dir(tmp, store / TFSERVING_DIR)
