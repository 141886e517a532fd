"""A PyTorch 2 AOTInductor package (model.pt2): torch.export with the manifest's dynamic dims,
compiled ahead of time to a shared library by AOTInductor, for services/aotinductor.

Compiling takes tens of seconds per model (g++ on the generated C++), so packages are cached by
a key over the exported program (graph and weights), the torch version and the compile options:
`make export` on an unchanged model copies the cached package instead of recompiling."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from exporters.errors import RouteUnavailable
from exporters.targets import Exported, Route
from exporters.workspace import Workspace, versions
from services.aotinductor.runtime import DIM_RANGES  # the server enforces the ranges it records

ARTIFACT = "model.pt2"
# Inductor options: torch 2.13's defaults. Neither a wrapper at -O0 nor compile_threads=1 cut the
# compile time here (digits CNN: 24.4 s default, 24.5 s O0, 25.0 s one thread), and O0 ran 20-50%
# slower and doubled the file (services/aotinductor/README.md). Named so that the cache key covers them.
INDUCTOR_OPTIONS = {"aot_inductor.compile_wrapper_opt_level": "O1"}
# Where compiled packages are kept, by key: outside the store (mounted into every container and
# copied into the Kubernetes store image), and outside the clone, in the user's cache directory as
# torch's inductor cache and pip's are: a fresh clone on the same machine reuses the packages. The
# key covers everything a package depends on, so sharing it between clones is safe.
CACHE_ENV = "SERVEBENCH_AOTI_CACHE"
# Its bound: least recently used packages go first once it holds more (MobileNetV2's is ~16 MB,
# the examples' ~50 MB in all). $SERVEBENCH_AOTI_CACHE_MB sets it.
CACHE_MB_ENV, CACHE_MB = "SERVEBENCH_AOTI_CACHE_MB", 2048


def cache_dir() -> Path:
    """$SERVEBENCH_AOTI_CACHE, else $XDG_CACHE_HOME/servebench/aotinductor, else
    ~/.cache/servebench/aotinductor."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "servebench" / "aotinductor"


def evict(directory: Path, limit_bytes: int, keep: Path) -> list[Path]:
    """Remove the least recently used packages (mtime: written or last hit) until the cache holds
    at most limit_bytes; `keep`, the package just used, stays whatever its size. Returns what went."""
    packages = sorted(directory.glob("*.pt2"), key=lambda p: p.stat().st_mtime)
    total = sum(p.stat().st_size for p in packages)
    gone = []
    for old in packages:
        if total <= limit_bytes:
            break
        if old == keep:
            continue
        total -= old.stat().st_size
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)
        gone.append(old)
    return gone


def cache_limit_bytes() -> int:
    return int(float(os.environ.get(CACHE_MB_ENV) or CACHE_MB) * 2**20)


def cache_key(program_bytes: bytes, metadata: dict[str, str]) -> str:
    """sha256 over the serialized exported program (graph and weights) and everything else the
    package depends on: the torch version, the inductor options, the metadata it records."""
    import hashlib

    import torch

    h = hashlib.sha256(program_bytes)
    h.update(json.dumps({"torch": torch.__version__, "options": INDUCTOR_OPTIONS, "metadata": metadata},
                        sort_keys=True).encode())  # fmt: skip
    return h.hexdigest()


def metadata(signature) -> dict[str, str]:
    """What the package records about the signature (the server checks it at load)."""
    return {"inputs": ",".join(signature.input_names()), "outputs": ",".join(signature.output_names())}


def _package(ws: Workspace, program, dest: Path, conv: dict[str, str]) -> Exported:
    """Compile `program` into dest/model.pt2, or copy it from the cache."""
    import torch

    buf = io.BytesIO()
    with ws.guard("torch.export.save"):
        torch.export.save(program, buf)
    meta = metadata(ws.sig)
    key = cache_key(buf.getvalue(), meta)
    cached = cache_dir() / f"{key}.pt2"
    target = dest / ARTIFACT
    # The sizes each dynamic dim takes ({"sequence": [1, 64]}): the server refuses others with a 400.
    extra = {"cache_key": key, DIM_RANGES: json.dumps(ws.exported_ranges)}
    if cached.is_file():
        shutil.copy(cached, target)
        os.utime(cached)  # recently used: the last to be evicted
        built = json.loads(cached.with_suffix(".json").read_text()) if cached.with_suffix(".json").is_file() else {}
        return Exported(ARTIFACT, conv, extra | {"compile_cache": "hit", "compile_seconds": "0",
                                                 "compile_seconds_when_built": str(built.get("compile_seconds", ""))})
    start = time.perf_counter()
    with ws.guard("torch._inductor.aoti_compile_and_package"):
        torch._inductor.aoti_compile_and_package(
            program, package_path=str(target),
            inductor_configs=INDUCTOR_OPTIONS | {"aot_inductor.metadata": meta},
        )  # fmt: skip
    seconds = round(time.perf_counter() - start, 3)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".tmp-{os.getpid()}")
    shutil.copy(target, tmp)
    cached.with_suffix(".json").write_text(json.dumps({"compile_seconds": seconds}))
    tmp.rename(cached)  # whole packages only: a concurrent export never reads half a file
    evict(cached.parent, cache_limit_bytes(), keep=cached)
    return Exported(ARTIFACT, conv, extra | {"compile_cache": "miss", "compile_seconds": str(seconds)})


def _torch(ws: Workspace, dest: Path) -> Exported:
    return _package(ws, ws.exported_program, dest, versions("torch"))


def _keras(ws: Workspace, dest: Path) -> Exported:
    if importlib.util.find_spec("onnx2torch") is None:
        raise RouteUnavailable("no route from Keras: needs onnx2torch, not installed (pip install onnx2torch, "
                              "then export again)")  # fmt: skip
    return _package(ws, ws.exported_program, dest, versions("tf2onnx", "onnx2torch", "torch"))


ROUTES = [
    Route("torch.export (the manifest's dynamic dims) -> AOTInductor package", ("pytorch",), _torch),
    Route("certified ONNX -> onnx2torch -> torch.export -> AOTInductor package", ("keras",), _keras),
]


def load(path: Path):
    """The package's compiled model: a callable over torch tensors in signature order."""
    import torch

    return torch._inductor.aoti_load_package(str(path))


def runner(path: Path, signature):
    import torch

    torch.set_num_threads(1)
    model = load(path)
    out_names = signature.output_names()

    def run(x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(x[s.name])) for s in signature.inputs]
        with torch.inference_mode():
            out = model(*args)
        return {n: t.numpy() for n, t in zip(out_names, out)}

    return run
