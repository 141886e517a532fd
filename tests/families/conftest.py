"""The family store: every model of zoo.FAMILIES exported with the user's command
(`python -m exporters export ...`), once per session. It is kept in .cache/families-store and
reused while the exporter, the contract, the handler and the zoo are unchanged (a hash of their
sources); CI starts from a fresh clone and always builds it."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, python_env, running_stack
from tests.families.zoo import FAMILIES, source_of

CACHE = REPO / ".cache" / "families-store"


def _inputs_hash() -> str:
    h = hashlib.sha256()
    files = sorted([*REPO.glob("exporters/**/*.py"), *REPO.glob("contract/*.py"),
                    REPO / "services/torchserve/handler.py", REPO / "tests/families/zoo.py"])  # fmt: skip
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()


def export_family(family, store: Path, workdir: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "exporters", "export", source_of(family, workdir), "--name", family.name,
           "--weights", "random-init", "--store", str(store), *family.args]  # fmt: skip
    return subprocess.run(cmd, cwd=REPO, env=python_env(), capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="session")
def family_store(tmp_path_factory) -> Path:
    stamp = CACHE / ".inputs-sha256"
    digest = _inputs_hash()
    if stamp.exists() and stamp.read_text() == digest and all((CACHE / f.name / "manifest.json").exists() for f in FAMILIES):
        return CACHE
    shutil.rmtree(CACHE, ignore_errors=True)
    CACHE.mkdir(parents=True)
    work = tmp_path_factory.mktemp("families-src")
    log = []
    for family in FAMILIES:
        start = time.monotonic()
        done = export_family(family, CACHE, work)
        log.append(f"{family.name}: exit {done.returncode} in {time.monotonic() - start:.0f} s\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    (CACHE / "export.log").write_text("\n\n".join(log))
    stamp.write_text(digest)
    return CACHE


@pytest.fixture(scope="session")
def family_stack(family_store, tmp_path_factory):
    with running_stack(family_store, tmp_path_factory.mktemp("family-stack")) as stack:
        yield stack
