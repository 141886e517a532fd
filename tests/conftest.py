"""Fixtures shared by every test package: the example model store and free ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = (
    "digits-mlp-torch", "digits-mlp-keras", "digits-cnn-torch", "digits-cnn-keras",
    "mobilenetv2-torch", "mobilenetv2-keras",
)  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def python_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def real_store() -> Path:
    """The store of the six examples that `make export` builds (built here if it is missing)."""
    store = REPO / "model_store"
    if not all((store / m / "manifest.json").exists() for m in EXAMPLES):
        subprocess.run([sys.executable, "-m", "exporters", "examples", "--store", str(store)],
                       cwd=REPO, env=python_env(), check=True)  # fmt: skip
    return store
